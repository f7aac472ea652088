//! Jobs over a persisted frame that run in rounds of worker-level tasks:
//! one task per worker holding partitions, over all of them, pinned there.
//! A [`Reduction`] says what each round asks and how results combine;
//! [`Rounds`] is the one [`Job`] that runs any of them: it waits until every
//! partition of the frame is held, starts a round, collects its results,
//! and reruns the round when a worker of it is lost (once the lost
//! partitions are rebuilt).

use std::collections::BTreeMap;
use std::fmt::Debug;

use arrow_array::RecordBatch;
use stratus_protocol::messages::{PartitionKey, PeerRef, TaskKind, TaskOutput, ToClient};

use super::{Flow, Job, JobCx};
use crate::ids::{FrameId, JobId, WorkerId};

/// Partitions of the frame by the worker holding them.
pub type Holders = BTreeMap<WorkerId, Vec<PartitionKey>>;

/// How to reach a worker's peer endpoint (None once it is gone).
pub type PeerOf<'a> = &'a dyn Fn(WorkerId) -> Option<PeerRef>;

/// One task per holder, over the partitions it holds.
pub fn per_holder(
    holders: &Holders,
    kind: impl Fn(&Vec<PartitionKey>) -> TaskKind,
) -> Vec<(WorkerId, TaskKind)> {
    holders
        .iter()
        .map(|(w, partitions)| (*w, kind(partitions)))
        .collect()
}

/// The answer of a reduction whose result is one table.
pub fn table_answer(batch: Result<RecordBatch, String>) -> Flow {
    let encoded = batch.and_then(|batch| {
        stratus_protocol::ipc::encode_batches(&batch.schema(), &[batch]).map_err(|e| e.to_string())
    });
    match encoded {
        Ok(ipc) => Flow::Done(ToClient::Table(
            stratus_protocol::ipc::encode_table_payload([ipc.as_slice()]),
        )),
        Err(e) => Flow::Fail(e),
    }
}

/// What one kind of round-based job computes.
pub trait Reduction: Debug {
    fn kind(&self) -> &'static str;

    /// No more rounds: the answer is ready.
    fn done(&self) -> bool;

    /// The tasks of the next round, by worker; None when they can not be
    /// placed (a worker they need is gone).
    fn round_tasks(
        &mut self,
        job: JobId,
        holders: &Holders,
        peer: PeerOf,
    ) -> Option<Vec<(WorkerId, TaskKind)>>;

    /// Take one worker's output of the current round.
    fn absorb(&mut self, output: TaskOutput) -> Result<(), String>;

    /// Every task of the round reported.
    fn end_round(&mut self) -> Result<(), String>;

    /// Forget the round's results (a worker was lost; the round reruns).
    fn reset_round(&mut self);

    /// The answer, once `done`: a table, a frame, or a job to carry on as.
    fn finish(&mut self, cx: &mut JobCx, frame: FrameId) -> Flow;

    /// Whether peers deliver data to worker mailboxes for this job.
    fn uses_mailboxes(&self) -> bool {
        false
    }

    /// The job ends early: undo what it left on the workers (staged files,
    /// kept ranges).
    fn undo(&mut self, _cx: &mut JobCx) {}

    /// The frame name the job will create.
    fn reserves(&self) -> Option<&str> {
        None
    }
}

/// A [`Reduction`] over a frame, run as a job.
#[derive(Debug)]
pub struct Rounds {
    frame: FrameId,
    /// A round's tasks are out.
    running: bool,
    reduction: Box<dyn Reduction>,
}

impl Rounds {
    pub fn job(frame: FrameId, reduction: impl Reduction + 'static) -> Box<dyn Job> {
        Box::new(Rounds {
            frame,
            running: false,
            reduction: Box::new(reduction),
        })
    }

    /// Start the next round once every partition is held, or answer.
    fn next_round(&mut self, cx: &mut JobCx) -> Flow {
        // A reduction may skip rounds that have nothing to ask (no holders).
        for _ in 0..64 {
            if self.running {
                return Flow::Continue;
            }
            if self.reduction.done() {
                if self.reduction.uses_mailboxes() {
                    cx.forget_mailboxes();
                }
                return self.reduction.finish(cx, self.frame);
            }
            if let Some(error) = cx.frames.unreachable_partition(self.frame) {
                return Flow::Fail(error);
            }
            let Some(holders) = cx.frames.holders(self.frame) else {
                return Flow::Continue; // resumed when the partitions are held again
            };
            let peers = cx.cluster.peers();
            let peer = |w: WorkerId| peers.get(&w).cloned();
            let Some(tasks) = self.reduction.round_tasks(cx.id, &holders, &peer) else {
                return Flow::Fail("no worker to run this on".into());
            };
            if tasks.is_empty() {
                if let Err(e) = self.reduction.end_round() {
                    return Flow::Fail(e);
                }
                continue;
            }
            self.running = true;
            for (worker, kind) in tasks {
                cx.spawn_on(worker, kind);
            }
        }
        Flow::Fail(format!("{}: too many empty rounds", self.reduction.kind()))
    }
}

impl Job for Rounds {
    fn kind(&self) -> &'static str {
        self.reduction.kind()
    }

    fn start(&mut self, cx: &mut JobCx) -> Flow {
        self.next_round(cx)
    }

    fn on_output(&mut self, cx: &mut JobCx, _task: &TaskKind, output: TaskOutput) -> Flow {
        if let Err(e) = self.reduction.absorb(output) {
            return Flow::Fail(e);
        }
        if cx.pending() > 0 {
            return Flow::Continue;
        }
        self.running = false;
        match self.reduction.end_round() {
            Ok(()) => self.next_round(cx),
            Err(e) => Flow::Fail(e),
        }
    }

    fn on_frame_changed(&mut self, cx: &mut JobCx, frame: FrameId) -> Flow {
        if frame == self.frame && !self.running {
            self.next_round(cx)
        } else {
            Flow::Continue
        }
    }

    /// A worker of the round is gone: drop the round's tasks and results,
    /// and run it again once the lost partitions are rebuilt.
    fn on_worker_lost(&mut self, cx: &mut JobCx, _worker: WorkerId) -> Flow {
        self.reduction.reset_round();
        cx.cancel_tasks();
        self.running = false;
        self.next_round(cx)
    }

    fn abort(&mut self, cx: &mut JobCx) {
        if self.reduction.uses_mailboxes() {
            cx.forget_mailboxes();
        }
        self.reduction.undo(cx);
    }

    fn reserves(&self) -> Option<&str> {
        self.reduction.reserves()
    }

    fn reads_frames(&self) -> Option<Vec<FrameId>> {
        Some(vec![self.frame])
    }
}

/// Decode the single column of a one-column Arrow IPC stream.
pub fn decode_column(ipc: &[u8]) -> Option<arrow_array::ArrayRef> {
    if ipc.is_empty() {
        return None;
    }
    let (_, batches) =
        stratus_protocol::ipc::decode_batches(arrow_buffer::Buffer::from(ipc)).ok()?;
    // A batch from a worker may have no column at all: no panic.
    batches.first().and_then(|b| b.columns().first().cloned())
}
