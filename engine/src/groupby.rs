//! Group-by aggregation kernels: pandas' `df.groupby(keys).agg(...)` split into
//! *partial*, *merge* and *finalize* so that it runs distributed.
//!
//! This module owns the aggregate state of a group-by and the three steps over it:
//!
//! - [`partial`] aggregates the record batches of one partition into a *partial*: a
//!   [`RecordBatch`] with one row per distinct key seen in that partition (rows whose
//!   key — or any of whose keys — is null are dropped, as pandas' `dropna=True` does).
//! - [`merge`] combines any number of partials (same partial schema) into one partial.
//!   It is associative and commutative (up to floating-point rounding), so partials can
//!   be merged in any tree on the workers. Partials travel as Arrow IPC.
//! - [`finalize`] turns a partial into the result: the keys, then one column per
//!   [`AggSpec`], rows sorted ascending by the keys.
//!
//! # Partial layout
//!
//! [`GroupBy::partial_schema`] gives it: the key columns first (same name and Arrow
//! type as the input, except that dictionary-encoded keys become their value type,
//! e.g. `Dictionary(Int32, Utf8)` → `Utf8`), then, for every aggregated column in order
//! of first appearance in [`GroupBy::aggs`], its state columns, named `"{column}#{state}"`:
//!
//! | state | type | present when the column has |
//! |---|---|---|
//! | `count` | Int64 | always: number of non-null, non-NaN values |
//! | `sum` | Float64 | `Sum` |
//! | `mean` | Float64 | `Mean`, `Std` or `Var` |
//! | `m2` | Float64 | `Std` or `Var`: sum of squared deviations from `mean` |
//! | `min` / `max` | input type | `Min` / `Max` (null when `count` is 0) |
//!
//! `mean`/`m2` are computed per partition with a corrected two-pass algorithm and
//! merged with Chan et al.'s parallel formula ([`Moments::merge`]), so a column with mean
//! 1014.6 and std 9.4 loses no digits. State columns are shared by all aggregations of one
//! column.
//!
//! # Result
//!
//! Count → Int64; Sum, Mean, Std, Var → Float64 (Std and Var with `ddof = 1`, as pandas);
//! Min, Max keep the input type. A group with no value (all null/NaN) gives `count` 0 and
//! null for every other aggregate (pandas gives NaN for mean/std/var/min/max and 0 for
//! sum; Stratus uses null throughout). Std/Var of a group with one value are null.
//! Sums are accumulated in `f64` (integer sums beyond 2^53 round).
//!
//! Output column names: when a column has a single aggregation, the output column is
//! named like the source column (`groupby(day).mean()` gives `temperature`); when it has
//! several, they are named `"{column}_{func}"` with `func` one of `count`, `sum`, `mean`,
//! `min`, `max`, `std`, `var` (`temperature_mean`, `temperature_max`).
//!
//! # Performance
//!
//! Keys are turned into dense group ids once per partition, in order of first
//! appearance:
//!
//! - one to four integer-like keys whose values span a small range go by **dense
//!   index** (`groupby/dense.rs`): a key's slot is `(key - min) / step`, `step` the gcd
//!   of the differences (a date floored to the day in microseconds: 86,400,000,000, so
//!   a month partition spans ~31 slots), keys combined in mixed radix, and a slot table
//!   gives the group; no hashing. Min, max and step come from a sample of each batch
//!   and every row is checked against them in the same pass that looks its group up
//!   (exact ones are taken from every row if one falls outside). Above 65,536 slots, or
//!   when the slots would be sparse next to the rows, the keys are hashed instead;
//! - otherwise a single integer-like key (or two keys of at most 32 bits packed into
//!   one `i64`) goes through an open-addressing `i64` table with a cache of the
//!   previous key; a single dictionary key looks each dictionary value up once;
//!   anything else goes through [`arrow_row`] rows.
//!
//! Values are then aggregated one column at a time over whole slices, by one of two
//! kernels per batch, so the speed does not depend on the order of the rows:
//!
//! - batches whose group ids come in long runs (data sorted by the key, as our
//!   generator writes ISD by time) are aggregated run by run with eight independent
//!   accumulators and validity bitmaps turned into masks, so the loops vectorize; a run
//!   whose masked sum comes out NaN (a NaN value) is redone by a NaN-skipping loop;
//! - any other batch (grouped by station then time, as pyarrow-written copies come, or
//!   shuffled) goes through the **column kernels** (`groupby/scatter.rs`): a typed loop
//!   over the value slice zipped with the group-id slice into per-group arrays (in L1
//!   for a few hundred groups). Validity is read a 64-row word at a time. A batch's
//!   rows per group are counted once; a column's count starts there and each null or
//!   NaN row takes one off, so a value costs one load-add-store, into one of four sums
//!   per group (row `i` into copy `i % 4`, so rows of one group close together do not
//!   wait on each other); a column more than half null visits only its valid rows.
//!   Deviations (for `m2`) and min/max use the same loops without the counting.
//!
//! Measured (`cargo bench -p stratus-engine --bench kernels -- --only groupby`, the
//! partials of `groupby(date).mean()` over 16 ISD columns, 4 M rows): station order
//! 55.7 -> 17.8 ns/row and random order 52.9 -> 23.1 ns/row against the row-by-row path
//! these kernels replaced (still callable as [`Paths::LEGACY`] for that comparison),
//! time order 9.2 -> 10.0 ns/row.
//!
//! Any key type [`arrow_row`] supports may be used (floats included: a NaN key is a
//! group of its own). A partition with no batches at all needs
//! [`partial_with_schema`], since [`partial`] takes the input schema from its first batch.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{
    new_empty_array, Array, ArrayRef, ArrowPrimitiveType, Float64Array, Int64Array, PrimitiveArray,
    RecordBatch, UInt32Array,
};
use arrow_buffer::{NullBuffer, ScalarBuffer};
use arrow_ord::sort::{lexsort_to_indices, SortColumn};
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use stratus_plan::{AggFunc, Moments};

use crate::error::{EngineError, Result};
use crate::num::Num;

mod dense;
mod scatter;

/// Which kernels [`partial_with_paths`] uses. [`Paths::default`] (what [`partial`] and
/// [`merge`] use) turns everything on; [`Paths::LEGACY`] is the path as it was before the
/// dense-index keys and the column kernels, kept callable so that benchmarks can compare
/// both in one run and tests can check they agree.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paths {
    /// Group ids by dense index when the keys' range is small (else the hash table).
    pub dense_keys: bool,
    /// Batches without runs of equal keys go through the column kernels (else row by row).
    pub column_kernels: bool,
}

impl Paths {
    /// The row-by-row path with hashed keys, as before.
    pub const LEGACY: Paths = Paths {
        dense_keys: false,
        column_kernels: false,
    };
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            dense_keys: true,
            column_kernels: true,
        }
    }
}

/// One output column: `func` of `column`.
#[derive(Debug, Clone, PartialEq)]
pub struct AggSpec {
    /// The input column.
    pub column: String,
    /// The aggregate function.
    pub func: AggFunc,
}

impl AggSpec {
    /// `func` of `column`.
    pub fn new(column: impl Into<String>, func: AggFunc) -> Self {
        AggSpec {
            column: column.into(),
            func,
        }
    }
}

/// A group-by: key columns and aggregations.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupBy {
    /// The key columns, in order (the result is sorted by them).
    pub keys: Vec<String>,
    /// The aggregations, in output order.
    pub aggs: Vec<AggSpec>,
}

impl GroupBy {
    /// pandas' `.mean()` (or any func) over every numeric (integer/float) column that is
    /// not a key. Errors if a key is not in the schema.
    pub fn all_numeric(schema: &Schema, keys: Vec<String>, func: AggFunc) -> Result<GroupBy> {
        for k in &keys {
            find_field(schema, k)?;
        }
        let aggs = schema
            .fields()
            .iter()
            .filter(|f| !keys.iter().any(|k| k == f.name()) && is_numeric(f.data_type()))
            .map(|f| AggSpec::new(f.name().clone(), func))
            .collect();
        Ok(GroupBy { keys, aggs })
    }

