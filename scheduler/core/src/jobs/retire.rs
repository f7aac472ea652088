//! `stratus retire WORKER...` (and SIGTERM to a connected worker): drain
//! workers and let them go without recomputing anything.
//!
//! A retiring worker takes no new task but this job's (`Worker::retiring`,
//! see `Cluster::dispatch`). Each partition it holds is given a receiver
//! among the other workers (most free memory first, so the moves balance;
//! free memory is a worker's limit minus what it holds and what is already
//! on its way to it), then a `SendPartitions` task on the retiring worker
//! delivers it, as it is, over the peer links (Arrow IPC, announced with
//! `Expect` like any delivery), and an `AdoptPartitions` task on the
//! receiver keeps it in its store under the same key, admitted under its
//! memory limit. The holder moves in [`crate::frames::Frames::moved`] and
//! the retiring worker frees its copy. When a retiring worker holds nothing
//! and runs nothing, it is told to exit (`ToWorker::Exit`) and the client
//! learns what moved where.
//!
//! Nothing is read from Parquet again while the others have room. When they
//! have none, a retire is refused naming the bytes needed and free, unless
//! forced: what does not fit is dropped and rebuilt from lineage by a
//! [`RebuildJob`]. A receiver lost or refusing mid-retire is avoided and its
//! partitions go elsewhere (a partition that fails three times fails the
//! job); a retiring worker lost mid-retire takes the normal worker-loss path
//! (its partitions are rebuilt) and the job fails saying so. Partitions also
//! loaded onto a retiring worker by tasks that were running when the retire
//! began are moved as they appear.

use std::collections::{BTreeMap, BTreeSet};

use stratus_protocol::messages::{
    PartitionKey, RetiredWorker, TaskKind, TaskOutput, ToClient, ToWorker,
};
use stratus_protocol::units::format_bytes;

use super::rebuild::RebuildJob;
use super::{Flow, Job, JobCx, Planning};
use crate::cluster::Cluster;
use crate::frames::Frames;
use crate::ids::WorkerId;

/// A partition that fails to move this many times fails the job.
const MAX_MOVE_ATTEMPTS: u32 = 3;

