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

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef};
use arrow_buffer::NullBuffer;
use arrow_schema::{DataType, TimeUnit};

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

/// Rows of each batch sampled (evenly spaced, the first and last included) for the
/// minimum, maximum and step that [`assign`] then verifies on every row.
const SAMPLE: usize = 512;

/// The values of one key column of one batch as `i64`: borrowed when the column already
/// is 64-bit signed and has no null key rows, else a copy whose null key rows hold the
/// batch's first non-null key value (so every row has a valid slot; their group is set
/// to 0 at the end).
type KeyVals<'a> = std::borrow::Cow<'a, [i64]>;

/// The `i64` values of a 64-bit signed integer-like array, without copying.
fn i64_slice(a: &dyn Array) -> Option<&[i64]> {
    macro_rules! get {
        ($t:ty) => {
            a.as_primitive_opt::<$t>().map(|p| p.values().as_ref())
        };
    }
    match a.data_type() {
        DataType::Int64 => get!(Int64Type),
        DataType::Date64 => get!(Date64Type),
        DataType::Timestamp(TimeUnit::Second, _) => get!(TimestampSecondType),
        DataType::Timestamp(TimeUnit::Millisecond, _) => get!(TimestampMillisecondType),
        DataType::Timestamp(TimeUnit::Microsecond, _) => get!(TimestampMicrosecondType),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => get!(TimestampNanosecondType),
        DataType::Time64(TimeUnit::Microsecond) => get!(Time64MicrosecondType),
        DataType::Time64(TimeUnit::Nanosecond) => get!(Time64NanosecondType),
        DataType::Duration(TimeUnit::Second) => get!(DurationSecondType),
        DataType::Duration(TimeUnit::Millisecond) => get!(DurationMillisecondType),
        DataType::Duration(TimeUnit::Microsecond) => get!(DurationMicrosecondType),
        DataType::Duration(TimeUnit::Nanosecond) => get!(DurationNanosecondType),
        _ => None,
    }
}

/// Key `col` of one batch as [`KeyVals`]; `fill` is the first non-null key row.
fn key_vals<'a>(col: &'a ArrayRef, nulls: Option<&NullBuffer>, fill: usize) -> Result<KeyVals<'a>> {
    if nulls.is_none() {
        if let Some(v) = i64_slice(col.as_ref()) {
            return Ok(KeyVals::Borrowed(v));
        }
    }
    let mut v =
        int_key_values(col.as_ref()).ok_or_else(|| internal("integer key of unexpected type"))?;
    if let Some(nb) = nulls {
        let x = v.get(fill).copied().unwrap_or(0);
        for (i, v) in v.iter_mut().enumerate() {
            if nb.is_null(i) {
                *v = x;
            }
        }
    }
    Ok(KeyVals::Owned(v))
}

/// Calls `f` on [`SAMPLE`] evenly spaced values of `vals` (the first and last included),
/// or on every value if `all`.
#[inline(always)]
fn each_sampled(vals: &[i64], all: bool, mut f: impl FnMut(i64)) {
    let stride = if all { 1 } else { (vals.len() / SAMPLE).max(1) };
    vals.iter().step_by(stride).for_each(|&v| f(v));
    if let Some(&last) = vals.last() {
        f(last);
    }
}

