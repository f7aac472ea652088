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
//!   `i` to its owner, which runs [`sort_batches`] over what it receives.
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
//! (it returns the batches untouched, no copy), else gives every row its place in the
//! output. Integer-like and float keys with at most 1024 distinct values, however far
//! apart (days as microsecond timestamps, the ranged `sort_by(date)`), are looked up in a
//! small hash table of their distinct codes, in the same pass as the sorted check (given
//! up at the 1025th distinct code); the distinct codes are ranked and a stable counting
//! sort over the ranks gives each row its place directly. Other keys sort `(code, row)`
//! pairs: by a stable counting sort when the codes span a small range (days, years,
//! dictionary ranks); else, when the code offset and the row fit one `u64` together
//! (timestamps), by a stable LSD radix sort of the packed words (11-bit digits, digits
//! shared by every key skipped); else (floats) by the same radix sort over separate key
//! and row arrays (pattern-defeating quicksort of the pairs below 4096 rows; stable since
//! rows are distinct); the sorted row numbers are then inverted into places.
//! [`split_by_ranges`] computes each row's range by binary search of its code among the
//! boundaries (once per dictionary value for dictionaries), and returns zero-copy slices
//! when every range is one run of one batch.
//!
//! # Moving rows
//!
//! Both kernels then copy every value once, with no batch concatenated first and no
//! range built from pieces: each reads every input column in order and writes each value
//! straight into its place (each row's range and position there are computed once). For
//! the split, a range's arrays are exactly its size and a kept range holds no one else's
//! memory; for the sort, the only output is written in as many sequential streams as
//! there are distinct keys when they are few (about 31 for a month by day), and at random
//! places otherwise. Reading in order and writing into place measured 2-3.5x faster than
//! gathering in output order (`sort_batches_legacy`, kept for comparison), whose reads
//! miss the cache where these writes mostly hit it (`benches/README.md`). Validity
//! bitmaps start all set and only the null rows clear a bit (all clear and only valid
//! rows set one when most rows are null), through each input row's place in the output.
//! Dictionary columns get one set of values per output
//! column: the inputs' values when they all have equal ones (pointer-equal, or the same
//! values: two holders of the same strings send equal dictionaries, so a received range
//! needs no merge); else, for a split, their distinct values sorted (hashed once per
//! input dictionary value, shared by every range); for a sort, the values one after the
//! other when they are fewer than the rows, else deduplicated. Keys are remapped by a
//! table on the way. Columns of other types (strings, lists, structs, ...) and
//! dictionaries whose keys could not address the merged values are concatenated and
//! taken (two copies).
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
use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    downcast_integer, downcast_primitive, new_empty_array, AnyDictionaryArray, Array, ArrayRef,
    ArrowPrimitiveType, BooleanArray, DictionaryArray, PrimitiveArray, RecordBatch,
    RecordBatchOptions, StringArray, UInt32Array,
};
use arrow_buffer::{ArrowNativeType, BooleanBuffer, Buffer, NullBuffer};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow_select::concat::concat;
use arrow_select::interleave::interleave;
use arrow_select::take::take;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use rustc_hash::FxBuildHasher;

use crate::error::{EngineError, Result};
use crate::num::{float_key, signed_from_key};

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
    fn floats<T: Copy + Into<f64>>(
        vals: &[T],
        nulls: Option<BooleanBuffer>,
    ) -> (Cow<'static, [i64]>, Option<BooleanBuffer>) {
        let nan = BooleanBuffer::collect_bool(vals.len(), |i| !vals[i].into().is_nan());
        let valid = if nan.count_set_bits() == vals.len() {
            nulls
        } else {
            Some(match &nulls {
                Some(n) => n & &nan,
                None => nan,
            })
        };
        let c: Vec<i64> = vals
            .iter()
            .map(|&v| {
                let v: f64 = v.into();
                if v.is_nan() {
                    0
                } else {
                    signed_from_key(float_key(v))
                }
            })
            .collect();
        (Cow::Owned(c), valid)
    }
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
        Float32 => return Some(floats(arr.as_primitive::<Float32Type>().values(), nulls)),
        Float64 => return Some(floats(arr.as_primitive::<Float64Type>().values(), nulls)),
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

/// Largest number of distinct codes [`few_distinct_positions`] sorts by their ranks.
const FEW_DISTINCT: usize = 1024;

/// Every row's place in the stable sorted order (the inverse of [`sort_permutation`]'s
/// permutation: row `g` goes to `pos[g]`); None when the rows are already in order.
fn sort_positions(cols: &[&ArrayRef], kind: Kind, key: &str) -> Result<Option<Vec<u32>>> {
    if kind == Kind::Code {
        let total: usize = cols.iter().map(|c| c.len()).sum();
        if u32::try_from(total).is_ok() {
            if let Some(pos) = few_distinct_positions(cols, total) {
                return Ok(pos);
            }
        }
    }
    let Some(perm) = sort_permutation(cols, kind, key)? else {
        return Ok(None);
    };
    let mut pos = vec![0u32; perm.len()];
    for (out, &row) in perm.iter().enumerate() {
        pos[row as usize] = out as u32;
    }
    Ok(Some(pos))
}

/// [`sort_positions`] for integer-like and float keys that take at most [`FEW_DISTINCT`]
/// distinct values, however far apart (days as timestamps, say): each row's code is
/// looked up in a small hash table of the distinct codes (one pass), the codes are
/// ranked, and a stable counting sort over the ranks (null and NaN rows last) gives every
/// row its place. Rows of one rank then land in one run of the output, in row order, so
/// moving a column writes into as many sequential streams as there are distinct keys.
/// None when there are more distinct codes (or a column is not of [`Kind::Code`]);
/// `Some(None)` when the rows are already in order. `total` is the number of rows, which
/// must fit a `u32`.
fn few_distinct_positions(cols: &[&ArrayRef], total: usize) -> Option<Option<Vec<u32>>> {
    /// The id of null and NaN rows (codes get ids below it).
    const INVALID: u16 = FEW_DISTINCT as u16;
    let mut table = DistinctCodes::new();
    let mut ids = vec![0u16; total];
    // Rows per id.
    let mut counts = vec![0u32; FEW_DISTINCT + 1];
    // Sorted so far: valid codes ascending (from `prev`, the last one), no invalid row
    // before a valid one. Without branches: equal neighbours are too short-lived to guess.
    let mut sorted = true;
    let mut seen_invalid = false;
    let mut prev = i64::MIN;
    let mut base = 0;
    for col in cols {
        let (c, valid) = codes(col.as_ref())?;
        let out = ids.get_mut(base..base + c.len())?;
        base += c.len();
        for (i, (&v, id_out)) in c.iter().zip(out.iter_mut()).enumerate() {
            let id = if valid.as_ref().is_some_and(|m| !m.value(i)) {
                seen_invalid = true;
                INVALID
            } else {
                sorted &= (prev <= v) & !seen_invalid;
                prev = v;
                table.id(v)?
            };
            counts[usize::from(id)] += 1;
            *id_out = id;
        }
    }
    if sorted {
        return Some(None);
    }
    // Where each id's rows start: ids in the order of their codes, the invalid rows last.
    let mut order: Vec<u16> = (0..table.codes.len() as u16).collect();
    order.sort_unstable_by_key(|&d| table.codes[usize::from(d)]);
    let mut next = vec![0u32; FEW_DISTINCT + 1];
    let mut at = 0u32;
    for d in order.into_iter().chain([INVALID]).map(usize::from) {
        next[d] = at;
        at += counts[d];
    }
    let pos = ids
        .iter()
        .map(|&id| {
            let slot = &mut next[usize::from(id)];
            let p = *slot;
            *slot += 1;
            p
        })
        .collect();
    Some(Some(pos))
}

/// The distinct codes of [`few_distinct_positions`], up to [`FEW_DISTINCT`] of them, each
/// with a dense id (its index in `codes`), found by open addressing.
struct DistinctCodes {
    /// Slot -> id (`u16::MAX`: empty); 4 slots per possible code.
    slots: Vec<u16>,
    codes: Vec<i64>,
}

impl DistinctCodes {
    const SLOTS: usize = FEW_DISTINCT * 4;
    const SHIFT: u32 = 64 - Self::SLOTS.trailing_zeros();

    fn new() -> Self {
        DistinctCodes {
            slots: vec![u16::MAX; Self::SLOTS],
            codes: Vec::new(),
        }
    }