/// The job for `stratus retire`: workers by name, refused without room
/// unless `force`.
pub fn plan(at: &Planning, names: Vec<String>, force: bool) -> Result<Box<dyn Job>, String> {
    if names.is_empty() {
        return Err("retire: name at least one worker".into());
    }
    let mut workers = BTreeSet::new();
    for name in &names {
        let Some(w) = at.cluster.workers().find(|w| &w.info.name == name) else {
            let known: Vec<&str> = at.cluster.workers().map(|w| w.info.name.as_str()).collect();
            return Err(format!(
                "retire: no worker named '{name}' (workers: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        if w.retiring.is_some() {
            return Err(format!("retire: worker '{name}' is already being retired"));
        }
        workers.insert(w.id);
    }
    if !force {
        room(at.cluster, at.frames, &workers, &BTreeSet::new())?;
    }
    Ok(Box::new(RetireJob::new(workers, force)))
}

/// Whether the partitions of `retiring` fit on the other workers; the error
/// names the bytes needed and free.
fn room(
    cluster: &Cluster,
    frames: &Frames,
    retiring: &BTreeSet<WorkerId>,
    avoid: &BTreeSet<WorkerId>,
) -> Result<(), String> {
    let parts = held(cluster, frames, retiring, &BTreeMap::new());
    if parts.is_empty() {
        return Ok(());
    }
    let receivers = receivers(cluster, retiring, avoid, &BTreeMap::new());
    let (_, unplaced) = assign(&parts, &receivers);
    if unplaced.is_empty() {
        return Ok(());
    }
    let needed: u64 = parts.iter().map(|p| p.2).sum();
    let free: u64 = receivers
        .iter()
        .fold(0u64, |acc, (_, f)| acc.saturating_add(*f));
    let largest = unplaced.iter().map(|p| p.2).max().unwrap_or(0);
    let names: Vec<String> = retiring.iter().map(|w| cluster.label(*w)).collect();
    Err(format!(
        "cannot retire {}: its {} partitions need {} ({needed} bytes) on other workers, which have {} ({free} bytes) free \
         (memory limits minus what they hold){}; start more workers, unpersist frames, or retire with --force \
         (partitions that do not fit are dropped and rebuilt from their Parquet sources later)",
        names.join(", "),
        parts.len(),
        format_bytes(needed),
        format_bytes(free),
        if needed <= free {
            format!(
                ", but no single worker has room for a partition of {}",
                format_bytes(largest)
            )
        } else {
            String::new()
        }
    ))
}

/// `(holder, key, bytes)` of the partitions the retiring workers hold that
/// are not already moving, largest first.
fn held(
    cluster: &Cluster,
    frames: &Frames,
    retiring: &BTreeSet<WorkerId>,
    moving: &BTreeMap<PartitionKey, Move>,
) -> Vec<(WorkerId, PartitionKey, u64)> {
    let mut parts: Vec<(WorkerId, PartitionKey, u64)> = retiring
        .iter()
        .filter_map(|w| cluster.worker(*w))
        .flat_map(|w| w.partitions.iter().map(move |k| (w.id, *k)))
        .filter(|(_, k)| !moving.contains_key(k))
        .map(|(w, k)| (w, k, frames.partition(k).map_or(0, |p| p.bytes)))
        .collect();
    parts.sort_by(|a, b| b.2.cmp(&a.2).then(a.1.cmp(&b.1)));
    parts
}

/// Workers that may receive, with the bytes they can still take (minus
/// what is already on its way to them).
fn receivers(
    cluster: &Cluster,
    retiring: &BTreeSet<WorkerId>,
    avoid: &BTreeSet<WorkerId>,
    moving: &BTreeMap<PartitionKey, Move>,
) -> Vec<(WorkerId, u64)> {
    cluster
        .workers()
        .filter(|w| w.retiring.is_none() && !retiring.contains(&w.id) && !avoid.contains(&w.id))
        .map(|w| {
            let incoming: u64 = moving
                .values()
                .filter(|m| m.to == w.id)
                .map(|m| m.bytes)
                .sum();
            (w.id, w.free_memory().saturating_sub(incoming))
        })
        .collect()
}

/// Give each partition (largest first) to the receiver with the most room
/// left: `(partition, receiver)`, and the partitions no receiver has room for.
#[allow(clippy::type_complexity)]
fn assign(
    parts: &[(WorkerId, PartitionKey, u64)],
    receivers: &[(WorkerId, u64)],
) -> (
    Vec<((WorkerId, PartitionKey, u64), WorkerId)>,
    Vec<(WorkerId, PartitionKey, u64)>,
) {
    let mut room: Vec<(WorkerId, u64)> = receivers.to_vec();
    let (mut placed, mut unplaced) = (Vec::new(), Vec::new());
    for part in parts {
        let best = room
            .iter_mut()
            .filter(|(_, free)| *free >= part.2)
            .max_by_key(|(w, free)| (*free, std::cmp::Reverse(*w)));
        match best {
            Some((to, free)) => {
                *free -= part.2;
                placed.push((*part, *to));
            }
            None => unplaced.push(*part),
        }
    }
    (placed, unplaced)
}

/// A partition on its way from a retiring worker to a receiver.
#[derive(Debug, Clone, Copy)]
struct Move {
    from: WorkerId,
    to: WorkerId,
    bytes: u64,
}

/// What became of one retiring worker.
#[derive(Debug, Default)]
struct Outcome {
    name: String,
    /// Per receiver's name: partitions and bytes.
    moved: BTreeMap<String, (u64, u64)>,
    dropped: (u64, u64),
}

/// Drain workers, then tell them to exit.
#[derive(Debug)]
pub struct RetireJob {
    workers: BTreeSet<WorkerId>,
    force: bool,
    outcomes: BTreeMap<WorkerId, Outcome>,
    moving: BTreeMap<PartitionKey, Move>,
    /// Receivers that failed a move (gone, or refused): not used again.
    avoid: BTreeSet<WorkerId>,
    attempts: BTreeMap<PartitionKey, u32>,
    next_tag: u32,
}

impl RetireJob {
    /// Retire these workers; `force`: drop what does not fit elsewhere.
    pub fn new(workers: BTreeSet<WorkerId>, force: bool) -> RetireJob {
        RetireJob {
            workers,
            force,
            outcomes: BTreeMap::new(),
            moving: BTreeMap::new(),
            avoid: BTreeSet::new(),
            attempts: BTreeMap::new(),
            next_tag: 0,
        }
    }

    /// A worker asked to stop (SIGTERM): retire it, dropping what does not
    /// fit (it is going away either way).
    pub fn for_worker(worker: WorkerId) -> RetireJob {
        RetireJob::new(BTreeSet::from([worker]), true)
    }

    /// Move what is not moving yet, drop what cannot move (forced), and
    /// let the workers go once they hold and run nothing.
    fn step(&mut self, cx: &mut JobCx) -> Flow {
        for w in &self.workers {
            if cx.cluster.worker(*w).is_none() {
                let name = self
                    .outcomes
                    .get(w)
                    .map_or_else(|| format!("#{w}"), |o| format!("'{}'", o.name));
                return Flow::Fail(format!(
                    "worker {name} left while it was being retired: its partitions are rebuilt from lineage"
                ));
            }
        }
        let parts = held(cx.cluster, cx.frames, &self.workers, &self.moving);
        if !parts.is_empty() {
            let receivers = receivers(cx.cluster, &self.workers, &self.avoid, &self.moving);
            let (placed, unplaced) = assign(&parts, &receivers);
            if !unplaced.is_empty() && !self.force {
                if let Err(e) = room(cx.cluster, cx.frames, &self.workers, &self.avoid) {
                    return Flow::Fail(e);
                }
                return Flow::Fail(format!(
                    "retire: no worker has room left for {} partitions; retry, or retire with --force",
                    unplaced.len()
                ));
            }
            let mut sends: BTreeMap<(WorkerId, WorkerId), Vec<(PartitionKey, u32)>> =
                BTreeMap::new();
            for ((from, key, bytes), to) in placed {
                let tag = self.next_tag;
                self.next_tag += 1;
                self.moving.insert(key, Move { from, to, bytes });
                sends.entry((from, to)).or_default().push((key, tag));
            }
            for ((from, to), partitions) in sends {
                let Some(deliver_to) = cx.cluster.worker(to).map(|w| w.peer_ref()) else {
                    continue;
                };
                cx.spawn_on(
                    from,
                    TaskKind::SendPartitions {
                        partitions,
                        deliver_to,
                        job: cx.id.0,
                    },
                );
            }
            let mut dropped = Vec::new();
            for (from, key, bytes) in unplaced {
                if cx.frames.dropped(cx.cluster, key, from, cx.out) {
                    let o = self.outcomes.entry(from).or_default();
                    o.dropped.0 += 1;
                    o.dropped.1 += bytes;
                    dropped.push(key);
                    cx.frame_changed(crate::ids::FrameId(key.frame));
                }
            }
            if !dropped.is_empty() {
                cx.start_background(Box::new(RebuildJob::new(dropped)));
            }
        }
        self.finish_if_drained(cx)
    }

    /// Every retiring worker holds nothing, runs nothing and nothing of it
    /// is moving: tell them to exit, and answer.
    fn finish_if_drained(&mut self, cx: &mut JobCx) -> Flow {
        if !self.moving.is_empty() {
            return Flow::Continue;
        }
        let drained = self.workers.iter().all(|w| {
            cx.cluster
                .worker(*w)
                .is_some_and(|w| w.partitions.is_empty() && w.running.is_empty())
        });
        if !drained {
            return Flow::Continue;
        }
        cx.forget_mailboxes();
        let mut answer = Vec::new();
        for w in &self.workers {
            let o = self.outcomes.remove(w).unwrap_or_default();
            cx.out.push(crate::event::Command::ToWorker {
                worker: *w,
                message: ToWorker::Exit {
                    reason: "retired: its partitions moved to other workers".into(),
                },
            });
            answer.push(RetiredWorker {
                name: o.name,
                moved: o
                    .moved
                    .into_iter()
                    .map(|(to, (n, bytes))| (to, n, bytes))
                    .collect(),
                dropped_partitions: o.dropped.0,
                dropped_bytes: o.dropped.1,
            });
        }
        Flow::Done(ToClient::Retired(answer))
    }

    /// Moves that did not happen: avoid their receiver, and try again
    /// elsewhere (a partition that failed too often fails the job).
    fn retry(&mut self, cx: &mut JobCx, keys: &[PartitionKey], error: &str) -> Flow {
        for key in keys {
            let Some(m) = self.moving.remove(key) else {
                continue;
            };
            self.avoid.insert(m.to);
            let attempts = self.attempts.entry(*key).or_default();
            *attempts += 1;
            if *attempts >= MAX_MOVE_ATTEMPTS {
                return Flow::Fail(format!(
                    "retire: partition {}/{} failed to move {attempts} times (last to worker {}): {error}",
                    key.frame,
                    key.index,
                    cx.cluster.label(m.to)
                ));
            }
        }
        self.step(cx)
    }
}

impl Job for RetireJob {
    fn kind(&self) -> &'static str {
        "retire"
    }

    fn start(&mut self, cx: &mut JobCx) -> Flow {
        for w in &self.workers {
            if let Some(worker) = cx.cluster.worker_mut(*w) {
                worker.retiring = Some(cx.id);
                self.outcomes.entry(*w).or_default().name = worker.info.name.clone();
            }
        }
        self.step(cx)
    }

    fn on_output(&mut self, cx: &mut JobCx, task: &TaskKind, output: TaskOutput) -> Flow {
        match (task, output) {
            (
                TaskKind::SendPartitions {
                    partitions,
                    deliver_to,
                    ..
                },
                TaskOutput::Delivered { .. },
            ) => {
                let to = WorkerId(deliver_to.worker);
                let adopt: Vec<(u32, PartitionKey)> = partitions
                    .iter()
                    .filter(|(key, _)| self.moving.contains_key(key))
                    .map(|&(key, tag)| (tag, key))
                    .collect();
                if !adopt.is_empty() {
                    cx.spawn_on(
                        to,
                        TaskKind::AdoptPartitions {
                            partitions: adopt,
                            job: cx.id.0,
                        },
                    );
                }
                Flow::Continue
            }
            (TaskKind::AdoptPartitions { .. }, TaskOutput::LoadedMany(kept)) => {
                for (key, _rows, bytes) in kept {
                    let Some(m) = self.moving.remove(&key) else {
                        continue;
                    };
                    if cx
                        .frames
                        .moved(cx.cluster, key, m.from, m.to, bytes, cx.out)
                    {
                        let to = cx
                            .cluster
                            .worker(m.to)
                            .map_or_else(|| format!("#{}", m.to), |w| w.info.name.clone());
                        let entry = self
                            .outcomes
                            .entry(m.from)
                            .or_default()
                            .moved
                            .entry(to)
                            .or_default();
                        entry.0 += 1;
                        entry.1 += bytes;
                        cx.frame_changed(crate::ids::FrameId(key.frame));
                    }
                }
                self.step(cx)
            }
            (_, other) => Flow::Fail(format!("retire: unexpected task output {other:?}")),
        }
    }

    fn on_task_failed(&mut self, cx: &mut JobCx, task: &TaskKind, error: String) -> Flow {
        let keys: Vec<PartitionKey> = match task {
            TaskKind::SendPartitions { partitions, .. } => {
                partitions.iter().map(|(k, _)| *k).collect()
            }
            TaskKind::AdoptPartitions { partitions, .. } => {
                partitions.iter().map(|(_, k)| *k).collect()
            }
            _ => return Flow::Fail(error),
        };
        self.retry(cx, &keys, &error)
    }

    fn on_frame_changed(&mut self, cx: &mut JobCx, _frame: crate::ids::FrameId) -> Flow {
        self.step(cx)
    }

    /// A retiring worker lost fails the job (its partitions take the normal
    /// worker-loss path); a receiver lost: its moves go elsewhere.
    fn on_worker_lost(&mut self, cx: &mut JobCx, worker: WorkerId) -> Flow {
        if self.workers.contains(&worker) {
            return self.step(cx);
        }
        let stale: Vec<_> = cx
            .cluster
            .tasks_of(cx.id)
            .into_iter()
            .filter(|t| {
                cx.cluster.task(*t).is_some_and(|t| match &t.kind {
                    TaskKind::SendPartitions { deliver_to, .. } => deliver_to.worker == worker.0,
                    TaskKind::AdoptPartitions { .. } => t.worker_pin == Some(worker),
                    _ => false,
                })
            })
            .collect();
        cx.cluster.cancel(stale, cx.out);
        let keys: Vec<PartitionKey> = self
            .moving
            .iter()
            .filter(|(_, m)| m.to == worker)
            .map(|(k, _)| *k)
            .collect();
        self.retry(cx, &keys, "the receiving worker left")
    }

    fn on_tick(&mut self, cx: &mut JobCx) -> Flow {
        self.step(cx)
    }

    /// Waits on its workers' other tasks even with none of its own.
    fn in_progress(&self) -> bool {
        true
    }

    /// The retire ends early: the workers take tasks again; partitions
    /// already moved stay where they are.
    fn abort(&mut self, cx: &mut JobCx) {
        for w in &self.workers {
            if let Some(worker) = cx.cluster.worker_mut(*w) {
                if worker.retiring == Some(cx.id) {
                    worker.retiring = None;
                }
            }
        }
        cx.forget_mailboxes();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(index: u32) -> PartitionKey {
        PartitionKey { frame: 1, index }
    }

    #[test]
    fn partitions_go_to_the_receiver_with_the_most_room_left() {
        let parts = [
            (WorkerId(0), key(0), 40),
            (WorkerId(0), key(1), 30),
            (WorkerId(0), key(2), 30),
        ];
        let (placed, unplaced) = assign(&parts, &[(WorkerId(1), 100), (WorkerId(2), 70)]);
        assert!(unplaced.is_empty());
        let to: Vec<u64> = placed.iter().map(|(_, w)| w.0).collect();
        // 100 -> 60 left, then 70 > 60: worker 2, then 60 > 40: worker 1.
        assert_eq!(to, vec![1, 2, 1]);
    }

    #[test]
    fn a_partition_no_receiver_has_room_for_is_unplaced() {
        let parts = [(WorkerId(0), key(0), 50), (WorkerId(0), key(1), 10)];
        let (placed, unplaced) = assign(&parts, &[(WorkerId(1), 40)]);
        assert_eq!(unplaced.len(), 1);
        assert_eq!(unplaced[0].1, key(0));
        assert_eq!(placed.len(), 1);
    }
}
