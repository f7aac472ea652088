//! Sort kernels: the pure, per-partition pieces of the distributed `sort_by(key)` /
//! `set_index(key)` (the scheduler and the network side live elsewhere).
//!
//! This module owns the key order, the statistics that decide whether data must move,
//! and the kernels that move and sort rows:
//!
//! - [`key_bounds`] gives a partition's min and max key (nulls and NaN ignored);
//!   [`ranged_order`] (and [`ranged_order_nulls_last`], which also looks at
//!   [`invalid_count`]) tells from those bounds whether the partitions are already
//!   *ranged* by the key, and in which order. Then every partition is sorted on its own
//!   with [`sort_batches`] and no row moves (the fast path: ISD is split by year/month, so
//!   a day key never crosses partitions).
//! - Otherwise (the range shuffle): every worker draws [`sample_keys`] from each of its
//!   partitions; the scheduler merges them with [`choose_boundaries`] into `ranges - 1`
//!   boundaries; every worker cuts its batches with [`split_by_ranges`] and sends range
//!   `i` to its owner, which concatenates what it receives and runs [`sort_batches`].
//!   Samples and boundaries are plain [`ArrayRef`]s of the key's type, so they travel as
//!   Arrow IPC.
//!
//! # Order
//!
//! Ascending; nulls last, and for floats NaN counts as null (pandas' `sort_values` with
//! `na_position='last'`), `-0.0` equals `0.0`. Sorting is stable: equal keys (and the
//! null/NaN tail) keep their input order. Supported key types: Int8/16/32/64,
//! UInt8/16/32, Date32/64, Timestamp (any unit, any time zone), Float32/64, Utf8, and
//! dictionaries (any integer key type) of Utf8. Bounds, samples and boundaries of a
//! dictionary key are of its value type (Utf8).
//!
//! # Algorithm
//!
//! Every key is turned into an order-preserving code: integers, dates and timestamps are
//! widened to `i64`; floats are mapped to `i64` by their IEEE bits (negative values with
//! all bits but the sign flipped), so integer order is float order; a dictionary's values
//! are sorted once and each row gets the dense rank of its value. Plain strings are
//! compared as `&str`. [`sort_batches`] then checks whether the input is already sorted
//! (it returns the batches untouched, no copy), else sorts `(code, row)` pairs: by a
//! stable counting sort when the codes span a small range (days, years, dictionary
//! ranks); else, when the code offset and the row fit one `u64` together (timestamps),
//! by a stable LSD radix sort of the packed words (11-bit digits, digits shared by every
//! key skipped); else (floats) by pattern-defeating quicksort of the pairs (stable since
//! rows are distinct). It then gathers every column with one `take` over the
//! concatenated batches.
//! [`split_by_ranges`] computes each row's range by binary search of its code among the
//! boundaries (once per dictionary value for dictionaries), slices runs when a batch is
//! ordered by range, else groups row indices by range with a counting pass and `take`s
//! each range; the pieces of one range are concatenated into one batch (which also
//! compacts dictionaries).
//!
//! # Ties across partitions
//!
//! [`ranged_order`] accepts partitions that share an endpoint (`max` of one equal to
//! `min` of the next, e.g. a `year` key over month partitions): concatenating them in
//! the returned order is still sorted, and partitions with equal bounds keep their input
//! order (so the result is stable with respect to that order). A key value may then
//! appear in two adjacent partitions: partition boundaries are closed intervals
//! `[min, max]` that may touch. The range shuffle never splits equal keys (a range is
//! `[b[i-1], b[i])`), so its partitions never touch.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    new_empty_array, Array, ArrayRef, ArrowPrimitiveType, RecordBatch, StringArray, UInt32Array,
};
use arrow_buffer::BooleanBuffer;
use arrow_schema::{ArrowError, DataType, TimeUnit};
use arrow_select::concat::{concat, concat_batches};
use arrow_select::take::{take, take_record_batch};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::error::{EngineError, Result};

/// How a key type is compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Integer-like or float: order-preserving `i64` codes.
    Code,
    /// Plain Utf8: compared as `&str`.
    Str,
    /// Dictionary of Utf8: compared by value.
    Dict,
}

/// The kind of a key type, or None when it is not supported.
fn kind_of(dt: &DataType) -> Option<Kind> {
    use DataType::*;
    match dt {
        Int8
        | Int16
        | Int32
        | Int64
        | UInt8
        | UInt16
        | UInt32
        | Date32
        | Date64
        | Timestamp(_, _)
        | Float32
        | Float64 => Some(Kind::Code),
        Utf8 => Some(Kind::Str),
        Dictionary(k, v) if k.is_dictionary_key_type() && **v == Utf8 => Some(Kind::Dict),
        _ => None,
    }
}

/// The type of bounds, samples and boundaries for a key type (value type of dictionaries).
fn value_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Dictionary(_, v) => (**v).clone(),
        other => other.clone(),
    }
}

fn arg_err(msg: String) -> EngineError {
    EngineError::Argument(msg)
}

fn arrow_err(key: &str, what: &str, e: ArrowError) -> EngineError {
    arg_err(format!("sort by '{key}': {what}: {e}"))
}