    /// The id of `code` (a new one if it is new); None when it would be one too many.
    #[inline]
    fn id(&mut self, code: i64) -> Option<u16> {
        let mut s = ((code as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> Self::SHIFT) as usize;
        loop {
            match self.slots[s] {
                u16::MAX => {
                    if self.codes.len() == FEW_DISTINCT {
                        return None;
                    }
                    let id = self.codes.len() as u16;
                    self.slots[s] = id;
                    self.codes.push(code);
                    return Some(id);
                }
                d if self.codes[usize::from(d)] == code => return Some(d),
                _ => s = (s + 1) % Self::SLOTS,
            }
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
    // Bits of the largest row number (not of the number of pairs: rows with a null or NaN
    // key are not among them, so row numbers may need more bits than the count).
    let max_row = pairs.iter().map(|p| p.1).max().unwrap_or(0);
    let row_bits = 64 - u64::from(max_row).leading_zeros();
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
    } else if pairs.len() < 4096 {
        // Too wide to pack (floats) and few: pattern-defeating quicksort; rows are
        // distinct, so ordering by (code, row) is stable.
        let mut pairs = pairs;
        pairs.sort_unstable();
        pairs.into_iter().map(|p| p.1).collect()
    } else {
        radix_sort_wide(&pairs, min, key_bits)
    }
}

/// Stable LSD radix sort of `(code, row)` pairs (in row order) by `code - min`, which has
/// `key_bits` bits, keys and rows in separate arrays (too wide to pack in one word):
/// 11-bit digits, one histogram pass, digits shared by every key skipped.
fn radix_sort_wide(pairs: &[(i64, u32)], min: i64, key_bits: u32) -> Vec<u32> {
    const BITS: u32 = 11;
    const BUCKETS: usize = 1 << BITS;
    const MASK: u64 = (BUCKETS - 1) as u64;
    let n = pairs.len();
    let passes = key_bits.div_ceil(BITS) as usize;
    let mut keys: Vec<u64> = pairs
        .iter()
        .map(|&(c, _)| c.wrapping_sub(min) as u64)
        .collect();
    let mut rows: Vec<u32> = pairs.iter().map(|p| p.1).collect();
    let mut hist = vec![[0u32; BUCKETS]; passes];
    for &k in &keys {
        for (p, h) in hist.iter_mut().enumerate() {
            h[((k >> (p as u32 * BITS)) & MASK) as usize] += 1;
        }
    }
    let mut keys_to = vec![0u64; n];
    let mut rows_to = vec![0u32; n];
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
        for (&k, &r) in keys.iter().zip(&rows) {
            let d = ((k >> shift) & MASK) as usize;
            let o = next[d] as usize;
            keys_to[o] = k;
            rows_to[o] = r;
            next[d] += 1;
        }
        std::mem::swap(&mut keys, &mut keys_to);
        std::mem::swap(&mut rows, &mut rows_to);
    }
    rows
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
/// key when a batch lacks it or its type is not supported, or when the batches' columns
/// differ in type.
pub fn sort_batches(batches: &[RecordBatch], key: &str) -> Result<Vec<RecordBatch>> {
    sort_batches_with(batches, key, false)
}

/// [`sort_batches`] as it was before it scattered rows into place and looked keys up among
/// few distinct values (same result): `(code, row)` pairs sorted, each column gathered in
/// output order. Kept callable so that benchmarks can compare both in one run and tests
/// can check they agree.
#[doc(hidden)]
pub fn sort_batches_legacy(batches: &[RecordBatch], key: &str) -> Result<Vec<RecordBatch>> {
    sort_batches_with(batches, key, true)
}

/// [`sort_batches`], by the legacy row mover when `legacy`.
fn sort_batches_with(batches: &[RecordBatch], key: &str, legacy: bool) -> Result<Vec<RecordBatch>> {
    let (cols, kind) = key_columns(batches, key)?;
    // The legacy path gathers in output order (`perm`); the default one scatters: every
    // input row's place in the output (the inverse permutation), the columns then read in
    // order and written straight into place, with no concatenation.
    let (perm, pos) = if legacy {
        let Some(perm) = sort_permutation(&cols, kind, key)? else {
            return Ok(batches.to_vec());
        };
        let mut pos = vec![0u32; perm.len()];
        for (out, &row) in perm.iter().enumerate() {
            pos[row as usize] = out as u32;
        }
        (perm, pos)
    } else {
        let Some(pos) = sort_positions(&cols, kind, key)? else {
            return Ok(batches.to_vec());
        };
        (Vec::new(), pos)
    };
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let n = pos.len();
    let mut starts = Vec::with_capacity(batches.len() + 1);
    starts.push(0);
    for b in batches {
        starts.push(starts[starts.len() - 1] + b.num_rows());
    }
    let dest = Dest {
        ids: None,
        pos,
        starts,
        counts: vec![n],
    };
    let mover = Mover::new(batches, n, key)?;
    let columns = if legacy {
        mover.sorted(&dest, &perm, key)?
    } else {
        mover.scatter(&dest, key)?.pop().unwrap_or_default()
    };
    let sorted = RecordBatch::try_new_with_options(
        output_schema(batches, first),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .map_err(|e| arrow_err(key, "assembling the sorted batch", e))?;
    Ok(vec![sorted])
}

/// The schema of outputs made of rows of `batches`: the first batch's, nullable where
/// any batch's is.
fn output_schema(batches: &[RecordBatch], first: &RecordBatch) -> SchemaRef {
    let schema = first.schema();
    let nullable = |c: usize| {
        batches
            .iter()
            .any(|b| b.schema_ref().field(c).is_nullable())
    };
    if (0..schema.fields().len()).all(|c| schema.field(c).is_nullable() == nullable(c)) {
        return schema;
    }
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(c, f)| f.as_ref().clone().with_nullable(nullable(c)))
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

// ---------------------------------------------------------------------------------------
// Moving rows: one copy of every value, no per-range concatenation
// ---------------------------------------------------------------------------------------

/// Hash map for deduplicating dictionary values: they come from our own partitions, so
/// flooding is no concern and rustc's Fx hash does.
type FastMap<K, V> = HashMap<K, V, FxBuildHasher>;

/// The values of a byte-array (strings or binaries) as byte slices, None where null; None
/// for other types.
fn byte_values(a: &dyn Array) -> Option<Vec<Option<&[u8]>>> {
    fn collect<T: ByteArrayType>(a: &dyn Array) -> Vec<Option<&[u8]>>
    where
        T::Native: AsRef<[u8]>,
    {
        a.as_bytes::<T>()
            .iter()
            .map(|v| v.map(|v| v.as_ref()))
            .collect()
    }
    Some(match a.data_type() {
        DataType::Utf8 => collect::<Utf8Type>(a),
        DataType::LargeUtf8 => collect::<LargeUtf8Type>(a),
        DataType::Binary => collect::<BinaryType>(a),
        DataType::LargeBinary => collect::<LargeBinaryType>(a),
        _ => return None,
    })
}

/// How many distinct keys a dictionary key type can address.
fn key_capacity(key: &DataType) -> usize {
    use DataType::*;
    match key {
        Int8 => 1 << 7,
        UInt8 => 1 << 8,
        Int16 => 1 << 15,
        UInt16 => 1 << 16,
        Int32 => 1 << 31,
        _ => usize::MAX,
    }
}

/// Dictionary values shared by one column of every output, and for each input batch the
/// new key of each of its old keys (None: the batch's keys already point into `values`).
struct Unified {
    values: ArrayRef,
    maps: Vec<Option<Vec<usize>>>,
}

/// Unify the dictionaries of one column over several batches, for outputs of `rows` rows
/// each:
///
/// 1. every batch has the first batch's values (the same buffers, or equal values: e.g.
///    the sorted dictionaries two holders send for one range): they are shared as they are;
/// 2. else, when all the values together are fewer than `rows`, they are put one after
///    the other (cheaper than deduplicating, and small next to the keys);
/// 3. else (strings and binaries) their distinct values, sorted (so that holders of the
///    same values send equal dictionaries), or (other value types) all of them one after
///    the other.
///
/// None when the keys could not address the result (the column is then concatenated and
/// taken).
fn unify_dictionaries(cols: &[&ArrayRef], rows: usize) -> Result<Option<Unified>> {
    let Some(first) = cols.first() else {
        return Ok(None);
    };
    let DataType::Dictionary(key_type, _) = first.data_type() else {
        return Ok(None);
    };
    let dicts: Vec<&dyn AnyDictionaryArray> = cols
        .iter()
        .map(|c| c.as_any_dictionary_opt())
        .collect::<Option<Vec<_>>>()
        .ok_or_else(|| arg_err("sort: a dictionary column is not a dictionary".into()))?;
    let first_values = dicts[0].values();
    let first_data = first_values.to_data();
    let shared = dicts[1..].iter().all(|d| {
        Arc::ptr_eq(d.values(), first_values) || {
            let data = d.values().to_data();
            data.ptr_eq(&first_data) || data == first_data
        }
    });
    if shared {
        return Ok(Some(Unified {
            values: Arc::clone(first_values),
            maps: vec![None; dicts.len()],
        }));
    }
    let capacity = key_capacity(key_type);
    let value_refs: Vec<&dyn Array> = dicts.iter().map(|d| d.values().as_ref()).collect();
    let total: usize = value_refs.iter().map(|v| v.len()).sum();
    let bytes: Option<Vec<Vec<Option<&[u8]>>>> = if total < rows && total <= capacity {
        None
    } else {
        value_refs.iter().map(|v| byte_values(*v)).collect()
    };
    let Some(bytes) = bytes else {
        if total > capacity {
            return Ok(None);
        }
        let values =
            concat(&value_refs).map_err(|e| arg_err(format!("sort: merging dictionaries: {e}")))?;
        let mut base = 0;
        let maps = value_refs
            .iter()
            .map(|v| {
                let map = (base..base + v.len()).collect();
                base += v.len();
                Some(map)
            })
            .collect();
        return Ok(Some(Unified { values, maps }));
    };
    let mut index: FastMap<Option<&[u8]>, usize> = FastMap::default();
    index.reserve(bytes.iter().map(Vec::len).max().unwrap_or(0));
    // Distinct values by first occurrence (batch, index), and each value's distinct id.
    let mut picks: Vec<(usize, usize)> = Vec::new();
    let mut maps: Vec<Vec<usize>> = Vec::with_capacity(bytes.len());
    for (b, values) in bytes.iter().enumerate() {
        let mut map = Vec::with_capacity(values.len());
        for (i, v) in values.iter().enumerate() {
            let id = *index.entry(*v).or_insert_with(|| {
                picks.push((b, i));
                picks.len() - 1
            });
            map.push(id);
        }
        maps.push(map);
    }
    if picks.len() > capacity {
        return Ok(None);
    }
    // Sorted: nulls first, then bytes in order.
    let mut order: Vec<usize> = (0..picks.len()).collect();
    order.sort_unstable_by(|&x, &y| {
        let v = |p: usize| bytes[picks[p].0][picks[p].1];
        v(x).cmp(&v(y))
    });
    let mut rank = vec![0usize; picks.len()];
    for (new, &old) in order.iter().enumerate() {
        rank[old] = new;
    }
    let sorted_picks: Vec<(usize, usize)> = order.iter().map(|&o| picks[o]).collect();
    let values = interleave(&value_refs, &sorted_picks)
        .map_err(|e| arg_err(format!("sort: merging dictionaries: {e}")))?;
    let maps = maps
        .into_iter()
        .map(|m| Some(m.into_iter().map(|id| rank[id]).collect()))
        .collect();
    Ok(Some(Unified { values, maps }))
}

/// How one column's values are moved.
enum Plan {
    /// Fixed-width values (numbers, dates, times, timestamps, decimals, ...).
    Fixed,
    Boolean,
    /// Keys remapped into dictionary values that every output shares.
    Dict(Unified),
    /// Anything else: concatenated, then taken (two copies).
    Other,
}

/// Where [`Mover::scatter`] sends every row. Rows are numbered over the batches in order
/// (batch `b` holds rows `starts[b]..starts[b + 1]`); row `g` becomes row `pos[g]` of
/// output `ids[g]` (of output 0 when there are no `ids`), which holds `counts[ids[g]]`
/// rows.
struct Dest {
    ids: Option<Vec<u32>>,
    pos: Vec<u32>,
    starts: Vec<usize>,
    counts: Vec<usize>,
}

impl Dest {
    /// Every row in the order of the outputs, and where each output starts in that list.
    fn grouped(&self) -> (Vec<u32>, Vec<usize>) {
        let mut starts = vec![0usize; self.counts.len() + 1];
        for (r, &c) in self.counts.iter().enumerate() {
            starts[r + 1] = starts[r] + c;
        }
        let mut rows = vec![0u32; self.pos.len()];
        for (g, &p) in self.pos.iter().enumerate() {
            let r = self.ids.as_ref().map_or(0, |ids| ids[g] as usize);
            rows[starts[r] + p as usize] = g as u32;
        }
        (rows, starts)
    }

    /// Write `f(values[i])` for every row `i` of batch `b` into its place in `outs`.
    #[inline(always)]
    fn put<T: Copy, U>(&self, outs: &mut [Vec<U>], b: usize, values: &[T], f: impl Fn(T) -> U) {
        let rows = self.starts[b]..self.starts[b + 1];
        let pos = &self.pos[rows.clone()];
        match &self.ids {
            Some(ids) => {
                for ((&v, &r), &p) in values.iter().zip(&ids[rows]).zip(pos) {
                    outs[r as usize][p as usize] = f(v);
                }
            }
            None => {
                if let Some(out) = outs.first_mut() {
                    for (&v, &p) in values.iter().zip(pos) {
                        out[p as usize] = f(v);
                    }
                }
            }
        }
    }

    /// Output and position of row `i` of batch `b`.
    #[inline(always)]
    fn target(&self, b: usize, i: usize) -> (usize, usize) {
        let g = self.starts[b] + i;
        let r = self.ids.as_ref().map_or(0, |ids| ids[g] as usize);
        (r, self.pos[g] as usize)
    }
}

/// A bitmap of `len` bits from bytes (bits past `len` ignored).
fn bitmap(bytes: Vec<u8>, len: usize) -> BooleanBuffer {
    BooleanBuffer::new(Buffer::from_vec(bytes), 0, len)
}

/// Validity per output (None where every row is valid). The bitmaps start all set and
/// the null rows clear their bits, or (when most rows are null) start all clear and the
/// valid rows set theirs: only the fewer kind of rows costs anything.
fn scatter_nulls<'n>(
    nulls: impl Iterator<Item = Option<&'n NullBuffer>>,
    dest: &Dest,
) -> Vec<Option<NullBuffer>> {
    let nulls: Vec<Option<&NullBuffer>> = nulls.map(|n| n.filter(|n| n.null_count() > 0)).collect();
    if nulls.iter().all(Option::is_none) {
        return vec![None; dest.counts.len()];
    }
    let total = dest.pos.len();
    let null_rows: usize = nulls.iter().flatten().map(|n| n.null_count()).sum();
    let mostly_null = null_rows * 2 > total;
    let fill = if mostly_null { 0 } else { 0xff };
    let mut bits: Vec<Vec<u8>> = dest
        .counts
        .iter()
        .map(|&n| vec![fill; n.div_ceil(8)])
        .collect();
    for (b, n) in nulls.iter().enumerate() {
        match (n, mostly_null) {
            (Some(n), false) => {
                for i in (!n.inner()).set_indices() {
                    let (r, p) = dest.target(b, i);
                    bits[r][p >> 3] &= !(1 << (p & 7));
                }
            }
            (Some(n), true) => {
                for i in n.inner().set_indices() {
                    let (r, p) = dest.target(b, i);
                    bits[r][p >> 3] |= 1 << (p & 7);
                }
            }
            (None, false) => {}
            (None, true) => {
                for i in 0..dest.starts[b + 1] - dest.starts[b] {
                    let (r, p) = dest.target(b, i);
                    bits[r][p >> 3] |= 1 << (p & 7);
                }
            }
        }
    }
    bits.into_iter()
        .zip(&dest.counts)
        .map(|(b, &n)| Some(NullBuffer::new(bitmap(b, n))).filter(|n| n.null_count() > 0))
        .collect()
}

/// A new array per output, for a fixed-width type `T`.
fn scatter_fixed<T: ArrowPrimitiveType>(cols: &[&ArrayRef], dest: &Dest) -> Vec<ArrayRef> {
    let dt = cols[0].data_type();
    let mut outs: Vec<Vec<T::Native>> = dest
        .counts
        .iter()
        .map(|&n| vec![T::Native::default(); n])
        .collect();
    for (b, col) in cols.iter().enumerate() {
        let values: &[T::Native] = col.as_primitive::<T>().values();
        dest.put(&mut outs, b, values, |v| v);
    }
    let nulls = scatter_nulls(cols.iter().map(|c| c.nulls()), dest);
    outs.into_iter()
        .zip(nulls)
        .map(|(v, n)| {
            Arc::new(PrimitiveArray::<T>::new(v.into(), n).with_data_type(dt.clone())) as ArrayRef
        })
        .collect()
}

fn scatter_bool(cols: &[&ArrayRef], dest: &Dest) -> Vec<ArrayRef> {
    let mut bits: Vec<Vec<u8>> = dest
        .counts
        .iter()
        .map(|&n| vec![0; n.div_ceil(8)])
        .collect();
    for (b, col) in cols.iter().enumerate() {
        for i in col.as_boolean().values().set_indices() {
            let (r, p) = dest.target(b, i);
            bits[r][p >> 3] |= 1 << (p & 7);
        }
    }
    let nulls = scatter_nulls(cols.iter().map(|c| c.nulls()), dest);
    bits.into_iter()
        .zip(&dest.counts)
        .zip(nulls)
        .map(|((b, &len), n)| Arc::new(BooleanArray::new(bitmap(b, len), n)) as ArrayRef)
        .collect()
}

/// Per batch, its old-to-new key table in the key type (None: keys unchanged).
fn key_maps<K: ArrowDictionaryKeyType>(u: &Unified) -> Vec<Option<Vec<K::Native>>> {
    u.maps
        .iter()
        .map(|m| {
            m.as_ref().map(|m| {
                m.iter()
                    .map(|&k| K::Native::from_usize(k).unwrap_or_default())
                    .collect()
            })
        })
        .collect()
}

fn scatter_dict<K: ArrowDictionaryKeyType>(
    cols: &[&ArrayRef],
    u: &Unified,
    dest: &Dest,
) -> Result<Vec<ArrayRef>> {
    let maps = key_maps::<K>(u);
    let mut outs: Vec<Vec<K::Native>> = dest
        .counts
        .iter()
        .map(|&n| vec![K::Native::default(); n])
        .collect();
    for (b, (col, map)) in cols.iter().zip(&maps).enumerate() {
        let keys: &[K::Native] = col.as_dictionary::<K>().keys().values();
        match map {
            None => dest.put(&mut outs, b, keys, |k| k),
            // A null row's key may be anything: it maps to the default.
            Some(map) => dest.put(&mut outs, b, keys, |k| {
                map.get(k.as_usize()).copied().unwrap_or_default()
            }),
        }
    }
    let nulls = scatter_nulls(
        cols.iter().map(|c| c.as_dictionary::<K>().keys().nulls()),
        dest,
    );
    outs.into_iter()
        .zip(nulls)
        .map(|(k, n)| {
            DictionaryArray::<K>::try_new(PrimitiveArray::new(k.into(), n), Arc::clone(&u.values))
                .map(|d| Arc::new(d) as ArrayRef)
                .map_err(|e| arg_err(format!("sort: dictionary keys: {e}")))
        })
        .collect()
}

macro_rules! scatter_fixed_helper {
    ($t:ty, $cols:expr, $dest:expr) => {
        Some(scatter_fixed::<$t>($cols, $dest))
    };
}

macro_rules! scatter_dict_helper {
    ($t:ty, $cols:expr, $u:expr, $dest:expr) => {
        scatter_dict::<$t>($cols, $u, $dest)
    };
}

/// For [`sort_batches_legacy`] only: the rows one sorted output takes, in order:
/// numbered over the batches (`global`), as pairs of batch and row when there are several
/// batches (`pairs`), and where each input row lands (`dest`, for the validity).
struct Order<'d> {
    global: &'d [u32],
    pairs: Option<Vec<(u32, u32)>>,
    dest: &'d Dest,
}

impl Order<'_> {
    /// `f(batch, row)` of every output row, in order.
    #[inline(always)]
    fn map<T>(&self, mut f: impl FnMut(usize, usize) -> T) -> Vec<T> {
        match &self.pairs {
            None => self.global.iter().map(|&g| f(0, g as usize)).collect(),
            Some(pairs) => pairs
                .iter()
                .map(|&(b, r)| f(b as usize, r as usize))
                .collect(),
        }
    }
}

