//! Jobs that reduce a persisted frame to a small answer in rounds: `describe`
//! and `memory_usage`.
//!
//! Each round sends one [`ReduceOp`] to every worker holding partitions of the
//! frame (one task per worker, over all its partitions), merges the small
//! results as they come back, and at the end of the round decides the next op
//! or the answer. `describe` runs a moments round (count, mean, M2, min, max,
//! merged with Chan's formula), then exact-quantile rounds: each column's
//! [`QuantileSearch`] asks for sparse histograms of value-key prefixes,
//! narrowing until the values at the needed ranks are known exactly
//! (typically one or two rounds; see ARCHITECTURE.md). No column data moves.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::DataType;
use std::collections::BTreeMap;
use stratus_engine::describe::{
    merge_histograms, KeyRange, Moments, QuantileSearch, RangeHistogram,
};
use stratus_protocol::messages::{
    ColumnRanges, GroupBySpec, KeyRangeWire, MailboxKey, PartitionKey, PeerRef, ReduceOp,
    StagedFileWire, TaskKind, TaskOutput, WriteSpec,
};

/// The quartiles `describe` reports.
pub const QUARTILES: [f64; 3] = [0.25, 0.5, 0.75];

/// A reduction in progress.
#[derive(Debug)]
pub enum ReduceJob {
    Describe(DescribeJob),
    Memory(MemoryJob),
    GroupBy(GroupByJob),
    Write(WriteJob),
    Sort(SortJob),
}

/// Partitions of the frame by the worker holding them.
pub type Holders = BTreeMap<u64, Vec<PartitionKey>>;

/// One task per holder, over the partitions it holds.
fn per_holder(
    holders: &Holders,
    kind: impl Fn(&Vec<PartitionKey>) -> TaskKind,
) -> Vec<(u64, TaskKind)> {
    holders
        .iter()
        .map(|(w, partitions)| (*w, kind(partitions)))
        .collect()
}

impl ReduceJob {
    /// The tasks of the next round, by worker, or None when the answer is
    /// ready. `peer` tells how to reach a worker for data.
    pub fn round_tasks(
        &mut self,
        job: u64,
        holders: &Holders,
        peer: &dyn Fn(u64) -> Option<PeerRef>,
    ) -> Option<Vec<(u64, TaskKind)>> {
        let op = match self {
            ReduceJob::Describe(d) => d.next_op(),
            ReduceJob::Memory(m) => (!m.done).then_some(ReduceOp::MemoryUsage),
            ReduceJob::GroupBy(g) => return g.round_tasks(job, holders, peer),
            ReduceJob::Write(w) => return w.round_tasks(holders),
            ReduceJob::Sort(s) => return s.round_tasks(job, holders, peer),
        }?;
        Some(per_holder(holders, |partitions| TaskKind::Reduce {
            partitions: partitions.clone(),
            op: op.clone(),
        }))
    }

    /// Whether the answer is ready (no more rounds).
    pub fn done(&self) -> bool {
        match self {
            ReduceJob::Describe(d) => d.next_op().is_none(),
            ReduceJob::Memory(m) => m.done,
            ReduceJob::GroupBy(g) => g.stage == GroupByStage::Done,
            ReduceJob::Write(w) => w.stage == WriteStage::Done,
            ReduceJob::Sort(s) => s.done(),
        }
    }

    /// Take one worker's output of the current round.
    pub fn absorb(&mut self, output: TaskOutput) -> Result<(), String> {
        match self {
            ReduceJob::Describe(d) => d.absorb(output),
            ReduceJob::Memory(m) => m.absorb(output),
            ReduceJob::GroupBy(g) => g.absorb(output),
            ReduceJob::Write(w) => w.absorb(output),
            ReduceJob::Sort(s) => s.absorb(output),
        }
    }

