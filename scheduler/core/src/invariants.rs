//! [`SchedulerState::check_invariants`]: what must hold between any two
//! events. The state-machine tests run it after every event, so a decision
//! that leaves the state inconsistent fails where it happens, not three
//! events later.

use std::collections::{BTreeSet, HashSet};

use stratus_protocol::messages::TaskKind;

use crate::ids::{FrameId, TaskId, WorkerId};
use crate::state::SchedulerState;

impl SchedulerState {
    /// Every violated invariant, one per line; Ok when all hold.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut errors = Vec::new();
        let mut check = |ok: bool, what: String| {
            if !ok {
                errors.push(what);
            }
        };
        let cluster = &self.cluster;

        // Tasks: each belongs to a live job, and is queued or running, not both.
        let queued: Vec<TaskId> = cluster.queue().collect();
        let queued_set: HashSet<TaskId> = queued.iter().copied().collect();
        check(
            queued.len() == queued_set.len(),
            "a task is queued twice".into(),
        );
        for id in &queued {
            match cluster.task(*id) {
                Some(t) => check(
                    t.worker.is_none(),
                    format!("task {id} is queued and running"),
                ),
                None => check(false, format!("queued task {id} does not exist")),
            }
        }
        let free: BTreeSet<WorkerId> = cluster
            .workers()
            .filter(|w| w.free_slots() > 0)
            .map(|w| w.id)
            .collect();
        check(
            &free == cluster.free_workers(),
            format!(
                "workers with a free thread are {free:?}, placement knows {:?}",
                cluster.free_workers()
            ),
        );
        let mut indexed = 0;
        for (job, tasks) in cluster.job_index() {
            check(
                self.jobs.contains_key(job),
                format!("tasks {tasks:?} belong to job {job}, which is not running"),
            );
            indexed += tasks.len();
            for id in tasks {
                check(
                    cluster.task(*id).is_some_and(|t| t.job == *job),
                    format!("job {job} lists task {id}, which is not its"),
                );
            }
        }
        check(
            indexed == cluster.tasks().count(),
            format!(
                "{} tasks exist, {indexed} are indexed by job",
                cluster.tasks().count()
            ),
        );
        for (id, task) in cluster.tasks() {
            match task.worker {
                Some(w) => check(
                    cluster.worker(w).is_some_and(|w| w.running.contains(&id)),
                    format!("task {id} runs on worker {w}, which does not list it"),
                ),
                None => check(
                    queued_set.contains(&id),
                    format!("task {id} is neither queued nor running"),
                ),
            }
            if let (Some(pin), Some(w)) = (task.worker_pin, task.worker) {
                check(
                    pin == w,
                    format!("task {id} is pinned to {pin} but runs on {w}"),
                );
            }
        }

        // Workers: threads add up; what they hold is what frames say.
        for w in cluster.workers() {
            check(
                w.running.len() <= w.info.nthreads as usize,
                format!(
                    "worker {} runs {} tasks on {} threads",
                    w.id,
                    w.running.len(),
                    w.info.nthreads
                ),
            );
            for id in &w.running {
                check(
                    cluster.task(*id).is_some_and(|t| t.worker == Some(w.id)),
                    format!(
                        "worker {} lists task {id}, which is not running there",
                        w.id
                    ),
                );
            }
            let mut bytes = 0;
            for key in &w.partitions {
                match self.frames.partition(*key) {
                    Some(p) => {
                        check(
                            p.holder == Some(w.id),
                            format!(
                                "worker {} lists partition {}/{}, held by {:?}",
                                w.id, key.frame, key.index, p.holder
                            ),
                        );
                        bytes += p.bytes;
                    }
                    None => check(
                        false,
                        format!(
                            "worker {} holds partition {}/{} of no frame",
                            w.id, key.frame, key.index
                        ),
                    ),
                }
            }
            check(
                bytes == w.persisted_bytes,
                format!(
                    "worker {} counts {} persisted bytes, its partitions {bytes}",
                    w.id, w.persisted_bytes
                ),
            );
        }

        // Frames: one holder per partition; loads in flight exist; names unique;
        // an incomplete frame is being loaded by a job.
        let loading: BTreeSet<FrameId> = self
            .jobs
            .values()
            .filter_map(|e| e.job.loads_frame())
            .collect();
        let consuming: BTreeSet<FrameId> = self
            .jobs
            .values()
            .filter_map(|e| e.job.consumes_frame())
            .collect();
        let mut names = HashSet::new();
        for f in self.frames.all() {
            if f.complete {
                check(
                    names.insert(f.name.as_str()),
                    format!("two complete frames are named '{}'", f.name),
                );
            } else {
                check(
                    loading.contains(&f.id),
                    format!(
                        "frame '{}' ({}) is incomplete and no job loads it",
                        f.name, f.id
                    ),
                );
            }
            for (index, p) in f.partitions.iter().enumerate() {
                let key = f.key(index);
                if let Some(w) = p.holder {
                    check(
                        cluster
                            .worker(w)
                            .is_some_and(|w| w.partitions.contains(&key)),
                        format!(
                            "partition {}/{index} is held by worker {w}, which does not list it",
                            f.id
                        ),
                    );
                }
                if let Some(t) = p.loading {
                    let loads_it = cluster.task(t).is_some_and(|t| match &t.kind {
                        TaskKind::Load { key: k, .. } => *k == key,
                        TaskKind::RebuildRanges { frame, parts, .. } => {
                            *frame == key.frame && parts.iter().any(|p| p.1 == key.index)
                        }
                        _ => false,
                    });
                    check(
                        loads_it,
                        format!(
                            "partition {}/{index} waits for task {t}, which does not load it",
                            f.id
                        ),
                    );
                }
                if p.lost.is_some() {
                    check(
                        self.frames.marked_lost(f.id),
                        format!(
                            "partition {}/{index} is lost but its frame is not marked (Frames::mark_lost)",
                            f.id
                        ),
                    );
                }
                if p.holder.is_none()
                    && p.loading.is_none()
                    && p.lost.is_none()
                    && !p.awaiting_holder
                    && !p.consumed
                    && f.complete
                {
                    check(
                        false,
                        format!("partition {}/{index} of '{}' is held nowhere, loading nowhere, not lost, not awaited", f.id, f.name),
                    );
                }
                if p.consumed {
                    check(
                        p.holder.is_none() && consuming.contains(&f.id),
                        format!("partition {}/{index} of '{}' is consumed by no running job, or still held", f.id, f.name),
                    );
                }
                if p.awaiting_holder {
                    check(
                        p.holder.is_none() && p.loading.is_none() && self.restoring.is_some(),
                        format!("partition {}/{index} of '{}' is awaited from a worker outside a restore, or is held or loading", f.id, f.name),
                    );
                }
            }
        }

        // Requests: one job each, and it answers that request.
        for (request, job) in &self.job_of_request {
            check(
                self.jobs
                    .get(job)
                    .is_some_and(|e| e.request == Some(*request)),
                format!("request {request} maps to job {job}, which does not answer it"),
            );
        }
        for (job, entry) in &self.jobs {
            if let Some(request) = entry.request {
                check(
                    self.job_of_request.get(&request) == Some(job),
                    format!("job {job} answers request {request}, which maps elsewhere"),
                );
            }
        }

        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors.join("\n"))
        }
    }
}