/// A fixed-width column of one sorted output: values gathered in order (no zeroing),
/// validity from [`scatter_nulls`] (only null rows cost anything).
fn gather_fixed<T: ArrowPrimitiveType>(cols: &[&ArrayRef], order: &Order) -> ArrayRef {
    let values: Vec<&[T::Native]> = cols
        .iter()
        .map(|c| c.as_primitive::<T>().values().as_ref())
        .collect();
    let out = order.map(|b, r| values[b][r]);
    let nulls = scatter_nulls(cols.iter().map(|c| c.nulls()), order.dest)
        .pop()
        .flatten();
    Arc::new(
        PrimitiveArray::<T>::new(out.into(), nulls).with_data_type(cols[0].data_type().clone()),
    )
}

fn gather_dict<K: ArrowDictionaryKeyType>(
    cols: &[&ArrayRef],
    u: &Unified,
    order: &Order,
) -> Result<ArrayRef> {
    let maps = key_maps::<K>(u);
    let keys: Vec<&[K::Native]> = cols
        .iter()
        .map(|c| c.as_dictionary::<K>().keys().values().as_ref())
        .collect();
    let out = if maps.iter().all(Option::is_none) {
        order.map(|b, r| keys[b][r])
    } else {
        // A null row's key may be anything: it maps to the default.
        order.map(|b, r| match &maps[b] {
            None => keys[b][r],
            Some(m) => m.get(keys[b][r].as_usize()).copied().unwrap_or_default(),
        })
    };
    let nulls = scatter_nulls(
        cols.iter().map(|c| c.as_dictionary::<K>().keys().nulls()),
        order.dest,
    )
    .pop()
    .flatten();
    DictionaryArray::<K>::try_new(
        PrimitiveArray::new(out.into(), nulls),
        Arc::clone(&u.values),
    )
    .map(|d| Arc::new(d) as ArrayRef)
    .map_err(|e| arg_err(format!("sort: dictionary keys: {e}")))
}

