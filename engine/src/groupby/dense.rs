//! Dense group ids for integer-like keys whose values span a small range: the group of a
//! row is found by arithmetic and one array lookup, without hashing.
//!
//! A key (or each of several keys) is read as `i64`; over the non-null rows of every batch
//! its minimum `min`, maximum `max` and the greatest common divisor `step` of the
//! differences `value - min` give `(max - min) / step + 1` *slots*, and a row's slot is
//! `(value - min) / step` (keys combine in mixed radix). A date floored to the day and
//! stored in microseconds has a step of 86,400,000,000: a month partition spans ~31
//! slots whatever the order of its rows. The division is exact, so it is done as a shift
//! and a multiplication by the inverse of the step's odd part modulo 2^64; the same
//! inverse tests divisibility while the step is found, in one cheap pass.
//!
//! A table of `slots` entries maps each slot to a group id, given in order of first
//! appearance (as the hash table does, so both give the same partials). [`assign`]
//! declines (the caller then hashes) when the keys are not integer-like, there are more
//! than [`MAX_KEYS`] of them, the slots would exceed [`MAX_SLOTS`], or they would be
//! sparse next to the number of rows. Nothing here panics on any input: differences are
//! taken with wrapping arithmetic in `u64` (exact, since `max - min` < 2^64), and a slot
//! outside the table is reported as an internal error.

use arrow_array::ArrayRef;
use arrow_buffer::NullBuffer;
use arrow_schema::DataType;

use super::{int_key_values, int_key_width, internal, key_nulls};
use crate::error::Result;

/// Most slots of a dense table (its `u32` entries: 256 KiB).
pub(super) const MAX_SLOTS: u64 = 1 << 16;
/// Most key columns combined into one slot.
pub(super) const MAX_KEYS: usize = 4;
/// Below this many slots the step is not looked for (the table is small anyway).
const SMALL_RANGE: u64 = 4096;

/// Group ids per batch (0 = a null key) and the (batch, row) of each group's first row.
pub(super) type Assigned = (Vec<Vec<u32>>, Vec<(usize, usize)>);

/// Exact division of a multiple of `step` by `step`: a shift by the step's trailing zeros,
/// then a multiplication by the inverse of its odd part modulo 2^64.
#[derive(Debug, Clone, Copy)]
struct ExactDiv {
    shift: u32,
    odd: u64,
    inv: u64,
    /// `u64::MAX / odd`: the largest quotient of a multiple of `odd`.
    max_q: u64,
}

impl ExactDiv {
    /// `step` must be at least 1.
    fn new(step: u64) -> Self {
        let step = step.max(1);
        let shift = step.trailing_zeros();
        let odd = step >> shift;
        // Newton's iteration doubles the correct low bits each time: 3, 6, 12, 24, 48, 96.
        let mut inv = odd;
        for _ in 0..5 {
            inv = inv.wrapping_mul(2u64.wrapping_sub(odd.wrapping_mul(inv)));
        }
        ExactDiv {
            shift,
            odd,
            inv,
            max_q: u64::MAX / odd,
        }
    }

    /// `d / step` when `step` divides `d` (anything otherwise).
    #[inline(always)]
    fn div(&self, d: u64) -> u64 {
        (d >> self.shift).wrapping_mul(self.inv)
    }

    /// Whether `step` divides `d`.
    #[inline(always)]
    fn divides(&self, d: u64) -> bool {
        let low = d & ((1u64 << self.shift) - 1);
        low == 0 && self.div(d) <= self.max_q
    }

