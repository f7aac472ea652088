//! Jobs over a persisted frame that run in rounds of worker-level tasks (one
//! task per worker holding partitions, over all of them): `describe`,
//! `memory_usage`, group-by (partials, a merge tree, the final), `write`
//! (prepare, write files, commit) and `sort` (sample, then sort in place or
//! shuffle).
//!
//! Each round sends its tasks, takes the results as they come back, and at
//! the end of the round decides the next round or the answer. `describe` runs
//! a summary round (count, mean, M2, min, max merged with Chan's formula, and
//! each column's distinct value keys with counts while a worker has few of
//! them); a column whose every worker sent its keys has its quantiles read
//! off them. Only the others take exact-quantile rounds: each column's
//! [`QuantileSearch`] asks for sparse histograms of value-key prefixes,
//! narrowing until the values at the needed ranks are known exactly (see
//! ARCHITECTURE.md). No column data moves.

use std::sync::Arc;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use arrow_schema::DataType;
use std::collections::BTreeMap;
use stratus_engine::describe::{merge_distinct, merge_histograms, QuantileSearch};
use stratus_plan::{DistinctKeys, KeyRange, Moments, RangeHistogram};
use stratus_protocol::messages::{
    ColumnRanges, GroupBySpec, MailboxKey, PartitionKey, PeerRef, ReduceOp, StagedFileWire,
    TaskKind, TaskOutput, WriteSpec,
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
                g.end_round();
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

/// Most partials one worker merges in a group-by (Dask's `split_every` of
/// its tree reductions). With at most this many holders, every holder
/// delivers to the root; with more, intermediate mergers each merge at most
/// this many, level by level, until at most this many partials remain for
/// the root. 8 keeps every merger's input small while a few levels cover
/// many workers (up to 8 holders: a star; 64: one intermediate level; 512: two).
pub const GROUPBY_FAN_IN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupByStage {
    /// Every holder computes its partial and delivers it.
    Partials,
    /// The intermediate mergers of level `i` (0: the one nearest the holders).
    Merge(usize),
    /// The root merges and finalizes.
    Final,
    Done,
}

/// A mailbox of a group-by's merge tree: where it is and its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TreeMailbox {
    worker: u64,
    tag: u32,
}

/// One merge of the tree: the mailbox its inputs go to (on the merging
/// worker), how many inputs it waits for, and where its result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TreeNode {
    at: TreeMailbox,
    expect: u32,
    /// The next level's mailbox, or the root's.
    to: TreeMailbox,
}

/// The merge tree over one round of partials.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MergeTree {
    /// Where each holder (in worker order) delivers its partial.
    leaves: Vec<TreeMailbox>,
    /// Intermediate levels, from the holders up; empty with at most fan-in holders.
    levels: Vec<Vec<TreeNode>>,
    /// The root's mailbox.
    root: TreeMailbox,
    /// How many partials the root merges (at most fan-in).
    root_expect: u32,
}

impl MergeTree {
    /// The tree over `sources` (worker, partitions held), in worker order.
    /// While more than `fan_in` partials are in play they are split, in
    /// order, into ceil(n / fan_in) groups of near-equal size; each group
    /// merges on its member holding the most partitions (lowest id on ties),
    /// so one input of every merge is local. Every mailbox takes a fresh tag
    /// from `next_tag`.
    fn plan(sources: &[(u64, usize)], fan_in: usize, next_tag: &mut u32) -> Option<MergeTree> {
        if sources.is_empty() {
            return None;
        }
        let mut tag = || {
            let t = *next_tag;
            *next_tag += 1;
            t
        };
        // Where a group merges: its heaviest member.
        let heaviest = |group: &[(u64, usize)]| {
            group
                .iter()
                .max_by_key(|(w, weight)| (*weight, std::cmp::Reverse(*w)))
                .copied()
                .expect("groups are not empty")
        };
        // Inputs in play at each level: the holders, then the previous
        // level's merges, in order.
        let mut in_play: Vec<(u64, usize)> = sources.to_vec();
        let mut leaves: Vec<TreeMailbox> = Vec::with_capacity(sources.len());
        let mut levels: Vec<Vec<TreeNode>> = Vec::new();
        while in_play.len() > fan_in {
            let n = in_play.len();
            let groups = n.div_ceil(fan_in);
            let mut nodes = Vec::with_capacity(groups);
            let mut next = Vec::with_capacity(groups);
            for g in 0..groups {
                let inputs = g * n / groups..(g + 1) * n / groups;
                let members = &in_play[inputs.clone()];
                let (worker, _) = heaviest(members);
                let at = TreeMailbox { worker, tag: tag() };
                // Point this group's inputs at its mailbox.
                match levels.last_mut() {
                    None => leaves.extend(std::iter::repeat_n(at, members.len())),
                    Some(below) => below[inputs].iter_mut().for_each(|node| node.to = at),
                }
                nodes.push(TreeNode {
                    at,
                    expect: members.len() as u32,
                    to: at, // set by the next level (or the root)
                });
                next.push((worker, members.iter().map(|(_, weight)| weight).sum()));
            }
            levels.push(nodes);
            in_play = next;
        }
        let root = TreeMailbox {
            worker: heaviest(&in_play).0,
            tag: tag(),
        };
        match levels.last_mut() {
            None => leaves = vec![root; sources.len()],
            Some(top) => top.iter_mut().for_each(|node| node.to = root),
        }
        Some(MergeTree {
            leaves,
            levels,
            root,
            root_expect: in_play.len() as u32,
        })
    }
}