macro_rules! gather_fixed_helper {
    ($t:ty, $cols:expr, $order:expr) => {
        Some(gather_fixed::<$t>($cols, $order))
    };
}

macro_rules! gather_dict_helper {
    ($t:ty, $cols:expr, $u:expr, $order:expr) => {
        gather_dict::<$t>($cols, $u, $order)
    };
}

/// Moves the rows of several batches of one schema into new batches ([`Dest`]) with one
/// copy of every value: the ranges of [`split_by_ranges`] ([`Mover::scatter`]: each input
/// column read in order, each value written straight into its place; each range's rows
/// in input order; also the one output of [`sort_batches`]), or the one sorted output of
/// [`sort_batches_legacy`] ([`Mover::sorted`]: gathered in output order). A dictionary column gets one set of values for all outputs
/// ([`unify_dictionaries`]), its keys remapped on the way.
struct Mover<'a> {
    batches: &'a [RecordBatch],
    plans: Vec<Plan>,
}

impl<'a> Mover<'a> {
    /// Plan the move of these batches' columns into outputs of about `rows` rows each;
    /// the batches must share one schema (column types).
    fn new(batches: &'a [RecordBatch], rows: usize, key: &str) -> Result<Self> {
        let Some(first) = batches.first() else {
            return Ok(Mover {
                batches,
                plans: Vec::new(),
            });
        };
        for b in &batches[1..] {
            let same = b.num_columns() == first.num_columns()
                && b.columns()
                    .iter()
                    .zip(first.columns())
                    .all(|(x, y)| x.data_type() == y.data_type());
            if !same {
                return Err(arg_err(format!(
                    "sort by '{key}': the batches do not share one schema"
                )));
            }
        }
        let mut plans = Vec::with_capacity(first.num_columns());
        for (c, col) in first.columns().iter().enumerate() {
            let dt = col.data_type();
            let plan = if dt.is_primitive() {
                Plan::Fixed
            } else if *dt == DataType::Boolean {
                Plan::Boolean
            } else if matches!(dt, DataType::Dictionary(_, _)) {
                let cols: Vec<&ArrayRef> = batches.iter().map(|b| b.column(c)).collect();
                match unify_dictionaries(&cols, rows)? {
                    Some(u) => Plan::Dict(u),
                    None => Plan::Other,
                }
            } else {
                Plan::Other
            };
            plans.push(plan);
        }
        Ok(Mover { batches, plans })
    }