    /// Schema of partials for this input schema (keys first, then state columns; see the
    /// module documentation). Errors name missing or non-numeric columns (Count accepts
    /// any type, counting non-nulls).
    pub fn partial_schema(&self, input: &Schema) -> Result<SchemaRef> {
        Ok(InputPlan::new(self, input)?.schema)
    }

    /// Names of the result columns of [`finalize`]: the keys, then one per aggregation.
    pub fn output_names(&self) -> Vec<String> {
        let mut names = self.keys.clone();
        for a in &self.aggs {
            let several = self.aggs.iter().filter(|b| b.column == a.column).count() > 1;
            names.push(if several {
                format!("{}_{}", a.column, a.func.name())
            } else {
                a.column.clone()
            });
        }
        names
    }
}

// ---------------------------------------------------------------------------------
// Planning: which state each column needs, and where it sits in a partial.
// ---------------------------------------------------------------------------------

/// States needed for one aggregated column.
#[derive(Debug, Clone)]
struct Needs {
    column: String,
    sum: bool,
    mean: bool,
    m2: bool,
    min: bool,
    max: bool,
}

impl Needs {
    fn numeric(&self) -> bool {
        self.sum || self.mean || self.m2 || self.min || self.max
    }

    fn state_names(&self) -> Vec<(&'static str, bool)> {
        vec![
            ("count", true),
            ("sum", self.sum),
            ("mean", self.mean),
            ("m2", self.m2),
            ("min", self.min),
            ("max", self.max),
        ]
    }
}

fn state_name(column: &str, state: &str) -> String {
    format!("{column}#{state}")
}

/// Validate the spec itself (no schema) and gather the needs per column.
fn needs(spec: &GroupBy) -> Result<Vec<Needs>> {
    if spec.keys.is_empty() {
        return Err(EngineError::Argument(
            "group-by needs at least one key column".into(),
        ));
    }
    for (i, k) in spec.keys.iter().enumerate() {
        if spec.keys[..i].contains(k) {
            return Err(EngineError::Argument(format!(
                "group-by: key column '{k}' is given twice"
            )));
        }
    }
    let mut out: Vec<Needs> = Vec::new();
    for (i, a) in spec.aggs.iter().enumerate() {
        if spec.keys.contains(&a.column) {
            return Err(EngineError::Argument(format!(
                "group-by: column '{}' is a key and cannot be aggregated",
                a.column
            )));
        }
        if spec.aggs[..i].contains(a) {
            return Err(EngineError::Argument(format!(
                "group-by: aggregation {} of column '{}' is given twice",
                a.func.name(),
                a.column
            )));
        }
        let pos = match out.iter().position(|n| n.column == a.column) {
            Some(p) => p,
            None => {
                out.push(Needs {
                    column: a.column.clone(),
                    sum: false,
                    mean: false,
                    m2: false,
                    min: false,
                    max: false,
                });
                out.len() - 1
            }
        };
        let n = &mut out[pos];
        match a.func {
            AggFunc::Count => {}
            AggFunc::Sum => n.sum = true,
            AggFunc::Mean => n.mean = true,
            AggFunc::Std | AggFunc::Var => {
                n.mean = true;
                n.m2 = true;
            }
            AggFunc::Min => n.min = true,
            AggFunc::Max => n.max = true,
        }
    }
    let names = spec.output_names();
    for (i, n) in names.iter().enumerate() {
        if names[..i].contains(n) {
            return Err(EngineError::Argument(format!(
                "group-by: two output columns would be named '{n}'"
            )));
        }
    }
    Ok(out)
}

fn find_field<'a>(schema: &'a Schema, name: &str) -> Result<&'a Field> {
    schema
        .fields()
        .iter()
        .find(|f| f.name() == name)
        .map(|f| f.as_ref())
        .ok_or_else(|| {
            let available: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
            EngineError::Argument(format!(
                "group-by: no column named '{name}' (columns: {})",
                available.join(", ")
            ))
        })
}

fn is_numeric(dt: &DataType) -> bool {
    stratus_plan::is_numeric(dt)
}

/// Type of a key in partials and results.
fn key_out_type(dt: &DataType) -> DataType {
    match dt {
        DataType::Dictionary(_, v) => v.as_ref().clone(),
        other => other.clone(),
    }
}

/// Plan of [`partial`] for one input schema.
struct InputPlan {
    needs: Vec<Needs>,
    /// Input types of the keys.
    key_types: Vec<DataType>,
    /// Input type of each aggregated column (parallel to `needs`).
    value_types: Vec<DataType>,
    schema: SchemaRef,
}

impl InputPlan {
    fn new(spec: &GroupBy, input: &Schema) -> Result<Self> {
        let needs = needs(spec)?;
        let mut fields = Vec::new();
        let mut key_types = Vec::new();
        for k in &spec.keys {
            let f = find_field(input, k)?;
            let sf = SortField::new(f.data_type().clone());
            if !RowConverter::supports_fields(std::slice::from_ref(&sf)) {
                return Err(EngineError::Argument(format!(
                    "group-by: key column '{k}' has type {} which cannot be a key",
                    f.data_type()
                )));
            }
            key_types.push(f.data_type().clone());
            fields.push(Field::new(k.clone(), key_out_type(f.data_type()), false));
        }
        let mut value_types = Vec::new();
        for n in &needs {
            let f = find_field(input, &n.column)?;
            let dt = f.data_type().clone();
            if n.numeric() && !is_numeric(&dt) {
                let func = spec
                    .aggs
                    .iter()
                    .find(|a| a.column == n.column && a.func != AggFunc::Count)
                    .map(|a| a.func.name())
                    .unwrap_or("aggregation");
                return Err(EngineError::Argument(format!(
                    "group-by: column '{}' has type {dt}; {func} needs an integer or float column",
                    n.column
                )));
            }
            for (state, present) in n.state_names() {
                if !present {
                    continue;
                }
                let t = match state {
                    "count" => DataType::Int64,
                    "min" | "max" => dt.clone(),
                    _ => DataType::Float64,
                };
                fields.push(Field::new(
                    state_name(&n.column, state),
                    t,
                    matches!(state, "min" | "max"),
                ));
            }
            value_types.push(dt);
        }
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].iter().any(|g| g.name() == f.name()) {
                return Err(EngineError::Argument(format!(
                    "group-by: partial column name '{}' is ambiguous (a key clashes with a state column)",
                    f.name()
                )));
            }
        }
        Ok(InputPlan {
            needs,
            key_types,
            value_types,
            schema: Arc::new(Schema::new(fields)),
        })
    }
}

/// Where each state sits in a partial.
struct StateCols {
    count: usize,
    sum: Option<usize>,
    mean: Option<usize>,
    m2: Option<usize>,
    min: Option<usize>,
    max: Option<usize>,
}

/// Layout of a partial, checked against the spec.
struct Layout {
    nkeys: usize,
    cols: Vec<StateCols>,
    schema: SchemaRef,
}

