//! `describe` kernels: count, mean, std, min, exact quantiles and max of numeric columns
//! spread over many partitions, without ever shipping a column.
//!
//! This module owns the kernels that workers run ([`summaries`] and [`range_histograms`]
//! answer a round for all the partitions a worker holds) and the sans-IO pieces the
//! scheduler's driver runs ([`merge_distinct`], [`merge_histograms`], [`QuantileSearch`]);
//! it knows nothing about the network. The data exchanged ([`ColumnSummary`], [`KeyRange`],
//! [`RangeHistogram`], ...) is defined in `stratus_plan::describe`.
//!
//! Algorithm:
//! - **Summary round** ([`column_summary`]): one pass over each column gives its moments and,
//!   while there are few of them, its distinct value keys with their counts. Moments are
//!   taken per block of [`BLOCK`] values by a corrected two-pass (sum → mean, then Σ(x−mean)
//!   and Σ(x−mean)² which refine the mean and give M2; the second pass reads the block from
//!   L1 cache) and blocks, partitions and workers are combined with Chan et al.'s pairwise
//!   formula ([`Moments::merge`]), so a column like sea-level pressure (mean 1014.6, std
//!   9.4) keeps its digits. Nulls and NaN are skipped (pandas' rule); everything is in `f64`.
//! - **Distinct keys**: every value maps to an order-preserving 64-bit key
//!   ([`float_key`](crate::num::float_key), [`signed_key`](crate::num::signed_key), unsigned
//!   as is). A worker counts distinct keys in a small hash table
//!   ([`KeyCounter`]) until there are more than `max_distinct`, then gives up on them. Measured
//!   weather data is recorded to a tenth of a unit (ISD's temperatures take ~1,500 values over
//!   billions of rows), so for most columns every worker's table fits, the scheduler adds
//!   them up ([`merge_distinct`]) and reads every quantile off the counts: one pass in all.
//! - **Exact quantiles otherwise** ([`QuantileSearch`]): the key at a 0-based rank is found by
//!   a radix search: a round asks every worker for a histogram of the next 16 key bits inside
//!   the current prefix ([`histograms`], one pass over the column for all ranges), the
//!   scheduler sums them ([`merge_histograms`]) and the cumulative counts name the bucket
//!   holding the rank, which extends the prefix. A range with at most `max_distinct` distinct
//!   keys on every worker comes back as those keys and counts, and the rank is read off
//!   directly. The common prefix of min and max is skipped ([`QuantileSearch::from_moments`]),
//!   so 1–3 rounds after the summary; at most 4 (64 / 16). -0.0 keys as +0.0.
//! - **Interpolation** is pandas' default (`numpy.percentile`, method `linear`): for `q`,
//!   position `p = q·(n−1)`, `a = v[floor p]`, `b = v[floor p + 1]`, `t = p − floor p`, and the
//!   value is `a + (b−a)·t` when `t < 0.5`, else `b − (b−a)·(1−t)` (numpy's two-sided lerp,
//!   which is what makes results bit-identical to pandas); `t = 0` gives `a` exactly. For
//!   integer columns `b−a` is taken exactly before converting to `f64`.
//!
//! Empty input: with no values, `count` is 0, and mean, std, min, max and every quantile are
//! NaN (see [`Moments::mean_or_nan`] and friends); std is NaN (`None` from [`Moments::std`])
//! for fewer than 2 values, as in pandas.

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{Array, ArrowPrimitiveType, PrimitiveArray, RecordBatch};
use arrow_schema::{DataType, Schema};

use stratus_plan::{ColumnRanges, ColumnSummary, DistinctKeys, KeyRange, Moments, RangeHistogram};

use crate::error::EngineError;
use crate::num::{float_from_key, float_key, signed_from_key, signed_key, Num};
use crate::Result;

/// The percentiles pandas' `describe()` reports by default.
pub const DEFAULT_PERCENTILES: [f64; 3] = [0.25, 0.5, 0.75];

/// Key bits histogrammed per round by [`QuantileSearch`].
pub const ROUND_BITS: u32 = 16;

/// Default limit of distinct keys a worker counts for a column or a key range before it
/// gives up on them (and sends only a histogram).
pub const MAX_DISTINCT: usize = 4096;

/// Values per block of the one-pass moments: small enough that a block's second pass reads
/// L1 cache.
pub const BLOCK: usize = 1024;

// ---------------------------------------------------------------------------------------
// Moments
// ---------------------------------------------------------------------------------------