fn unsupported(key: &str, dt: &DataType) -> EngineError {
    arg_err(format!(
        "sort by '{key}': key type {dt} is not supported (integers, dates, timestamps, \
         floats, Utf8 and dictionaries of Utf8 are)"
    ))
}

/// The key column of every batch, checked to exist and to share one supported type.
fn key_columns<'a>(batches: &'a [RecordBatch], key: &str) -> Result<(Vec<&'a ArrayRef>, Kind)> {
    let mut cols = Vec::with_capacity(batches.len());
    for batch in batches {
        let col = batch.column_by_name(key).ok_or_else(|| {
            let names: Vec<&str> = batch
                .schema_ref()
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect();
            arg_err(format!(
                "sort: no column named '{key}' (columns: {})",
                names.join(", ")
            ))
        })?;
        cols.push(col);
    }
    let Some(first) = cols.first() else {
        return Ok((cols, Kind::Code));
    };
    let dt = first.data_type();
    let kind = kind_of(dt).ok_or_else(|| unsupported(key, dt))?;
    if let Some(other) = cols.iter().find(|c| c.data_type() != dt) {
        return Err(arg_err(format!(
            "sort by '{key}': the key column is {dt} in one batch and {} in another",
            other.data_type()
        )));
    }
    Ok((cols, kind))
}

// ---------------------------------------------------------------------------------------
// Codes
// ---------------------------------------------------------------------------------------

/// Order-preserving `i64` code of a float; NaN must be excluded by the caller.
#[inline]
fn float_code(v: f64) -> i64 {
    let v = if v == 0.0 { 0.0 } else { v };
    let bits = v.to_bits() as i64;
    bits ^ ((((bits >> 63) as u64) >> 1) as i64)
}

fn widen<T: ArrowPrimitiveType>(arr: &dyn Array) -> Cow<'_, [i64]>
where
    T::Native: Into<i64>,
{
    Cow::Owned(
        arr.as_primitive::<T>()
            .values()
            .iter()
            .map(|&v| v.into())
            .collect(),
    )
}

fn borrow_i64<T: ArrowPrimitiveType<Native = i64>>(arr: &dyn Array) -> Cow<'_, [i64]> {
    Cow::Borrowed(arr.as_primitive::<T>().values().as_ref())
}

/// Codes of an integer-like or float column and its valid rows (non-null, non-NaN;
/// None when every row is valid). None when the type is not of [`Kind::Code`].
fn codes(arr: &dyn Array) -> Option<(Cow<'_, [i64]>, Option<BooleanBuffer>)> {
    use DataType::*;
    let nulls = arr
        .nulls()
        .filter(|n| n.null_count() > 0)
        .map(|n| n.inner().clone());
    let floats = |vals: Vec<f64>| {
        let nan = BooleanBuffer::collect_bool(vals.len(), |i| !vals[i].is_nan());
        let valid = if nan.count_set_bits() == vals.len() {
            nulls.clone()
        } else {
            Some(match &nulls {
                Some(n) => n & &nan,
                None => nan,
            })
        };
        let c: Vec<i64> = vals
            .iter()
            .map(|&v| if v.is_nan() { 0 } else { float_code(v) })
            .collect();
        (Cow::Owned(c), valid)
    };
    let c = match arr.data_type() {
        Int8 => widen::<Int8Type>(arr),
        Int16 => widen::<Int16Type>(arr),
        Int32 => widen::<Int32Type>(arr),
        Int64 => borrow_i64::<Int64Type>(arr),
        UInt8 => widen::<UInt8Type>(arr),
        UInt16 => widen::<UInt16Type>(arr),
        UInt32 => widen::<UInt32Type>(arr),
        Date32 => widen::<Date32Type>(arr),
        Date64 => borrow_i64::<Date64Type>(arr),
        Timestamp(TimeUnit::Second, _) => borrow_i64::<TimestampSecondType>(arr),
        Timestamp(TimeUnit::Millisecond, _) => borrow_i64::<TimestampMillisecondType>(arr),
        Timestamp(TimeUnit::Microsecond, _) => borrow_i64::<TimestampMicrosecondType>(arr),
        Timestamp(TimeUnit::Nanosecond, _) => borrow_i64::<TimestampNanosecondType>(arr),
        Float32 => {
            let v = arr.as_primitive::<Float32Type>().values();
            return Some(floats(v.iter().map(|&x| f64::from(x)).collect()));
        }
        Float64 => {
            let v = arr.as_primitive::<Float64Type>().values();
            return Some(floats(v.to_vec()));
        }
        _ => return None,
    };
    Some((c, nulls))
}

/// Per row of a dictionary array, `table[key]`, or `null` where the row is null (null
/// key or null value).
fn dict_map<T: Copy>(arr: &dyn Array, table: &[T], null: T) -> Vec<T> {
    let valid = arr.logical_nulls();
    let is_valid = |i: usize| valid.as_ref().is_none_or(|n| n.is_valid(i));
    let get = |k: usize| table.get(k).copied().unwrap_or(null);
    if let Some(d) = arr.as_dictionary_opt::<Int32Type>() {
        d.keys()
            .values()
            .iter()
            .enumerate()
            .map(|(i, &k)| if is_valid(i) { get(k as usize) } else { null })
            .collect()
    } else if let Some(d) = arr.as_any_dictionary_opt() {
        d.normalized_keys()
            .into_iter()
            .enumerate()
            .map(|(i, k)| if is_valid(i) { get(k) } else { null })
            .collect()
    } else {
        vec![null; arr.len()]
    }
}