impl Layout {
    fn new(spec: &GroupBy, schema: &SchemaRef) -> Result<Self> {
        let needs = needs(spec)?;
        let fields = schema.fields();
        let bad = |what: String| {
            EngineError::Argument(format!("group-by: not a partial of this group-by: {what}"))
        };
        let nkeys = spec.keys.len();
        for (i, k) in spec.keys.iter().enumerate() {
            match fields.get(i) {
                Some(f) if f.name() == k => {}
                Some(f) => {
                    return Err(bad(format!(
                        "column {i} is '{}', expected key '{k}'",
                        f.name()
                    )))
                }
                None => return Err(bad(format!("key column '{k}' is missing"))),
            }
        }
        let mut pos = nkeys;
        let mut cols = Vec::new();
        for n in &needs {
            let mut idx = [None; 6];
            for (j, (state, present)) in n.state_names().into_iter().enumerate() {
                if !present {
                    continue;
                }
                let name = state_name(&n.column, state);
                let f = fields
                    .get(pos)
                    .ok_or_else(|| bad(format!("column '{name}' is missing")))?;
                if f.name() != &name {
                    return Err(bad(format!(
                        "column {pos} is '{}', expected '{name}'",
                        f.name()
                    )));
                }
                let ok = match state {
                    "count" => f.data_type() == &DataType::Int64,
                    "min" | "max" => is_numeric(f.data_type()),
                    _ => f.data_type() == &DataType::Float64,
                };
                if !ok {
                    return Err(bad(format!("column '{name}' has type {}", f.data_type())));
                }
                idx[j] = Some(pos);
                pos += 1;
            }
            cols.push(StateCols {
                count: idx[0].unwrap_or(0),
                sum: idx[1],
                mean: idx[2],
                m2: idx[3],
                min: idx[4],
                max: idx[5],
            });
        }
        if pos != fields.len() {
            return Err(bad(format!("{} columns, expected {pos}", fields.len())));
        }
        Ok(Layout {
            nkeys,
            cols,
            schema: schema.clone(),
        })
    }
}

// ---------------------------------------------------------------------------------
// Group ids.
// ---------------------------------------------------------------------------------

/// A run of rows `start..end` of one batch that all belong to group `g`.
#[derive(Debug, Clone, Copy)]
struct Run {
    g: u32,
    start: usize,
    end: usize,
}

/// Dense group ids for a set of batches. Group 0 collects rows with a null key (they
/// are dropped); real groups are `1..=first.len()`.
struct Groups {
    gids: Vec<Vec<u32>>,
    /// Per batch, runs of equal group ids when they are long enough to pay off.
    runs: Vec<Option<Vec<Run>>>,
    /// (batch, row) of the first row of each real group, in group order.
    first: Vec<(usize, usize)>,
    /// Batches without runs go through the column kernels ([`scatter`]), else row by row.
    column_kernels: bool,
    /// Per batch, rows per group slot, for the column kernels' counts; only for batches
    /// without runs and with no more slots than half their rows.
    rows: Vec<Option<Vec<u32>>>,
}

impl Groups {
    /// Number of group slots, including the null group 0.
    fn slots(&self) -> usize {
        self.first.len() + 1
    }

    fn new(gids: Vec<Vec<u32>>, first: Vec<(usize, usize)>, column_kernels: bool) -> Groups {
        let runs: Vec<Option<Vec<Run>>> = gids.iter().map(|ids| find_runs(ids)).collect();
        let slots = first.len() + 1;
        let rows = gids
            .iter()
            .zip(&runs)
            .map(|(ids, runs)| {
                (column_kernels && runs.is_none() && slots * 2 <= ids.len())
                    .then(|| scatter::rows_per_group(ids, slots))
            })
            .collect();
        Groups {
            gids,
            runs,
            first,
            column_kernels,
            rows,
        }
    }
}

/// Open-addressing hash table from `i64` keys to group ids (>= 1).
struct IntTable {
    bits: u32,
    slots: Vec<u32>,
    keys: Vec<i64>,
}

impl IntTable {
    fn new() -> Self {
        IntTable {
            bits: 10,
            slots: vec![0; 1 << 10],
            keys: vec![0],
        }
    }

    #[inline(always)]
    fn home(&self, k: i64) -> usize {
        ((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - self.bits)) as usize
    }

    /// The group of `k`, and whether it is new.
    #[inline]
    fn get_or_insert(&mut self, k: i64) -> (u32, bool) {
        let mask = self.slots.len() - 1;
        let mut i = self.home(k);
        loop {
            let s = self.slots[i];
            if s == 0 {
                break;
            }
            if self.keys[s as usize] == k {
                return (s, false);
            }
            i = (i + 1) & mask;
        }
        let g = self.keys.len() as u32;
        self.keys.push(k);
        self.slots[i] = g;
        if self.keys.len() * 2 > self.slots.len() {
            self.grow();
        }
        (g, true)
    }

    fn grow(&mut self) {
        self.bits += 1;
        self.slots = vec![0; 1 << self.bits];
        let mask = self.slots.len() - 1;
        for g in 1..self.keys.len() {
            let mut i = self.home(self.keys[g]);
            while self.slots[i] != 0 {
                i = (i + 1) & mask;
            }
            self.slots[i] = g as u32;
        }
    }
}

/// Bit width of an integer-like key type, or None if it is not one.
fn int_key_width(dt: &DataType) -> Option<u32> {
    match dt {
        DataType::Int8 | DataType::UInt8 => Some(8),
        DataType::Int16 | DataType::UInt16 => Some(16),
        DataType::Int32 | DataType::UInt32 | DataType::Date32 | DataType::Time32(_) => Some(32),
        DataType::Int64
        | DataType::UInt64
        | DataType::Date64
        | DataType::Time64(_)
        | DataType::Timestamp(_, _)
        | DataType::Duration(_) => Some(64),
        _ => None,
    }
}

/// The values of an integer-like array as `i64` (bit patterns for unsigned 64-bit).
fn int_key_values(a: &dyn Array) -> Option<Vec<i64>> {
    macro_rules! conv {
        ($t:ty) => {
            a.as_primitive_opt::<$t>()
                .map(|p| p.values().iter().map(|&v| v as i64).collect::<Vec<i64>>())
        };
    }
    match a.data_type() {
        DataType::Int8 => conv!(Int8Type),
        DataType::Int16 => conv!(Int16Type),
        DataType::Int32 => conv!(Int32Type),
        DataType::Int64 => a
            .as_primitive_opt::<Int64Type>()
            .map(|p| p.values().to_vec()),
        DataType::UInt8 => conv!(UInt8Type),
        DataType::UInt16 => conv!(UInt16Type),
        DataType::UInt32 => conv!(UInt32Type),
        DataType::UInt64 => conv!(UInt64Type),
        DataType::Date32 => conv!(Date32Type),
        DataType::Date64 => conv!(Date64Type),
        DataType::Time32(TimeUnit::Second) => conv!(Time32SecondType),
        DataType::Time32(TimeUnit::Millisecond) => conv!(Time32MillisecondType),
        DataType::Time64(TimeUnit::Microsecond) => conv!(Time64MicrosecondType),
        DataType::Time64(TimeUnit::Nanosecond) => conv!(Time64NanosecondType),
        DataType::Timestamp(TimeUnit::Second, _) => conv!(TimestampSecondType),
        DataType::Timestamp(TimeUnit::Millisecond, _) => conv!(TimestampMillisecondType),
        DataType::Timestamp(TimeUnit::Microsecond, _) => conv!(TimestampMicrosecondType),
        DataType::Timestamp(TimeUnit::Nanosecond, _) => conv!(TimestampNanosecondType),
        DataType::Duration(TimeUnit::Second) => conv!(DurationSecondType),
        DataType::Duration(TimeUnit::Millisecond) => conv!(DurationMillisecondType),
        DataType::Duration(TimeUnit::Microsecond) => conv!(DurationMicrosecondType),
        DataType::Duration(TimeUnit::Nanosecond) => conv!(DurationNanosecondType),
        _ => None,
    }
}

/// Null mask of the key columns of one batch: a row is null if any key is.
fn key_nulls(cols: &[ArrayRef]) -> Option<NullBuffer> {
    let mut acc: Option<NullBuffer> = None;
    for c in cols {
        let n = c.logical_nulls();
        acc = NullBuffer::union(acc.as_ref(), n.as_ref());
    }
    acc.filter(|n| n.null_count() > 0)
}

fn internal(what: &str) -> EngineError {
    EngineError::Argument(format!("group-by: internal error: {what}"))
}

fn arrow_err(context: &str, e: arrow_schema::ArrowError) -> EngineError {
    EngineError::Argument(format!("group-by: {context}: {e}"))
}