/// Moments of a block of values without NaN (a few thousand at most, so that the second
/// pass reads them from L1 cache): the corrected two-pass of [`Moments::from_values`], with
/// four independent accumulators per sum so that the additions do not wait on each other.
fn block_moments(xs: &[f64]) -> Moments {
    let Some(&first) = xs.first() else {
        return Moments::default();
    };
    let (mut min, mut max) = (first, first);
    let mut sums = [0.0f64; 4];
    let mut quads = xs.chunks_exact(4);
    for q in quads.by_ref() {
        for (s, &x) in sums.iter_mut().zip(q) {
            *s += x;
            min = if x < min { x } else { min };
            max = if x > max { x } else { max };
        }
    }
    for (s, &x) in sums.iter_mut().zip(quads.remainder()) {
        *s += x;
        min = if x < min { x } else { min };
        max = if x > max { x } else { max };
    }
    let n = xs.len() as f64;
    let mean = ((sums[0] + sums[1]) + (sums[2] + sums[3])) / n;
    if !mean.is_finite() {
        // Infinite values: the plain path knows what to keep.
        return Moments::from_values(xs);
    }
    let (mut sd, mut sdd) = ([0.0f64; 4], [0.0f64; 4]);
    let mut quads = xs.chunks_exact(4);
    for q in quads.by_ref() {
        for ((s, ss), &x) in sd.iter_mut().zip(sdd.iter_mut()).zip(q) {
            let d = x - mean;
            *s += d;
            *ss += d * d;
        }
    }
    for ((s, ss), &x) in sd.iter_mut().zip(sdd.iter_mut()).zip(quads.remainder()) {
        let d = x - mean;
        *s += d;
        *ss += d * d;
    }
    let sd = (sd[0] + sd[1]) + (sd[2] + sd[3]);
    let sdd = (sdd[0] + sdd[1]) + (sdd[2] + sdd[3]);
    Moments {
        count: xs.len() as u64,
        mean: mean + sd / n,
        m2: (sdd - sd * (sd / n)).max(0.0),
        min,
        max,
    }
}

// ---------------------------------------------------------------------------------------
// Types, keys and column access
// ---------------------------------------------------------------------------------------

/// Whether describe covers this type (integers and floats).
pub fn is_describable(dt: &DataType) -> bool {
    stratus_plan::is_numeric(dt)
}

/// The describable columns of a schema, in schema order (what `describe()` covers when no
/// column is named).
pub fn describable_columns(schema: &Schema) -> Vec<String> {
    schema
        .fields()
        .iter()
        .filter(|f| is_describable(f.data_type()))
        .map(|f| f.name().clone())
        .collect()
}

/// How a column's keys decode back to values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Float,
    Signed,
    Unsigned,
}

impl KeyKind {
    fn of(dt: &DataType) -> Option<KeyKind> {
        match dt {
            DataType::Float32 | DataType::Float64 => Some(KeyKind::Float),
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 => {
                Some(KeyKind::Signed)
            }
            DataType::UInt8 | DataType::UInt16 | DataType::UInt32 | DataType::UInt64 => {
                Some(KeyKind::Unsigned)
            }
            _ => None,
        }
    }

    fn to_f64(self, k: u64) -> f64 {
        match self {
            KeyKind::Float => float_from_key(k),
            KeyKind::Signed => signed_from_key(k) as f64,
            KeyKind::Unsigned => k as f64,
        }
    }

    /// numpy's linear interpolation between the values of keys `a` and `b` (a <= b) at `t`.
    fn lerp(self, a: u64, b: u64, t: f64) -> f64 {
        let (fa, fb, diff) = match self {
            KeyKind::Float => {
                let (fa, fb) = (float_from_key(a), float_from_key(b));
                (fa, fb, fb - fa)
            }
            KeyKind::Signed => {
                let (ia, ib) = (signed_from_key(a), signed_from_key(b));
                (ia as f64, ib as f64, (ib as i128 - ia as i128) as f64)
            }
            KeyKind::Unsigned => (a as f64, b as f64, (b as i128 - a as i128) as f64),
        };
        lerp(fa, fb, diff, t)
    }
}

/// numpy's `_lerp`: `a + d·t` below one half, `b − d·(1−t)` from one half on.
#[inline]
fn lerp(a: f64, b: f64, diff: f64, t: f64) -> f64 {
    if t == 0.0 {
        a
    } else if t >= 0.5 {
        b - diff * (1.0 - t)
    } else {
        a + diff * t
    }
}

