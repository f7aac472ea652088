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

/// Sums per group kept by [`sum_rows_counted`]: row `i` adds to copy `i % COPIES`, so
/// rows of one group close together (as in data grouped by station, then time) do not
/// wait on each other's store.
const COPIES: usize = 4;

/// [`sum_rows`] given `rows`, the number of rows of each group in this batch: the count
/// of a group starts at its rows and each null or NaN row takes one off, so a value is
/// one load-add-store (its sum) instead of two, into one of [`COPIES`] sums per group.
/// Columns that are more than half null go by [`sum_rows`] (their valid rows only).
pub(super) fn sum_rows_counted<T: Num>(
    gids: &[u32],
    vals: &[T],
    nulls: Option<&NullBuffer>,
    rows: &[u32],
    st: &mut [SumLane],
) {
    let n = gids.len().min(vals.len());
    let null_count = nulls.map_or(0, |nb| nb.null_count());
    if null_count * 2 > n || rows.len() != st.len() {
        return sum_rows(gids, vals, nulls, st);
    }
    let (gids, vals) = (&gids[..n], &vals[..n]);
    for (s, &r) in st.iter_mut().zip(rows) {
        s.n += r as u64;
    }
    let mut sums = vec![[0.0f64; COPIES]; st.len()];
    // A NaN is rare: a predictable branch, not a second store per value.
    #[inline(always)]
    fn one(sum: &mut f64, s: &mut SumLane, x: f64) {
        if x.is_nan() {
            s.n = s.n.wrapping_sub(1);
        } else {
            *sum += x;
        }
    }
    // Rows `base..base + g.len()`, `base` a multiple of COPIES; `mask(i)` all ones for a
    // valid row `base + i`, else 0 (the value then adds 0.0).
    #[inline(always)]
    fn add<T: Num>(
        g: &[u32],
        v: &[T],
        mask: impl Fn(usize) -> u64,
        sums: &mut [[f64; COPIES]],
        st: &mut [SumLane],
    ) {
        let mut gc = g.chunks_exact(COPIES);
        let mut vc = v.chunks_exact(COPIES);
        let mut at = 0;
        for (g, v) in (&mut gc).zip(&mut vc) {
            for j in 0..COPIES {
                let x = f64::from_bits(v[j].to_f64().to_bits() & mask(at + j));
                let g = g[j] as usize;
                one(&mut sums[g][j], &mut st[g], x);
            }
            at += COPIES;
        }
        for (j, (&g, &v)) in gc.remainder().iter().zip(vc.remainder()).enumerate() {
            let x = f64::from_bits(v.to_f64().to_bits() & mask(at + j));
            let g = g as usize;
            one(&mut sums[g][j], &mut st[g], x);
        }
    }
    match nulls {
        None => add(gids, vals, |_| u64::MAX, &mut sums, st),
        Some(nb) => {
            let bits = nb.inner().inner().bit_chunks(nb.offset(), n);
            let mut base = 0;
            let mut word = |w: u64, len: usize, base: usize| {
                let (g64, v64) = (&gids[base..base + len], &vals[base..base + len]);
                if w == u64::MAX {
                    add(g64, v64, |_| u64::MAX, &mut sums, st);
                } else {
                    // A null row adds 0.0 (as the row-by-row path did) and takes one off
                    // its group's count.
                    add(g64, v64, |i| ((w >> i) & 1).wrapping_neg(), &mut sums, st);
                    let mut z = !w & (u64::MAX >> (64 - len));
                    while z != 0 {
                        let s = &mut st[g64[z.trailing_zeros() as usize] as usize];
                        s.n = s.n.wrapping_sub(1);
                        z &= z - 1;
                    }
                }
            };
            for w in bits.iter() {
                word(w, 64, base);
                base += 64;
            }
            if n > base {
                word(bits.remainder_bits(), n - base, base);
            }
        }
    }
    for (s, c) in st.iter_mut().zip(&sums) {
        s.s += (c[0] + c[1]) + (c[2] + c[3]);
    }
}

/// Rows per group slot of one batch (`slots` slots).
pub(super) fn rows_per_group(gids: &[u32], slots: usize) -> Vec<u32> {
    let mut rows = vec![0u32; slots];
    for &g in gids {
        if let Some(r) = rows.get_mut(g as usize) {
            *r += 1;
        }
    }
    rows
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
    fn counted_sums_equal_plain_sums() {
        let n = 1000;
        let gids: Vec<u32> = (0..n).map(|i| (i * 7 % 13) as u32).collect();
        let vals: Vec<f64> = (0..n)
            .map(|i| {
                if i % 37 == 0 {
                    f64::NAN
                } else {
                    i as f64 * 0.1 - 20.0
                }
            })
            .collect();
        let rows = rows_per_group(&gids, 13);
        for (null_every, offset) in [(0usize, 0usize), (5, 0), (5, 3), (1, 1), (2, 0)] {
            let valid: Vec<bool> = (0..n + offset)
                .map(|i| null_every == 0 || i % null_every != 0 || i % 3 == 0)
                .collect();
            let nb = NullBuffer::from(valid).slice(offset, n);
            let nulls = (null_every > 0).then_some(&nb);
            let (mut a, mut b) = (vec![SumLane::default(); 13], vec![SumLane::default(); 13]);
            sum_rows(&gids, &vals, nulls, &mut a);
            sum_rows_counted(&gids, &vals, nulls, &rows, &mut b);
            for (x, y) in a.iter().zip(&b) {
                assert_eq!(x.n, y.n, "nulls {null_every}");
                assert!((x.s - y.s).abs() <= 1e-12 * x.s.abs(), "nulls {null_every}");
            }
        }
    }

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