/// Assign group ids to every row of every batch; `keys[b]` are batch `b`'s key columns.
fn assign_groups(keys: &[Vec<ArrayRef>], key_types: &[DataType], paths: Paths) -> Result<Groups> {
    let column_kernels = paths.column_kernels;
    if paths.dense_keys {
        if let Some((gids, first)) = dense::assign(keys, key_types)? {
            return Ok(Groups::new(gids, first, column_kernels));
        }
    }
    let widths: Option<Vec<u32>> = key_types.iter().map(int_key_width).collect();
    let mut gids = Vec::with_capacity(keys.len());
    let mut first = Vec::new();
    match widths {
        Some(w) if w.len() == 1 || (w.len() == 2 && w.iter().all(|&x| x <= 32)) => {
            let mut table = IntTable::new();
            for (b, cols) in keys.iter().enumerate() {
                let mut vals = int_key_values(cols[0].as_ref())
                    .ok_or_else(|| internal("integer key of unexpected type"))?;
                if cols.len() == 2 {
                    let low = int_key_values(cols[1].as_ref())
                        .ok_or_else(|| internal("integer key of unexpected type"))?;
                    for (v, l) in vals.iter_mut().zip(&low) {
                        *v = (*v << 32) | (*l as u32 as i64);
                    }
                }
                let nulls = key_nulls(cols);
                let mut ids = vec![0u32; vals.len()];
                let mut lookup = |k: i64, i: usize| {
                    let (g, new) = table.get_or_insert(k);
                    if new {
                        first.push((b, i));
                    }
                    g
                };
                match &nulls {
                    None => {
                        if let Some(&k0) = vals.first() {
                            let (mut pk, mut pg) = (k0, lookup(k0, 0));
                            for (i, (&k, id)) in vals.iter().zip(ids.iter_mut()).enumerate() {
                                if k != pk {
                                    pk = k;
                                    pg = lookup(k, i);
                                }
                                *id = pg;
                            }
                        }
                    }
                    Some(nb) => {
                        let mut prev: Option<(i64, u32)> = None;
                        for (i, (&k, id)) in vals.iter().zip(ids.iter_mut()).enumerate() {
                            if nb.is_null(i) {
                                continue;
                            }
                            *id = match prev {
                                Some((pk, pg)) if pk == k => pg,
                                _ => {
                                    let g = lookup(k, i);
                                    prev = Some((k, g));
                                    g
                                }
                            };
                        }
                    }
                }
                gids.push(ids);
            }
        }
        _ => {
            let fields: Vec<SortField> = key_types
                .iter()
                .map(|t| match t {
                    DataType::Dictionary(_, v) if key_types.len() == 1 => {
                        SortField::new(v.as_ref().clone())
                    }
                    t => SortField::new(t.clone()),
                })
                .collect();
            let conv = RowConverter::new(fields).map_err(|e| arrow_err("key columns", e))?;
            let mut map: HashMap<Box<[u8]>, u32> = HashMap::new();
            for (b, cols) in keys.iter().enumerate() {
                let nulls = key_nulls(cols);
                let is_null = |i: usize| nulls.as_ref().is_some_and(|n| n.is_null(i));
                let n = cols.first().map_or(0, |c| c.len());
                let mut ids = Vec::with_capacity(n);
                let dict = match cols.as_slice() {
                    [c] => c.as_any_dictionary_opt(),
                    _ => None,
                };
                if let Some(dict) = dict {
                    // One dictionary key: look each dictionary value up once.
                    let values = dict.values().clone();
                    let rows = conv
                        .convert_columns(std::slice::from_ref(&values))
                        .map_err(|e| arrow_err("key column", e))?;
                    let idx = dict_indices(dict.keys())
                        .ok_or_else(|| internal("dictionary key of unexpected type"))?;
                    let mut lut = vec![u32::MAX; values.len()];
                    for (i, &k) in idx.iter().enumerate() {
                        if is_null(i) || k >= lut.len() {
                            ids.push(0);
                            continue;
                        }
                        if lut[k] == u32::MAX {
                            let next = map.len() as u32 + 1;
                            let g = *map.entry(rows.row(k).as_ref().into()).or_insert(next);
                            if g == next {
                                first.push((b, i));
                            }
                            lut[k] = g;
                        }
                        ids.push(lut[k]);
                    }
                } else {
                    let rows = conv
                        .convert_columns(cols)
                        .map_err(|e| arrow_err("key columns", e))?;
                    for i in 0..n {
                        if is_null(i) {
                            ids.push(0);
                            continue;
                        }
                        let row = rows.row(i);
                        let g = match map.get(row.as_ref()) {
                            Some(&g) => g,
                            None => {
                                let g = map.len() as u32 + 1;
                                map.insert(row.as_ref().into(), g);
                                first.push((b, i));
                                g
                            }
                        };
                        ids.push(g);
                    }
                }
                gids.push(ids);
            }
        }
    }
    Ok(Groups::new(gids, first, column_kernels))
}

/// Dictionary keys as `usize` (null slots may hold anything; callers check nulls).
fn dict_indices(keys: &dyn Array) -> Option<Vec<usize>> {
    macro_rules! conv {
        ($t:ty) => {
            keys.as_primitive_opt::<$t>().map(|p| {
                p.values()
                    .iter()
                    .map(|&v| usize::try_from(v).unwrap_or(usize::MAX))
                    .collect()
            })
        };
    }
    match keys.data_type() {
        DataType::Int8 => conv!(Int8Type),
        DataType::Int16 => conv!(Int16Type),
        DataType::Int32 => conv!(Int32Type),
        DataType::Int64 => conv!(Int64Type),
        DataType::UInt8 => conv!(UInt8Type),
        DataType::UInt16 => conv!(UInt16Type),
        DataType::UInt32 => conv!(UInt32Type),
        DataType::UInt64 => conv!(UInt64Type),
        _ => None,
    }
}

/// Runs of equal group ids (null group skipped), if on average at least 16 rows long.
fn find_runs(ids: &[u32]) -> Option<Vec<Run>> {
    let mut runs = Vec::new();
    let mut start = 0;
    while start < ids.len() {
        let g = ids[start];
        let mut end = start + 1;
        while end < ids.len() && ids[end] == g {
            end += 1;
        }
        if g != 0 {
            runs.push(Run { g, start, end });
        }
        if runs.len() * 16 > ids.len() {
            return None;
        }
        start = end;
    }
    Some(runs)
}