/// The Utf8 values of a dictionary array.
fn dict_values(arr: &dyn Array) -> Option<&StringArray> {
    arr.as_any_dictionary_opt()?.values().as_string_opt::<i32>()
}

/// Dense ranks (equal strings, equal rank) of the values of several dictionaries, as
/// one table per dictionary; None when one is not a dictionary of Utf8.
fn dict_ranks(cols: &[&ArrayRef]) -> Option<Vec<Vec<i64>>> {
    let values: Vec<&StringArray> = cols
        .iter()
        .map(|c| dict_values(c.as_ref()))
        .collect::<Option<Vec<_>>>()?;
    let mut all: Vec<(&str, u32, u32)> = Vec::new();
    for (b, v) in values.iter().enumerate() {
        for i in 0..v.len() {
            all.push((v.value(i), b as u32, i as u32));
        }
    }
    all.sort_unstable_by(|a, b| a.0.cmp(b.0));
    let mut tables: Vec<Vec<i64>> = values.iter().map(|v| vec![0; v.len()]).collect();
    let mut rank = -1i64;
    let mut prev: Option<&str> = None;
    for (s, b, i) in all {
        if prev != Some(s) {
            rank += 1;
            prev = Some(s);
        }
        if let Some(slot) = tables
            .get_mut(b as usize)
            .and_then(|t| t.get_mut(i as usize))
        {
            *slot = rank;
        }
    }
    Some(tables)
}

/// A key value reduced to something orderable (see the module's `# Order`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Scalar {
    Code(i64),
    Str(String),
}

/// The key value at row `i`, or None when it is null or NaN.
fn scalar_at(arr: &dyn Array, i: usize) -> Option<Scalar> {
    if i >= arr.len() {
        return None;
    }
    match kind_of(arr.data_type())? {
        Kind::Code => {
            let one = arr.slice(i, 1);
            let (c, valid) = codes(one.as_ref())?;
            if valid.is_some_and(|v| !v.value(0)) {
                return None;
            }
            c.first().map(|&c| Scalar::Code(c))
        }
        Kind::Str => {
            let s = arr.as_string_opt::<i32>()?;
            s.is_valid(i).then(|| Scalar::Str(s.value(i).to_string()))
        }
        Kind::Dict => {
            let one = arr.slice(i, 1);
            if one.logical_nulls().is_some_and(|n| n.is_null(0)) {
                return None;
            }
            let values = dict_values(one.as_ref())?;
            let k = *one.as_any_dictionary_opt()?.normalized_keys().first()?;
            (k < values.len()).then(|| Scalar::Str(values.value(k).to_string()))
        }
    }
}

// ---------------------------------------------------------------------------------------
// Bounds and the fast path
// ---------------------------------------------------------------------------------------

/// Min and max of the key over a partition's batches (nulls and NaN ignored), as a pair
/// of 1-row arrays of the key's type (the value type, Utf8, for dictionaries); None if
/// the partition is empty or its keys are all null/NaN.
///
/// Errors name the key when a batch lacks it or its type is not supported.
pub fn key_bounds(batches: &[RecordBatch], key: &str) -> Result<Option<(ArrayRef, ArrayRef)>> {
    let (cols, kind) = key_columns(batches, key)?;
    // (batch, row) of the min and of the max; for dictionaries (batch, value index).
    let mut best: Option<((usize, usize), (usize, usize))> = None;
    match kind {
        Kind::Code => {
            let mut lo = (i64::MAX, (0, 0));
            let mut hi = (i64::MIN, (0, 0));
            for (b, col) in cols.iter().enumerate() {
                let (c, valid) =
                    codes(col.as_ref()).ok_or_else(|| unsupported(key, col.data_type()))?;
                for (i, &v) in c.iter().enumerate() {
                    if valid.as_ref().is_some_and(|m| !m.value(i)) {
                        continue;
                    }
                    if best.is_none() || v < lo.0 {
                        lo = (v, (b, i));
                    }
                    if best.is_none() || v > hi.0 {
                        hi = (v, (b, i));
                    }
                    best = Some((lo.1, hi.1));
                }
            }
        }
        Kind::Str => {
            let mut lo: Option<(&str, (usize, usize))> = None;
            let mut hi: Option<(&str, (usize, usize))> = None;
            for (b, col) in cols.iter().enumerate() {
                let s = col.as_string::<i32>();
                for (i, v) in s.iter().enumerate() {
                    let Some(v) = v else { continue };
                    if lo.is_none_or(|(l, _)| v < l) {
                        lo = Some((v, (b, i)));
                    }
                    if hi.is_none_or(|(h, _)| v > h) {
                        hi = Some((v, (b, i)));
                    }
                }
            }
            if let (Some(l), Some(h)) = (lo, hi) {
                best = Some((l.1, h.1));
            }
        }
        Kind::Dict => {
            let mut lo: Option<(&str, (usize, usize))> = None;
            let mut hi: Option<(&str, (usize, usize))> = None;
            for (b, col) in cols.iter().enumerate() {
                let values =
                    dict_values(col.as_ref()).ok_or_else(|| unsupported(key, col.data_type()))?;
                // Only values that some valid row refers to count.
                let ids: Vec<u32> = (0..values.len() as u32).collect();
                let used_ids = dict_map(col.as_ref(), &ids, u32::MAX);
                let mut used = vec![false; values.len()];
                for id in used_ids {
                    if let Some(u) = used.get_mut(id as usize) {
                        *u = true;
                    }
                }
                for (i, _) in used.iter().enumerate().filter(|(_, &u)| u) {
                    let v = values.value(i);
                    if lo.is_none_or(|(l, _)| v < l) {
                        lo = Some((v, (b, i)));
                    }
                    if hi.is_none_or(|(h, _)| v > h) {
                        hi = Some((v, (b, i)));
                    }
                }
            }
            if let (Some(l), Some(h)) = (lo, hi) {
                best = Some((l.1, h.1));
            }
        }
    }
    let Some((lo, hi)) = best else {
        return Ok(None);
    };
    let pick = |(b, i): (usize, usize)| -> Result<ArrayRef> {
        let idx = UInt32Array::from(vec![i as u32]);
        let src: &dyn Array = match kind {
            Kind::Dict => cols[b]
                .as_any_dictionary_opt()
                .map(|d| d.values().as_ref())
                .ok_or_else(|| unsupported(key, cols[b].data_type()))?,
            _ => cols[b].as_ref(),
        };
        take(src, &idx, None).map_err(|e| arrow_err(key, "bounds", e))
    };
    Ok(Some((pick(lo)?, pick(hi)?)))
}

