//! Persisted frames: their partitions, which worker holds each, and the
//! lineage each is rebuilt from (a Parquet input with the frame's columns
//! and steps, or a range of a shuffle sort over its parent's inputs).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use arrow_schema::SchemaRef;
use stratus_protocol::messages::{
    FrameSummary, ParquetPartition, PartitionKey, RangeSource, Step, StorageOptions, TaskKind,
    ToWorker,
};

use crate::cluster::Cluster;
use crate::event::Command;
use crate::ids::{FrameId, TaskId, WorkerId};

/// What a sorted (shuffled) frame's ranges are rebuilt from: the Parquet
/// inputs of its parent (each with the parent's columns and steps), the sort
/// key and the range boundaries the shuffle used.
#[derive(Debug)]
pub struct SortLineage {
    pub sources: Vec<RangeSource>,
    pub key: String,
    pub boundaries_ipc: Vec<u8>,
}

/// Where a persisted partition's rows come from: its lineage.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A Parquet input, read with the frame's columns and steps.
    Parquet(ParquetPartition),
    /// Range `range` of a shuffle sort over `lineage`, then `steps` (those of
    /// frames derived from the sorted one).
    Range {
        lineage: Arc<SortLineage>,
        range: u32,
        steps: Vec<Step>,
    },
}

/// One persisted partition and where it came from.
#[derive(Debug, Clone)]
pub struct PersistedPartition {
    /// What it is rebuilt from if its worker is lost (None: it cannot be,
    /// which no job makes today; kept for frames that say so).
    pub origin: Option<Origin>,
    pub rows: u64,
    pub bytes: u64,
    pub holder: Option<WorkerId>,
    /// Load task in flight for it (first load or rebuild).
    pub loading: Option<TaskId>,
    /// Why it could not be rebuilt after its worker was lost, if it could not.
    pub lost: Option<String>,
    /// Restored from the catalog after a restart: waiting for a worker to
    /// re-register it (until the restore grace ends; then it is rebuilt).
    pub awaiting_holder: bool,
    /// Freed by the job replacing its frame in place, once its replacement
    /// existed (so old and new never both fill memory); rebuilt from its
    /// origin if that job fails.
    pub consumed: bool,
}

impl PersistedPartition {
    /// A partition whose first load is `task`.
    pub fn loading(origin: Option<Origin>, rows: u64, task: TaskId) -> PersistedPartition {
        PersistedPartition {
            origin,
            rows,
            bytes: 0,
            holder: None,
            loading: Some(task),
            lost: None,
            awaiting_holder: false,
            consumed: false,
        }
    }
}

/// A persisted (or being persisted) frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub id: FrameId,
    pub name: String,
    pub source: String,
    pub columns: Option<Vec<String>>,
    /// Steps applied after reading, from the Parquet source: the lineage.
    pub steps: Vec<Step>,
    /// Object-store options its Parquet source is read with (rebuilds).
    pub storage: Arc<StorageOptions>,
    /// Schema of the persisted batches.
    pub schema: SchemaRef,
    pub partitions: Vec<PersistedPartition>,
    /// False while its persist job runs.
    pub complete: bool,
}

impl Frame {
    pub fn summary(&self) -> FrameSummary {
        FrameSummary {
            name: self.name.clone(),
            source: self.source.clone(),
            rows: self.rows(),
            bytes: self.partitions.iter().map(|p| p.bytes).sum(),
            partitions: self.partitions.len() as u32,
            partitions_held: self
                .partitions
                .iter()
                .filter(|p| p.holder.is_some())
                .count() as u32,
        }
    }

    pub fn rows(&self) -> u64 {
        self.partitions.iter().map(|p| p.rows).sum()
    }

    pub fn key(&self, index: usize) -> PartitionKey {
        PartitionKey {
            frame: self.id.0,
            index: index as u32,
        }
    }

    /// Whether every partition is held.
    pub fn all_held(&self) -> bool {
        self.partitions.iter().all(|p| p.holder.is_some())
    }
}

/// Every frame, complete or being persisted.
#[derive(Debug, Default)]
pub struct Frames {
    frames: BTreeMap<FrameId, Frame>,
    /// Frames with a partition lost for good ([`Frames::mark_lost`]): the
    /// others are answered without a scan of their partitions.
    with_lost: BTreeSet<FrameId>,
    /// Bumped whenever a partition may have become unreachable (a frame
    /// dropped, a partition lost): placement looks for doomed tasks then.
    doom_generation: u64,
}

impl Frames {
    pub fn get(&self, id: FrameId) -> Option<&Frame> {
        self.frames.get(&id)
    }

    pub fn get_mut(&mut self, id: FrameId) -> Option<&mut Frame> {
        self.frames.get_mut(&id)
    }

    pub fn insert(&mut self, frame: Frame) {
        if frame.partitions.iter().any(|p| p.lost.is_some()) {
            self.with_lost.insert(frame.id);
        }
        self.frames.insert(frame.id, frame);
    }