/// Calls `f` on every non-null, non-NaN value of a primitive array.
#[inline]
fn for_each_value<T, F>(arr: &PrimitiveArray<T>, mut f: F)
where
    T: ArrowPrimitiveType,
    T::Native: Num,
    F: FnMut(T::Native),
{
    let values = arr.values();
    let nulls = arr.nulls().filter(|n| n.null_count() > 0);
    match nulls {
        None => {
            for &v in values.iter() {
                if !v.is_nan() {
                    f(v)
                }
            }
        }
        Some(n) => {
            for i in n.valid_indices() {
                if let Some(&v) = values.get(i) {
                    if !v.is_nan() {
                        f(v)
                    }
                }
            }
        }
    }
}

/// Something run over one primitive array of any describable type.
trait Visitor {
    fn visit<T>(&mut self, arr: &PrimitiveArray<T>)
    where
        T: ArrowPrimitiveType,
        T::Native: Num;
}

/// Dispatches on the array's type; false when it is not describable.
fn visit_array(arr: &dyn Array, v: &mut impl Visitor) -> bool {
    macro_rules! go {
        ($t:ty) => {
            match arr.as_primitive_opt::<$t>() {
                Some(a) => {
                    v.visit(a);
                    true
                }
                None => false,
            }
        };
    }
    match arr.data_type() {
        DataType::Int8 => go!(Int8Type),
        DataType::Int16 => go!(Int16Type),
        DataType::Int32 => go!(Int32Type),
        DataType::Int64 => go!(Int64Type),
        DataType::UInt8 => go!(UInt8Type),
        DataType::UInt16 => go!(UInt16Type),
        DataType::UInt32 => go!(UInt32Type),
        DataType::UInt64 => go!(UInt64Type),
        DataType::Float32 => go!(Float32Type),
        DataType::Float64 => go!(Float64Type),
        _ => false,
    }
}

/// The column of a batch, checked to exist and be describable.
fn column_of<'a>(batch: &'a RecordBatch, column: &str) -> Result<&'a dyn Array> {
    let schema = batch.schema_ref();
    let Some((i, field)) = schema.column_with_name(column) else {
        let available: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        return Err(EngineError::Argument(format!(
            "describe: no column named '{column}' (columns: {})",
            available.join(", ")
        )));
    };
    let arr = batch.columns().get(i).ok_or_else(|| {
        EngineError::Argument(format!("describe: column '{column}' missing from a batch"))
    })?;
    if !is_describable(arr.data_type()) {
        return Err(not_numeric(column, field.data_type()));
    }
    Ok(arr.as_ref())
}

fn not_numeric(column: &str, dt: &DataType) -> EngineError {
    EngineError::Argument(format!(
        "describe: column '{column}' has type {dt}, not an integer or float type"
    ))
}

/// Counts distinct keys, up to a limit: open addressing with linear probing in a table at
/// most half full (a count of 0 marks an empty slot). Past the limit it stops counting and
/// forgets what it had: [`into_sorted`](KeyCounter::into_sorted) gives `None`.
#[derive(Debug)]
pub struct KeyCounter {
    slots: Vec<(u64, u64)>,
    shift: u32,
    len: usize,
    limit: usize,
    counting: bool,
}

impl KeyCounter {
    /// A counter of at most `limit` distinct keys (0: never counts).
    pub fn new(limit: usize) -> KeyCounter {
        KeyCounter {
            slots: Vec::new(),
            shift: 64,
            len: 0,
            limit,
            counting: limit > 0,
        }
    }

    /// Whether it still counts (it has not given up).
    #[inline]
    pub fn is_counting(&self) -> bool {
        self.counting
    }

    /// Count `n` more occurrences of `key`; false once it has given up.
    #[inline]
    pub fn add(&mut self, key: u64, n: u64) -> bool {
        if !self.counting {
            return false;
        }
        if self.slots.is_empty() {
            let size = (self.limit * 2).next_power_of_two().max(2);
            self.slots = vec![(0, 0); size];
            self.shift = 64 - size.trailing_zeros();
        }
        let mask = self.slots.len() - 1;
        let mut i = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize;
        loop {
            let slot = &mut self.slots[i & mask];
            if slot.1 == 0 {
                if self.len == self.limit {
                    self.counting = false;
                    self.slots = Vec::new();
                    return false;
                }
                *slot = (key, n);
                self.len += 1;
                return true;
            }
            if slot.0 == key {
                slot.1 += n;
                return true;
            }
            i += 1;
        }
    }

    /// Count one occurrence of each of `keys` (runs of one key cost one probe); false once
    /// it has given up.
    pub fn add_all(&mut self, keys: &[u64]) -> bool {
        let Some((&first, rest)) = keys.split_first() else {
            return self.counting;
        };
        let (mut key, mut n) = (first, 1u64);
        for &k in rest {
            if k == key {
                n += 1;
                continue;
            }
            if !self.add(key, n) {
                return false;
            }
            (key, n) = (k, 1);
        }
        self.add(key, n)
    }