/// The number of rows of a partition whose key is null or NaN (they sort last).
///
/// Feed it to [`ranged_order_nulls_last`] when keys may be null: sorting partitions on
/// their own puts each partition's nulls at its end, which is a global sort only if no
/// partition but the last one (in ranged order) holds any.
pub fn invalid_count(batches: &[RecordBatch], key: &str) -> Result<usize> {
    let (cols, kind) = key_columns(batches, key)?;
    let mut n = 0;
    for col in cols {
        n += match kind {
            Kind::Code => {
                let (_, valid) =
                    codes(col.as_ref()).ok_or_else(|| unsupported(key, col.data_type()))?;
                valid.map_or(0, |v| v.len() - v.count_set_bits())
            }
            Kind::Str => col.null_count(),
            Kind::Dict => col.logical_null_count(),
        };
    }
    Ok(n)
}

/// Whether partitions with these bounds (in any order; as given by [`key_bounds`]) are
/// already ranged by the key: returns the order in which to concatenate them (indices
/// into `bounds`) if no two partitions' `[min, max]` overlap, else None.
///
/// Partitions may touch: `max` of one equal to `min` of the next is accepted (see the
/// module's `# Ties across partitions`); ties keep the input order. Partitions with no
/// bounds (empty or all-null keys) come last, in input order. Nulls are not looked at:
/// when keys may be null, use [`ranged_order_nulls_last`].
///
/// Errors when bounds are null, not 1-row, or of different or unsupported types.
pub fn ranged_order(bounds: &[Option<(ArrayRef, ArrayRef)>]) -> Result<Option<Vec<usize>>> {
    let mut dt: Option<DataType> = None;
    let mut known: Vec<(Scalar, Scalar, usize)> = Vec::new();
    let mut unknown = Vec::new();
    for (p, b) in bounds.iter().enumerate() {
        let Some((lo, hi)) = b else {
            unknown.push(p);
            continue;
        };
        for a in [lo, hi] {
            let t = value_type(a.data_type());
            match &dt {
                None => dt = Some(t),
                Some(d) if *d != t => {
                    return Err(arg_err(format!(
                        "sort: partition bounds of different types ({d} and {t})"
                    )))
                }
                Some(_) => {}
            }
        }
        let scalar = |a: &ArrayRef| {
            if a.len() != 1 {
                return Err(arg_err(format!(
                    "sort: bounds of partition {p} must be 1-row arrays, got {} rows",
                    a.len()
                )));
            }
            if kind_of(a.data_type()).is_none() {
                return Err(arg_err(format!(
                    "sort: bounds of type {} are not supported",
                    a.data_type()
                )));
            }
            scalar_at(a.as_ref(), 0)
                .ok_or_else(|| arg_err(format!("sort: bounds of partition {p} are null or NaN")))
        };
        let (lo, hi) = (scalar(lo)?, scalar(hi)?);
        if lo > hi {
            return Err(arg_err(format!(
                "sort: bounds of partition {p} have min > max"
            )));
        }
        known.push((lo, hi, p));
    }
    known.sort();
    if known.windows(2).any(|w| w[0].1 > w[1].0) {
        return Ok(None);
    }
    let mut order: Vec<usize> = known.into_iter().map(|(_, _, p)| p).collect();
    order.extend(unknown);
    Ok(Some(order))
}

