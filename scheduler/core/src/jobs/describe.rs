//! `describe()` as rounds. Round 1 is one pass over each column per
//! worker: its moments (count, mean, M2, min, max; merged with Chan's
//! formula) and its distinct value keys with counts while a worker has few.
//! A column whose every worker sent its keys has its quartiles read off
//! them. Only the others take exact-quantile rounds: each column's
//! [`QuantileSearch`] asks for sparse histograms of value-key prefixes,
//! narrowing until the values at the ranks pandas needs are known exactly
//! (see ARCHITECTURE.md). No column data moves.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::DataType;
use stratus_engine::describe::{merge_distinct, merge_histograms, QuantileSearch};
use stratus_plan::{DistinctKeys, KeyRange, Moments, RangeHistogram};
use stratus_protocol::messages::{ColumnRanges, ReduceOp, TaskKind, TaskOutput};

use super::rounds::{per_holder, table_answer, Holders, PeerOf, Reduction, Rounds};
use super::{Flow, Job, JobCx, Planning};
use crate::ids::{FrameId, JobId, WorkerId};
use crate::requests::describe_columns;

/// The quartiles `describe` reports.
pub const QUARTILES: [f64; 3] = [0.25, 0.5, 0.75];

/// The job for `describe` of a persisted frame's numeric columns (or `columns`).
pub fn plan(
    at: &Planning,
    source: String,
    columns: Option<Vec<String>>,
) -> Result<Box<dyn Job>, String> {
    let frame = at.persisted(&source)?;
    let schema = &at.frames.get(frame).expect("frame by name").schema;
    let (columns, types) = describe_columns(schema, &source, columns)?;
    let workers = at.cluster.workers().count();
    Ok(Rounds::job(frame, Describe::new(columns, types, workers)))
}

/// Distinct keys per column the scheduler is ready to merge from all workers
/// in a describe's summary round (16 B each).
const DISTINCT_BUDGET: usize = 1 << 18;
/// Most distinct keys one worker counts for a column or key range: a 512 KiB
/// table, which stays in cache.
const MAX_DISTINCT_PER_WORKER: usize = 16_384;

#[derive(Debug)]
enum DescribeRound {
    /// Moments and distinct keys of every column.
    Summary,
    /// Per column: the ranges asked this round (empty if the column is done),
    /// and per range the histograms received so far.
    Quantiles {
        ranges: Vec<Vec<KeyRange>>,
        parts: Vec<Vec<Vec<RangeHistogram>>>,
    },
    Done,
}

/// `describe()` of some columns.
#[derive(Debug)]
pub struct Describe {
    columns: Vec<String>,
    types: Vec<DataType>,
    moments: Vec<Moments>,
    round_moments: Vec<Moments>,
    /// Per column, each worker's distinct keys (None: too many) this round.
    round_distinct: Vec<Vec<Option<DistinctKeys>>>,
    max_distinct: usize,
    searches: Vec<QuantileSearch>,
    round: DescribeRound,
}

impl Describe {
    /// Describe these (numeric) columns on a cluster of `workers` workers
    /// (which bounds the distinct keys each of them sends).
    pub fn new(columns: Vec<String>, types: Vec<DataType>, workers: usize) -> Describe {
        let n = columns.len();
        Describe {
            columns,
            types,
            moments: vec![Moments::default(); n],
            round_moments: vec![Moments::default(); n],
            round_distinct: vec![Vec::new(); n],
            max_distinct: (DISTINCT_BUDGET / workers.max(1)).clamp(256, MAX_DISTINCT_PER_WORKER),
            searches: Vec::new(),
            round: DescribeRound::Summary,
        }
    }

    fn next_op(&self) -> Option<ReduceOp> {
        match &self.round {
            DescribeRound::Summary => Some(ReduceOp::Summary {
                columns: self.columns.clone(),
                max_distinct: self.max_distinct as u64,
            }),
            DescribeRound::Quantiles { ranges, .. } => Some(ReduceOp::Histograms {
                columns: self
                    .columns
                    .iter()
                    .zip(ranges)
                    .zip(&self.searches)
                    .filter(|((_, r), _)| !r.is_empty())
                    .map(|((c, r), s)| ColumnRanges {
                        column: c.clone(),
                        ranges: r.clone(),
                        bits: s.round_bits(),
                        max_distinct: s.max_distinct() as u64,
                    })
                    .collect(),
            }),
            DescribeRound::Done => None,
        }
    }

    fn forget_round(&mut self) {
        match &mut self.round {
            DescribeRound::Summary => {
                self.round_moments = vec![Moments::default(); self.columns.len()];
                self.round_distinct = vec![Vec::new(); self.columns.len()];
            }
            DescribeRound::Quantiles { parts, .. } => {
                for col in parts.iter_mut() {
                    for range in col.iter_mut() {
                        range.clear();
                    }
                }
            }
            DescribeRound::Done => {}
        }
    }