    /// Every frame, complete or not.
    pub fn all(&self) -> impl Iterator<Item = &Frame> {
        self.frames.values()
    }

    pub(crate) fn all_mut(&mut self) -> impl Iterator<Item = &mut Frame> {
        self.frames.values_mut()
    }

    /// Complete frames.
    pub fn complete(&self) -> impl Iterator<Item = &Frame> {
        self.frames.values().filter(|f| f.complete)
    }

    /// The complete frame with this name.
    pub fn by_name(&self, name: &str) -> Option<FrameId> {
        self.complete().find(|f| f.name == name).map(|f| f.id)
    }

    pub fn partition(&self, key: PartitionKey) -> Option<&PersistedPartition> {
        self.frames
            .get(&FrameId(key.frame))?
            .partitions
            .get(key.index as usize)
    }

    pub fn partition_mut(&mut self, key: PartitionKey) -> Option<&mut PersistedPartition> {
        self.frames
            .get_mut(&FrameId(key.frame))?
            .partitions
            .get_mut(key.index as usize)
    }

    pub fn holder(&self, key: PartitionKey) -> Option<WorkerId> {
        self.partition(key)?.holder
    }

    /// Why a persisted partition will never be available again, if so.
    pub fn unreachable(&self, key: PartitionKey) -> Option<String> {
        let Some(frame) = self.frames.get(&FrameId(key.frame)) else {
            return Some(
                "the frame was unpersisted or replaced while this request ran".to_string(),
            );
        };
        let p = frame.partitions.get(key.index as usize)?;
        p.lost.as_ref().map(|error| {
            format!(
                "partition {} of frame '{}' was lost with its worker and could not be rebuilt: {error}",
                key.index, frame.name
            )
        })
    }

    /// The first partition of a frame that can never be available again.
    pub fn unreachable_partition(&self, frame: FrameId) -> Option<String> {
        let Some(f) = self.frames.get(&frame) else {
            return Some(
                "the frame was unpersisted or replaced while this request ran".to_string(),
            );
        };
        if !self.with_lost.contains(&frame) {
            return None; // nothing lost: no partition to look for
        }
        (0..f.partitions.len()).find_map(|i| self.unreachable(f.key(i)))
    }

    /// A partition is lost for good (it can not be rebuilt): requests that
    /// need it get `error`.
    pub fn mark_lost(&mut self, key: PartitionKey, error: String) -> bool {
        let Some(p) = self.partition_mut(key) else {
            return false;
        };
        p.loading = None;
        p.lost = Some(error);
        self.with_lost.insert(FrameId(key.frame));
        self.doom_generation += 1;
        true
    }

    /// Changes whenever a partition may have become unreachable.
    pub fn doom_generation(&self) -> u64 {
        self.doom_generation
    }

    /// Whether a frame is known to have a lost partition (the invariant
    /// checker compares it with the partitions).
    pub(crate) fn marked_lost(&self, frame: FrameId) -> bool {
        self.with_lost.contains(&frame)
    }

    /// Partitions of a frame by the worker holding them, once all are held.
    pub fn holders(&self, frame: FrameId) -> Option<BTreeMap<WorkerId, Vec<PartitionKey>>> {
        let f = self.frames.get(&frame)?;
        let mut holders: BTreeMap<WorkerId, Vec<PartitionKey>> = BTreeMap::new();
        for (index, p) in f.partitions.iter().enumerate() {
            holders.entry(p.holder?).or_default().push(f.key(index));
        }
        Some(holders)
    }

    /// A worker reports a partition loaded by `task`: it is held there (and
    /// counted in the worker's bytes). Returns false, and tells the worker to
    /// free it, when its frame is gone.
    pub fn loaded(
        &mut self,
        cluster: &mut Cluster,
        worker: WorkerId,
        task: TaskId,
        (key, rows, bytes): (PartitionKey, u64, u64),
        out: &mut Vec<Command>,
    ) -> bool {
        let Some(p) = self.partition_mut(key) else {
            out.push(Command::ToWorker {
                worker,
                message: ToWorker::Drop(vec![key]),
            });
            return false;
        };
        if p.loading == Some(task) {
            p.loading = None;
        }
        p.holder = Some(worker);
        p.rows = rows;
        p.bytes = bytes;
        if let Some(w) = cluster.worker_mut(worker) {
            w.partitions.insert(key);
            w.persisted_bytes += bytes;
        }
        true
    }

    /// Register a complete frame whose partitions are already held (a
    /// shuffle's ranges), counting them on their holders.
    pub fn insert_held(&mut self, cluster: &mut Cluster, frame: Frame) {
        for (index, p) in frame.partitions.iter().enumerate() {
            if let Some(w) = p.holder.and_then(|w| cluster.worker_mut(w)) {
                w.partitions.insert(frame.key(index));
                w.persisted_bytes += p.bytes;
            }
        }
        self.insert(frame);
    }