/// A group-by, merged in a tree on the workers (as Dask's tree reductions):
/// each holder computes the partial aggregate of its partitions and delivers
/// it, worker to worker, to a mailbox. With at most [`GROUPBY_FAN_IN`]
/// holders, that is the root's mailbox (the root: the holder with the most
/// partitions), and the root merges all the partials and finalizes: two
/// rounds. With more, holders are split into ceil(N / F) groups; each
/// group's partials go to a mailbox on one of its members (an intermediate
/// merger), which merges them without finalizing and delivers one merged
/// partial to the next level: one round per level, until at most F partials
/// reach the root. No worker ever receives more than F deliveries, and N
/// holders take 2 + L rounds with L = ceil(log_F N) - 1 intermediate levels
/// (N <= F: 2 rounds, the star of a single root; N <= F^2: 3).
///
/// Every mailbox of the job, in any attempt, level or group, has its own tag.
/// A lost worker restarts the whole tree from the partials under new tags
/// (the round restarts, or the next round finds a merger or the root gone);
/// stale deliveries of an earlier attempt never mix with new ones, and the
/// job's end forgets every mailbox.
#[derive(Debug)]
pub struct GroupByJob {
    spec: GroupBySpec,
    fan_in: usize,
    stage: GroupByStage,
    /// The next mailbox tag to hand out.
    next_tag: u32,
    tree: Option<MergeTree>,
    table: Option<Vec<u8>>,
}

impl GroupByJob {
    /// A group-by of a frame, merged with fan-in [`GROUPBY_FAN_IN`].
    pub fn new(spec: GroupBySpec) -> GroupByJob {
        GroupByJob::with_fan_in(spec, GROUPBY_FAN_IN)
    }

    /// A group-by with another fan-in (at least 2); tests use small ones to
    /// build deep trees over few workers.
    fn with_fan_in(spec: GroupBySpec, fan_in: usize) -> GroupByJob {
        assert!(fan_in >= 2, "a merge tree needs a fan-in of at least 2");
        GroupByJob {
            spec,
            fan_in,
            stage: GroupByStage::Partials,
            next_tag: 0,
            tree: None,
            table: None,
        }
    }