    /// Forget a round's partial results (a worker was lost; the round reruns).
    pub fn reset_round(&mut self) {
        match self {
            ReduceJob::Describe(d) => d.reset_round(),
            ReduceJob::Memory(m) => m.bytes.clear(),
            ReduceJob::GroupBy(g) => g.reset(),
            // Staged files are rewritten under the same names on a rerun.
            ReduceJob::Write(w) => w.staged.clear(),
            ReduceJob::Sort(s) => s.reset(),
        }
    }

    /// Every worker of the round answered.
    pub fn end_round(&mut self) -> Result<(), String> {
        match self {
            ReduceJob::Describe(d) => d.end_round(),
            ReduceJob::Memory(m) => {
                m.done = true;
                Ok(())
            }
            ReduceJob::GroupBy(g) => {
                g.stage = match g.stage {
                    GroupByStage::Partials => GroupByStage::Final,
                    _ => GroupByStage::Done,
                };
                Ok(())
            }
            ReduceJob::Sort(s) => s.end_round(),
            ReduceJob::Write(w) => {
                w.stage = match w.stage {
                    WriteStage::Prepare => WriteStage::Write,
                    WriteStage::Write => WriteStage::Commit,
                    _ => WriteStage::Done,
                };
                Ok(())
            }
        }
    }

    /// The answer as an Arrow IPC stream, once `done`.
    pub fn result(&self) -> Result<Vec<u8>, String> {
        let batch = match self {
            ReduceJob::Describe(d) => d.result()?,
            ReduceJob::Memory(m) => m.result()?,
            ReduceJob::GroupBy(g) => {
                return g
                    .table
                    .clone()
                    .ok_or_else(|| "group-by: no result".to_string())
            }
            ReduceJob::Write(w) => w.result()?,
            ReduceJob::Sort(_) => return Err("a sort answers with a frame".into()),
        };
        stratus_protocol::ipc::encode_batches(&batch.schema(), &[batch]).map_err(|e| e.to_string())
    }

    /// Whether this job leaves data in worker mailboxes to forget at its end.
    pub fn uses_mailboxes(&self) -> bool {
        matches!(self, ReduceJob::GroupBy(_) | ReduceJob::Sort(_))
    }

