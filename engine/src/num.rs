//! Native numeric values as the kernels see them: the one [`Num`] trait over the primitive
//! types of integer and float columns, and the order-preserving 64-bit keys of values
//! ([`float_key`], [`signed_key`] and their inverses) that `describe` counts and searches
//! and `sort` orders by.

/// The sign bit of a 64-bit word.
const SIGN: u64 = 1 << 63;

/// Order-preserving key of a float: flip all bits of negatives, the sign bit of the others.
/// -0.0 keys as +0.0 (they compare equal, so quantiles report 0.0 for either, and a column
/// whose min and max are both zero needs no search). `f32` values are keyed as their exact
/// `f64`. Never called with NaN (skipped before).
#[inline]
pub fn float_key(x: f64) -> u64 {
    let b = if x == 0.0 { 0 } else { x.to_bits() };
    if b & SIGN != 0 {
        !b
    } else {
        b | SIGN
    }
}

/// Inverse of [`float_key`].
#[inline]
pub fn float_from_key(k: u64) -> f64 {
    if k & SIGN != 0 {
        f64::from_bits(k & !SIGN)
    } else {
        f64::from_bits(!k)
    }
}

/// Order-preserving key of a signed integer: its two's complement with the sign bit flipped.
#[inline]
pub fn signed_key(x: i64) -> u64 {
    (x as u64) ^ SIGN
}

/// Inverse of [`signed_key`]: also turns any key back into an `i64` of the same order.
#[inline]
pub fn signed_from_key(k: u64) -> i64 {
    (k ^ SIGN) as i64
}

/// A native value of an integer or float column.
pub(crate) trait Num: Copy + PartialOrd + Default + Send + Sync + 'static {
    /// The smallest value (negative infinity for floats): the identity of `max`.
    const LO: Self;
    /// The largest value (infinity for floats): the identity of `min`.
    const HI: Self;
    /// The value as `f64` (exact up to 2^53 for integers).
    fn to_f64(self) -> f64;
    /// Whether the value is NaN (never for integers).
    fn is_nan(self) -> bool;
    /// The order-preserving key; only called on non-NaN values.
    fn key(self) -> u64;
}

macro_rules! num_signed {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const LO: Self = <$t>::MIN;
            const HI: Self = <$t>::MAX;
            #[inline(always)]
            fn to_f64(self) -> f64 { self as f64 }
            #[inline(always)]
            fn is_nan(self) -> bool { false }
            #[inline(always)]
            fn key(self) -> u64 { signed_key(self as i64) }
        }
    )*};
}
macro_rules! num_unsigned {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const LO: Self = <$t>::MIN;
            const HI: Self = <$t>::MAX;
            #[inline(always)]
            fn to_f64(self) -> f64 { self as f64 }
            #[inline(always)]
            fn is_nan(self) -> bool { false }
            #[inline(always)]
            fn key(self) -> u64 { self as u64 }
        }
    )*};
}
macro_rules! num_float {
    ($($t:ty),*) => {$(
        impl Num for $t {
            const LO: Self = <$t>::NEG_INFINITY;
            const HI: Self = <$t>::INFINITY;
            #[inline(always)]
            fn to_f64(self) -> f64 { self as f64 }
            #[inline(always)]
            fn is_nan(self) -> bool { <$t>::is_nan(self) }
            #[inline(always)]
            fn key(self) -> u64 { float_key(self as f64) }
        }
    )*};
}
num_signed!(i8, i16, i32, i64);
num_unsigned!(u8, u16, u32, u64);
num_float!(f32, f64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_preserve_order() {
        let xs = [
            f64::NEG_INFINITY,
            -1e300,
            -1.0,
            -f64::MIN_POSITIVE,
            0.0,
            5e-324,
            1.0,
            1e300,
            f64::INFINITY,
        ];
        for w in xs.windows(2) {
            assert!(float_key(w[0]) < float_key(w[1]), "{} {}", w[0], w[1]);
            // Read as i64 they keep the order too (sort's codes).
            assert!(signed_from_key(float_key(w[0])) < signed_from_key(float_key(w[1])));
        }
        for &x in &xs {
            assert_eq!(float_from_key(float_key(x)).to_bits(), x.to_bits());
        }
        assert_eq!(float_key(-0.0), float_key(0.0));
        let is = [i64::MIN, -1, 0, 1, i64::MAX];
        for w in is.windows(2) {
            assert!(signed_key(w[0]) < signed_key(w[1]));
        }
        for &x in &is {
            assert_eq!(signed_from_key(signed_key(x)), x);
        }
    }
}