/// The key columns of the result of a grouping: the first row of each group.
fn key_output(
    keys: &[Vec<ArrayRef>],
    key_types: &[DataType],
    groups: &Groups,
) -> Result<Vec<ArrayRef>> {
    let mut out = Vec::with_capacity(key_types.len());
    for (j, t) in key_types.iter().enumerate() {
        let col = if groups.first.is_empty() {
            new_empty_array(t)
        } else {
            let arrays: Vec<&dyn Array> = keys.iter().map(|c| c[j].as_ref()).collect();
            arrow_select::interleave::interleave(&arrays, &groups.first)
                .map_err(|e| arrow_err("gathering keys", e))?
        };
        let col = match col.as_any_dictionary_opt() {
            Some(d) => {
                let idx = dict_indices(d.keys())
                    .ok_or_else(|| internal("dictionary key of unexpected type"))?;
                let idx = UInt32Array::from_iter_values(idx.iter().map(|&i| i as u32));
                arrow_select::take::take(d.values().as_ref(), &idx, None)
                    .map_err(|e| arrow_err("decoding dictionary keys", e))?
            }
            None => col,
        };
        out.push(col);
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// Value kernels.
// ---------------------------------------------------------------------------------

/// An accumulator of values of type `T`; `Ctx` is a per-group constant.
trait Lane<T: Num>: Copy {
    type Ctx: Copy;
    fn empty() -> Self;
    fn push(&mut self, v: T, ok: bool, c: Self::Ctx);
    fn add(&mut self, o: &Self);
}

/// Count and sum of one group.
#[derive(Clone, Copy, Default)]
struct SumLane {
    n: u64,
    s: f64,
}

/// Sums of deviations and squared deviations from a group's provisional mean.
#[derive(Clone, Copy, Default)]
struct DevLane {
    d: f64,
    q: f64,
}

/// Minimum and maximum in the native type.
#[derive(Clone, Copy)]
struct MinMaxLane<T> {
    lo: T,
    hi: T,
}

impl<T: Num> Lane<T> for MinMaxLane<T> {
    type Ctx = ();
    #[inline(always)]
    fn empty() -> Self {
        MinMaxLane {
            lo: T::HI,
            hi: T::LO,
        }
    }
    #[inline(always)]
    fn push(&mut self, v: T, ok: bool, _: ()) {
        if ok & (v < self.lo) {
            self.lo = v;
        }
        if ok & (v > self.hi) {
            self.hi = v;
        }
    }
    #[inline(always)]
    fn add(&mut self, o: &Self) {
        if o.lo < self.lo {
            self.lo = o.lo;
        }
        if o.hi > self.hi {
            self.hi = o.hi;
        }
    }
}

/// For each byte of a validity bitmap, the eight 64-bit masks it stands for.
const MASKS: [[u64; 8]; 256] = {
    let mut t = [[0u64; 8]; 256];
    let mut b = 0;
    while b < 256 {
        let mut j = 0;
        while j < 8 {
            if (b >> j) & 1 == 1 {
                t[b][j] = u64::MAX;
            }
            j += 1;
        }
        b += 1;
    }
    t
};

/// Receives values as `f64` with their validity as all-ones/all-zeros masks, eight at a
/// time when it can. Masks let sinks skip nulls without branches, so they vectorize.
trait Sink {
    fn eight(&mut self, row: usize, x: &[f64; 8], m: &[u64; 8]);
    fn one(&mut self, row: usize, x: f64, valid: bool);
}

/// `x` where `m` is set, else 0.0.
#[inline(always)]
fn masked(x: f64, m: u64) -> f64 {
    f64::from_bits(x.to_bits() & m)
}

/// Feed rows `start..end` of a value slice to `sink` as `f64` with validity masks.
#[inline(always)]
fn visit<T: Num, S: Sink>(
    vals: &[T],
    nulls: Option<&NullBuffer>,
    start: usize,
    end: usize,
    sink: &mut S,
) {
    let seg = &vals[start..end];
    match nulls {
        None => {
            let mut chunks = seg.chunks_exact(8);
            let mut row = start;
            for ch in &mut chunks {
                let mut x = [0.0; 8];
                for j in 0..8 {
                    x[j] = ch[j].to_f64();
                }
                sink.eight(row, &x, &[u64::MAX; 8]);
                row += 8;
            }
            for &v in chunks.remainder() {
                sink.one(row, v.to_f64(), true);
                row += 1;
            }
        }
        Some(nb) => {
            let bits = nb
                .inner()
                .inner()
                .bit_chunks(nb.offset() + start, end - start);
            let mut base = 0;
            for word in bits.iter() {
                let ch = &seg[base..base + 64];
                for k in 0..8 {
                    let m = &MASKS[((word >> (8 * k)) & 0xff) as usize];
                    let mut x = [0.0; 8];
                    for j in 0..8 {
                        x[j] = ch[k * 8 + j].to_f64();
                    }
                    sink.eight(start + base + k * 8, &x, m);
                }
                base += 64;
            }
            let word = bits.remainder_bits();
            for (i, &v) in seg[base..].iter().enumerate() {
                sink.one(start + base + i, v.to_f64(), (word >> i) & 1 == 1);
            }
        }
    }
}

/// Number of valid rows in `start..end`.
fn valid_count(nulls: Option<&NullBuffer>, start: usize, end: usize) -> usize {
    match nulls {
        None => end - start,
        Some(nb) => nb.inner().slice(start, end - start).count_set_bits(),
    }
}

/// Sum of the valid values of one run, in eight lanes; NaN if any value is NaN or the
/// values hold infinities of both signs (then [`RunSum`] redoes the run).
#[derive(Default)]
struct RunSumFast {
    s: [f64; 8],
}

impl Sink for RunSumFast {
    #[inline(always)]
    fn eight(&mut self, _: usize, x: &[f64; 8], m: &[u64; 8]) {
        for j in 0..8 {
            self.s[j] += masked(x[j], m[j]);
        }
    }
    #[inline(always)]
    fn one(&mut self, _: usize, x: f64, valid: bool) {
        self.s[0] += if valid { x } else { 0.0 };
    }
}

/// Count and sum of the valid, non-NaN values of one run.
#[derive(Default)]
struct RunSum {
    n: u64,
    s: f64,
}

impl Sink for RunSum {
    fn eight(&mut self, row: usize, x: &[f64; 8], m: &[u64; 8]) {
        for j in 0..8 {
            self.one(row + j, x[j], m[j] != 0);
        }
    }
    fn one(&mut self, _: usize, x: f64, valid: bool) {
        if valid && !x.is_nan() {
            self.n += 1;
            self.s += x;
        }
    }
}

/// Deviations from `m` of the valid values of one run, in eight lanes (NaN as above).
#[derive(Default)]
struct RunDevFast {
    m: f64,
    d: [f64; 8],
    q: [f64; 8],
}

impl Sink for RunDevFast {
    #[inline(always)]
    fn eight(&mut self, _: usize, x: &[f64; 8], m: &[u64; 8]) {
        for j in 0..8 {
            let x = masked(x[j] - self.m, m[j]);
            self.d[j] += x;
            self.q[j] += x * x;
        }
    }
    #[inline(always)]
    fn one(&mut self, _: usize, x: f64, valid: bool) {
        let x = if valid { x - self.m } else { 0.0 };
        self.d[0] += x;
        self.q[0] += x * x;
    }
}

/// Deviations from `m` of the valid, non-NaN values of one run.
#[derive(Default)]
struct RunDev {
    m: f64,
    d: f64,
    q: f64,
}

impl Sink for RunDev {
    fn eight(&mut self, row: usize, x: &[f64; 8], m: &[u64; 8]) {
        for j in 0..8 {
            self.one(row + j, x[j], m[j] != 0);
        }
    }
    fn one(&mut self, _: usize, x: f64, valid: bool) {
        if valid && !x.is_nan() {
            let x = x - self.m;
            self.d += x;
            self.q += x * x;
        }
    }
}

/// Count and sum of rows in any group order.
struct RowSum<'a> {
    gids: &'a [u32],
    st: &'a mut [SumLane],
}

impl Sink for RowSum<'_> {
    #[inline(always)]
    fn eight(&mut self, row: usize, x: &[f64; 8], m: &[u64; 8]) {
        for j in 0..8 {
            self.one(row + j, x[j], m[j] != 0);
        }
    }
    #[inline(always)]
    fn one(&mut self, row: usize, x: f64, valid: bool) {
        let st = &mut self.st[self.gids[row] as usize];
        let ok = valid & !x.is_nan();
        st.n += ok as u64;
        st.s += if ok { x } else { 0.0 };
    }
}

/// Deviations from each group's mean of rows in any group order.
struct RowDev<'a> {
    gids: &'a [u32],
    means: &'a [f64],
    st: &'a mut [DevLane],
}

impl Sink for RowDev<'_> {
    #[inline(always)]
    fn eight(&mut self, row: usize, x: &[f64; 8], m: &[u64; 8]) {
        for j in 0..8 {
            self.one(row + j, x[j], m[j] != 0);
        }
    }
    #[inline(always)]
    fn one(&mut self, row: usize, x: f64, valid: bool) {
        let g = self.gids[row] as usize;
        let x = x - self.means[g];
        let x = if valid & !x.is_nan() { x } else { 0.0 };
        let st = &mut self.st[g];
        st.d += x;
        st.q += x * x;
    }
}