    /// The distinct keys with their counts, sorted by key; None if it gave up.
    pub fn into_sorted(self) -> Option<DistinctKeys> {
        if !self.counting {
            return None;
        }
        let mut out: Vec<(u64, u64)> = self.slots.into_iter().filter(|s| s.1 > 0).collect();
        out.sort_unstable_by_key(|s| s.0);
        Some(out)
    }
}

/// [`ColumnSummary`] of a column over batches (a worker's partitions), in one pass: error if
/// the column is missing or not numeric. No batches give empty moments (count 0) and no keys.
pub fn column_summary(
    batches: &[RecordBatch],
    column: &str,
    max_distinct: usize,
) -> Result<ColumnSummary> {
    struct V {
        moments: Moments,
        counter: KeyCounter,
        values: Vec<f64>,
        keys: Vec<u64>,
    }
    impl V {
        /// One block: its values in f64 (and keys while counting), then its moments and
        /// keys from cache. Returns how many items it read from `items`.
        fn block<N: Num>(&mut self, items: impl Iterator<Item = N>) -> usize {
            self.values.clear();
            self.keys.clear();
            let counting = self.counter.is_counting();
            let mut read = 0;
            for v in items {
                read += 1;
                if v.is_nan() {
                    continue;
                }
                self.values.push(v.to_f64());
                if counting {
                    self.keys.push(v.key());
                }
            }
            if !self.values.is_empty() {
                self.moments.merge(&block_moments(&self.values));
            }
            self.counter.add_all(&self.keys);
            read
        }
    }
    impl Visitor for V {
        fn visit<T>(&mut self, arr: &PrimitiveArray<T>)
        where
            T: ArrowPrimitiveType,
            T::Native: Num,
        {
            let values = arr.values();
            match arr.nulls().filter(|n| n.null_count() > 0) {
                None => {
                    for chunk in values.chunks(BLOCK) {
                        self.block(chunk.iter().copied());
                    }
                }
                Some(n) => {
                    let mut valid = n.valid_indices().filter_map(|i| values.get(i).copied());
                    while self.block(valid.by_ref().take(BLOCK)) == BLOCK {}
                }
            }
        }
    }
    let mut v = V {
        moments: Moments::default(),
        counter: KeyCounter::new(max_distinct),
        values: Vec::with_capacity(BLOCK),
        keys: Vec::with_capacity(BLOCK),
    };
    for batch in batches {
        let arr = column_of(batch, column)?;
        if !visit_array(arr, &mut v) {
            return Err(not_numeric(column, arr.data_type()));
        }
    }
    Ok(ColumnSummary {
        moments: v.moments,
        distinct: v.counter.into_sorted(),
    })
}

/// Moments of a column over batches (a partition): [`column_summary`] without the keys.
pub fn column_moments(batches: &[RecordBatch], column: &str) -> Result<Moments> {
    Ok(column_summary(batches, column, 0)?.moments)
}

/// Add up distinct-key counts from several workers (each sorted by key): sorted by key, or
/// None if any of them gave up on its keys.
pub fn merge_distinct(parts: &[Option<DistinctKeys>]) -> Option<DistinctKeys> {
    let mut all: Vec<(u64, u64)> = Vec::new();
    for p in parts {
        all.extend_from_slice(p.as_ref()?);
    }
    all.sort_unstable_by_key(|s| s.0);
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(all.len());
    for (k, c) in all {
        match merged.last_mut() {
            Some((lk, lc)) if *lk == k => *lc = lc.saturating_add(c),
            _ => merged.push((k, c)),
        }
    }
    Some(merged)
}

/// The key at a 0-based `rank` of sorted distinct keys with counts.
fn key_at_rank(distinct: &[(u64, u64)], rank: u64) -> Option<u64> {
    let mut cum = 0u64;
    for &(k, c) in distinct {
        cum = cum.saturating_add(c);
        if rank < cum {
            return Some(k);
        }
    }
    None
}