    /// A task that undoes what a failed job left behind (staged files).
    pub fn cleanup(&self) -> Option<TaskKind> {
        match self {
            ReduceJob::Write(w) if w.stage != WriteStage::Prepare => Some(TaskKind::AbortWrite {
                spec: w.spec.clone(),
            }),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteStage {
    Prepare,
    Write,
    Commit,
    Done,
}

/// `to_parquet(dest, partition_by)`: one worker checks the destination, every
/// holder stages the files of its partitions under `dest/_temporary/<job>`,
/// then one worker commits (renames into place, `_SUCCESS` last). A failed
/// job's staged files are removed; nothing half-written looks complete.
#[derive(Debug)]
pub struct WriteJob {
    spec: WriteSpec,
    stage: WriteStage,
    staged: Vec<StagedFileWire>,
    committed: (u64, u64),
}

impl WriteJob {
    /// A write of a frame.
    pub fn new(spec: WriteSpec) -> WriteJob {
        WriteJob {
            spec,
            stage: WriteStage::Prepare,
            staged: Vec::new(),
            committed: (0, 0),
        }
    }

    fn round_tasks(&mut self, holders: &Holders) -> Option<Vec<(u64, TaskKind)>> {
        let first = *holders.keys().next()?;
        let spec = self.spec.clone();
        match self.stage {
            WriteStage::Prepare => Some(vec![(first, TaskKind::PrepareWrite { spec })]),
            WriteStage::Write => Some(per_holder(holders, |partitions| TaskKind::WriteParts {
                partitions: partitions.clone(),
                spec: spec.clone(),
            })),
            WriteStage::Commit => Some(vec![(
                first,
                TaskKind::CommitWrite {
                    spec,
                    staged: self.staged.clone(),
                },
            )]),
            WriteStage::Done => None,
        }
    }

    fn absorb(&mut self, output: TaskOutput) -> Result<(), String> {
        match (self.stage, output) {
            (WriteStage::Prepare, TaskOutput::Ok) => Ok(()),
            (WriteStage::Write, TaskOutput::Staged(mut files)) => {
                self.staged.append(&mut files);
                Ok(())
            }
            (WriteStage::Commit, TaskOutput::Committed { rows, files }) => {
                self.committed = (rows, files);
                Ok(())
            }
            (_, other) => Err(format!("write: unexpected task output {other:?}")),
        }
    }

    fn result(&self) -> Result<RecordBatch, String> {
        RecordBatch::try_from_iter([
            (
                "dest",
                Arc::new(StringArray::from(vec![self.spec.dest.as_str()])) as ArrayRef,
            ),
            (
                "rows",
                Arc::new(UInt64Array::from(vec![self.committed.0])) as ArrayRef,
            ),
            (
                "files",
                Arc::new(UInt64Array::from(vec![self.committed.1])) as ArrayRef,
            ),
        ])
        .map_err(|e| e.to_string())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupByStage {
    Partials,
    Final,
    Done,
}

/// A group-by: each holder computes the partial aggregate of its partitions
/// and delivers it, worker to worker, to one worker (the root: the holder
/// with the most partitions), which merges and finalizes. A lost worker
/// restarts both stages under a new mailbox tag.
#[derive(Debug)]
pub struct GroupByJob {
    spec: GroupBySpec,
    stage: GroupByStage,
    attempt: u32,
    root: u64,
    expect: u32,
    table: Option<Vec<u8>>,
}

impl GroupByJob {
    /// A group-by of a frame.
    pub fn new(spec: GroupBySpec) -> GroupByJob {
        GroupByJob {
            spec,
            stage: GroupByStage::Partials,
            attempt: 0,
            root: 0,
            expect: 0,
            table: None,
        }
    }

    fn mailbox(&self, job: u64) -> MailboxKey {
        MailboxKey {
            job,
            tag: self.attempt,
        }
    }

    fn round_tasks(
        &mut self,
        job: u64,
        holders: &Holders,
        peer: &dyn Fn(u64) -> Option<PeerRef>,
    ) -> Option<Vec<(u64, TaskKind)>> {
        match self.stage {
            GroupByStage::Partials => {
                let root = holders
                    .iter()
                    .max_by_key(|(w, parts)| (parts.len(), std::cmp::Reverse(**w)))
                    .map(|(w, _)| *w)?;
                let deliver_to = peer(root)?;
                self.root = root;
                self.expect = holders.len() as u32;
                let mailbox = self.mailbox(job);
                Some(per_holder(holders, |partitions| TaskKind::GroupByPartial {
                    partitions: partitions.clone(),
                    spec: self.spec.clone(),
                    mailbox,
                    deliver_to: deliver_to.clone(),
                }))
            }
            GroupByStage::Final => Some(vec![(
                self.root,
                TaskKind::GroupByFinal {
                    spec: self.spec.clone(),
                    mailbox: self.mailbox(job),
                    expect: self.expect,
                },
            )]),
            GroupByStage::Done => None,
        }
    }

    fn absorb(&mut self, output: TaskOutput) -> Result<(), String> {
        match (self.stage, output) {
            (GroupByStage::Partials, TaskOutput::Delivered { .. }) => Ok(()),
            (GroupByStage::Final, TaskOutput::Table { ipc, .. }) => {
                self.table = Some(ipc);
                Ok(())
            }
            (_, other) => Err(format!("group-by: unexpected task output {other:?}")),
        }
    }

    fn reset(&mut self) {
        self.attempt += 1;
        self.stage = GroupByStage::Partials;
        self.table = None;
    }
}

/// `memory_usage()`: bytes per column summed over workers.
#[derive(Debug, Default)]
pub struct MemoryJob {
    bytes: Vec<(String, u64)>,
    done: bool,
}

impl MemoryJob {
    fn absorb(&mut self, output: TaskOutput) -> Result<(), String> {
        let TaskOutput::ColumnBytes(cols) = output else {
            return Err(format!("memory usage: unexpected task output {output:?}"));
        };
        if self.bytes.is_empty() {
            self.bytes = cols;
        } else {
            for (acc, (name, b)) in self.bytes.iter_mut().zip(cols) {
                if acc.0 == name {
                    acc.1 += b;
                }
            }
        }
        Ok(())
    }

    fn result(&self) -> Result<RecordBatch, String> {
        let mut names: Vec<&str> = self.bytes.iter().map(|(n, _)| n.as_str()).collect();
        let mut values: Vec<u64> = self.bytes.iter().map(|(_, b)| *b).collect();
        names.push("total");
        values.push(values.iter().sum());
        RecordBatch::try_from_iter([
            ("column", Arc::new(StringArray::from(names)) as ArrayRef),
            ("bytes", Arc::new(UInt64Array::from(values)) as ArrayRef),
        ])
        .map_err(|e| e.to_string())
    }
}

#[derive(Debug)]
enum DescribeRound {
    Moments,
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
pub struct DescribeJob {
    columns: Vec<String>,
    types: Vec<DataType>,
    moments: Vec<Moments>,
    round_moments: Vec<Moments>,
    searches: Vec<QuantileSearch>,
    round: DescribeRound,
}

impl DescribeJob {
    /// Describe these (numeric) columns.
    pub fn new(columns: Vec<String>, types: Vec<DataType>) -> DescribeJob {
        let n = columns.len();
        DescribeJob {
            columns,
            types,
            moments: vec![Moments::default(); n],
            round_moments: vec![Moments::default(); n],
            searches: Vec::new(),
            round: DescribeRound::Moments,
        }
    }

    fn next_op(&self) -> Option<ReduceOp> {
        match &self.round {
            DescribeRound::Moments => Some(ReduceOp::Moments {
                columns: self.columns.clone(),
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
                        ranges: r
                            .iter()
                            .map(|k| KeyRangeWire {
                                prefix: k.prefix,
                                prefix_bits: k.prefix_bits,
                            })
                            .collect(),
                        bits: s.round_bits(),
                        max_keys: s.max_keys() as u64,
                    })
                    .collect(),
            }),
            DescribeRound::Done => None,
        }
    }

    fn reset_round(&mut self) {
        match &mut self.round {
            DescribeRound::Moments => {
                self.round_moments = vec![Moments::default(); self.columns.len()];
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

    fn absorb(&mut self, output: TaskOutput) -> Result<(), String> {
        match (&mut self.round, output) {
            (DescribeRound::Moments, TaskOutput::Moments(m)) => {
                if m.len() != self.columns.len() {
                    return Err("describe: a worker sent moments for the wrong columns".into());
                }
                for (acc, w) in self.round_moments.iter_mut().zip(m) {
                    acc.merge(&Moments {
                        count: w.count,
                        mean: w.mean,
                        m2: w.m2,
                        min: w.min,
                        max: w.max,
                    });
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
                        parts[c][r].push(RangeHistogram {
                            buckets: hist.buckets,
                            keys: hist.keys,
                        });
                    }
                }
                Ok(())
            }
            (_, other) => Err(format!("describe: unexpected task output {other:?}")),
        }
    }

    fn end_round(&mut self) -> Result<(), String> {
        match &mut self.round {
            DescribeRound::Moments => {
                self.moments = std::mem::take(&mut self.round_moments);
                self.searches = self
                    .moments
                    .iter()
                    .zip(&self.types)
                    .map(|(m, t)| QuantileSearch::from_moments(m, &QUARTILES, t))
                    .collect::<Result<_, _>>()
                    .map_err(|e| e.to_string())?;
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

    fn result(&self) -> Result<RecordBatch, String> {
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

#[derive(Debug, Clone, PartialEq)]
enum SortStage {
    Sample,
    /// The partitions already range the key: sort each in place, in this order.
    Ranged(Vec<usize>),
    Send,
    Collect,
    Done,
}

/// `sort_by(key)` / `set_index(key)`: sample the key and each partition's
/// bounds; if the partitions already range the key (ISD's months for a day
/// key), the answer is a derived frame sorting each partition where it is,
/// in range order, moving no data; otherwise range boundaries are chosen from
/// the samples, every holder sends each range's rows to the range's owner
/// worker to worker, and owners sort and keep their ranges.
#[derive(Debug)]
pub struct SortJob {
    /// Sort key.
    pub key: String,
    /// Name of the result (None: replace the frame).
    pub into: Option<String>,
    /// Id of the frame a shuffle creates.
    pub new_frame: u64,
    partitions: usize,
    stage: SortStage,
    attempt: u32,
    bounds: Vec<Option<(ArrayRef, ArrayRef)>>,
    invalid: Vec<usize>,
    samples: Vec<ArrayRef>,
    boundaries_ipc: Vec<u8>,
    /// Range -> owner worker.
    owners: Vec<u64>,
    /// (range, rows, bytes) kept by owners.
    collected: Vec<(u32, u64, u64)>,
    /// Bytes moved between workers.
    pub moved_bytes: u64,
}

/// What a finished sort produced.
#[derive(Debug)]
pub enum SortOutcome {
    /// Sort each partition in place, in this order.
    Ranged(Vec<usize>),
    /// Ranges held by owners: (range, worker, rows, bytes).
    Shuffled(Vec<(u32, u64, u64, u64)>),
}

impl SortJob {
    /// A sort of a frame of `partitions` partitions.
    pub fn new(key: String, into: Option<String>, new_frame: u64, partitions: usize) -> SortJob {
        SortJob {
            key,
            into,
            new_frame,
            partitions,
            stage: SortStage::Sample,
            attempt: 0,
            bounds: vec![None; partitions],
            invalid: vec![0; partitions],
            samples: Vec::new(),
            boundaries_ipc: Vec::new(),
            owners: Vec::new(),
            collected: Vec::new(),
            moved_bytes: 0,
        }
    }

    fn tag_base(&self) -> u32 {
        self.attempt << 16
    }

    fn round_tasks(
        &mut self,
        job: u64,
        holders: &Holders,
        peer: &dyn Fn(u64) -> Option<PeerRef>,
    ) -> Option<Vec<(u64, TaskKind)>> {
        match &self.stage {
            SortStage::Sample => Some(per_holder(holders, |partitions| TaskKind::Reduce {
                partitions: partitions.clone(),
                op: ReduceOp::SortSample {
                    key: self.key.clone(),
                    sample: 4096,
                },
            })),
            SortStage::Send => {
                let workers: Vec<u64> = holders.keys().copied().collect();
                let ranges = self.ranges();
                self.owners = (0..ranges).map(|r| workers[r % workers.len()]).collect();
                let owners: Option<Vec<PeerRef>> = self.owners.iter().map(|w| peer(*w)).collect();
                let owners = owners?;
                Some(per_holder(holders, |partitions| TaskKind::ShuffleSend {
                    partitions: partitions.clone(),
                    key: self.key.clone(),
                    boundaries_ipc: self.boundaries_ipc.clone(),
                    owners: owners.clone(),
                    job,
                    tag_base: self.tag_base(),
                }))
            }
            SortStage::Collect => {
                let mut by_owner: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
                for (r, w) in self.owners.iter().enumerate() {
                    by_owner.entry(*w).or_default().push(r as u32);
                }
                Some(
                    by_owner
                        .into_iter()
                        .map(|(w, ranges)| {
                            let kind = TaskKind::ShuffleCollect {
                                ranges,
                                key: self.key.clone(),
                                job,
                                tag_base: self.tag_base(),
                                frame: self.new_frame,
                            };
                            (w, kind)
                        })
                        .collect(),
                )
            }
            SortStage::Ranged(_) | SortStage::Done => None,
        }
    }

    fn ranges(&self) -> usize {
        // One range per boundary gap; boundaries were chosen for `partitions`.
        decode_column(&self.boundaries_ipc).map_or(1, |b| b.len() + 1)
    }

    fn absorb(&mut self, output: TaskOutput) -> Result<(), String> {
        match (&self.stage, output) {
            (
                SortStage::Sample,
                TaskOutput::SortSample {
                    partitions,
                    sample_ipc,
                },
            ) => {
                for p in partitions {
                    let i = p.index as usize;
                    if i >= self.partitions {
                        return Err(format!("sort: bounds for unknown partition {i}"));
                    }
                    self.invalid[i] = p.invalid as usize;
                    self.bounds[i] = match p.bounds_ipc {
                        Some(ipc) => {
                            let (_, batches) = stratus_protocol::ipc::decode_batches(
                                arrow_buffer::Buffer::from(ipc.as_slice()),
                            )
                            .map_err(|e| e.to_string())?;
                            let b = batches.first().ok_or("sort: empty bounds")?;
                            Some((b.column(0).clone(), b.column(1).clone()))
                        }
                        None => None,
                    };
                }
                if let Some(sample) = decode_column(&sample_ipc) {
                    self.samples.push(sample);
                }
                Ok(())
            }
            (SortStage::Send, TaskOutput::Delivered { bytes, .. }) => {
                self.moved_bytes += bytes;
                Ok(())
            }
            (SortStage::Collect, TaskOutput::LoadedMany(parts)) => {
                self.collected.extend(parts);
                Ok(())
            }
            (_, other) => Err(format!("sort: unexpected task output {other:?}")),
        }
    }

    fn end_round(&mut self) -> Result<(), String> {
        self.stage = match &self.stage {
            SortStage::Sample => {
                let order =
                    stratus_engine::sort::ranged_order_nulls_last(&self.bounds, &self.invalid)
                        .map_err(|e| e.to_string())?;
                match order {
                    Some(order) => SortStage::Ranged(order),
                    None => {
                        let boundaries = stratus_engine::sort::choose_boundaries(
                            &self.samples,
                            self.partitions.max(1),
                        )
                        .map_err(|e| e.to_string())?;
                        let batch = RecordBatch::try_from_iter([("boundary", boundaries)])
                            .map_err(|e| e.to_string())?;
                        self.boundaries_ipc =
                            stratus_protocol::ipc::encode_batches(&batch.schema(), &[batch])
                                .map_err(|e| e.to_string())?;
                        SortStage::Send
                    }
                }
            }
            SortStage::Send => SortStage::Collect,
            _ => SortStage::Done,
        };
        Ok(())
    }

    fn reset(&mut self) {
        self.attempt += 1;
        self.collected.clear();
        self.moved_bytes = 0;
        if matches!(self.stage, SortStage::Collect) {
            self.stage = SortStage::Send;
        }
        if matches!(self.stage, SortStage::Sample) {
            self.samples.clear();
        }
    }

    fn done(&self) -> bool {
        matches!(self.stage, SortStage::Ranged(_) | SortStage::Done)
    }

    /// What the sort produced, once done.
    pub fn outcome(&self) -> Option<SortOutcome> {
        match &self.stage {
            SortStage::Ranged(order) => Some(SortOutcome::Ranged(order.clone())),
            SortStage::Done => Some(SortOutcome::Shuffled(
                self.collected
                    .iter()
                    .map(|(r, rows, bytes)| (*r, self.owners[*r as usize], *rows, *bytes))
                    .collect(),
            )),
            _ => None,
        }
    }
}

fn decode_column(ipc: &[u8]) -> Option<ArrayRef> {
    if ipc.is_empty() {
        return None;
    }
    let (_, batches) =
        stratus_protocol::ipc::decode_batches(arrow_buffer::Buffer::from(ipc)).ok()?;
    batches.first().map(|b| b.column(0).clone())
}