/// Value slices (with their null masks) of one column, one per batch.
type Slices<'a, T> = [(&'a [T], Option<&'a NullBuffer>)];

/// Count and sum per group slot.
fn sum_states<T: Num>(batches: &Slices<'_, T>, groups: &Groups) -> Vec<SumLane> {
    let mut st = vec![SumLane::default(); groups.slots()];
    for (b, &(vals, nulls)) in batches.iter().enumerate() {
        let gids = &groups.gids[b];
        let n = gids.len().min(vals.len());
        match &groups.runs[b] {
            Some(runs) => {
                for r in runs {
                    let mut fast = RunSumFast::default();
                    visit(vals, nulls, r.start, r.end, &mut fast);
                    let sum = fast.s.iter().sum::<f64>();
                    let s = &mut st[r.g as usize];
                    if sum.is_nan() {
                        let mut slow = RunSum::default();
                        visit(vals, nulls, r.start, r.end, &mut slow);
                        s.n += slow.n;
                        s.s += slow.s;
                    } else {
                        s.n += valid_count(nulls, r.start, r.end) as u64;
                        s.s += sum;
                    }
                }
            }
            None if groups.column_kernels => match &groups.rows[b] {
                Some(rows) => scatter::sum_rows_counted(gids, vals, nulls, rows, &mut st),
                None => scatter::sum_rows(gids, vals, nulls, &mut st),
            },
            None => visit(vals, nulls, 0, n, &mut RowSum { gids, st: &mut st }),
        }
    }
    st
}

/// Deviations from `means` per group slot.
fn dev_states<T: Num>(batches: &Slices<'_, T>, groups: &Groups, means: &[f64]) -> Vec<DevLane> {
    let mut st = vec![DevLane::default(); groups.slots()];
    for (b, &(vals, nulls)) in batches.iter().enumerate() {
        let gids = &groups.gids[b];
        let n = gids.len().min(vals.len());
        match &groups.runs[b] {
            Some(runs) => {
                for r in runs {
                    let g = r.g as usize;
                    let mut fast = RunDevFast {
                        m: means[g],
                        ..RunDevFast::default()
                    };
                    visit(vals, nulls, r.start, r.end, &mut fast);
                    let (d, q) = (fast.d.iter().sum::<f64>(), fast.q.iter().sum::<f64>());
                    if d.is_nan() || q.is_nan() {
                        let mut slow = RunDev {
                            m: means[g],
                            ..RunDev::default()
                        };
                        visit(vals, nulls, r.start, r.end, &mut slow);
                        st[g].d += slow.d;
                        st[g].q += slow.q;
                    } else {
                        st[g].d += d;
                        st[g].q += q;
                    }
                }
            }
            None if groups.column_kernels => scatter::dev_rows(gids, vals, nulls, means, &mut st),
            None => visit(
                vals,
                nulls,
                0,
                n,
                &mut RowDev {
                    gids,
                    means,
                    st: &mut st,
                },
            ),
        }
    }
    st
}

/// Accumulate rows `start..end` of one value slice into eight lanes (native types).
#[inline(always)]
fn segment<T: Num, L: Lane<T>>(
    vals: &[T],
    nulls: Option<&NullBuffer>,
    start: usize,
    end: usize,
    lanes: &mut [L; 8],
    c: L::Ctx,
) {
    let seg = &vals[start..end];
    match nulls {
        None => {
            let mut chunks = seg.chunks_exact(8);
            for ch in &mut chunks {
                for j in 0..8 {
                    let v = ch[j];
                    lanes[j].push(v, !v.is_nan(), c);
                }
            }
            for (j, &v) in chunks.remainder().iter().enumerate() {
                lanes[j].push(v, !v.is_nan(), c);
            }
        }
        Some(nb) => {
            let bits = nb
                .inner()
                .inner()
                .bit_chunks(nb.offset() + start, end - start);
            let mut base = 0;
            for word in bits.iter() {
                let ch = &seg[base..base + 64];
                for k in 0..8 {
                    for (j, lane) in lanes.iter_mut().enumerate() {
                        let i = k * 8 + j;
                        let v = ch[i];
                        lane.push(v, ((word >> i) & 1 == 1) & !v.is_nan(), c);
                    }
                }
                base += 64;
            }
            let word = bits.remainder_bits();
            for (i, &v) in seg[base..].iter().enumerate() {
                lanes[i & 7].push(v, ((word >> i) & 1 == 1) & !v.is_nan(), c);
            }
        }
    }
}

/// Accumulate every row of one batch into `st[gid]` (native types).
#[inline(always)]
fn rows<T: Num, L: Lane<T>>(
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
        Some(nb) => {
            let bits = nb.inner().inner().bit_chunks(nb.offset(), n);
            let mut base = 0;
            for word in bits.iter() {
                for i in 0..64 {
                    let g = gids[base + i] as usize;
                    let v = vals[base + i];
                    st[g].push(v, ((word >> i) & 1 == 1) & !v.is_nan(), ctx[g]);
                }
                base += 64;
            }
            let word = bits.remainder_bits();
            for i in 0..n - base {
                let g = gids[base + i] as usize;
                let v = vals[base + i];
                st[g].push(v, ((word >> i) & 1 == 1) & !v.is_nan(), ctx[g]);
            }
        }
    }
}

/// Accumulate every batch into one state per group slot (native types).
fn accumulate<T: Num, L: Lane<T>>(
    batches: &Slices<'_, T>,
    groups: &Groups,
    ctx: &[L::Ctx],
) -> Vec<L> {
    let mut st = vec![L::empty(); groups.slots()];
    for (b, &(vals, nulls)) in batches.iter().enumerate() {
        match &groups.runs[b] {
            Some(runs) => {
                for r in runs {
                    let g = r.g as usize;
                    let mut lanes = [L::empty(); 8];
                    segment(vals, nulls, r.start, r.end, &mut lanes, ctx[g]);
                    for l in &lanes {
                        st[g].add(l);
                    }
                }
            }
            None if groups.column_kernels => {
                scatter::lane_rows(&groups.gids[b], vals, nulls, ctx, &mut st)
            }
            None => rows(&groups.gids[b], vals, nulls, ctx, &mut st),
        }
    }
    st
}

/// Partial state columns of one numeric column.
fn numeric_states<T>(
    arrays: &[ArrayRef],
    groups: &Groups,
    n: &Needs,
    dt: &DataType,
) -> Result<Vec<ArrayRef>>
where
    T: ArrowPrimitiveType,
    T::Native: Num,
{
    let mut batches = Vec::with_capacity(arrays.len());
    for a in arrays {
        let p = a
            .as_primitive_opt::<T>()
            .ok_or_else(|| internal("value column of unexpected type"))?;
        if p.len() != groups.gids[batches.len()].len() {
            return Err(EngineError::Argument(format!(
                "group-by: column '{}' is shorter than the keys",
                n.column
            )));
        }
        batches.push((
            p.values().as_ref(),
            p.nulls().filter(|nb| nb.null_count() > 0),
        ));
    }
    let unit = vec![(); groups.slots()];
    let sums = sum_states(&batches, groups);
    let count: Vec<u64> = sums.iter().map(|s| s.n).collect();
    let mut out: Vec<ArrayRef> = vec![Arc::new(Int64Array::from_iter_values(
        count[1..].iter().map(|&c| c as i64),
    ))];
    if n.sum {
        out.push(Arc::new(Float64Array::from_iter_values(
            sums[1..].iter().map(|s| s.s),
        )));
    }
    if n.mean {
        let mut mean: Vec<f64> = sums
            .iter()
            .map(|s| if s.n > 0 { s.s / s.n as f64 } else { 0.0 })
            .collect();
        if n.m2 {
            let dev = dev_states(&batches, groups, &mean);
            let mut m2 = Vec::with_capacity(mean.len());
            for ((m, d), &c) in mean.iter_mut().zip(&dev).zip(&count) {
                if c > 0 {
                    let c = c as f64;
                    *m += d.d / c;
                    m2.push((d.q - d.d * d.d / c).max(0.0));
                } else {
                    m2.push(0.0);
                }
            }
            out.push(Arc::new(Float64Array::from(mean[1..].to_vec())));
            out.push(Arc::new(Float64Array::from(m2[1..].to_vec())));
        } else {
            out.push(Arc::new(Float64Array::from(mean[1..].to_vec())));
        }
    }
    if n.min || n.max {
        let mm: Vec<MinMaxLane<T::Native>> = accumulate(&batches, groups, &unit);
        let valid = NullBuffer::from(count[1..].iter().map(|&c| c > 0).collect::<Vec<bool>>());
        let valid = Some(valid).filter(|v| v.null_count() > 0);
        if n.min {
            let v: Vec<T::Native> = mm[1..].iter().map(|m| m.lo).collect();
            out.push(prim_array::<T>(v, valid.clone(), dt)?);
        }
        if n.max {
            let v: Vec<T::Native> = mm[1..].iter().map(|m| m.hi).collect();
            out.push(prim_array::<T>(v, valid, dt)?);
        }
    }
    Ok(out)
}