/// Checks that sorted distinct keys are strictly increasing, lie in `range` and add up to
/// `total`.
fn check_distinct(distinct: &[(u64, u64)], range: &KeyRange, total: u64) -> Result<()> {
    let sum = distinct
        .iter()
        .fold(0u64, |acc, &(_, c)| acc.saturating_add(c));
    if sum != total
        || distinct.windows(2).any(|w| w[0].0 >= w[1].0)
        || distinct.iter().any(|&(k, c)| c == 0 || !range.contains(k))
    {
        return Err(EngineError::Argument(format!(
            "describe: distinct keys of key range {:#x}/{} are inconsistent with its {total} \
             values",
            range.prefix, range.prefix_bits
        )));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Histograms
// ---------------------------------------------------------------------------------------

/// Per-range accumulator of [`histograms`].
struct RangeAcc {
    prefix: u64,
    shift: u32,
    prefix_bits: u32,
    counts: Vec<u64>,
    distinct: KeyCounter,
}

/// Checks `bits` and a range against it.
fn check_range(r: &KeyRange, bits: u32) -> Result<()> {
    if !(1..=ROUND_BITS).contains(&bits) {
        return Err(EngineError::Argument(format!(
            "describe: histogram width of {bits} bits (must be 1..={ROUND_BITS})"
        )));
    }
    if r.prefix_bits >= 64 || r.prefix_bits + bits > 64 {
        return Err(EngineError::Argument(format!(
            "describe: key range of {} prefix bits cannot take {bits} more bits",
            r.prefix_bits
        )));
    }
    if r.prefix_bits < 64 && r.prefix.checked_shr(r.prefix_bits).unwrap_or(0) != 0 {
        return Err(EngineError::Argument(format!(
            "describe: key range prefix {:#x} does not fit in {} bits",
            r.prefix, r.prefix_bits
        )));
    }
    Ok(())
}

/// Histograms of `ranges` over a column of batches (a partition): one pass over the column
/// for all ranges at once; result `i` is for `ranges[i]`. Cost O(rows × ranges); each range
/// takes `2^bits` counters while it runs.
pub fn histograms(
    batches: &[RecordBatch],
    column: &str,
    ranges: &[KeyRange],
    bits: u32,
    max_distinct: usize,
) -> Result<Vec<RangeHistogram>> {
    for r in ranges {
        check_range(r, bits)?;
    }
    let mut accs: Vec<RangeAcc> = ranges
        .iter()
        .map(|r| RangeAcc {
            prefix: r.prefix,
            shift: 64 - r.prefix_bits,
            prefix_bits: r.prefix_bits,
            counts: Vec::new(),
            distinct: KeyCounter::new(max_distinct),
        })
        .collect();

    struct V<'a> {
        accs: &'a mut [RangeAcc],
        bits: u32,
    }
    impl Visitor for V<'_> {
        fn visit<T>(&mut self, arr: &PrimitiveArray<T>)
        where
            T: ArrowPrimitiveType,
            T::Native: Num,
        {
            let down = 64 - self.bits;
            let size = 1usize << self.bits;
            for_each_value(arr, |v| {
                let key = v.key();
                for acc in self.accs.iter_mut() {
                    if key.checked_shr(acc.shift).unwrap_or(0) != acc.prefix {
                        continue;
                    }
                    let bucket = (key << acc.prefix_bits) >> down;
                    if acc.counts.is_empty() {
                        acc.counts = vec![0; size];
                    }
                    if let Some(c) = acc.counts.get_mut(bucket as usize) {
                        *c += 1;
                    }
                    acc.distinct.add(key, 1);
                }
            });
        }
    }
    let mut v = V {
        accs: &mut accs,
        bits,
    };
    for batch in batches {
        let arr = column_of(batch, column)?;
        if !visit_array(arr, &mut v) {
            return Err(not_numeric(column, arr.data_type()));
        }
    }
    Ok(accs
        .into_iter()
        .map(|acc| {
            let buckets = acc
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(b, &c)| (b as u32, c))
                .collect();
            RangeHistogram {
                buckets,
                distinct: acc.distinct.into_sorted(),
            }
        })
        .collect())
}

/// Merge histograms of the same range from several partitions (sum counts; distinct keys
/// merged only if every part sent them, else None). A part with no buckets (an empty range,
/// or a `RangeHistogram::default()` standing for "no partitions here") holds no values and
/// never drops the keys. Merging nothing gives an empty histogram with `Some(vec![])` keys.
pub fn merge_histograms(parts: &[RangeHistogram]) -> RangeHistogram {
    let mut buckets: Vec<(u32, u64)> = parts
        .iter()
        .flat_map(|p| p.buckets.iter().copied())
        .filter(|&(_, c)| c > 0)
        .collect();
    buckets.sort_unstable_by_key(|&(b, _)| b);
    let mut merged: Vec<(u32, u64)> = Vec::with_capacity(buckets.len());
    for (b, c) in buckets {
        match merged.last_mut() {
            Some((lb, lc)) if *lb == b => *lc = lc.saturating_add(c),
            _ => merged.push((b, c)),
        }
    }
    let holding: Vec<Option<DistinctKeys>> = parts
        .iter()
        .filter(|p| p.buckets.iter().any(|&(_, c)| c > 0))
        .map(|p| p.distinct.clone())
        .collect();
    RangeHistogram {
        buckets: merged,
        distinct: merge_distinct(&holding),
    }
}