/// The dimension of one key over `cols` (one per batch, every row valid), or None if it
/// would need more than `budget` slots. With `all` false, from [`SAMPLE`] rows of each
/// batch: then a row may fall outside it, which [`slots`] reports.
fn dimension(cols: &[&[i64]], budget: u64, all: bool) -> Option<Dim> {
    let (mut min, mut max) = (i64::MAX, i64::MIN);
    for vals in cols {
        each_sampled(vals, all, |v| {
            min = min.min(v);
            max = max.max(v);
        });
    }
    if min > max {
        // No rows: one (unused) slot.
        return Some(Dim {
            min: 0,
            div: ExactDiv::new(1),
            len: 1,
        });
    }
    // Exact: max - min < 2^64 for any two i64.
    let range = max.wrapping_sub(min) as u64;
    let mut div = ExactDiv::new(1);
    if range >= SMALL_RANGE.min(budget) {
        // `range` is itself a difference, so the step divides it; start there and take
        // the gcd with every difference it does not divide (at most 64 times: each new
        // step is a proper divisor of the one before).
        div = ExactDiv::new(range.max(1));
        for vals in cols {
            let mut ok = true;
            each_sampled(vals, all, |v| {
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

/// The dimensions of every key (`values[j][b]`: key `j`, batch `b`), and their product,
/// or None if it passes `budget`.
fn dimensions(values: &[Vec<&[i64]>], budget: u64, all: bool) -> Option<(Vec<Dim>, u64)> {
    let mut dims = Vec::with_capacity(values.len());
    let mut total = 1u64;
    for cols in values {
        let dim = dimension(cols, budget / total, all)?;
        total = total.saturating_mul(dim.len);
        if total > budget {
            return None;
        }
        dims.push(dim);
    }
    Some((dims, total))
}

/// Slots of one key's values, by `dim`: `Err(())` if a value is not `min` plus a multiple
/// of the step below `len` (a sampled dimension missed it).
#[inline(always)]
fn slot(dim: &Dim, low: u64, v: i64) -> std::result::Result<u64, ()> {
    let d = v.wrapping_sub(dim.min) as u64;
    let q = dim.div.div(d);
    if (d & low) != 0 || q >= dim.len {
        return Err(());
    }
    Ok(q)
}

/// Group ids of every batch through `table` (slot to group id), or `Ok(None)` if a value
/// does not fit `dims` (a sampled dimension missed it).
fn fill_ids(
    values: &[Vec<&[i64]>],
    dims: &[Dim],
    table: &mut [u32],
    gids: &mut [Vec<u32>],
    skip: &[bool],
    nulls: &[Option<NullBuffer>],
) -> Result<Option<Vec<(usize, usize)>>> {
    let mut next = 1u32;
    let mut first = Vec::new();
    let lows: Vec<u64> = dims.iter().map(|d| (1u64 << d.div.shift) - 1).collect();
    for (b, ids) in gids.iter_mut().enumerate() {
        if skip.get(b).copied().unwrap_or(true) {
            continue;
        }
        let nb = nulls.get(b).and_then(Option::as_ref);
        let mut lookup = |i: usize, s: u64, id: &mut u32| -> Result<()> {
            let g = table
                .get_mut(s as usize)
                .ok_or_else(|| internal("dense key slot out of range"))?;
            if *g == 0 {
                if nb.is_some_and(|nb| nb.is_null(i)) {
                    // A null key row holds another row's value: never a group's first.
                    return Ok(());
                }
                *g = next;
                next += 1;
                first.push((b, i));
            }
            *id = *g;
            Ok(())
        };
        if let ([cols], [dim], [low]) = (values, dims, lows.as_slice()) {
            // One key: slot and group in one pass.
            let vals = cols.get(b).ok_or_else(|| internal("key batch missing"))?;
            for (i, (id, &v)) in ids.iter_mut().zip(vals.iter()).enumerate() {
                let Ok(s) = slot(dim, *low, v) else {
                    return Ok(None);
                };
                lookup(i, s, id)?;
            }
        } else {
            // Several: the slots one key at a time (mixed radix), then the groups.
            let mut slots = vec![0u64; ids.len()];
            for ((cols, dim), low) in values.iter().zip(dims).zip(&lows) {
                let vals = cols.get(b).ok_or_else(|| internal("key batch missing"))?;
                for (s, &v) in slots.iter_mut().zip(vals.iter()) {
                    let Ok(q) = slot(dim, *low, v) else {
                        return Ok(None);
                    };
                    *s = *s * dim.len + q;
                }
            }
            for (i, (id, &s)) in ids.iter_mut().zip(&slots).enumerate() {
                lookup(i, s, id)?;
            }
        }
    }
    Ok(Some(first))
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
    // The first non-null key row of each batch; a batch with none is skipped (all 0).
    let fill: Vec<Option<usize>> = keys
        .iter()
        .zip(&nulls)
        .map(|(cols, nb)| match nb {
            None => cols.first().is_some_and(|c| !c.is_empty()).then_some(0),
            Some(nb) => nb.valid_indices().next(),
        })
        .collect();
    let skip: Vec<bool> = fill.iter().map(Option::is_none).collect();
    // owned[j][b]: key j of batch b (empty for a skipped batch).
    let mut owned: Vec<Vec<KeyVals>> = Vec::with_capacity(key_types.len());
    for j in 0..key_types.len() {
        let mut cols = Vec::with_capacity(keys.len());
        for (b, batch) in keys.iter().enumerate() {
            let col = batch.get(j).ok_or_else(|| internal("key column missing"))?;
            cols.push(match fill[b] {
                Some(at) => key_vals(col, nulls[b].as_ref(), at)?,
                None => KeyVals::Borrowed(&[]),
            });
        }
        owned.push(cols);
    }
    let values: Vec<Vec<&[i64]>> = owned
        .iter()
        .map(|cols| cols.iter().map(|c| c.as_ref()).collect())
        .collect();
    let mut gids: Vec<Vec<u32>> = keys
        .iter()
        .map(|cols| vec![0u32; cols.first().map_or(0, |c| c.len())])
        .collect();
    // From a sample first; if a row falls outside it, from every row.
    let mut first = None;
    for all in [false, true] {
        let Some((dims, total)) = dimensions(&values, budget, all) else {
            return Ok(None);
        };
        let mut table = vec![0u32; total as usize];
        first = fill_ids(&values, &dims, &mut table, &mut gids, &skip, &nulls)?;
        if first.is_some() {
            break;
        }
    }
    let Some(first) = first else {
        return Ok(None); // unreachable: every row fits the exact dimensions
    };
    for (ids, nb) in gids.iter_mut().zip(&nulls) {
        if let Some(nb) = nb {
            for (i, id) in ids.iter_mut().enumerate() {
                if nb.is_null(i) {
                    *id = 0;
                }
            }
        }
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
        let dim = dimension(&[&vals], MAX_SLOTS, true).expect("dense");
        assert_eq!((dim.div.step(), dim.len), (day as u64, 31));
        // Extremes: the whole i64 range in two values is one step.
        let dim = dimension(&[&[i64::MIN, i64::MAX, i64::MIN]], MAX_SLOTS, true).expect("dense");
        assert_eq!((dim.div.step(), dim.len), (u64::MAX, 2));
        // Coprime differences over a large range: too many slots.
        assert!(dimension(&[&[0, 1, 1 << 40]], MAX_SLOTS, true).is_none());
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
    fn a_step_or_range_the_sample_misses_is_found() {
        let day = 86_400_000_000i64;
        let n = SAMPLE * 8;
        // Evenly spaced sampled rows hold even days only; an odd day sits between them.
        let mut vals: Vec<i64> = (0..n as i64).map(|i| (i % 16) * 2 * day).collect();
        vals[8 * 100 + 3] = 7 * day;
        let ids = dense_ids(vec![vec![Arc::new(Int64Array::from(vals.clone()))]]);
        assert_eq!(ids.expect("dense")[0].iter().copied().max(), Some(17));
        // A value below the sampled minimum, one above the maximum.
        vals[8 * 200 + 5] = -3 * day;
        vals[8 * 300 + 5] = 40 * day;
        let ids = dense_ids(vec![vec![Arc::new(Int64Array::from(vals))]]);
        assert_eq!(ids.expect("dense")[0].iter().copied().max(), Some(19));
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