fn prim_array<T: ArrowPrimitiveType>(
    v: Vec<T::Native>,
    nulls: Option<NullBuffer>,
    dt: &DataType,
) -> Result<ArrayRef> {
    let a = PrimitiveArray::<T>::try_new(ScalarBuffer::from(v), nulls)
        .map_err(|e| arrow_err("building min/max", e))?;
    Ok(Arc::new(a.with_data_type(dt.clone())))
}

/// Count of non-null values per group, for non-numeric columns.
fn count_states(arrays: &[ArrayRef], groups: &Groups) -> Vec<ArrayRef> {
    let mut count = vec![0u64; groups.slots()];
    for (b, a) in arrays.iter().enumerate() {
        let gids = &groups.gids[b];
        match a.logical_nulls().filter(|n| n.null_count() > 0) {
            None => {
                for &g in gids {
                    count[g as usize] += 1;
                }
            }
            Some(nb) => {
                for (i, &g) in gids.iter().enumerate() {
                    count[g as usize] += nb.is_valid(i) as u64;
                }
            }
        }
    }
    vec![Arc::new(Int64Array::from_iter_values(
        count[1..].iter().map(|&c| c as i64),
    ))]
}

macro_rules! dispatch_numeric {
    ($dt:expr, $f:ident, $($args:expr),*) => {
        match $dt {
            DataType::Int8 => $f::<Int8Type>($($args),*),
            DataType::Int16 => $f::<Int16Type>($($args),*),
            DataType::Int32 => $f::<Int32Type>($($args),*),
            DataType::Int64 => $f::<Int64Type>($($args),*),
            DataType::UInt8 => $f::<UInt8Type>($($args),*),
            DataType::UInt16 => $f::<UInt16Type>($($args),*),
            DataType::UInt32 => $f::<UInt32Type>($($args),*),
            DataType::UInt64 => $f::<UInt64Type>($($args),*),
            DataType::Float32 => $f::<Float32Type>($($args),*),
            DataType::Float64 => $f::<Float64Type>($($args),*),
            other => Err(EngineError::Argument(format!(
                "group-by: type {other} is not numeric"
            ))),
        }
    };
}

// ---------------------------------------------------------------------------------
// partial / merge / finalize
// ---------------------------------------------------------------------------------

/// The column `name` of a batch, checked to have type `dt`.
fn column(batch: &RecordBatch, name: &str, dt: &DataType) -> Result<ArrayRef> {
    let c = batch.column_by_name(name).ok_or_else(|| {
        EngineError::Argument(format!("group-by: a batch has no column named '{name}'"))
    })?;
    if c.data_type() != dt {
        return Err(EngineError::Argument(format!(
            "group-by: column '{name}' has type {} in one batch and {dt} in another",
            c.data_type()
        )));
    }
    Ok(c.clone())
}

/// Partial aggregate of one partition: one row per distinct non-null key in it (rows
/// with a null key are dropped, as pandas' default `dropna=True` does). The schema of
/// the first batch is the input schema; errors if `batches` is empty (use
/// [`partial_with_schema`] then).
pub fn partial(batches: &[RecordBatch], spec: &GroupBy) -> Result<RecordBatch> {
    let first = batches.first().ok_or_else(|| {
        EngineError::Argument(
            "group-by: partial of no batches (use partial_with_schema for an empty partition)"
                .into(),
        )
    })?;
    partial_with_schema(first.schema().as_ref(), batches, spec)
}

/// [`partial`] with an explicit input schema, so that a partition with no batches at all
/// gives an empty partial.
pub fn partial_with_schema(
    input: &Schema,
    batches: &[RecordBatch],
    spec: &GroupBy,
) -> Result<RecordBatch> {
    partial_with_paths(input, batches, spec, Paths::default())
}

/// [`partial_with_schema`] by the kernels `paths` names (benchmarks and tests compare them).
#[doc(hidden)]
pub fn partial_with_paths(
    input: &Schema,
    batches: &[RecordBatch],
    spec: &GroupBy,
    paths: Paths,
) -> Result<RecordBatch> {
    let plan = InputPlan::new(spec, input)?;
    let keys: Vec<Vec<ArrayRef>> = batches
        .iter()
        .map(|b| {
            spec.keys
                .iter()
                .zip(&plan.key_types)
                .map(|(k, t)| column(b, k, t))
                .collect::<Result<Vec<_>>>()
        })
        .collect::<Result<_>>()?;
    let groups = assign_groups(&keys, &plan.key_types, paths)?;
    let mut cols = key_output(&keys, &plan.key_types, &groups)?;
    for (n, dt) in plan.needs.iter().zip(&plan.value_types) {
        let arrays: Vec<ArrayRef> = batches
            .iter()
            .map(|b| column(b, &n.column, dt))
            .collect::<Result<_>>()?;
        if is_numeric(dt) {
            // Numeric columns always go through the typed kernels: NaN is not counted.
            cols.extend(dispatch_numeric!(
                dt,
                numeric_states,
                &arrays,
                &groups,
                n,
                dt
            )?);
        } else {
            cols.extend(count_states(&arrays, &groups));
        }
    }
    RecordBatch::try_new(plan.schema, cols).map_err(|e| arrow_err("building the partial", e))
}

/// Merged states of one column, per group slot: the sums, and the count, mean and M2 as
/// [`Moments`] (their min and max unused: min/max states keep the input type).
struct Merged {
    sum: Vec<f64>,
    moments: Vec<Moments>,
}

fn f64_col(b: &RecordBatch, i: Option<usize>) -> Option<&[f64]> {
    i.and_then(|i| b.column(i).as_primitive_opt::<Float64Type>())
        .map(|a| a.values().as_ref())
}

fn merge_moments(partials: &[RecordBatch], groups: &Groups, sc: &StateCols) -> Result<Merged> {
    let slots = groups.slots();
    let mut m = Merged {
        sum: vec![0.0; slots],
        moments: vec![Moments::default(); slots],
    };
    for (b, p) in partials.iter().enumerate() {
        let count = p
            .column(sc.count)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| internal("count column"))?
            .values();
        let sum = f64_col(p, sc.sum);
        let mean = f64_col(p, sc.mean);
        let m2 = f64_col(p, sc.m2);
        let at = |col: Option<&[f64]>, i: usize| col.and_then(|c| c.get(i).copied());
        for (i, &g) in groups.gids[b].iter().enumerate() {
            let g = g as usize;
            let nb = count.get(i).copied().unwrap_or(0).max(0) as u64;
            if nb == 0 {
                continue;
            }
            if let Some(s) = sum {
                m.sum[g] += s.get(i).copied().unwrap_or(0.0);
            }
            m.moments[g].merge(&Moments {
                count: nb,
                mean: at(mean, i).unwrap_or(0.0),
                m2: at(m2, i).unwrap_or(0.0),
                min: 0.0,
                max: 0.0,
            });
        }
    }
    Ok(m)
}