// ---------------------------------------------------------------------------------------
// The search
// ---------------------------------------------------------------------------------------

/// One rank being searched for.
#[derive(Debug, Clone)]
struct Track {
    /// Key prefix (top `QuantileSearch::level` bits) of the range holding the rank.
    prefix: u64,
    /// The rank counted from the start of that range.
    within: u64,
    /// How many values the range holds (checked against the histograms).
    expect: u64,
    /// The key at the rank once resolved.
    key: Option<u64>,
}

/// What one quantile needs: ranks `lo` and `hi` (index into `tracks`) and the weight `t`.
#[derive(Debug, Clone, Copy)]
struct Plan {
    lo: usize,
    hi: usize,
    t: f64,
}

/// Sans-IO driver of the exact-quantile search for ONE column: the caller (the scheduler)
/// asks it for the next round of KeyRanges, has every worker compute [`histograms`] over
/// its partitions, merges them with [`merge_histograms`], and feeds them back, until
/// [`result`](QuantileSearch::result) gives the exact quantiles.
#[derive(Debug, Clone)]
pub struct QuantileSearch {
    kind: KeyKind,
    count: u64,
    plans: Vec<Plan>,
    /// One per distinct rank, sorted by rank (hence by prefix).
    tracks: Vec<Track>,
    /// Prefix bits shared by every unresolved track.
    level: u32,
    rounds: usize,
    max_distinct: usize,
    /// How many quantiles were asked for (the length of the result).
    requested: usize,
}

impl QuantileSearch {
    /// `count` = total non-null non-NaN values (from merged Moments), `quantiles` e.g.
    /// [0.25, 0.5, 0.75] (each within [0, 1]), `data_type` of the column (to decode keys back
    /// to values: float vs signed vs unsigned).
    pub fn new(count: u64, quantiles: &[f64], data_type: &DataType) -> Result<QuantileSearch> {
        let kind = KeyKind::of(data_type).ok_or_else(|| {
            EngineError::Argument(format!(
                "describe: quantiles of type {data_type}, not an integer or float type"
            ))
        })?;
        for &q in quantiles {
            if !(0.0..=1.0).contains(&q) {
                return Err(EngineError::Argument(format!(
                    "describe: quantile {q} is not within [0, 1]"
                )));
            }
        }
        let mut s = QuantileSearch {
            kind,
            count,
            plans: Vec::new(),
            tracks: Vec::new(),
            level: 0,
            rounds: 0,
            max_distinct: MAX_DISTINCT,
            requested: quantiles.len(),
        };
        if count == 0 {
            return Ok(s);
        }
        let last = count - 1;
        let mut needed: Vec<(u64, u64, f64)> = Vec::with_capacity(quantiles.len());
        let mut ranks: Vec<u64> = Vec::with_capacity(2 * quantiles.len());
        for &q in quantiles {
            // pandas hands numpy q * 100, which numpy divides by 100 again.
            let q = (q * 100.0) / 100.0;
            let pos = last as f64 * q;
            let floor = pos.floor();
            let t = pos - floor;
            let lo = (floor as u64).min(last);
            let hi = if t > 0.0 { (lo + 1).min(last) } else { lo };
            ranks.push(lo);
            ranks.push(hi);
            needed.push((lo, hi, t));
        }
        ranks.sort_unstable();
        ranks.dedup();
        let index = |r: u64| ranks.binary_search(&r).unwrap_or(0);
        s.plans = needed
            .iter()
            .map(|&(lo, hi, t)| Plan {
                lo: index(lo),
                hi: index(hi),
                t,
            })
            .collect();
        s.tracks = ranks
            .iter()
            .map(|&r| Track {
                prefix: 0,
                within: r,
                expect: count,
                key: None,
            })
            .collect();
        Ok(s)
    }

