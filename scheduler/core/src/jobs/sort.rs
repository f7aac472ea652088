//! `sort_by(key)` / `set_index(key)` as rounds: sample the key and each
//! partition's bounds; if the partitions already range the key (ISD's
//! months for a day key), the job carries on as a derived persist that sorts
//! each partition where it is, in range order, moving no data. Otherwise
//! range boundaries are chosen from the samples, every holder sends each
//! range's rows to the range's owner worker to worker, owners sort and keep
//! their ranges, and the sorted frame is registered with its lineage.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch};
use stratus_protocol::messages::{
    PartitionKey, PeerRef, RangeSource, ReduceOp, Step, TaskKind, TaskOutput, ToClient, ToWorker,
};

use super::persist::PersistJob;
use super::rounds::{decode_column, per_holder, Holders, PeerOf, Reduction, Rounds};
use super::{Flow, Job, JobCx, Planning};
use crate::event::Command;
use crate::frames::{Frame, Origin, PersistedPartition, SortLineage};
use crate::ids::{FrameId, JobId, WorkerId};
use crate::requests::{check_frame_name, check_sort_key};

/// The job for sorting a persisted frame by `by`, into `into` (or in place).
pub fn plan(
    at: &mut Planning,
    source: String,
    by: String,
    into: Option<String>,
) -> Result<Box<dyn Job>, String> {
    let frame = at.persisted(&source)?;
    let parent = at.frames.get(frame).expect("frame by name");
    check_sort_key(&parent.schema, &source, &by)?;
    let target = into.as_deref().unwrap_or(&source);
    if let Some(name) = &into {
        check_frame_name(name)?;
        if at.frames.by_name(name).is_some() {
            return Err(format!(
                "a frame named '{name}' is already persisted (unpersist it first)"
            ));
        }
    }
    at.check_not_reserved(target)?;
    let partitions = parent.partitions.len();
    let new_frame = at.ids.frame();
    Ok(Rounds::job(
        frame,
        Sort::new(by, into, new_frame, partitions),
    ))
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
pub struct Sort {
    /// Sort key.
    pub key: String,
    /// Name of the result (None: replace the frame).
    pub into: Option<String>,
    /// Id of the frame a shuffle creates.
    pub new_frame: FrameId,
    partitions: usize,
    stage: SortStage,
    attempt: u32,
    bounds: Vec<Option<(ArrayRef, ArrayRef)>>,
    invalid: Vec<usize>,
    samples: Vec<ArrayRef>,
    boundaries_ipc: Vec<u8>,
    /// Range -> owner worker.
    owners: Vec<WorkerId>,
    /// (range, rows, bytes) kept by owners.
    collected: Vec<(u32, u64, u64)>,
    /// The ranges in `collected` (a repeated one is refused without a scan).
    collected_ranges: std::collections::HashSet<u32>,
    /// Bytes moved between workers.
    pub moved_bytes: u64,
}

/// What a finished sort produced.
#[derive(Debug)]
pub enum SortOutcome {
    /// Sort each partition in place, in this order.
    Ranged(Vec<usize>),
    /// Ranges held by owners: (range, worker, rows, bytes).
    Shuffled(Vec<(u32, WorkerId, u64, u64)>),
}

impl Sort {
    /// A sort of a frame of `partitions` partitions.
    pub fn new(key: String, into: Option<String>, new_frame: FrameId, partitions: usize) -> Sort {
        Sort {
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
            collected_ranges: Default::default(),
            moved_bytes: 0,
        }
    }

    fn tag_base(&self) -> u32 {
        self.attempt << 16
    }

    fn plan_round(
        &mut self,
        job: JobId,
        holders: &Holders,
        peer: PeerOf,
    ) -> Option<Vec<(WorkerId, TaskKind)>> {
        match &self.stage {
            SortStage::Sample => Some(per_holder(holders, |partitions| TaskKind::Reduce {
                partitions: partitions.clone(),
                op: ReduceOp::SortSample {
                    key: self.key.clone(),
                    sample: 4096,
                },
            })),
            SortStage::Send => {
                let workers: Vec<WorkerId> = holders.keys().copied().collect();
                let ranges = self.ranges();
                self.owners = (0..ranges).map(|r| workers[r % workers.len()]).collect();
                // Each owner once: range `r` is `peers[r % peers.len()]`'s.
                let peers: Option<Vec<PeerRef>> = workers.iter().map(|w| peer(*w)).collect();
                let peers = peers?;
                Some(per_holder(holders, |partitions| TaskKind::ShuffleSend {
                    partitions: partitions.clone(),
                    key: self.key.clone(),
                    boundaries_ipc: self.boundaries_ipc.clone(),
                    peers: peers.clone(),
                    job: job.0,
                    tag_base: self.tag_base(),
                }))
            }
            SortStage::Collect => {
                let mut by_owner: BTreeMap<WorkerId, Vec<u32>> = BTreeMap::new();
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
                                job: job.0,
                                tag_base: self.tag_base(),
                                frame: self.new_frame.0,
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

    fn take(&mut self, output: TaskOutput) -> Result<(), String> {
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
                            if b.num_columns() != 2 {
                                return Err(format!(
                                    "sort: bounds of partition {i} have {} columns, not min and max",
                                    b.num_columns()
                                ));
                            }
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
                // Ranges come from a worker: each must be one this sort asked
                // for, of its new frame, and kept once.
                for (key, rows, bytes) in parts {
                    let known = key.frame == self.new_frame.0
                        && (key.index as usize) < self.owners.len()
                        && self.collected_ranges.insert(key.index);
                    if !known {
                        return Err(format!(
                            "sort: a worker reported range {}/{} that this sort did not ask for",
                            key.frame, key.index
                        ));
                    }
                    self.collected.push((key.index, rows, bytes));
                }
                Ok(())
            }
            (_, other) => Err(format!("sort: unexpected task output {other:?}")),
        }
    }

    fn advance(&mut self) -> Result<(), String> {
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
        self.collected_ranges.clear();
        self.moved_bytes = 0;
        if matches!(self.stage, SortStage::Collect) {
            self.stage = SortStage::Send;
        }
        if matches!(self.stage, SortStage::Sample) {
            self.samples.clear();
        }
    }

    fn finished(&self) -> bool {
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

impl Sort {
    /// Tell the owners to free the ranges they kept (the sort will not
    /// become a frame).
    fn drop_collected(&self, cx: &mut JobCx) {
        let mut drops: BTreeMap<WorkerId, Vec<PartitionKey>> = BTreeMap::new();
        for (range, _, _) in &self.collected {
            if let Some(owner) = self.owners.get(*range as usize) {
                drops.entry(*owner).or_default().push(PartitionKey {
                    frame: self.new_frame.0,
                    index: *range,
                });
            }
        }
        for (worker, keys) in drops {
            cx.out.push(Command::ToWorker {
                worker,
                message: ToWorker::Drop(keys),
            });
        }
    }

    /// Register the shuffled ranges as the sorted frame.
    fn register(
        &mut self,
        cx: &mut JobCx,
        frame: FrameId,
        name: String,
        replace: bool,
        mut ranges: Vec<(u32, WorkerId, u64, u64)>,
    ) -> Flow {
        ranges.sort_unstable();
        let parent = cx.frames.get(frame).expect("checked by the caller");
        // The lineage of every range: the Parquet inputs the parent's rows
        // come from, each with every step since. A parent that is itself a
        // shuffled frame (or derived from one) takes its own lineage's
        // inputs with its steps appended: its rows are those inputs' rows
        // through the same row-wise steps (their order does not matter, as
        // this sort orders them again), so a frame sorted any number of
        // times is rebuilt back to Parquet.
        let mut sources: Option<Vec<RangeSource>> = Some(Vec::new());
        let mut seen: Vec<(*const SortLineage, &[Step])> = Vec::new();
        for p in &parent.partitions {
            match (&p.origin, sources.as_mut()) {
                (Some(Origin::Parquet(partition)), Some(sources)) => sources.push(RangeSource {
                    partition: partition.clone(),
                    columns: parent.columns.clone(),
                    steps: parent.steps.clone(),
                }),
                (Some(Origin::Range { lineage, steps, .. }), Some(sources)) => {
                    let id = (Arc::as_ptr(lineage), steps.as_slice());
                    if seen.contains(&id) {
                        continue; // every range of a shuffle shares its inputs
                    }
                    seen.push(id);
                    sources.extend(lineage.sources.iter().map(|source| RangeSource {
                        partition: source.partition.clone(),
                        columns: source.columns.clone(),
                        steps: source.steps.iter().chain(steps).cloned().collect(),
                    }));
                }
                _ => sources = None,
            }
        }
        let lineage = sources.map(|sources| {
            Arc::new(SortLineage {
                sources,
                key: self.key.clone(),
                boundaries_ipc: self.boundaries_ipc.clone(),
            })
        });
        let partitions = ranges
            .iter()
            .map(|(range, worker, rows, bytes)| PersistedPartition {
                origin: lineage.as_ref().map(|lineage| Origin::Range {
                    lineage: lineage.clone(),
                    range: *range,
                    steps: Vec::new(),
                }),
                rows: *rows,
                bytes: *bytes,
                holder: Some(*worker),
                loading: None,
                lost: None,
                awaiting_holder: false,
                consumed: false,
            })
            .collect();
        let sorted = Frame {
            id: self.new_frame,
            name,
            source: parent.name.clone(),
            columns: parent.columns.clone(),
            steps: parent.steps.clone(),
            storage: parent.storage.clone(),
            schema: parent.schema.clone(),
            partitions,
            complete: true,
        };
        if replace {
            cx.drop_frame(frame);
        }
        let summary = sorted.summary();
        cx.frames.insert_held(cx.cluster, sorted);
        Flow::Done(ToClient::Persisted(summary))
    }
}

impl Reduction for Sort {
    fn kind(&self) -> &'static str {
        "sort"
    }

    fn done(&self) -> bool {
        self.finished()
    }

    fn round_tasks(
        &mut self,
        job: JobId,
        holders: &Holders,
        peer: PeerOf,
    ) -> Option<Vec<(WorkerId, TaskKind)>> {
        self.plan_round(job, holders, peer)
    }

    fn absorb(&mut self, output: TaskOutput) -> Result<(), String> {
        self.take(output)
    }

    fn end_round(&mut self) -> Result<(), String> {
        self.advance()
    }

    fn reset_round(&mut self) {
        self.reset();
    }

    fn finish(&mut self, cx: &mut JobCx, frame: FrameId) -> Flow {
        let Some(parent) = cx.frames.get(frame) else {
            self.drop_collected(cx);
            return Flow::Fail(
                "the frame was unpersisted or replaced while it was being sorted".into(),
            );
        };
        let name = self.into.clone().unwrap_or_else(|| parent.name.clone());
        let replace = self.into.is_none();
        match self.outcome() {
            // Already ranged: sort each partition where it is, in range order.
            Some(SortOutcome::Ranged(order)) => Flow::Then(PersistJob::derived(
                frame,
                name,
                replace,
                vec![Step::SortWithin(self.key.clone())],
                Some(order),
            )),
            Some(SortOutcome::Shuffled(ranges)) => {
                // The name is reserved while the sort runs; check it again
                // so that two complete frames never share a name.
                if !replace && cx.frames.by_name(&name).is_some() {
                    self.drop_collected(cx);
                    return Flow::Fail(format!(
                        "a frame named '{name}' was persisted while this sort ran"
                    ));
                }
                self.register(cx, frame, name, replace, ranges)
            }
            None => Flow::Fail("sort ended without a result".into()),
        }
    }

    fn uses_mailboxes(&self) -> bool {
        true
    }

    fn undo(&mut self, cx: &mut JobCx) {
        self.drop_collected(cx);
    }

    fn reserves(&self) -> Option<&str> {
        self.into.as_deref()
    }
}