    /// Forget a frame: its holders free its partitions, loads in flight for
    /// it are cancelled.
    pub fn drop_frame(&mut self, cluster: &mut Cluster, frame: FrameId, out: &mut Vec<Command>) {
        let Some(f) = self.frames.remove(&frame) else {
            return;
        };
        self.with_lost.remove(&frame);
        self.doom_generation += 1;
        let mut drops: BTreeMap<WorkerId, Vec<PartitionKey>> = BTreeMap::new();
        let mut loads = Vec::new();
        for (index, p) in f.partitions.iter().enumerate() {
            let key = f.key(index);
            if let Some(w) = p.holder {
                drops.entry(w).or_default().push(key);
                if let Some(worker) = cluster.worker_mut(w) {
                    worker.partitions.remove(&key);
                    worker.persisted_bytes = worker.persisted_bytes.saturating_sub(p.bytes);
                }
            }
            loads.extend(p.loading);
        }
        // A rebuild of several ranges loads other frames' partitions too:
        // cancel only tasks that load nothing but this frame.
        loads.retain(|t| {
            cluster.task(*t).is_some_and(|task| match &task.kind {
                TaskKind::Load { key, .. } => key.frame == frame.0,
                TaskKind::RebuildRanges { frame: f, .. } => *f == frame.0,
                _ => false,
            })
        });
        loads.sort_unstable();
        loads.dedup();
        cluster.cancel(loads, out);
        for (worker, keys) in drops {
            out.push(Command::ToWorker {
                worker,
                message: ToWorker::Drop(keys),
            });
        }
    }

    /// A partition moved from `from` to `to` (a retire handed it over, and
    /// `to` keeps it under the same key, counting `bytes`): `to` holds it
    /// now, `from` is told to free it. Returns false (and `to` frees it)
    /// when the frame is gone or `from` no longer holds it.
    pub fn moved(
        &mut self,
        cluster: &mut Cluster,
        key: PartitionKey,
        from: WorkerId,
        to: WorkerId,
        bytes: u64,
        out: &mut Vec<Command>,
    ) -> bool {
        let Some(p) = self.partition_mut(key).filter(|p| p.holder == Some(from)) else {
            out.push(Command::ToWorker {
                worker: to,
                message: ToWorker::Drop(vec![key]),
            });
            return false;
        };
        p.holder = Some(to);
        let old = std::mem::replace(&mut p.bytes, bytes);
        if let Some(w) = cluster.worker_mut(from) {
            w.partitions.remove(&key);
            w.persisted_bytes = w.persisted_bytes.saturating_sub(old);
        }
        if let Some(w) = cluster.worker_mut(to) {
            w.partitions.insert(key);
            w.persisted_bytes += bytes;
        }
        out.push(Command::ToWorker {
            worker: from,
            message: ToWorker::Drop(vec![key]),
        });
        true
    }

    /// A retiring worker drops a partition without handing it over
    /// (`retire --force`, no room elsewhere): held nowhere now, it is left
    /// for a rebuild from lineage.
    pub fn dropped(
        &mut self,
        cluster: &mut Cluster,
        key: PartitionKey,
        from: WorkerId,
        out: &mut Vec<Command>,
    ) -> bool {
        let Some(p) = self.partition_mut(key).filter(|p| p.holder == Some(from)) else {
            return false;
        };
        p.holder = None;
        let bytes = p.bytes;
        if let Some(w) = cluster.worker_mut(from) {
            w.partitions.remove(&key);
            w.persisted_bytes = w.persisted_bytes.saturating_sub(bytes);
        }
        out.push(Command::ToWorker {
            worker: from,
            message: ToWorker::Drop(vec![key]),
        });
        true
    }

    /// A worker is gone: the partitions it held are held nowhere now.
    /// Free a held partition because the job replacing its frame in place
    /// made its replacement ([`PersistedPartition::consumed`]): its holder
    /// drops it. False if it is not held (being rebuilt: it stays).
    pub fn consume_partition(
        &mut self,
        cluster: &mut Cluster,
        key: PartitionKey,
        out: &mut Vec<Command>,
    ) -> bool {
        let Some(p) = self.partition_mut(key) else {
            return false;
        };
        let Some(worker) = p.holder.take() else {
            return false;
        };
        p.consumed = true;
        let bytes = p.bytes;
        if let Some(w) = cluster.worker_mut(worker) {
            w.partitions.remove(&key);
            w.persisted_bytes = w.persisted_bytes.saturating_sub(bytes);
        }
        out.push(Command::ToWorker {
            worker,
            message: ToWorker::Drop(vec![key]),
        });
        true
    }

    pub fn release_holder(&mut self, partitions: &[PartitionKey]) {
        for key in partitions {
            if let Some(p) = self.partition_mut(*key) {
                p.holder = None;
            }
        }
    }
}