    /// Like [`new`](Self::new), with `count`, `min` and `max` taken from the column's merged
    /// moments: the key bits that min and max share are skipped (a column of years or of
    /// constants needs one round or none). Falls back to [`new`](Self::new)'s full search
    /// when min/max cannot be keyed exactly (integers beyond 2^53, NaN).
    pub fn from_moments(
        moments: &Moments,
        quantiles: &[f64],
        data_type: &DataType,
    ) -> Result<QuantileSearch> {
        let mut s = QuantileSearch::new(moments.count, quantiles, data_type)?;
        if moments.count == 0 {
            return Ok(s);
        }
        if let Some((lo, hi)) = bounds_keys(s.kind, moments.min, moments.max) {
            let common = (lo ^ hi).leading_zeros();
            if common == 64 {
                for t in &mut s.tracks {
                    t.key = Some(lo);
                }
            } else if common > 0 {
                s.level = common;
                for t in &mut s.tracks {
                    t.prefix = lo >> (64 - common);
                }
            }
        }
        Ok(s)
    }

    /// Ranges to histogram next (deduplicated, sorted; empty when done).
    pub fn next_round(&self) -> Vec<KeyRange> {
        let mut out: Vec<KeyRange> = Vec::new();
        for t in self.tracks.iter().filter(|t| t.key.is_none()) {
            let r = KeyRange {
                prefix: t.prefix,
                prefix_bits: self.level,
            };
            if out.last() != Some(&r) {
                out.push(r);
            }
        }
        out
    }

    /// The width `bits` to use with next_round's ranges (16, less on the last round).
    pub fn round_bits(&self) -> u32 {
        ROUND_BITS.min(64u32.saturating_sub(self.level)).max(1)
    }

    /// How many distinct keys of a range a worker counts before it sends only a histogram.
    pub fn max_distinct(&self) -> usize {
        self.max_distinct
    }

    /// Change [`max_distinct`](Self::max_distinct) (0: workers never send keys).
    pub fn set_max_distinct(&mut self, max_distinct: usize) {
        self.max_distinct = max_distinct;
    }

    /// Resolve every rank from the whole column's distinct keys with their counts (the
    /// summary round's [`merge_distinct`]), before any histogram round. Errors (leaving the
    /// search unchanged) if they do not add up to the column's count.
    pub fn feed_distinct(&mut self, distinct: &[(u64, u64)]) -> Result<()> {
        if self.rounds > 0 {
            return Err(EngineError::Argument(
                "describe: distinct keys of a whole column after a histogram round".into(),
            ));
        }
        let all = KeyRange {
            prefix: self.tracks.first().map_or(0, |t| t.prefix),
            prefix_bits: self.level,
        };
        check_distinct(distinct, &all, self.count)?;
        let mut tracks = self.tracks.clone();
        for t in tracks.iter_mut().filter(|t| t.key.is_none()) {
            t.key = Some(
                key_at_rank(distinct, t.within)
                    .ok_or_else(|| EngineError::Argument("describe: rank out of range".into()))?,
            );
        }
        self.tracks = tracks;
        Ok(())
    }

    /// Rounds fed so far.
    pub fn rounds(&self) -> usize {
        self.rounds
    }

    /// Whether every rank is resolved ([`result`](Self::result) is `Some`).
    pub fn is_done(&self) -> bool {
        self.tracks.iter().all(|t| t.key.is_some())
    }

    /// Feed the merged histogram for each range of the last next_round(), same order.
    /// Errors (leaving the search unchanged) when the histograms do not match the ranges or
    /// do not add up to the counts expected (e.g. a partition was left out).
    pub fn feed(&mut self, merged: &[RangeHistogram]) -> Result<()> {
        let ranges = self.next_round();
        if merged.len() != ranges.len() {
            return Err(EngineError::Argument(format!(
                "describe: fed {} histograms for {} key ranges",
                merged.len(),
                ranges.len()
            )));
        }
        if ranges.is_empty() {
            return Ok(());
        }
        let bits = self.round_bits();
        let mut tracks = self.tracks.clone();
        for t in tracks.iter_mut().filter(|t| t.key.is_none()) {
            let i = ranges
                .binary_search_by_key(&t.prefix, |r| r.prefix)
                .map_err(|_| EngineError::Argument("describe: lost key range".into()))?;
            let range = &ranges[i];
            let h = &merged[i];
            let total = h.total();
            if total != t.expect {
                return Err(EngineError::Argument(format!(
                    "describe: histogram of key range {:#x}/{} holds {total} values, expected {} \
                     (were all partitions included?)",
                    range.prefix, range.prefix_bits, t.expect
                )));
            }
            if let Some(distinct) = &h.distinct {
                check_distinct(distinct, range, total)?;
                t.key = key_at_rank(distinct, t.within);
                if t.key.is_none() {
                    return Err(EngineError::Argument("describe: rank out of range".into()));
                }
                continue;
            }
            let mut cum = 0u64;
            let mut found = None;
            for &(b, c) in &h.buckets {
                if u64::from(b) >> bits != 0 {
                    return Err(EngineError::Argument(format!(
                        "describe: bucket {b} out of range for {bits} bits"
                    )));
                }
                if t.within < cum.saturating_add(c) {
                    found = Some((b, c));
                    break;
                }
                cum = cum.saturating_add(c);
            }
            let Some((b, c)) = found else {
                return Err(EngineError::Argument("describe: rank out of range".into()));
            };
            t.prefix = (t.prefix << bits) | u64::from(b);
            t.within -= cum;
            t.expect = c;
            if self.level + bits == 64 {
                t.key = Some(t.prefix);
            }
        }
        self.tracks = tracks;
        self.level += bits;
        self.rounds += 1;
        Ok(())
    }