    /// For [`sort_batches_legacy`]: the columns of the one output of `dest` (a sort:
    /// `global` is its rows in order, numbered over the batches): fixed-width and dictionary columns gathered in order,
    /// the others as [`Mover::scatter`] moves them.
    fn sorted(&self, dest: &Dest, global: &[u32], key: &str) -> Result<Vec<ArrayRef>> {
        let pairs = (self.batches.len() > 1).then(|| {
            global
                .iter()
                .map(|&g| {
                    // The last batch starting at or before `g`: the non-empty one holding it.
                    let b = dest.starts.partition_point(|&s| s <= g as usize) - 1;
                    (b as u32, g - dest.starts[b] as u32)
                })
                .collect()
        });
        let order = &Order {
            global,
            pairs,
            dest,
        };
        let mut out = Vec::with_capacity(self.plans.len());
        for (c, plan) in self.plans.iter().enumerate() {
            let cols: Vec<&ArrayRef> = self.batches.iter().map(|b| b.column(c)).collect();
            let cs = cols.as_slice();
            let dt = cols[0].data_type();
            let moved: Option<ArrayRef> = match plan {
                Plan::Fixed => downcast_primitive! {
                    dt => (gather_fixed_helper, cs, order),
                    _ => None,
                },
                Plan::Dict(u) => match dt {
                    DataType::Dictionary(k, _) => Some(downcast_integer! {
                        k.as_ref() => (gather_dict_helper, cs, u, order),
                        _ => return Err(unsupported(key, dt)),
                    }?),
                    _ => None,
                },
                _ => None,
            };
            out.push(match moved {
                Some(a) => a,
                None => self
                    .scatter_column(c, plan, dest, &mut None, key)?
                    .pop()
                    .ok_or_else(|| arg_err(format!("sort by '{key}': no output")))?,
            });
        }
        Ok(out)
    }

    /// The columns of every output of `dest`.
    fn scatter(&self, dest: &Dest, key: &str) -> Result<Vec<Vec<ArrayRef>>> {
        let mut per_output: Vec<Vec<ArrayRef>> =
            vec![Vec::with_capacity(self.plans.len()); dest.counts.len()];
        // For `Plan::Other`: every row by output, computed once.
        let mut grouped = None;
        for (c, plan) in self.plans.iter().enumerate() {
            let moved = self.scatter_column(c, plan, dest, &mut grouped, key)?;
            for (r, a) in moved.into_iter().enumerate() {
                per_output[r].push(a);
            }
        }
        Ok(per_output)
    }

