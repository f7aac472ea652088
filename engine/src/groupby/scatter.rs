//! Column kernels for batches whose group ids come in any order (no runs of equal keys to
//! aggregate run by run): one tight loop per column over the whole batch, the value slice
//! zipped with the group-id slice, accumulating into per-group arrays (small enough to
//! stay in L1 for a few hundred groups).
//!
//! Each kernel is monomorphized per native type, with no per-row dispatch. Validity is
//! handled a 64-row word of the bitmap at a time: a word with every row valid runs the
//! plain loop, any other word visits only its set bits (so a column that is 90% null
//! costs a tenth). NaN values are skipped as everywhere in the group-by (not counted, not
//! summed), by a branch-free select; integer types compile the test away.
//!
//! The sums add each group's values in row order, as the row-by-row path they replace
//! did, so both give bit-identical partials.

use arrow_buffer::NullBuffer;

use super::{DevLane, Lane, SumLane};
use crate::num::Num;

/// Calls `f(row)` for every valid row of `0..n`, runs of 64 valid rows as a plain loop.
#[inline(always)]
fn for_valid(nulls: Option<&NullBuffer>, n: usize, mut f: impl FnMut(usize)) {
    match nulls {
        None => (0..n).for_each(f),
        Some(nb) => {
            let n = n.min(nb.len());
            let bits = nb.inner().inner().bit_chunks(nb.offset(), n);
            let mut base = 0;
            for word in bits.iter() {
                if word == u64::MAX {
                    (base..base + 64).for_each(&mut f);
                } else {
                    let mut w = word;
                    while w != 0 {
                        f(base + w.trailing_zeros() as usize);
                        w &= w - 1;
                    }
                }
                base += 64;
            }
            let mut w = bits.remainder_bits();
            while w != 0 {
                f(base + w.trailing_zeros() as usize);
                w &= w - 1;
            }
        }
    }
}

/// Count and sum of the valid, non-NaN values of one batch into `st[gid]`.
pub(super) fn sum_rows<T: Num>(
    gids: &[u32],
    vals: &[T],
    nulls: Option<&NullBuffer>,
    st: &mut [SumLane],
) {
    let n = gids.len().min(vals.len());
    let (gids, vals) = (&gids[..n], &vals[..n]);
    #[inline(always)]
    fn one<T: Num>(s: &mut SumLane, v: T) {
        let x = v.to_f64();
        let ok = !x.is_nan();
        s.n += ok as u64;
        s.s += if ok { x } else { 0.0 };
    }
    match nulls {
        None => {
            for (&g, &v) in gids.iter().zip(vals) {
                one(&mut st[g as usize], v);
            }
        }
        Some(_) => for_valid(nulls, n, |i| one(&mut st[gids[i] as usize], vals[i])),
    }
}

/// Deviations from each group's `means` of the valid, non-NaN values of one batch.
pub(super) fn dev_rows<T: Num>(
    gids: &[u32],
    vals: &[T],
    nulls: Option<&NullBuffer>,
    means: &[f64],
    st: &mut [DevLane],
) {
    let n = gids.len().min(vals.len());
    let (gids, vals) = (&gids[..n], &vals[..n]);
    #[inline(always)]
    fn one<T: Num>(s: &mut DevLane, m: f64, v: T) {
        let x = v.to_f64() - m;
        let x = if x.is_nan() { 0.0 } else { x };
        s.d += x;
        s.q += x * x;
    }
    match nulls {
        None => {
            for (&g, &v) in gids.iter().zip(vals) {
                let g = g as usize;
                one(&mut st[g], means[g], v);
            }
        }
        Some(_) => for_valid(nulls, n, |i| {
            let g = gids[i] as usize;
            one(&mut st[g], means[g], vals[i]);
        }),
    }
}

/// Any [`Lane`] (min/max) over the valid, non-NaN values of one batch.
pub(super) fn lane_rows<T: Num, L: Lane<T>>(
    gids: &[u32],
    vals: &[T],
    nulls: Option<&NullBuffer>,
    ctx: &[L::Ctx],
    st: &mut [L],
) {
    let n = gids.len().min(vals.len());
    let (gids, vals) = (&gids[..n], &vals[..n]);
    match nulls {
        None => {
            for (&g, &v) in gids.iter().zip(vals) {
                let g = g as usize;
                st[g].push(v, !v.is_nan(), ctx[g]);
            }
        }
        Some(_) => for_valid(nulls, n, |i| {
            let g = gids[i] as usize;
            let v = vals[i];
            st[g].push(v, !v.is_nan(), ctx[g]);
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn for_valid_visits_exactly_the_valid_rows() {
        for n in [0usize, 1, 63, 64, 65, 200] {
            for offset in [0usize, 3] {
                let bits: Vec<bool> = (0..n + offset).map(|i| i % 3 != 0 || i > 130).collect();
                let nb = NullBuffer::from(bits.clone()).slice(offset, n);
                let mut seen = Vec::new();
                for_valid(Some(&nb), n, |i| seen.push(i));
                let want: Vec<usize> = (0..n).filter(|&i| bits[offset + i]).collect();
                assert_eq!(seen, want, "n {n} offset {offset}");
            }
        }
    }
}