    fn round_tasks(
        &mut self,
        job: u64,
        holders: &Holders,
        peer: &dyn Fn(u64) -> Option<PeerRef>,
    ) -> Option<Vec<(u64, TaskKind)>> {
        let mailbox = |m: TreeMailbox| MailboxKey { job, tag: m.tag };
        match self.stage {
            GroupByStage::Partials => {
                let sources: Vec<(u64, usize)> =
                    holders.iter().map(|(w, p)| (*w, p.len())).collect();
                let tree = MergeTree::plan(&sources, self.fan_in, &mut self.next_tag)?;
                let mut tasks = Vec::with_capacity(holders.len());
                for ((worker, partitions), to) in holders.iter().zip(&tree.leaves) {
                    tasks.push((
                        *worker,
                        TaskKind::GroupByPartial {
                            partitions: partitions.clone(),
                            spec: self.spec.clone(),
                            mailbox: mailbox(*to),
                            deliver_to: peer(to.worker)?,
                        },
                    ));
                }
                self.tree = Some(tree);
                Some(tasks)
            }
            GroupByStage::Merge(level) => {
                let nodes = self.tree.as_ref()?.levels.get(level)?;
                let mut tasks = Vec::with_capacity(nodes.len());
                for node in nodes {
                    // A merger lost since the last round took its mailbox with
                    // it (or the next one's): start the tree again.
                    let (Some(_), Some(deliver_to)) = (peer(node.at.worker), peer(node.to.worker))
                    else {
                        return self.restart(job, holders, peer);
                    };
                    tasks.push((
                        node.at.worker,
                        TaskKind::GroupByMerge {
                            spec: self.spec.clone(),
                            mailbox: mailbox(node.at),
                            expect: node.expect,
                            deliver_to,
                            out: mailbox(node.to),
                        },
                    ));
                }
                Some(tasks)
            }
            GroupByStage::Final => {
                let tree = self.tree.as_ref()?;
                let (root, expect) = (tree.root, tree.root_expect);
                if peer(root.worker).is_none() {
                    // The root was lost since the last round, with its mailbox.
                    return self.restart(job, holders, peer);
                }
                Some(vec![(
                    root.worker,
                    TaskKind::GroupByFinal {
                        spec: self.spec.clone(),
                        mailbox: mailbox(root),
                        expect,
                    },
                )])
            }
            GroupByStage::Done => None,
        }
    }

    /// Run the tree again from the partials, under new tags.
    fn restart(
        &mut self,
        job: u64,
        holders: &Holders,
        peer: &dyn Fn(u64) -> Option<PeerRef>,
    ) -> Option<Vec<(u64, TaskKind)>> {
        self.reset();
        self.round_tasks(job, holders, peer)
    }

    fn absorb(&mut self, output: TaskOutput) -> Result<(), String> {
        match (self.stage, output) {
            (GroupByStage::Partials | GroupByStage::Merge(_), TaskOutput::Delivered { .. }) => {
                Ok(())
            }
            (GroupByStage::Final, TaskOutput::Table { ipc, .. }) => {
                self.table = Some(ipc);
                Ok(())
            }
            (_, other) => Err(format!("group-by: unexpected task output {other:?}")),
        }
    }

    fn end_round(&mut self) {
        let levels = self.tree.as_ref().map_or(0, |t| t.levels.len());
        let next_level = |level: usize| {
            if level < levels {
                GroupByStage::Merge(level)
            } else {
                GroupByStage::Final
            }
        };
        self.stage = match self.stage {
            GroupByStage::Partials => next_level(0),
            GroupByStage::Merge(level) => next_level(level + 1),
            GroupByStage::Final | GroupByStage::Done => GroupByStage::Done,
        };
    }