    /// Some(values) once every rank is resolved: one f64 per requested quantile, linear
    /// interpolation as pandas; None before. For count == 0: all NaN immediately (next_round
    /// empty).
    pub fn result(&self) -> Option<Vec<f64>> {
        if self.count == 0 {
            return Some(vec![f64::NAN; self.requested]);
        }
        let key = |i: usize| self.tracks.get(i).and_then(|t| t.key);
        self.plans
            .iter()
            .map(|p| {
                let a = key(p.lo)?;
                if p.t == 0.0 {
                    return Some(self.kind.to_f64(a));
                }
                let b = key(p.hi)?;
                Some(self.kind.lerp(a, b, p.t))
            })
            .collect()
    }
}

/// Keys of a column's min and max, when they are exact.
fn bounds_keys(kind: KeyKind, min: f64, max: f64) -> Option<(u64, u64)> {
    if min.is_nan() || max.is_nan() || min > max {
        return None;
    }
    const EXACT: f64 = 9_007_199_254_740_992.0; // 2^53
    let int_ok = |x: f64| x.fract() == 0.0 && x.abs() < EXACT;
    let (lo, hi) = match kind {
        KeyKind::Float => {
            // -0.0 and +0.0 share a key, so either zero is an exact bound.
            (float_key(min), float_key(max))
        }
        KeyKind::Signed => {
            if !int_ok(min) || !int_ok(max) {
                return None;
            }
            (signed_key(min as i64), signed_key(max as i64))
        }
        KeyKind::Unsigned => {
            if !int_ok(min) || !int_ok(max) || min < 0.0 {
                return None;
            }
            (min as u64, max as u64)
        }
    };
    (lo <= hi).then_some((lo, hi))
}

// ---------------------------------------------------------------------------------------
// A worker's rounds
// ---------------------------------------------------------------------------------------

/// A worker's answer to a describe's summary round: the [`column_summary`] of each of
/// `columns` (in order) over `batches`, all the partitions it holds for the frame.
pub fn summaries(
    batches: &[RecordBatch],
    columns: &[String],
    max_distinct: usize,
) -> Result<Vec<ColumnSummary>> {
    columns
        .iter()
        .map(|c| column_summary(batches, c, max_distinct))
        .collect()
}

/// A worker's answer to a describe's histogram round: for each column asked (in order), the
/// [`histograms`] of its ranges over `batches`, all the partitions it holds for the frame.
pub fn range_histograms(
    batches: &[RecordBatch],
    columns: &[ColumnRanges],
) -> Result<Vec<Vec<RangeHistogram>>> {
    columns
        .iter()
        .map(|c| {
            histograms(
                batches,
                &c.column,
                &c.ranges,
                c.bits,
                c.max_distinct as usize,
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_lerp_is_numpys() {
        assert_eq!(lerp(1.0, 3.0, 2.0, 0.0), 1.0);
        assert_eq!(lerp(1.0, 3.0, 2.0, 0.25), 1.5);
        assert_eq!(lerp(1.0, 3.0, 2.0, 0.75), 2.5);
        // b - a taken exactly: 2^64 - 1, rounded once to 2^64.
        assert_eq!(
            KeyKind::Signed.lerp(signed_key(i64::MIN), signed_key(i64::MAX), 0.5),
            0.0
        );
    }

    #[test]
    fn describe_key_range_contains() {
        let all = KeyRange {
            prefix: 0,
            prefix_bits: 0,
        };
        assert!(all.contains(0) && all.contains(u64::MAX));
        let r = KeyRange {
            prefix: 0xABCD,
            prefix_bits: 16,
        };
        assert!(r.contains(0xABCD_0000_0000_0000));
        assert!(!r.contains(0xABCE_0000_0000_0000));
    }
}