/// [`ranged_order`], and moreover None when sorting each partition on its own would not
/// put every null/NaN key at the very end: `invalid[p]` is partition `p`'s
/// [`invalid_count`], and only the last partition with bounds (and those without bounds,
/// which come after it) may hold any.
pub fn ranged_order_nulls_last(
    bounds: &[Option<(ArrayRef, ArrayRef)>],
    invalid: &[usize],
) -> Result<Option<Vec<usize>>> {
    if invalid.len() != bounds.len() {
        return Err(arg_err(format!(
            "sort: {} partition bounds but {} null counts",
            bounds.len(),
            invalid.len()
        )));
    }
    let Some(order) = ranged_order(bounds)? else {
        return Ok(None);
    };
    let with_bounds = bounds.iter().filter(|b| b.is_some()).count();
    let ok = order
        .iter()
        .take(with_bounds.saturating_sub(1))
        .all(|&p| invalid[p] == 0);
    Ok(ok.then_some(order))
}

// ---------------------------------------------------------------------------------------
// Sorting one partition
// ---------------------------------------------------------------------------------------

/// The stable sorting permutation of the rows of `cols` (global row numbers over the
/// batches in order), valid keys first then null/NaN rows; None when the rows are
/// already in that order.
fn sort_permutation(cols: &[&ArrayRef], kind: Kind, key: &str) -> Result<Option<Vec<u32>>> {
    let total: usize = cols.iter().map(|c| c.len()).sum();
    if u32::try_from(total).is_err() {
        return Err(arg_err(format!(
            "sort by '{key}': a partition of {total} rows is too large (max {})",
            u32::MAX
        )));
    }
    match kind {
        Kind::Code | Kind::Dict => {
            let tables = if kind == Kind::Dict {
                dict_ranks(cols).ok_or_else(|| unsupported(key, cols[0].data_type()))?
            } else {
                Vec::new()
            };
            let mut pairs: Vec<(i64, u32)> = Vec::with_capacity(total);
            let mut invalid: Vec<u32> = Vec::new();
            let mut sorted = true;
            let mut base = 0u32;
            for (b, col) in cols.iter().enumerate() {
                let (c, valid): (Cow<[i64]>, Option<BooleanBuffer>) = if kind == Kind::Dict {
                    let table = tables.get(b).map_or(&[][..], |t| t.as_slice());
                    let ranks = dict_map(col.as_ref(), table, -1);
                    (Cow::Owned(ranks), None)
                } else {
                    codes(col.as_ref()).ok_or_else(|| unsupported(key, col.data_type()))?
                };
                for (i, &v) in c.iter().enumerate() {
                    let row = base + i as u32;
                    let ok = match &valid {
                        Some(m) => m.value(i),
                        None => kind != Kind::Dict || v >= 0,
                    };
                    if ok {
                        if !invalid.is_empty() || pairs.last().is_some_and(|&(p, _)| p > v) {
                            sorted = false;
                        }
                        pairs.push((v, row));
                    } else {
                        invalid.push(row);
                    }
                }
                base += col.len() as u32;
            }
            if sorted {
                return Ok(None);
            }
            let mut perm = sort_pairs(pairs);
            perm.extend(invalid);
            Ok(Some(perm))
        }
        Kind::Str => {
            let concatenated;
            let arr: &ArrayRef = if cols.len() == 1 {
                cols[0]
            } else {
                let refs: Vec<&dyn Array> = cols.iter().map(|c| c.as_ref()).collect();
                concatenated = concat(&refs).map_err(|e| arrow_err(key, "concatenating", e))?;
                &concatenated
            };
            let s = arr.as_string::<i32>();
            let (mut valid, invalid): (Vec<u32>, Vec<u32>) =
                (0..s.len() as u32).partition(|&i| s.is_valid(i as usize));
            let in_order = valid
                .windows(2)
                .all(|w| s.value(w[0] as usize) <= s.value(w[1] as usize))
                && valid
                    .last()
                    .is_none_or(|&l| invalid.first().is_none_or(|&f| l < f));
            if in_order {
                return Ok(None);
            }
            valid.sort_by(|&a, &b| s.value(a as usize).cmp(s.value(b as usize)));
            valid.extend(invalid);
            Ok(Some(valid))
        }
    }
}