fn merge_minmax<T>(
    partials: &[RecordBatch],
    groups: &Groups,
    col: usize,
    count: &[u64],
    is_min: bool,
    dt: &DataType,
) -> Result<ArrayRef>
where
    T: ArrowPrimitiveType,
    T::Native: Num,
{
    let mut st = vec![if is_min { T::Native::HI } else { T::Native::LO }; groups.slots()];
    for (b, p) in partials.iter().enumerate() {
        let a = p
            .column(col)
            .as_primitive_opt::<T>()
            .ok_or_else(|| internal("min/max column"))?;
        for (i, &g) in groups.gids[b].iter().enumerate() {
            if a.is_null(i) {
                continue;
            }
            let v = a.value(i);
            let s = &mut st[g as usize];
            if (is_min && v < *s) || (!is_min && v > *s) {
                *s = v;
            }
        }
    }
    let valid = NullBuffer::from(count[1..].iter().map(|&c| c > 0).collect::<Vec<bool>>());
    prim_array::<T>(
        st[1..].to_vec(),
        Some(valid).filter(|v| v.null_count() > 0),
        dt,
    )
}

/// Merge partials (same partial schema, that of [`GroupBy::partial_schema`]) into one
/// partial. Errors if `partials` is empty or a partial does not fit the spec.
pub fn merge(partials: &[RecordBatch], spec: &GroupBy) -> Result<RecordBatch> {
    let first = partials
        .first()
        .ok_or_else(|| EngineError::Argument("group-by: merge of no partials".into()))?;
    let layout = Layout::new(spec, &first.schema())?;
    for p in partials {
        let same = p.schema().fields().len() == layout.schema.fields().len()
            && p.schema()
                .fields()
                .iter()
                .zip(layout.schema.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if !same {
            return Err(EngineError::Argument(
                "group-by: partials to merge have different schemas".into(),
            ));
        }
    }
    let key_types: Vec<DataType> = layout.schema.fields()[..layout.nkeys]
        .iter()
        .map(|f| f.data_type().clone())
        .collect();
    let keys: Vec<Vec<ArrayRef>> = partials
        .iter()
        .map(|p| p.columns()[..layout.nkeys].to_vec())
        .collect();
    let groups = assign_groups(&keys, &key_types, Paths::default())?;
    let mut cols = key_output(&keys, &key_types, &groups)?;
    for sc in &layout.cols {
        let m = merge_moments(partials, &groups, sc)?;
        let count: Vec<u64> = m.moments.iter().map(|s| s.count).collect();
        cols.push(Arc::new(Int64Array::from_iter_values(
            count[1..].iter().map(|&c| c as i64),
        )));
        if sc.sum.is_some() {
            cols.push(Arc::new(Float64Array::from(m.sum[1..].to_vec())));
        }
        if sc.mean.is_some() {
            cols.push(Arc::new(Float64Array::from_iter_values(
                m.moments[1..].iter().map(|s| s.mean),
            )));
        }
        if sc.m2.is_some() {
            cols.push(Arc::new(Float64Array::from_iter_values(
                m.moments[1..].iter().map(|s| s.m2),
            )));
        }
        for (idx, is_min) in [(sc.min, true), (sc.max, false)] {
            if let Some(i) = idx {
                let dt = layout.schema.field(i).data_type().clone();
                cols.push(dispatch_numeric!(
                    &dt,
                    merge_minmax,
                    partials,
                    &groups,
                    i,
                    &count,
                    is_min,
                    &dt
                )?);
            }
        }
    }
    RecordBatch::try_new(layout.schema.clone(), cols)
        .map_err(|e| arrow_err("building the merged partial", e))
}

/// Final result: the keys, then one column per [`AggSpec`] named as
/// [`GroupBy::output_names`] says, rows sorted ascending by the keys. See the module
/// documentation for types and for groups with no values (null).
pub fn finalize(partial: &RecordBatch, spec: &GroupBy) -> Result<RecordBatch> {
    // Merging one partial makes keys unique even if the caller concatenated partials.
    let merged = merge(std::slice::from_ref(partial), spec)?;
    let layout = Layout::new(spec, &merged.schema())?;
    let needs = needs(spec)?;
    let sort: Vec<SortColumn> = merged.columns()[..layout.nkeys]
        .iter()
        .map(|c| SortColumn {
            values: c.clone(),
            options: None,
        })
        .collect();
    let order = lexsort_to_indices(&sort, None).map_err(|e| arrow_err("sorting keys", e))?;
    let mut fields: Vec<Field> = merged.schema().fields()[..layout.nkeys]
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    let mut cols: Vec<ArrayRef> = merged.columns()[..layout.nkeys].to_vec();
    let names = spec.output_names();
    for (a, name) in spec.aggs.iter().zip(&names[layout.nkeys..]) {
        let ci = needs
            .iter()
            .position(|n| n.column == a.column)
            .ok_or_else(|| internal("aggregated column without state"))?;
        let sc = &layout.cols[ci];
        let count = merged
            .column(sc.count)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| internal("count column"))?
            .values();
        let f64_out =
            |idx: Option<usize>, min_n: i64, f: &dyn Fn(f64, f64) -> f64| -> Result<ArrayRef> {
                let v = f64_col(&merged, idx).ok_or_else(|| internal("state column"))?;
                Ok(Arc::new(Float64Array::from_iter(
                    v.iter()
                        .zip(count.iter())
                        .map(|(&x, &c)| (c >= min_n).then(|| f(x, c as f64))),
                )))
            };
        let col: ArrayRef = match a.func {
            AggFunc::Count => merged.column(sc.count).clone(),
            AggFunc::Sum => f64_out(sc.sum, 1, &|x, _| x)?,
            AggFunc::Mean => f64_out(sc.mean, 1, &|x, _| x)?,
            AggFunc::Var => f64_out(sc.m2, 2, &|q, n| q / (n - 1.0))?,
            AggFunc::Std => f64_out(sc.m2, 2, &|q, n| (q / (n - 1.0)).sqrt())?,
            AggFunc::Min => merged
                .column(sc.min.ok_or_else(|| internal("min column"))?)
                .clone(),
            AggFunc::Max => merged
                .column(sc.max.ok_or_else(|| internal("max column"))?)
                .clone(),
        };
        let nullable = a.func != AggFunc::Count;
        fields.push(Field::new(name.clone(), col.data_type().clone(), nullable));
        cols.push(col);
    }
    let cols = cols
        .iter()
        .map(|c| arrow_select::take::take(c.as_ref(), &order, None))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| arrow_err("sorting the result", e))?;
    RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)
        .map_err(|e| arrow_err("building the result", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int_table_grows_and_finds() {
        let mut t = IntTable::new();
        for k in 0..10_000i64 {
            assert_eq!(t.get_or_insert(k * 86_400_000_000), (k as u32 + 1, true));
        }
        for k in 0..10_000i64 {
            assert_eq!(t.get_or_insert(k * 86_400_000_000), (k as u32 + 1, false));
        }
    }

    #[test]
    fn runs_only_when_long() {
        let sorted: Vec<u32> = (0..1000).map(|i| 1 + i / 100).collect();
        assert_eq!(find_runs(&sorted).map(|r| r.len()), Some(10));
        let random: Vec<u32> = (0..1000).map(|i| 1 + (i * 7919) % 13).collect();
        assert!(find_runs(&random).is_none());
        assert_eq!(find_runs(&[]).map(|r| r.len()), Some(0));
    }

    #[test]
    fn output_names_follow_pandas() {
        let g = GroupBy {
            keys: vec!["day".into()],
            aggs: vec![
                AggSpec::new("t", AggFunc::Mean),
                AggSpec::new("t", AggFunc::Max),
                AggSpec::new("p", AggFunc::Mean),
            ],
        };
        assert_eq!(g.output_names(), ["day", "t_mean", "t_max", "p"]);
    }
}