    fn step(&self) -> u64 {
        self.odd << self.shift
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// One key column's dimension: slot of a value = (value - min) / step, below `len`.
#[derive(Debug, Clone, Copy)]
struct Dim {
    min: i64,
    div: ExactDiv,
    len: u64,
}

/// Calls `f` on every value of `vals` that is not null in `nulls`.
#[inline(always)]
fn each_valid(vals: &[i64], nulls: Option<&NullBuffer>, mut f: impl FnMut(i64)) {
    match nulls {
        None => vals.iter().for_each(|&v| f(v)),
        Some(nb) => nb.valid_indices().for_each(|i| {
            if let Some(&v) = vals.get(i) {
                f(v)
            }
        }),
    }
}

/// Minimum and maximum of the non-null values of every batch (None if there are none).
fn min_max(cols: &[(Vec<i64>, Option<&NullBuffer>)]) -> Option<(i64, i64)> {
    let mut acc: Option<(i64, i64)> = None;
    for (vals, nulls) in cols {
        let (mut lo, mut hi) = (i64::MAX, i64::MIN);
        match nulls {
            // The common case vectorizes.
            None => {
                for &v in vals {
                    lo = lo.min(v);
                    hi = hi.max(v);
                }
            }
            Some(_) => each_valid(vals, *nulls, |v| {
                lo = lo.min(v);
                hi = hi.max(v);
            }),
        }
        if lo <= hi {
            acc = Some(match acc {
                None => (lo, hi),
                Some((a, b)) => (a.min(lo), b.max(hi)),
            });
        }
    }
    acc
}

/// The dimension of one key, or None if it would need more than `budget` slots.
fn dimension(cols: &[(Vec<i64>, Option<&NullBuffer>)], budget: u64) -> Option<Dim> {
    let Some((min, max)) = min_max(cols) else {
        // No non-null key at all: one (unused) slot.
        return Some(Dim {
            min: 0,
            div: ExactDiv::new(1),
            len: 1,
        });
    };
    // Exact: max - min < 2^64 for any two i64.
    let range = max.wrapping_sub(min) as u64;
    let mut div = ExactDiv::new(1);
    if range >= SMALL_RANGE.min(budget) {
        // `range` is itself a difference, so the step divides it; start there and take
        // the gcd with every difference it does not divide (at most 64 times: each new
        // step is a proper divisor of the one before).
        div = ExactDiv::new(range.max(1));
        for (vals, nulls) in cols {
            let mut ok = true;
            each_valid(vals, *nulls, |v| {
                let d = v.wrapping_sub(min) as u64;
                if ok && !div.divides(d) {
                    div = ExactDiv::new(gcd(div.step(), d));
                    ok = range / div.step() < budget;
                }
            });
            if !ok {
                return None;
            }
        }
    }
    let len = range / div.step() + 1;
    (len <= budget).then_some(Dim { min, div, len })
}

/// Dense group ids for `keys` (`keys[b]` are batch `b`'s key columns), or None when the
/// keys do not suit a dense table (see the module documentation).
pub(super) fn assign(keys: &[Vec<ArrayRef>], key_types: &[DataType]) -> Result<Option<Assigned>> {
    if key_types.is_empty()
        || key_types.len() > MAX_KEYS
        || key_types.iter().any(|t| int_key_width(t).is_none())
    {
        return Ok(None);
    }
    let nulls: Vec<Option<NullBuffer>> = keys.iter().map(|cols| key_nulls(cols)).collect();
    let rows: u64 = keys
        .iter()
        .map(|cols| cols.first().map_or(0, |c| c.len() as u64))
        .sum();
    // A table much larger than the rows would cost more to clear than hashing them.
    let budget = MAX_SLOTS.min(rows.saturating_mul(8).saturating_add(1024));
    let mut values: Vec<Vec<Vec<i64>>> = vec![Vec::with_capacity(key_types.len()); keys.len()];
    let mut dims = Vec::with_capacity(key_types.len());
    let mut total = 1u64;
    for j in 0..key_types.len() {
        let mut cols = Vec::with_capacity(keys.len());
        for (b, batch) in keys.iter().enumerate() {
            let col = batch.get(j).ok_or_else(|| internal("key column missing"))?;
            let vals = int_key_values(col.as_ref())
                .ok_or_else(|| internal("integer key of unexpected type"))?;
            cols.push((vals, nulls[b].as_ref()));
        }
        let Some(dim) = dimension(&cols, budget / total) else {
            return Ok(None);
        };
        total = total.saturating_mul(dim.len);
        if total > budget {
            return Ok(None);
        }
        dims.push(dim);
        for (b, (vals, _)) in cols.into_iter().enumerate() {
            values[b].push(vals);
        }
    }
    let mut table = vec![0u32; total as usize];
    let mut next = 1u32;
    let mut first = Vec::new();
    let mut gids = Vec::with_capacity(keys.len());
    for (b, cols) in values.iter().enumerate() {
        let n = cols.first().map_or(0, |c| c.len());
        // Slots, one key at a time (wrapping: a null row's slot is garbage, never used).
        let mut ids = vec![0u32; n];
        for (vals, dim) in cols.iter().zip(&dims) {
            let (min, div, len) = (dim.min, dim.div, dim.len as u32);
            for (id, &v) in ids.iter_mut().zip(vals) {
                let q = div.div(v.wrapping_sub(min) as u64) as u32;
                *id = id.wrapping_mul(len).wrapping_add(q);
            }
        }
        let mut lookup = |i: usize, id: &mut u32| -> Result<()> {
            let g = table
                .get_mut(*id as usize)
                .ok_or_else(|| internal("dense key slot out of range"))?;
            if *g == 0 {
                *g = next;
                next += 1;
                first.push((b, i));
            }
            *id = *g;
            Ok(())
        };
        match &nulls[b] {
            None => {
                for (i, id) in ids.iter_mut().enumerate() {
                    lookup(i, id)?;
                }
            }
            Some(nb) => {
                for (i, id) in ids.iter_mut().enumerate() {
                    if nb.is_valid(i) {
                        lookup(i, id)?;
                    } else {
                        *id = 0;
                    }
                }
            }
        }
        gids.push(ids);
    }
    Ok(Some((gids, first)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_division_and_divisibility() {
        for step in [
            1u64,
            2,
            3,
            7,
            37,
            1 << 20,
            86_400_000_000,
            u64::MAX,
            u64::MAX / 3,
        ] {
            let d = ExactDiv::new(step);
            assert_eq!(d.step(), step);
            for q in [0u64, 1, 2, 30, 65_535] {
                if let Some(x) = q.checked_mul(step) {
                    assert!(d.divides(x), "{step} divides {x}");
                    assert_eq!(d.div(x), q);
                }
            }
            if step > 1 {
                for x in [1u64, step - 1, step.wrapping_add(1), u64::MAX - 1] {
                    assert_eq!(d.divides(x), x % step == 0, "{step} divides {x}?");
                }
            }
        }
    }

    #[test]
    fn step_is_the_gcd_of_differences() {
        let day = 86_400_000_000i64;
        let vals: Vec<i64> = [3, 0, 30, 7, 11]
            .iter()
            .map(|d| 1_199_145_600_000_000 + d * day)
            .collect();
        let dim = dimension(&[(vals, None)], MAX_SLOTS).expect("dense");
        assert_eq!((dim.div.step(), dim.len), (day as u64, 31));
        // Extremes: the whole i64 range in two values is one step.
        let dim =
            dimension(&[(vec![i64::MIN, i64::MAX, i64::MIN], None)], MAX_SLOTS).expect("dense");
        assert_eq!((dim.div.step(), dim.len), (u64::MAX, 2));
        // Coprime differences over a large range: too many slots.
        assert!(dimension(&[(vec![0, 1, 1 << 40], None)], MAX_SLOTS).is_none());
    }

    use std::sync::Arc;

    use arrow_array::{Int32Array, Int64Array, TimestampMicrosecondArray};

    use super::super::{assign_groups, Paths};

    /// Dense ids of one-column batches, checked equal to the hash table's.
    fn dense_ids(batches: Vec<Vec<ArrayRef>>) -> Option<Vec<Vec<u32>>> {
        let types: Vec<DataType> = batches[0].iter().map(|c| c.data_type().clone()).collect();
        let got = assign(&batches, &types).expect("assign");
        let hashed = assign_groups(&batches, &types, Paths::LEGACY).expect("hash");
        got.map(|(gids, first)| {
            assert_eq!(gids, hashed.gids, "same ids as the hash table");
            assert_eq!(first, hashed.first, "same first rows");
            gids
        })
    }

    #[test]
    fn days_in_any_order_are_dense() {
        let day = 86_400_000_000i64;
        let mut x = 12345u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let batch = |n: usize, next: &mut dyn FnMut() -> u64| -> Vec<ArrayRef> {
            let ts = TimestampMicrosecondArray::from_iter((0..n).map(|_| {
                let r = next();
                (!r.is_multiple_of(50)).then_some(1_199_145_600_000_000 + (r % 31) as i64 * day)
            }));
            vec![Arc::new(ts.with_timezone("UTC"))]
        };
        let ids = dense_ids(vec![batch(5000, &mut next), batch(3000, &mut next)]).expect("dense");
        assert_eq!(ids.iter().flatten().copied().max(), Some(31));
    }

    #[test]
    fn the_threshold_and_two_keys() {
        let keys =
            |vals: Vec<i64>| -> Vec<Vec<ArrayRef>> { vec![vec![Arc::new(Int64Array::from(vals))]] };
        // 65,536 slots (with enough rows) is dense; 65,537 is not.
        let mut at = (0..=65_535i64).map(|k| k * 5 - 3).collect::<Vec<_>>();
        at.reverse();
        assert!(dense_ids(keys(at.clone())).is_some());
        at.push(65_536 * 5 - 3);
        assert!(dense_ids(keys(at)).is_none());
        // Few rows over a wide range: sparse, hashed.
        assert!(dense_ids(keys(vec![0, 40_000, 7])).is_none());
        // Year and month: 12 x 12 slots.
        let year = Int32Array::from_iter_values((0..2000).map(|i| 2008 + (i * 7 % 144) / 12));
        let month = Int32Array::from_iter_values((0..2000).map(|i| 1 + (i * 7 % 144) % 12));
        let ids = dense_ids(vec![vec![Arc::new(year), Arc::new(month)]]).expect("dense");
        assert_eq!(ids[0].iter().copied().max(), Some(144));
    }
}