    fn take(&mut self, output: TaskOutput) -> Result<(), String> {
        match (&mut self.round, output) {
            (DescribeRound::Summary, TaskOutput::Summaries(m)) => {
                if m.len() != self.columns.len() {
                    return Err("describe: a worker sent summaries for the wrong columns".into());
                }
                for ((acc, distinct), w) in self
                    .round_moments
                    .iter_mut()
                    .zip(&mut self.round_distinct)
                    .zip(m)
                {
                    acc.merge(&w.moments);
                    distinct.push(w.distinct);
                }
                Ok(())
            }
            (DescribeRound::Quantiles { ranges, parts }, TaskOutput::Histograms(h)) => {
                // The worker answered for the columns still searching, in order.
                let mut answers = h.into_iter();
                for (c, col_ranges) in ranges.iter().enumerate() {
                    if col_ranges.is_empty() {
                        continue;
                    }
                    let per_range = answers
                        .next()
                        .ok_or("describe: a worker sent too few histograms")?;
                    if per_range.len() != col_ranges.len() {
                        return Err(
                            "describe: a worker sent histograms for the wrong ranges".into()
                        );
                    }
                    for (r, hist) in per_range.into_iter().enumerate() {
                        parts[c][r].push(hist);
                    }
                }
                Ok(())
            }
            (_, other) => Err(format!("describe: unexpected task output {other:?}")),
        }
    }

    fn advance(&mut self) -> Result<(), String> {
        match &mut self.round {
            DescribeRound::Summary => {
                self.moments = std::mem::take(&mut self.round_moments);
                let distinct = std::mem::take(&mut self.round_distinct);
                let mut searches = Vec::with_capacity(self.columns.len());
                for ((m, t), parts) in self.moments.iter().zip(&self.types).zip(distinct) {
                    let mut search = QuantileSearch::from_moments(m, &QUARTILES, t)
                        .map_err(|e| e.to_string())?;
                    search.set_max_distinct(self.max_distinct);
                    // Every worker counted its keys: the quantiles are read off.
                    if let Some(all) = merge_distinct(&parts) {
                        if !search.is_done() {
                            search.feed_distinct(&all).map_err(|e| e.to_string())?;
                        }
                    }
                    searches.push(search);
                }
                self.searches = searches;
            }
            DescribeRound::Quantiles { parts, .. } => {
                let parts = std::mem::take(parts);
                for (search, col) in self.searches.iter_mut().zip(parts) {
                    if col.is_empty() {
                        continue;
                    }
                    let merged: Vec<RangeHistogram> =
                        col.iter().map(|p| merge_histograms(p)).collect();
                    search.feed(&merged).map_err(|e| e.to_string())?;
                }
            }
            DescribeRound::Done => return Ok(()),
        }
        let ranges: Vec<Vec<KeyRange>> = self.searches.iter().map(|s| s.next_round()).collect();
        self.round = if ranges.iter().all(|r| r.is_empty()) {
            DescribeRound::Done
        } else {
            let parts = ranges.iter().map(|r| vec![Vec::new(); r.len()]).collect();
            DescribeRound::Quantiles { ranges, parts }
        };
        Ok(())
    }

    fn table(&self) -> Result<RecordBatch, String> {
        let stats = ["count", "mean", "std", "min", "25%", "50%", "75%", "max"];
        let mut columns: Vec<(String, ArrayRef)> = vec![(
            String::new(),
            Arc::new(StringArray::from(stats.to_vec())) as ArrayRef,
        )];
        for (i, name) in self.columns.iter().enumerate() {
            let m = &self.moments[i];
            let q = self.searches[i]
                .result()
                .ok_or_else(|| format!("describe: quantiles of '{name}' unresolved"))?;
            let empty = m.count == 0;
            let nan_if_empty = |v: f64| if empty { f64::NAN } else { v };
            let values = vec![
                m.count as f64,
                nan_if_empty(m.mean),
                m.std().unwrap_or(f64::NAN),
                nan_if_empty(m.min),
                q[0],
                q[1],
                q[2],
                nan_if_empty(m.max),
            ];
            columns.push((
                name.clone(),
                Arc::new(Float64Array::from(values)) as ArrayRef,
            ));
        }
        RecordBatch::try_from_iter(columns).map_err(|e| e.to_string())
    }
}

impl Reduction for Describe {
    fn kind(&self) -> &'static str {
        "describe"
    }

    fn done(&self) -> bool {
        self.next_op().is_none()
    }

    fn round_tasks(
        &mut self,
        _job: JobId,
        holders: &Holders,
        _peer: PeerOf,
    ) -> Option<Vec<(WorkerId, TaskKind)>> {
        let op = self.next_op()?;
        Some(per_holder(holders, |partitions| TaskKind::Reduce {
            partitions: partitions.clone(),
            op: op.clone(),
        }))
    }

    fn absorb(&mut self, output: TaskOutput) -> Result<(), String> {
        self.take(output)
    }

    fn end_round(&mut self) -> Result<(), String> {
        self.advance()
    }

    fn reset_round(&mut self) {
        self.forget_round()
    }

    fn finish(&mut self, _cx: &mut JobCx, _frame: FrameId) -> Flow {
        table_answer(self.table())
    }
}