/// Row numbers of `pairs` ordered by code, ties in row order.
fn sort_pairs(pairs: Vec<(i64, u32)>) -> Vec<u32> {
    let Some(min) = pairs.iter().map(|p| p.0).min() else {
        return Vec::new();
    };
    let max = pairs.iter().map(|p| p.0).max().unwrap_or(min);
    let span = (i128::from(max) - i128::from(min)) as u128;
    let n = pairs.len() as u128;
    if span < (n * 2 + 4096).min(1 << 26) {
        // Stable counting sort over the code range.
        let span = span as usize;
        let mut starts = vec![0u32; span + 2];
        for &(c, _) in &pairs {
            starts[(c - min) as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut out = vec![0u32; pairs.len()];
        for &(c, row) in &pairs {
            let slot = &mut starts[(c - min) as usize];
            out[*slot as usize] = row;
            *slot += 1;
        }
        out
    } else {
        radix_sort(pairs, min, span as u64)
    }
}

/// Stable LSD radix sort of `(code, row)` pairs (in row order) by `code - min`, which
/// spans `span`. When the offset and the row fit one `u64` together (timestamps over
/// years and partitions of millions of rows do) the pairs are packed, halving the
/// memory traffic; the row sits in the low bits, which are never sorted on.
fn radix_sort(pairs: Vec<(i64, u32)>, min: i64, span: u64) -> Vec<u32> {
    let key_bits = 64 - span.leading_zeros();
    let row_bits = 64 - (pairs.len() as u64).leading_zeros();
    if key_bits + row_bits <= 64 {
        let mask = (1u64 << row_bits) - 1;
        let packed: Vec<u64> = pairs
            .iter()
            .map(|&(c, r)| ((c.wrapping_sub(min) as u64) << row_bits) | u64::from(r))
            .collect();
        drop(pairs);
        radix_sort_packed(packed, row_bits, key_bits)
            .into_iter()
            .map(|x| (x & mask) as u32)
            .collect()
    } else {
        // Too wide to pack (floats): pattern-defeating quicksort; rows are distinct, so
        // ordering by (code, row) is stable.
        let mut pairs = pairs;
        pairs.sort_unstable();
        pairs.into_iter().map(|p| p.1).collect()
    }
}

/// Stable LSD radix sort of `src` by `x >> row_bits` (which has `key_bits` bits):
/// 11-bit digits, one histogram pass, digits shared by every element skipped.
fn radix_sort_packed(mut src: Vec<u64>, row_bits: u32, key_bits: u32) -> Vec<u64> {
    let key = |x: &u64| x >> row_bits;
    const BITS: u32 = 11;
    const BUCKETS: usize = 1 << BITS;
    const MASK: u64 = (BUCKETS - 1) as u64;
    let n = src.len();
    let passes = key_bits.div_ceil(BITS) as usize;
    let mut hist = vec![[0u32; BUCKETS]; passes];
    for x in &src {
        let k = key(x);
        for (p, h) in hist.iter_mut().enumerate() {
            h[((k >> (p as u32 * BITS)) & MASK) as usize] += 1;
        }
    }
    let mut dst = vec![0u64; n];
    for (p, h) in hist.iter().enumerate() {
        if h.iter().any(|&c| c as usize == n) {
            continue;
        }
        let mut next = [0u32; BUCKETS];
        let mut sum = 0u32;
        for (o, &c) in next.iter_mut().zip(h.iter()) {
            *o = sum;
            sum += c;
        }
        let shift = p as u32 * BITS;
        for x in &src {
            let d = ((key(x) >> shift) & MASK) as usize;
            dst[next[d] as usize] = *x;
            next[d] += 1;
        }
        std::mem::swap(&mut src, &mut dst);
    }
    src
}

/// Sort one partition's batches by the key, ascending, nulls (and NaN) last, stable.
///
/// Returns the input batches themselves (no copy) when they are already in order, else
/// one batch holding every row. An empty input gives an empty output. Errors name the
/// key when a batch lacks it or its type is not supported.
pub fn sort_batches(batches: &[RecordBatch], key: &str) -> Result<Vec<RecordBatch>> {
    let (cols, kind) = key_columns(batches, key)?;
    let Some(perm) = sort_permutation(&cols, kind, key)? else {
        return Ok(batches.to_vec());
    };
    let indices = UInt32Array::from(perm);
    let whole = if batches.len() == 1 {
        batches[0].clone()
    } else {
        concat_batches(batches[0].schema_ref(), batches)
            .map_err(|e| arrow_err(key, "concatenating batches", e))?
    };
    let sorted = take_record_batch(&whole, &indices).map_err(|e| arrow_err(key, "take", e))?;
    Ok(vec![sorted])
}

// ---------------------------------------------------------------------------------------
// Samples, boundaries, ranges
// ---------------------------------------------------------------------------------------

/// A deterministic sample of up to `n` keys of a partition (null and NaN keys excluded),
/// as an array of the key's type (Utf8 for dictionaries).
///
/// All valid keys when there are at most `n`; else one key drawn from each of `n` equal
/// strata of the valid rows (in row order) by a generator seeded from the counts, so the
/// same partition always gives the same sample and sorted or periodic data does not bias
/// it. No batches give an empty array of type Null, which [`choose_boundaries`] skips.
pub fn sample_keys(batches: &[RecordBatch], key: &str, n: usize) -> Result<ArrayRef> {
    let (cols, kind) = key_columns(batches, key)?;
    let Some(first) = cols.first() else {
        return Ok(new_empty_array(&DataType::Null));
    };
    let vt = value_type(first.data_type());
    let col: ArrayRef = if cols.len() == 1 {
        Arc::clone(first)
    } else {
        let refs: Vec<&dyn Array> = cols.iter().map(|c| c.as_ref()).collect();
        concat(&refs).map_err(|e| arrow_err(key, "concatenating", e))?
    };
    let valid: Option<BooleanBuffer> = match kind {
        Kind::Code => codes(col.as_ref()).ok_or_else(|| unsupported(key, &vt))?.1,
        _ => col.logical_nulls().map(|n| n.inner().clone()),
    };
    let rows: Option<Vec<u32>> = valid.map(|v| v.set_indices().map(|i| i as u32).collect());
    let m = rows.as_ref().map_or(col.len(), |r| r.len());
    let row_of = |j: usize| rows.as_ref().map_or(j as u32, |r| r[j]);
    let picked: Vec<u32> = if m <= n {
        (0..m).map(row_of).collect()
    } else {
        let mut rng = SmallRng::seed_from_u64(0x5eed_5041 ^ ((m as u64) << 20) ^ n as u64);
        (0..n as u64)
            .map(|j| {
                let lo = j * m as u64 / n as u64;
                let hi = (j + 1) * m as u64 / n as u64;
                row_of(rng.random_range(lo..hi.max(lo + 1)) as usize)
            })
            .collect()
    };
    let sample = take(col.as_ref(), &UInt32Array::from(picked), None)
        .map_err(|e| arrow_err(key, "sampling", e))?;
    to_value_type(sample, key)
}

/// A dictionary array decoded to its value type; other arrays unchanged.
fn to_value_type(arr: ArrayRef, key: &str) -> Result<ArrayRef> {
    match arr.data_type() {
        DataType::Dictionary(_, v) => {
            let v = (**v).clone();
            arrow_cast::cast(arr.as_ref(), &v).map_err(|e| arrow_err(key, "decoding dictionary", e))
        }
        _ => Ok(arr),
    }
}

/// From merged samples (any number of arrays of one key type, e.g. every partition's
/// [`sample_keys`]), at most `ranges - 1` boundaries splitting them into `ranges` roughly
/// equal parts: the sample quantiles `i / ranges`, sorted, without duplicates (so a
/// skewed key may give fewer ranges than asked), nulls and NaN ignored. Returned as an
/// array of the key's type (Utf8 for dictionaries). Empty and Null-typed arrays are
/// skipped; with no valid sample the result is empty (one range).
pub fn choose_boundaries(samples: &[ArrayRef], ranges: usize) -> Result<ArrayRef> {
    const KEY: &str = "<boundaries>";
    if ranges == 0 {
        return Err(arg_err(
            "sort: choose_boundaries needs at least one range".into(),
        ));
    }
    let used: Vec<&dyn Array> = samples
        .iter()
        .filter(|s| s.data_type() != &DataType::Null)
        .map(|s| s.as_ref())
        .collect();
    let Some(first) = used.first() else {
        return Ok(new_empty_array(&DataType::Null));
    };
    let dt = first.data_type().clone();
    if let Some(other) = used.iter().find(|s| s.data_type() != &dt) {
        return Err(arg_err(format!(
            "sort: samples of different types ({dt} and {})",
            other.data_type()
        )));
    }
    let kind = kind_of(&dt).ok_or_else(|| unsupported(KEY, &dt))?;
    let col = concat(&used).map_err(|e| arrow_err(KEY, "concatenating samples", e))?;
    let perm =
        sort_permutation(&[&col], kind, KEY)?.unwrap_or_else(|| (0..col.len() as u32).collect());
    // Null/NaN samples are sorted last: leave them out.
    let invalid = match kind {
        Kind::Code => codes(col.as_ref())
            .and_then(|(_, v)| v)
            .map_or(0, |v| v.len() - v.count_set_bits()),
        _ => col.logical_null_count(),
    };
    let valid = col.len() - invalid;
    let mut picked: Vec<u32> = Vec::new();
    let mut last: Option<Scalar> = None;
    if valid > 0 {
        for i in 1..ranges {
            let row = perm[i * valid / ranges];
            let s = scalar_at(col.as_ref(), row as usize);
            if s.is_some() && s != last {
                picked.push(row);
                last = s;
            }
        }
    }
    let out = take(col.as_ref(), &UInt32Array::from(picked), None)
        .map_err(|e| arrow_err(KEY, "picking boundaries", e))?;
    to_value_type(out, KEY)
}

/// Boundaries decoded for comparison with a key column.
enum Bounds<'a> {
    Codes(Vec<i64>),
    Strs(&'a StringArray),
}

/// Per row of `col`, its range: the number of boundaries `<=` its key; `nb` (the last
/// range) for null/NaN keys.
fn range_ids(col: &dyn Array, kind: Kind, bounds: &Bounds, key: &str) -> Result<Vec<u32>> {
    let nb = match bounds {
        Bounds::Codes(b) => b.len(),
        Bounds::Strs(s) => s.len(),
    } as u32;
    let find_str = |v: &str| match bounds {
        Bounds::Strs(s) => {
            // partition_point over the sorted boundaries.
            let (mut lo, mut hi) = (0usize, s.len());
            while lo < hi {
                let mid = (lo + hi) / 2;
                if s.value(mid) <= v {
                    lo = mid + 1;
                } else {
                    hi = mid;
                }
            }
            lo as u32
        }
        Bounds::Codes(_) => nb,
    };
    Ok(match (kind, bounds) {
        (Kind::Code, Bounds::Codes(b)) => {
            let (c, valid) = codes(col).ok_or_else(|| unsupported(key, col.data_type()))?;
            let mut ids: Vec<u32> = c
                .iter()
                .map(|&v| b.partition_point(|&x| x <= v) as u32)
                .collect();
            if let Some(valid) = valid {
                for i in valid
                    .iter()
                    .enumerate()
                    .filter(|(_, ok)| !ok)
                    .map(|(i, _)| i)
                {
                    ids[i] = nb;
                }
            }
            ids
        }
        (Kind::Str, Bounds::Strs(_)) => col
            .as_string::<i32>()
            .iter()
            .map(|v| v.map_or(nb, find_str))
            .collect(),
        (Kind::Dict, Bounds::Strs(_)) => {
            let values = dict_values(col).ok_or_else(|| unsupported(key, col.data_type()))?;
            let table: Vec<u32> = values.iter().map(|v| v.map_or(nb, find_str)).collect();
            dict_map(col, &table, nb)
        }
        _ => {
            return Err(arg_err(format!(
                "sort by '{key}': boundaries do not match the key type {}",
                col.data_type()
            )))
        }
    })
}

/// Split batches into `boundaries.len() + 1` ranges: range `i` holds the rows whose key
/// is in `[b[i-1], b[i])` (range 0: `< b[0]`; the last: `>= b[last]`); null and NaN keys
/// go to the last range. `boundaries` (from [`choose_boundaries`]) must be sorted, without
/// nulls, of the key's type (its value type for dictionaries); empty or Null-typed
/// boundaries give one range.
///
/// Returns one `Vec<RecordBatch>` per range: empty when no row falls in it, else one
/// batch (the range's rows of every input batch, in input order, concatenated).
pub fn split_by_ranges(
    batches: &[RecordBatch],
    key: &str,
    boundaries: &ArrayRef,
) -> Result<Vec<Vec<RecordBatch>>> {
    let (cols, kind) = key_columns(batches, key)?;
    let bdt = boundaries.data_type();
    let no_strings = StringArray::from(Vec::<&str>::new());
    let bounds = if bdt == &DataType::Null || boundaries.is_empty() {
        match kind {
            Kind::Code => Bounds::Codes(Vec::new()),
            _ => Bounds::Strs(&no_strings),
        }
    } else {
        if let Some(c) = cols.first() {
            let kt = value_type(c.data_type());
            if *bdt != kt {
                return Err(arg_err(format!(
                    "sort by '{key}': boundaries are {bdt} but the key is {kt}"
                )));
            }
        }
        if boundaries.logical_null_count() > 0 {
            return Err(arg_err(format!("sort by '{key}': boundaries hold nulls")));
        }
        match kind_of(bdt) {
            Some(Kind::Code) => {
                let (c, valid) = codes(boundaries.as_ref()).ok_or_else(|| unsupported(key, bdt))?;
                if valid.is_some() {
                    return Err(arg_err(format!("sort by '{key}': boundaries hold NaN")));
                }
                Bounds::Codes(c.into_owned())
            }
            Some(Kind::Str) => Bounds::Strs(boundaries.as_string::<i32>()),
            _ => return Err(unsupported(key, bdt)),
        }
    };
    let sorted = match &bounds {
        Bounds::Codes(b) => b.windows(2).all(|w| w[0] <= w[1]),
        Bounds::Strs(s) => (1..s.len()).all(|i| s.value(i - 1) <= s.value(i)),
    };
    if !sorted {
        return Err(arg_err(format!(
            "sort by '{key}': boundaries must be sorted ascending"
        )));
    }
    let nranges = match &bounds {
        Bounds::Codes(b) => b.len(),
        Bounds::Strs(s) => s.len(),
    } + 1;
    let mut pieces: Vec<Vec<RecordBatch>> = vec![Vec::new(); nranges];
    for (batch, col) in batches.iter().zip(&cols) {
        if batch.num_rows() == 0 {
            continue;
        }
        let ids = range_ids(col.as_ref(), kind, &bounds, key)?;
        if ids.windows(2).all(|w| w[0] <= w[1]) {
            // Runs: zero-copy slices.
            let mut start = 0;
            while start < ids.len() {
                let r = ids[start];
                let end = start + ids[start..].iter().take_while(|&&x| x == r).count();
                pieces[r as usize].push(batch.slice(start, end - start));
                start = end;
            }
            continue;
        }
        let mut starts = vec![0u32; nranges + 1];
        for &r in &ids {
            starts[r as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut grouped = vec![0u32; ids.len()];
        let mut next = starts.clone();
        for (row, &r) in ids.iter().enumerate() {
            grouped[next[r as usize] as usize] = row as u32;
            next[r as usize] += 1;
        }
        for r in 0..nranges {
            let (s, e) = (starts[r] as usize, starts[r + 1] as usize);
            if s == e {
                continue;
            }
            let idx = UInt32Array::from(grouped[s..e].to_vec());
            let piece = take_record_batch(batch, &idx).map_err(|e| arrow_err(key, "take", e))?;
            pieces[r].push(piece);
        }
    }
    let mut out = Vec::with_capacity(nranges);
    for p in pieces {
        out.push(if p.len() > 1 {
            vec![concat_batches(p[0].schema_ref(), &p)
                .map_err(|e| arrow_err(key, "concatenating a range", e))?]
        } else {
            p
        });
    }
    Ok(out)
}
