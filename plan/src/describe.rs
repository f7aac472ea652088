//! The plain data of a distributed `describe()`, as workers send it and the engine computes
//! it: a column's [`ColumnSummary`] (its [`Moments`] and, while few, its distinct value keys
//! with counts), the [`KeyRange`]s of value keys a quantile search asks about, per column
//! ([`ColumnRanges`]), and the [`RangeHistogram`] a worker answers for each. Value keys are
//! the engine's order-preserving 64-bit keys (`stratus_engine::num`).

use rkyv::{Archive, Deserialize, Serialize};

use crate::Moments;

/// Distinct value keys with their counts, sorted by key.
pub type DistinctKeys = Vec<(u64, u64)>;

/// What one pass over a column gives: its moments and, when it has at most `max_distinct`
/// distinct values, their keys with counts.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct ColumnSummary {
    /// Count, mean, M2, min and max (nulls and NaN skipped).
    pub moments: Moments,
    /// `(key, count)` of every distinct value, sorted by key; None when there were more than
    /// `max_distinct` of them.
    pub distinct: Option<DistinctKeys>,
}

/// A request to narrow the search: among values whose key's top `prefix_bits` bits equal
/// `prefix` (prefix_bits = 0: all values), count them by their next `bits` bits
/// (1 <= bits <= 16, prefix_bits + bits <= 64).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyRange {
    /// The top `prefix_bits` bits of the keys in the range (right-aligned).
    pub prefix: u64,
    /// How many leading key bits the range fixes.
    pub prefix_bits: u32,
}

impl KeyRange {
    /// Whether `key` lies in the range.
    #[inline]
    pub fn contains(&self, key: u64) -> bool {
        key.checked_shr(64u32.saturating_sub(self.prefix_bits))
            .unwrap_or(0)
            == self.prefix
    }
}

/// Sparse histogram of one KeyRange over a partition: (bucket, count) pairs with count > 0,
/// sorted by bucket; plus, when the range holds at most `max_distinct` distinct keys in this
/// partition, those keys with their counts.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct RangeHistogram {
    /// `(bucket, count)` for non-empty buckets, sorted by bucket.
    pub buckets: Vec<(u32, u64)>,
    /// The range's distinct keys with counts, sorted by key, when there were at most
    /// `max_distinct` of them.
    pub distinct: Option<DistinctKeys>,
}

impl RangeHistogram {
    /// Number of values in the range.
    pub fn total(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |acc, &(_, c)| acc.saturating_add(c))
    }
}

/// Histogram requests for one column: its ranges, the bucket width and the limit of
/// distinct keys a worker sends per range.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ColumnRanges {
    /// The column.
    pub column: String,
    /// The key ranges to histogram, sorted.
    pub ranges: Vec<KeyRange>,
    /// Key bits per bucket after a range's prefix.
    pub bits: u32,
    /// Distinct keys a range may have for the worker to send them (with counts).
    pub max_distinct: u64,
}
