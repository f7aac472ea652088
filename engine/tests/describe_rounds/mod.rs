//! The rounds of a distributed `describe()` of one column, played in-process: each
//! partition list stands for a worker and answers with what a worker runs
//! ([`summaries`], [`range_histograms`]); the answers are merged as the scheduler's
//! describe job merges them (every worker's moments and distinct keys, empty workers
//! included; the search's `max_distinct` chosen by the caller; the column's type given, as
//! the scheduler takes it from the frame's schema). Shared by the describe tests and the
//! kernels benchmark.

use arrow_array::RecordBatch;
use arrow_schema::DataType;
use stratus_engine::describe::{
    merge_distinct, merge_histograms, range_histograms, summaries, QuantileSearch,
};
use stratus_engine::{EngineError, Result};
use stratus_plan::{ColumnRanges, Moments, RangeHistogram};

/// The merged moments, the quantiles and the histogram rounds the search took.
pub struct Described {
    pub moments: Moments,
    pub quantiles: Vec<f64>,
    pub rounds: usize,
}

/// `describe()` of `column` (of type `data_type`) over `workers`, with `max_distinct` keys
/// per worker and range.
pub fn describe_rounds(
    workers: &[Vec<RecordBatch>],
    column: &str,
    data_type: &DataType,
    quantiles: &[f64],
    max_distinct: usize,
) -> Result<Described> {
    let columns = [column.to_string()];
    // Summary round.
    let mut moments = Moments::default();
    let mut distinct = Vec::with_capacity(workers.len());
    for w in workers {
        let [summary]: [_; 1] = summaries(w, &columns, max_distinct)?
            .try_into()
            .map_err(|_| EngineError::Argument("one summary per column".into()))?;
        moments.merge(&summary.moments);
        distinct.push(summary.distinct);
    }
    let mut search = QuantileSearch::from_moments(&moments, quantiles, data_type)?;
    search.set_max_distinct(max_distinct);
    if let Some(all) = merge_distinct(&distinct) {
        if !search.is_done() {
            search.feed_distinct(&all)?;
        }
    }
    // Histogram rounds; each narrows every rank by at least one bit.
    for _ in 0..=64 {
        let ranges = search.next_round();
        if ranges.is_empty() {
            break;
        }
        let ask = [ColumnRanges {
            column: column.to_string(),
            ranges,
            bits: search.round_bits(),
            max_distinct: search.max_distinct() as u64,
        }];
        let mut per_range: Vec<Vec<RangeHistogram>> = vec![Vec::new(); ask[0].ranges.len()];
        for w in workers {
            let mut answer = range_histograms(w, &ask)?;
            let hists = answer
                .pop()
                .filter(|h| h.len() == per_range.len() && answer.is_empty());
            let hists =
                hists.ok_or_else(|| EngineError::Argument("one histogram per range".into()))?;
            for (acc, h) in per_range.iter_mut().zip(hists) {
                acc.push(h);
            }
        }
        let merged: Vec<RangeHistogram> = per_range.iter().map(|v| merge_histograms(v)).collect();
        search.feed(&merged)?;
    }
    let quantiles = search.result().ok_or_else(|| {
        EngineError::Argument(format!(
            "describe: quantile search of '{column}' did not finish"
        ))
    })?;
    Ok(Described {
        moments,
        quantiles,
        rounds: search.rounds(),
    })
}