    fn reset(&mut self) {
        self.stage = GroupByStage::Partials;
        self.tree = None;
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
pub struct DescribeJob {
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

impl DescribeJob {
    /// Describe these (numeric) columns on a cluster of `workers` workers
    /// (which bounds the distinct keys each of them sends).
    pub fn new(columns: Vec<String>, types: Vec<DataType>, workers: usize) -> DescribeJob {
        let n = columns.len();
        DescribeJob {
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
                        ranges: r
                            .iter()
                            .map(|k| KeyRange {
                                prefix: k.prefix,
                                prefix_bits: k.prefix_bits,
                            })
                            .collect(),
                        bits: s.round_bits(),
                        max_distinct: s.max_distinct() as u64,
                    })
                    .collect(),
            }),
            DescribeRound::Done => None,
        }
    }

    fn reset_round(&mut self) {
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

    fn absorb(&mut self, output: TaskOutput) -> Result<(), String> {
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
                    acc.merge(&Moments {
                        count: w.moments.count,
                        mean: w.moments.mean,
                        m2: w.moments.m2,
                        min: w.moments.min,
                        max: w.moments.max,
                    });
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
                        parts[c][r].push(RangeHistogram {
                            buckets: hist.buckets,
                            distinct: hist.distinct,
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
                self.collected.extend(
                    parts
                        .into_iter()
                        .map(|(key, rows, bytes)| (key.index, rows, bytes)),
                );
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

    /// The range boundaries of a shuffle (Arrow IPC of one column; empty
    /// before they are chosen or when no data moves).
    pub fn boundaries_ipc(&self) -> &[u8] {
        &self.boundaries_ipc
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};

    fn spec() -> GroupBySpec {
        GroupBySpec {
            keys: vec!["city".into()],
            aggs: vec![(
                "temperature".into(),
                stratus_protocol::messages::AggFunc::Mean,
            )],
        }
    }

    /// `n` holders with ids 1..=n; holder `i` holds `i % 3 + 1` partitions.
    fn holders(n: u64) -> Holders {
        (1..=n)
            .map(|w| {
                let parts = (0..w % 3 + 1)
                    .map(|i| PartitionKey {
                        frame: 1,
                        index: (w * 10 + i) as u32,
                    })
                    .collect();
                (w, parts)
            })
            .collect()
    }

    fn peer_of(alive: &BTreeSet<u64>) -> impl Fn(u64) -> Option<PeerRef> + '_ {
        move |w| {
            alive.contains(&w).then(|| PeerRef {
                worker: w,
                address: format!("10.0.0.{w}:1"),
                cert: String::new(),
            })
        }
    }

    /// Play a group-by's rounds the way workers would, checking that every
    /// merge finds exactly the deliveries it expects in its mailbox and that
    /// no mailbox receives more than `fan_in`. Returns the rounds' tasks.
    fn play(job: &mut GroupByJob, holders: &Holders, fan_in: usize) -> Vec<Vec<(u64, TaskKind)>> {
        let alive: BTreeSet<u64> = holders.keys().copied().collect();
        let peer = peer_of(&alive);
        let mut mailboxes: HashMap<(u64, MailboxKey), usize> = HashMap::new();
        let mut rounds = Vec::new();
        fn deliver(
            mailboxes: &mut HashMap<(u64, MailboxKey), usize>,
            to: &PeerRef,
            mailbox: MailboxKey,
            fan_in: usize,
        ) {
            let n = mailboxes.entry((to.worker, mailbox)).or_default();
            *n += 1;
            assert!(*n <= fan_in, "mailbox {mailbox:?} got more than {fan_in}");
        }
        while let Some(tasks) = job.round_tasks(7, holders, &peer) {
            assert!(rounds.len() < 20, "too many rounds");
            for (worker, kind) in &tasks {
                match kind {
                    TaskKind::GroupByPartial {
                        mailbox,
                        deliver_to,
                        ..
                    } => {
                        deliver(&mut mailboxes, deliver_to, *mailbox, fan_in);
                        job.absorb(TaskOutput::Delivered { rows: 1, bytes: 1 })
                            .unwrap();
                    }
                    TaskKind::GroupByMerge {
                        mailbox,
                        expect,
                        deliver_to,
                        out,
                        ..
                    } => {
                        let got = mailboxes.remove(&(*worker, *mailbox));
                        assert_eq!(got, Some(*expect as usize), "merge on {worker}");
                        deliver(&mut mailboxes, deliver_to, *out, fan_in);
                        job.absorb(TaskOutput::Delivered { rows: 1, bytes: 1 })
                            .unwrap();
                    }
                    TaskKind::GroupByFinal {
                        mailbox, expect, ..
                    } => {
                        let got = mailboxes.remove(&(*worker, *mailbox));
                        assert_eq!(got, Some(*expect as usize), "final on {worker}");
                        job.absorb(TaskOutput::Table {
                            rows: 1,
                            ipc: vec![1],
                        })
                        .unwrap();
                    }
                    other => panic!("unexpected task {other:?}"),
                }
            }
            job.end_round();
            rounds.push(tasks);
        }
        assert_eq!(job.stage, GroupByStage::Done);
        assert!(mailboxes.is_empty(), "undelivered: {mailboxes:?}");
        rounds
    }

    #[test]
    fn up_to_fan_in_holders_deliver_to_the_heaviest_holder_in_two_rounds() {
        for n in 1..=GROUPBY_FAN_IN as u64 {
            let holders = holders(n);
            let mut job = GroupByJob::new(spec());
            let rounds = play(&mut job, &holders, GROUPBY_FAN_IN);
            assert_eq!(rounds.len(), 2, "{n} holders");
            // The root: most partitions, lowest id on ties (as before the tree).
            let root = holders
                .iter()
                .max_by_key(|(w, p)| (p.len(), std::cmp::Reverse(**w)))
                .map(|(w, _)| *w)
                .unwrap();
            for (_, kind) in &rounds[0] {
                let TaskKind::GroupByPartial {
                    mailbox,
                    deliver_to,
                    ..
                } = kind
                else {
                    panic!("{kind:?}")
                };
                assert_eq!(deliver_to.worker, root);
                assert_eq!(*mailbox, MailboxKey { job: 7, tag: 0 });
            }
            assert_eq!(rounds[1].len(), 1);
            assert!(matches!(
                &rounds[1][0],
                (w, TaskKind::GroupByFinal { expect, mailbox, .. })
                    if *w == root && *expect == n as u32 && mailbox.tag == 0
            ));
        }
    }

    #[test]
    fn trees_bound_every_merge_by_the_fan_in_level_by_level() {
        for fan_in in [2usize, 3, 8] {
            for n in 1..=200u64 {
                let holders = holders(n);
                let mut job = GroupByJob::with_fan_in(spec(), fan_in);
                let rounds = play(&mut job, &holders, fan_in);
                // ceil(log_F n) - 1 intermediate levels, never fewer than none.
                let mut levels = 0;
                let mut reach = fan_in as u64;
                while reach < n {
                    reach *= fan_in as u64;
                    levels += 1;
                }
                assert_eq!(rounds.len(), 2 + levels, "n = {n}, F = {fan_in}");
                // Every mailbox has its own tag; every merge has a local input.
                let tree = job.tree.as_ref().unwrap();
                let mut tags: Vec<u32> = tree
                    .levels
                    .iter()
                    .flatten()
                    .map(|node| node.at.tag)
                    .chain([tree.root.tag])
                    .collect();
                let count = tags.len();
                tags.sort_unstable();
                tags.dedup();
                assert_eq!(tags.len(), count);
                for (i, level) in tree.levels.iter().enumerate() {
                    for node in level {
                        let local = if i == 0 {
                            tree.leaves
                                .iter()
                                .zip(holders.keys())
                                .any(|(to, w)| *to == node.at && *w == node.at.worker)
                        } else {
                            tree.levels[i - 1].iter().any(|below| {
                                below.to == node.at && below.at.worker == node.at.worker
                            })
                        };
                        assert!(local, "n = {n}, F = {fan_in}: {node:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn twenty_holders_merge_in_three_groups_then_at_the_root() {
        let holders = holders(20);
        let mut job = GroupByJob::new(spec());
        let rounds = play(&mut job, &holders, GROUPBY_FAN_IN);
        assert_eq!(rounds.len(), 3);
        let merges: Vec<u32> = rounds[1]
            .iter()
            .map(|(_, k)| match k {
                TaskKind::GroupByMerge { expect, .. } => *expect,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(merges, vec![6, 7, 7]);
        assert!(matches!(
            rounds[2][..],
            [(_, TaskKind::GroupByFinal { expect: 3, .. })]
        ));
    }

    #[test]
    fn a_merger_lost_between_rounds_restarts_the_tree_under_new_tags() {
        let holders = holders(5);
        let mut job = GroupByJob::with_fan_in(spec(), 2);
        let all: BTreeSet<u64> = holders.keys().copied().collect();
        let tasks = job.round_tasks(7, &holders, &peer_of(&all)).unwrap();
        let first_tags: BTreeSet<u32> = tasks
            .iter()
            .map(|(_, k)| match k {
                TaskKind::GroupByPartial { mailbox, .. } => mailbox.tag,
                other => panic!("{other:?}"),
            })
            .collect();
        for _ in &tasks {
            job.absorb(TaskOutput::Delivered { rows: 1, bytes: 1 })
                .unwrap();
        }
        job.end_round();
        assert_eq!(job.stage, GroupByStage::Merge(0));
        // A merger of the first level is gone (its partitions now held by 1).
        let merger = job.tree.as_ref().unwrap().levels[0][1].at.worker;
        let alive: BTreeSet<u64> = all.iter().copied().filter(|w| *w != merger).collect();
        let mut moved = holders.clone();
        let parts = moved.remove(&merger).unwrap();
        moved.get_mut(&1).unwrap().extend(parts);
        let tasks = job.round_tasks(7, &moved, &peer_of(&alive)).unwrap();
        assert_eq!(job.stage, GroupByStage::Partials);
        assert_eq!(tasks.len(), 4);
        for (_, kind) in &tasks {
            let TaskKind::GroupByPartial {
                mailbox,
                deliver_to,
                ..
            } = kind
            else {
                panic!("{kind:?}")
            };
            assert!(
                !first_tags.contains(&mailbox.tag),
                "tag {} reused",
                mailbox.tag
            );
            assert_ne!(deliver_to.worker, merger);
        }
    }
}