    /// Column `c` of every output of `dest`; `grouped` caches [`Dest::grouped`].
    fn scatter_column(
        &self,
        c: usize,
        plan: &Plan,
        dest: &Dest,
        grouped: &mut Option<(Vec<u32>, Vec<usize>)>,
        key: &str,
    ) -> Result<Vec<ArrayRef>> {
        let cols: Vec<&ArrayRef> = self.batches.iter().map(|b| b.column(c)).collect();
        let cs = cols.as_slice();
        let dt = cols[0].data_type();
        let moved: Option<Vec<ArrayRef>> = match plan {
            Plan::Fixed => downcast_primitive! {
                dt => (scatter_fixed_helper, cs, dest),
                _ => None,
            },
            Plan::Boolean => Some(scatter_bool(cs, dest)),
            Plan::Dict(u) => match dt {
                DataType::Dictionary(k, _) => Some(downcast_integer! {
                    k.as_ref() => (scatter_dict_helper, cs, u, dest),
                    _ => return Err(unsupported(key, dt)),
                }?),
                _ => None,
            },
            Plan::Other => None,
        };
        if let Some(m) = moved {
            return Ok(m);
        }
        let whole = if cols.len() == 1 {
            Arc::clone(cols[0])
        } else {
            let refs: Vec<&dyn Array> = cols.iter().map(|a| a.as_ref()).collect();
            concat(&refs).map_err(|e| arrow_err(key, "concatenating", e))?
        };
        let (rows, starts) = grouped.get_or_insert_with(|| dest.grouped());
        (0..dest.counts.len())
            .map(|r| {
                let idx = UInt32Array::from(rows[starts[r]..starts[r + 1]].to_vec());
                take(whole.as_ref(), &idx, None).map_err(|e| arrow_err(key, "take", e))
            })
            .collect()
    }
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
/// batch (the range's rows of every input batch, in input order): a zero-copy slice when
/// the range is one run of one input batch, else arrays of its own, with the dictionary
/// values of each dictionary column shared by every range (see the module's `# Moving
/// rows`). Batches whose columns differ in type are an error.
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
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    if u32::try_from(total).is_err() {
        return Err(arg_err(format!(
            "sort by '{key}': {total} rows to split at once are too many (max {})",
            u32::MAX
        )));
    }
    // The range of every row, and the rows per range.
    let mut ids: Vec<Vec<u32>> = Vec::with_capacity(batches.len());
    let mut counts = vec![0usize; nranges];
    for (batch, col) in batches.iter().zip(&cols) {
        let b_ids = if batch.num_rows() == 0 {
            Vec::new()
        } else {
            range_ids(col.as_ref(), kind, &bounds, key)?
        };
        for &r in &b_ids {
            counts[r as usize] += 1;
        }
        ids.push(b_ids);
    }
    // Batches already in range order: when every range is one run of one batch, its
    // output is a zero-copy slice.
    if ids
        .iter()
        .all(|b_ids| b_ids.windows(2).all(|w| w[0] <= w[1]))
    {
        let mut runs: Vec<Vec<RecordBatch>> = vec![Vec::new(); nranges];
        for (batch, b_ids) in batches.iter().zip(&ids) {
            let mut start = 0;
            while start < b_ids.len() {
                let r = b_ids[start];
                let end = start + b_ids[start..].iter().take_while(|&&x| x == r).count();
                runs[r as usize].push(batch.slice(start, end - start));
                start = end;
            }
        }
        if runs.iter().all(|p| p.len() <= 1) {
            return Ok(runs);
        }
    }
    let Some(first) = batches.first() else {
        return Ok(vec![Vec::new(); nranges]);
    };
    // Every row is copied once, straight into its place in its range's arrays; the
    // dictionaries are unified once for all ranges.
    let mut next = vec![0u32; nranges];
    let mut starts = Vec::with_capacity(batches.len() + 1);
    starts.push(0);
    let mut flat: Vec<u32> = Vec::with_capacity(total);
    let mut pos: Vec<u32> = Vec::with_capacity(total);
    for b_ids in &ids {
        for &r in b_ids {
            pos.push(next[r as usize]);
            next[r as usize] += 1;
        }
        flat.extend_from_slice(b_ids);
        starts.push(flat.len());
    }
    drop(ids);
    let dest = Dest {
        ids: Some(flat),
        pos,
        starts,
        counts,
    };
    // The ranges share their dictionaries, and each range ships them: deduplicate (`0`).
    let mover = Mover::new(batches, 0, key)?;
    let columns = mover.scatter(&dest, key)?;
    let schema = output_schema(batches, first);
    columns
        .into_iter()
        .zip(&dest.counts)
        .map(|(cols, &n)| {
            if n == 0 {
                return Ok(Vec::new());
            }
            RecordBatch::try_new_with_options(
                Arc::clone(&schema),
                cols,
                &RecordBatchOptions::new().with_row_count(Some(n)),
            )
            .map(|b| vec![b])
            .map_err(|e| arrow_err(key, "assembling a range", e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    //! The row movers of [`split_by_ranges`] and [`sort_batches`] against `concat` + `take`
    //! oracles, over every kind of column they treat differently (fixed-width, boolean,
    //! dictionaries shared, equal, small, overflowing or of non-string values, and the
    //! concatenate-and-take fallback), with nulls, NaN keys and sliced inputs.

    use super::*;
    use arrow_array::builder::{ListBuilder, StringDictionaryBuilder};
    use arrow_array::{
        BinaryArray, Decimal128Array, Float32Array, Float64Array, Int16Array, Int32Array,
        Int64Array, Int8Array, LargeStringArray, NullArray, TimestampMillisecondArray,
    };
    use arrow_select::concat::concat_batches;
    use arrow_select::take::take_record_batch;

    /// A batch of `n` rows whose `key` is a float with nulls and NaN, and whose other
    /// columns cover every plan; `shared` is the dictionary every batch shares.
    fn batch(rng: &mut SmallRng, n: usize, shared: &ArrayRef) -> RecordBatch {
        let mut opt = |p: u32| rng.random_range(0..100) >= p;
        let valid: Vec<[bool; 8]> = (0..n)
            .map(|_| {
                [
                    opt(10),
                    opt(10),
                    opt(10),
                    opt(10),
                    opt(10),
                    opt(10),
                    opt(10),
                    opt(10),
                ]
            })
            .collect();
        let v = |c: usize| valid.iter().map(move |m| m[c]);
        let mut r = |hi: i64| -> Vec<i64> { (0..n).map(|_| rng.random_range(0..hi)).collect() };
        let keyv = r(1000);
        let key: Float64Array = keyv
            .iter()
            .zip(v(0))
            .map(|(&k, ok)| ok.then(|| if k == 7 { f64::NAN } else { k as f64 / 10.0 }))
            .collect();
        let ints = r(100);
        let int8: Int8Array = ints
            .iter()
            .zip(v(1))
            .map(|(&x, ok)| ok.then_some(x as i8))
            .collect();
        let bools: BooleanArray = ints
            .iter()
            .zip(v(2))
            .map(|(&x, ok)| ok.then_some(x % 3 == 0))
            .collect();
        let words: Vec<String> = ints.iter().map(|x| format!("w{x}")).collect();
        let utf8: StringArray = words
            .iter()
            .zip(v(3))
            .map(|(w, ok)| ok.then_some(w.as_str()))
            .collect();
        let large: LargeStringArray = words
            .iter()
            .zip(v(4))
            .map(|(w, ok)| ok.then_some(w.as_str()))
            .collect();
        let binary = BinaryArray::from_iter(
            words
                .iter()
                .zip(v(5))
                .map(|(w, ok)| ok.then_some(w.as_bytes())),
        );
        // A Utf8 dictionary built per batch (its own values, in its own order).
        let mut sd = StringDictionaryBuilder::<Int32Type>::new();
        for (w, ok) in words.iter().zip(v(6)) {
            if ok {
                sd.append_value(w);
            } else {
                sd.append_null();
            }
        }
        let dict_utf8 = sd.finish();
        // Int8 keys over 40 values per batch, different per batch: one after the other they
        // would overflow the keys, deduplicated they fit.
        let base = rng.random_range(0..3) * 20;
        let i8_values = StringArray::from_iter_values((0..40).map(|i| format!("v{}", base + i)));
        let i8_keys: Int8Array = ints.iter().map(|&x| Some((x % 40) as i8)).collect();
        let dict_i8 = DictionaryArray::<Int8Type>::try_new(i8_keys, Arc::new(i8_values)).unwrap();
        // Int16 keys over Int64 values (not strings), with a null value in the dictionary.
        let i64_values = Int64Array::from(vec![Some(5), None, Some(-3), Some(5)]);
        let i16_keys: Int16Array = ints
            .iter()
            .zip(v(7))
            .map(|(&x, ok)| ok.then_some((x % 4) as i16))
            .collect();
        let dict_i64 =
            DictionaryArray::<Int16Type>::try_new(i16_keys, Arc::new(i64_values)).unwrap();
        let shared_keys: Int32Array = ints.iter().map(|&x| Some((x % 3) as i32)).collect();
        let dict_shared =
            DictionaryArray::<Int32Type>::try_new(shared_keys, Arc::clone(shared)).unwrap();
        let decimal = Decimal128Array::from_iter(
            ints.iter()
                .zip(v(1))
                .map(|(&x, ok)| ok.then_some(x as i128 * 1001)),
        )
        .with_precision_and_scale(12, 2)
        .unwrap();
        let ts = TimestampMillisecondArray::from_iter(
            ints.iter().zip(v(2)).map(|(&x, ok)| ok.then_some(x * 1000)),
        )
        .with_timezone("UTC");
        let mut lb = ListBuilder::new(arrow_array::builder::Int32Builder::new());
        for (&x, ok) in ints.iter().zip(v(3)) {
            if ok {
                lb.values().append_value(x as i32);
                lb.values().append_null();
                lb.append(true);
            } else {
                lb.append(false);
            }
        }
        let list = lb.finish();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(key),
            Arc::new(int8),
            Arc::new(bools),
            Arc::new(utf8),
            Arc::new(large),
            Arc::new(binary),
            Arc::new(dict_utf8),
            Arc::new(dict_i8),
            Arc::new(dict_i64),
            Arc::new(dict_shared),
            Arc::new(decimal),
            Arc::new(ts),
            Arc::new(list),
            Arc::new(NullArray::new(n)),
            // Mostly null: validity is built from the valid rows.
            Arc::new(Int64Array::from_iter(
                ints.iter().map(|&x| (x % 20 == 0).then_some(x)),
            )),
        ];
        let fields: Vec<Field> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                Field::new(
                    if i == 0 {
                        "key".into()
                    } else {
                        format!("c{i}")
                    },
                    c.data_type().clone(),
                    true,
                )
            })
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    /// Batches of various sizes, some of them slices (non-zero offsets), one empty.
    fn batches(seed: u64) -> Vec<RecordBatch> {
        let mut rng = SmallRng::seed_from_u64(seed);
        let shared: ArrayRef = Arc::new(StringArray::from(vec!["x", "y", "z"]));
        let mut out = Vec::new();
        for (i, n) in [300, 1, 0, 257, 1000, 64].into_iter().enumerate() {
            let b = batch(&mut rng, n + 10, &shared);
            out.push(if i % 2 == 0 {
                b.slice(3, n)
            } else {
                b.slice(10, n)
            });
        }
        out
    }

    /// The oracle's key: None for null and NaN.
    fn key_of(b: &RecordBatch, i: usize) -> Option<f64> {
        let k = b.column(0).as_primitive::<Float64Type>();
        (k.is_valid(i) && !k.value(i).is_nan()).then(|| k.value(i))
    }

    /// The batch with its dictionaries decoded (the values they stand for).
    fn decoded(b: &RecordBatch) -> RecordBatch {
        let columns: Vec<ArrayRef> = b
            .columns()
            .iter()
            .map(|c| to_value_type(Arc::clone(c), "key").unwrap())
            .collect();
        let fields: Vec<Field> = b
            .schema()
            .fields()
            .iter()
            .zip(&columns)
            .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
            .collect();
        RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).unwrap()
    }

    /// The same schema, and the same values row by row (`want` is decoded already).
    fn assert_same(got: &RecordBatch, want: &RecordBatch, what: &str) {
        assert_eq!(got.num_rows(), want.num_rows(), "{what}: rows");
        assert_eq!(got.num_columns(), want.num_columns(), "{what}: columns");
        let got = decoded(got);
        for c in 0..want.num_columns() {
            let (g, w) = (got.column(c), want.column(c));
            let same = match w.data_type() {
                // NaN is not equal to itself: compare the bits.
                DataType::Float64 => {
                    let bits = |a: &ArrayRef| -> Vec<Option<u64>> {
                        a.as_primitive::<Float64Type>()
                            .iter()
                            .map(|v| v.map(f64::to_bits))
                            .collect()
                    };
                    bits(g) == bits(w)
                }
                _ => g.to_data() == w.to_data(),
            };
            assert!(same, "{what}: column {c} ({}) differs", w.data_type());
        }
    }

    /// Every batch decoded, concatenated.
    fn decoded_whole(input: &[RecordBatch]) -> RecordBatch {
        let d: Vec<RecordBatch> = input.iter().map(decoded).collect();
        concat_batches(d[0].schema_ref(), &d).unwrap()
    }

    #[test]
    fn split_matches_concat_and_take() {
        let input = batches(1);
        let whole = decoded_whole(&input);
        let bounds: ArrayRef = Arc::new(Float64Array::from(vec![10.0, 25.5, 50.0, 50.1, 90.0]));
        let split = split_by_ranges(&input, "key", &bounds).unwrap();
        assert_eq!(split.len(), 6);
        let b = [10.0, 25.5, 50.0, 50.1, 90.0];
        for (r, got) in split.iter().enumerate() {
            let rows: Vec<u32> = (0..whole.num_rows())
                .filter(|&i| {
                    let range = key_of(&whole, i)
                        .map_or(b.len(), |k| b.iter().filter(|&&x| x <= k).count());
                    range == r
                })
                .map(|i| i as u32)
                .collect();
            if rows.is_empty() {
                assert!(got.is_empty(), "range {r} should be empty");
                continue;
            }
            assert_eq!(got.len(), 1, "range {r}: one batch");
            let want = take_record_batch(&whole, &UInt32Array::from(rows)).unwrap();
            assert_same(&got[0], &want, &format!("range {r}"));
        }
        // Every range shares its unified dictionaries, sorted and without duplicates.
        let dicts: Vec<&ArrayRef> = split
            .iter()
            .flatten()
            .map(|b| b.column(6).as_any_dictionary().values())
            .collect();
        assert!(dicts.windows(2).all(|w| Arc::ptr_eq(w[0], w[1])));
        let values = dicts[0].as_string::<i32>();
        assert!((1..values.len()).all(|i| values.value(i - 1) < values.value(i)));
    }

    /// The rows of a decoded batch stably sorted by key, nulls and NaN last.
    fn stably_sorted(whole: &RecordBatch) -> RecordBatch {
        let mut rows: Vec<u32> = (0..whole.num_rows() as u32).collect();
        rows.sort_by(
            |&a, &b| match (key_of(whole, a as usize), key_of(whole, b as usize)) {
                (Some(x), Some(y)) => x.partial_cmp(&y).unwrap(),
                (Some(_), None) => std::cmp::Ordering::Less,
                (None, Some(_)) => std::cmp::Ordering::Greater,
                (None, None) => std::cmp::Ordering::Equal,
            },
        );
        take_record_batch(whole, &UInt32Array::from(rows)).unwrap()
    }

    #[test]
    fn sort_matches_a_stable_sort() {
        let input = batches(2);
        let want = stably_sorted(&decoded_whole(&input));
        let got = sort_batches(&input, "key").unwrap();
        assert_eq!(got.len(), 1);
        assert_same(&got[0], &want, "sorted");
        // One batch.
        let one = concat_batches(input[0].schema_ref(), &input[..2]).unwrap();
        let got = sort_batches(std::slice::from_ref(&one), "key").unwrap();
        assert_same(
            &got[0],
            &stably_sorted(&decoded_whole(&input[..2])),
            "one batch",
        );
        // The ranges of a split received from two holders, sorted one by one.
        let bounds: ArrayRef = Arc::new(Float64Array::from(vec![40.0]));
        let a = split_by_ranges(&input[..3], "key", &bounds).unwrap();
        let b = split_by_ranges(&input[3..], "key", &bounds).unwrap();
        for r in 0..2 {
            let received: Vec<RecordBatch> = a[r].iter().chain(&b[r]).cloned().collect();
            let got = sort_batches(&received, "key").unwrap();
            assert_same(
                &got[0],
                &stably_sorted(&decoded_whole(&received)),
                &format!("range {r}"),
            );
        }
    }

    #[test]
    fn dictionaries_of_two_holders_with_equal_values_are_shared() {
        let values: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c"]));
        let copy: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c"]));
        let d = |v: &ArrayRef, keys: Vec<i32>| -> ArrayRef {
            Arc::new(
                DictionaryArray::<Int32Type>::try_new(Int32Array::from(keys), Arc::clone(v))
                    .unwrap(),
            )
        };
        let (x, y) = (d(&values, vec![0, 2]), d(&copy, vec![1, 1, 0]));
        let u = unify_dictionaries(&[&x, &y], 0).unwrap().unwrap();
        assert!(Arc::ptr_eq(&u.values, &values));
        assert!(u.maps.iter().all(Option::is_none));
        // Different values: few next to the rows, they are put one after the other;
        // else deduplicated and sorted.
        let other: ArrayRef = Arc::new(StringArray::from(vec!["c", "d"]));
        let z = d(&other, vec![1, 0]);
        let u = unify_dictionaries(&[&x, &z], 100).unwrap().unwrap();
        assert_eq!(u.values.len(), 5);
        let u = unify_dictionaries(&[&x, &z], 0).unwrap().unwrap();
        let sorted: Vec<&str> = u.values.as_string::<i32>().iter().flatten().collect();
        assert_eq!(sorted, ["a", "b", "c", "d"]);
        assert_eq!(u.maps[1], Some(vec![2, 3]));
    }

    #[test]
    fn radix_sort_with_null_keys_before_the_valid_ones() {
        // 1100 rows, the first 200 null: 900 valid keys (10 bits) but row numbers up to
        // 1099 (11 bits). Packing them with 10 row bits once lost rows.
        let keys: Vec<Option<i64>> = (0..1100)
            .map(|i| (i >= 200).then(|| 1_000_000_000_000 + ((i * 7919) % 1000) * 1_000_003))
            .collect();
        let a: ArrayRef = Arc::new(Int64Array::from(keys.clone()));
        let perm = sort_permutation(&[&a], Kind::Code, "k").unwrap().unwrap();
        let mut seen = vec![false; keys.len()];
        for &p in &perm {
            assert!(
                !std::mem::replace(&mut seen[p as usize], true),
                "row {p} twice"
            );
        }
        let sorted: Vec<Option<i64>> = perm.iter().map(|&p| keys[p as usize]).collect();
        let valid: Vec<i64> = sorted.iter().map_while(|k| *k).collect();
        assert_eq!(valid.len(), 900);
        assert!(valid.windows(2).all(|w| w[0] <= w[1]));
    }

    #[test]
    fn mostly_null_columns_next_to_batches_without_nulls() {
        let b = |keys: Vec<f64>, v: Vec<Option<i64>>| {
            RecordBatch::try_from_iter([
                ("key", Arc::new(Float64Array::from(keys)) as ArrayRef),
                ("v", Arc::new(Int64Array::from(v)) as ArrayRef),
            ])
            .unwrap()
        };
        let input = [
            b(vec![5.0, 1.0, 3.0], vec![Some(50), Some(10), Some(30)]),
            b((0..10).map(|i| i as f64 + 0.5).collect(), vec![None; 10]),
        ];
        let want = stably_sorted(&decoded_whole(&input));
        assert_same(&sort_batches(&input, "key").unwrap()[0], &want, "sorted");
        let bounds: ArrayRef = Arc::new(Float64Array::from(vec![3.0]));
        let split = split_by_ranges(&input, "key", &bounds).unwrap();
        let v = |r: usize| -> Vec<Option<i64>> {
            split[r][0]
                .column(1)
                .as_primitive::<Int64Type>()
                .iter()
                .collect()
        };
        assert_eq!(v(0), [Some(10), None, None, None]);
        assert_eq!(
            v(1),
            [Some(50), Some(30), None, None, None, None, None, None, None]
        );
    }

    /// A null (or NaN) between two equal keys: the rows are not in order (the null goes
    /// last), on the few-distinct path and on the legacy one.
    #[test]
    fn a_null_between_equal_keys_is_moved_last() {
        let ints: ArrayRef = Arc::new(Int64Array::from(vec![Some(1), None, Some(1)]));
        let floats: ArrayRef = Arc::new(Float64Array::from(vec![2.5, f64::NAN, 2.5]));
        for key in [ints, floats] {
            let b = RecordBatch::try_from_iter([
                ("k", key),
                ("row", Arc::new(Int32Array::from(vec![0, 1, 2])) as ArrayRef),
            ])
            .unwrap();
            for sort in [sort_batches, sort_batches_legacy] {
                let got = sort(std::slice::from_ref(&b), "k").unwrap();
                let rows: Vec<i32> = got[0]
                    .column(1)
                    .as_primitive::<Int32Type>()
                    .values()
                    .to_vec();
                assert_eq!(rows, [0, 2, 1]);
            }
        }
    }

    /// A key value as the reference sort orders it: None for null and NaN.
    #[derive(Debug, Clone, PartialEq, PartialOrd)]
    enum RefKey {
        Int(i128),
        Float(f64),
        Str(String),
    }

    /// Keys of type `dt` for `n` rows, about 10% null: `few` draws them from a handful of
    /// values far apart (more for floats: NaN, both zeros, infinities), else from a wide
    /// range. Returns the array and each row's [`RefKey`].
    fn random_keys(
        rng: &mut SmallRng,
        dt: &DataType,
        n: usize,
        few: bool,
    ) -> (ArrayRef, Vec<Option<RefKey>>) {
        use arrow_array::builder::StringDictionaryBuilder;
        let null = |rng: &mut SmallRng| rng.random_range(0..10) == 0;
        // Integer values in [lo, lo + 1000 * stride) (few: 20 of them).
        let (lo, stride): (i64, i64) = match dt {
            DataType::Int8 => (-100, 1),
            DataType::UInt8 => (0, 1),
            DataType::Int16 | DataType::UInt16 => (-1 + i64::from(*dt == DataType::UInt16), 30),
            DataType::Int32 | DataType::UInt32 | DataType::Date32 => (7, 2_000_000),
            _ => (-5_000_000_000_000, 86_400_000_000),
        };
        let ints: Vec<Option<i64>> = (0..n)
            .map(|_| {
                if null(rng) {
                    return None;
                }
                let k = if few {
                    rng.random_range(0..20)
                } else {
                    rng.random_range(0..1000)
                };
                let v = lo + k * stride + if few { 0 } else { rng.random_range(0..stride) };
                Some(match dt {
                    DataType::Int8 => v.clamp(-128, 127),
                    DataType::UInt8 => v.clamp(0, 255),
                    _ => v,
                })
            })
            .collect();
        let int_keys = || {
            ints.iter()
                .map(|v| v.map(|x| RefKey::Int(i128::from(x))))
                .collect()
        };
        macro_rules! prim {
            ($t:ty, $native:ty) => {
                Arc::new(
                    PrimitiveArray::<$t>::from_iter(ints.iter().map(|v| v.map(|x| x as $native)))
                        .with_data_type(dt.clone()),
                ) as ArrayRef
            };
        }
        let floats = |rng: &mut SmallRng| -> Vec<Option<f64>> {
            const POOL: [f64; 8] = [
                f64::NAN,
                -0.0,
                0.0,
                f64::NEG_INFINITY,
                f64::INFINITY,
                1.5,
                -2.25,
                1e300,
            ];
            (0..n)
                .map(|_| {
                    if null(rng) {
                        None
                    } else if few || rng.random_range(0..10) == 0 {
                        Some(POOL[rng.random_range(0..POOL.len())])
                    } else {
                        Some(rng.random_range(-1e6..1e6))
                    }
                })
                .collect()
        };
        let float_keys = |f: &[Option<f64>]| -> Vec<Option<RefKey>> {
            f.iter()
                .map(|v| v.filter(|x| !x.is_nan()).map(RefKey::Float))
                .collect()
        };
        let words: Vec<Option<String>> = ints
            .iter()
            .map(|v| v.map(|x| format!("w{}", x.rem_euclid(if few { 7 } else { 5000 }))))
            .collect();
        let word_keys = || words.iter().map(|w| w.clone().map(RefKey::Str)).collect();
        match dt {
            DataType::Int8 => (prim!(Int8Type, i8), int_keys()),
            DataType::Int16 => (prim!(Int16Type, i16), int_keys()),
            DataType::Int32 => (prim!(Int32Type, i32), int_keys()),
            DataType::Int64 => (prim!(Int64Type, i64), int_keys()),
            DataType::UInt8 => (prim!(UInt8Type, u8), int_keys()),
            DataType::UInt16 => (prim!(UInt16Type, u16), int_keys()),
            DataType::UInt32 => (prim!(UInt32Type, u32), int_keys()),
            DataType::Date32 => (prim!(Date32Type, i32), int_keys()),
            DataType::Date64 => (prim!(Date64Type, i64), int_keys()),
            DataType::Timestamp(TimeUnit::Second, _) => {
                (prim!(TimestampSecondType, i64), int_keys())
            }
            DataType::Timestamp(TimeUnit::Microsecond, _) => {
                (prim!(TimestampMicrosecondType, i64), int_keys())
            }
            DataType::Float32 => {
                let f: Vec<Option<f64>> = floats(rng)
                    .into_iter()
                    .map(|v| v.map(|x| f64::from(x as f32)))
                    .collect();
                let a = Float32Array::from_iter(f.iter().map(|v| v.map(|x| x as f32)));
                (Arc::new(a), float_keys(&f))
            }
            DataType::Float64 => {
                let f = floats(rng);
                (Arc::new(Float64Array::from(f.clone())), float_keys(&f))
            }
            DataType::Utf8 => {
                let a = StringArray::from_iter(words.iter().map(|w| w.as_deref()));
                (Arc::new(a), word_keys())
            }
            _ => {
                let mut d = StringDictionaryBuilder::<Int16Type>::new();
                for w in &words {
                    d.append_option(w.as_deref());
                }
                (Arc::new(d.finish()), word_keys())
            }
        }
    }

    /// Property test: for every supported key type, few or many distinct keys, nulls (and
    /// NaN, both zeros and infinities for floats), several batches some of them sliced,
    /// [`sort_batches`] puts the rows in the order of a reference stable sort (a `row`
    /// column tells), agrees with [`sort_batches_legacy`] column by column, and leaves its
    /// own output as it is.
    #[test]
    fn sort_of_every_key_type_matches_a_reference_sort() {
        let types = [
            DataType::Int8,
            DataType::Int16,
            DataType::Int32,
            DataType::Int64,
            DataType::UInt8,
            DataType::UInt16,
            DataType::UInt32,
            DataType::Date32,
            DataType::Date64,
            DataType::Timestamp(TimeUnit::Second, None),
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            DataType::Float32,
            DataType::Float64,
            DataType::Utf8,
            DataType::Dictionary(Box::new(DataType::Int16), Box::new(DataType::Utf8)),
        ];
        let mut rng = SmallRng::seed_from_u64(7);
        for round in 0..6 {
            for dt in &types {
                let few = round % 2 == 0;
                let mut input = Vec::new();
                let mut want_keys = Vec::new();
                let mut base = 0i64;
                for _ in 0..3 {
                    let n = rng.random_range(0..1200);
                    let (keys, refs) = random_keys(&mut rng, dt, n + 5, few);
                    let rows = Int64Array::from_iter_values(base - 2..base + n as i64 + 3);
                    let other = Float64Array::from_iter(
                        (0..n + 5).map(|i| (i % 3 != 0).then_some(i as f64)),
                    );
                    let b = RecordBatch::try_from_iter([
                        ("k", keys),
                        ("row", Arc::new(rows) as ArrayRef),
                        ("v", Arc::new(other) as ArrayRef),
                    ])
                    .unwrap()
                    .slice(2, n);
                    want_keys.extend(refs[2..2 + n].iter().cloned());
                    base += n as i64;
                    input.push(b);
                }
                let mut want: Vec<i64> = (0..base).collect();
                want.sort_by(
                    |&a, &b| match (&want_keys[a as usize], &want_keys[b as usize]) {
                        (Some(x), Some(y)) => x.partial_cmp(y).unwrap(),
                        (Some(_), None) => std::cmp::Ordering::Less,
                        (None, Some(_)) => std::cmp::Ordering::Greater,
                        (None, None) => std::cmp::Ordering::Equal,
                    },
                );
                let what = format!("{dt}, round {round}");
                let rows_of = |out: &[RecordBatch]| -> Vec<i64> {
                    out.iter()
                        .flat_map(|b| b.column(1).as_primitive::<Int64Type>().values().to_vec())
                        .collect()
                };
                let got = sort_batches(&input, "k").unwrap();
                assert_eq!(rows_of(&got), want, "{what}");
                let legacy = sort_batches_legacy(&input, "k").unwrap();
                assert_eq!(got.len(), legacy.len(), "{what}");
                for (g, l) in got.iter().zip(&legacy) {
                    for c in 0..3 {
                        assert!(
                            g.column(c).to_data() == l.column(c).to_data(),
                            "{what}: column {c} differs from the legacy path"
                        );
                    }
                }
                let again = sort_batches(&got, "k").unwrap();
                assert_eq!(rows_of(&again), want, "{what}: sorted again");
            }
        }
    }

    #[test]
    fn batches_of_different_schemas_are_refused() {
        let a = RecordBatch::try_from_iter([
            (
                "key",
                Arc::new(Float64Array::from(vec![2.0, 1.0])) as ArrayRef,
            ),
            ("v", Arc::new(Int32Array::from(vec![1, 2])) as ArrayRef),
        ])
        .unwrap();
        let b = RecordBatch::try_from_iter([
            ("key", Arc::new(Float64Array::from(vec![3.0])) as ArrayRef),
            ("v", Arc::new(Int64Array::from(vec![1])) as ArrayRef),
        ])
        .unwrap();
        let err = sort_batches(&[a, b], "key").unwrap_err().to_string();
        assert!(err.contains("'key'") && err.contains("schema"), "{err}");
    }
}
