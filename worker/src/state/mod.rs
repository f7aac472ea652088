//! The worker's decisions as a sans-IO state machine.
//!
//! [`WorkerState::handle`] takes one [`Event`] (tasks assigned, a task's body
//! ended, data delivered to a mailbox, the scheduler cancelled or dropped
//! something, time to heartbeat) and returns the [`Command`]s to carry out
//! (run a task body now, send a report or a heartbeat, answer a delivery).
//! It owns the [`Store`], the tasks waiting for a compute thread, the tasks
//! running, and the cancelled ones whose results are to be discarded. It does
//! no I/O, spawns nothing and reads no clock; [`crate::node`] feeds it and
//! carries out its commands, [`crate::exec`] runs the task bodies.
//!
//! The rules:
//! - at most `nthreads` tasks run at a time; the others wait here, in the
//!   order they arrived, and start as running ones end; a task starts with
//!   its working memory reserved (`estimate.rs`: learned per kind from what
//!   earlier tasks allocated), and waits while that does not fit beside
//!   the running ones (one always runs);
//! - a task's inputs are resolved when it arrives (held partitions are
//!   cheap clones, a mailbox is emptied into the task); a task whose input is
//!   missing fails at once with an error naming the worker and the input;
//! - what a load produces is kept only if the store admits it under the
//!   memory limit, otherwise the task fails (a shuffle's ranges are kept all
//!   or none); deliveries to mailboxes count against the same limit (one
//!   that does not fit while spills can make room waits for them), and
//!   deliveries for a job the scheduler has forgotten are refused;
//! - a cancelled task that waits never starts; a cancelled task that runs
//!   finishes, but its result is dropped (nothing kept, nothing reported);
//! - every task that is not cancelled is reported exactly once, finished or
//!   failed; a heartbeat says the memory held and the tasks on the worker.

mod estimate;
mod work;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet, VecDeque};

use arrow_array::RecordBatch;
use stratus_protocol::messages::{
    MailboxKey, PartitionKey, StorageOptions, TaskAssignment, TaskOutput, TaskReport,
};

use crate::spill::SpillFile;
use crate::store::{SpillTarget, Store};

pub use work::{load, load_each, Destination, Part, Parts, Work};

/// Identifies a task (the scheduler's id).
pub type TaskId = u64;

/// Settings of the state machine.
#[derive(Debug, Clone)]
pub struct Config {
    /// This worker's name, in error messages.
    pub name: String,
    /// Our id at the scheduler (peers see it as the sender of deliveries).
    pub id: u64,
    /// Tasks that run at a time (at least one).
    pub nthreads: u32,
    /// Bytes the store may hold in RAM (0 = no limit).
    pub memory_limit: u64,
    /// When to spill and pause (None: no spill directory).
    pub spill: Option<crate::store::SpillPolicy>,
}

/// Why a task body failed: what to tell the scheduler, and the peer it
/// could not reach when that is the cause (the scheduler then waits to hear
/// whether that worker is gone before failing the job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskError {
    pub message: String,
    pub unreachable_peer: Option<u64>,
}

impl TaskError {
    /// The connection to worker `peer` failed.
    pub fn unreachable(peer: u64, message: String) -> Self {
        TaskError {
            message,
            unreachable_peer: Some(peer),
        }
    }
}

impl From<String> for TaskError {
    fn from(message: String) -> Self {
        TaskError {
            message,
            unreachable_peer: None,
        }
    }
}

impl From<&str> for TaskError {
    fn from(message: &str) -> Self {
        message.to_string().into()
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// What a task body produced, for [`Event::TaskDone`].
#[derive(Debug)]
pub enum Computed {
    /// An output to report as it is.
    Output(TaskOutput),
    /// A partition to keep.
    Loaded {
        key: PartitionKey,
        batches: Vec<RecordBatch>,
        /// Bytes read from an object store for it.
        fetched: u64,
    },
    /// Several partitions to keep (a shuffle's ranges).
    LoadedMany(Vec<(PartitionKey, Vec<RecordBatch>)>),
}

/// Something that happened.
#[derive(Debug)]
pub enum Event {
    /// The scheduler assigned these tasks.
    Run(Vec<TaskAssignment>),
    /// The scheduler no longer wants these tasks' results.
    Cancel(Vec<TaskId>),
    /// The scheduler released these partitions.
    Drop(Vec<PartitionKey>),
    /// The scheduler ended this job: release its mailboxes.
    Forget { job: u64 },
    /// Data for a mailbox, from a peer or from one of our own tasks.
    /// Answered by one [`Command::Answer`] with the same `ticket`: at once,
    /// or once spills have made room for it.
    Delivery {
        ticket: u64,
        mailbox: MailboxKey,
        batches: Vec<RecordBatch>,
    },
    /// A task body started by [`Command::Execute`] ended.
    TaskDone {
        id: TaskId,
        result: Result<Computed, TaskError>,
        /// The most its body allocated at once (0: not measured).
        working: u64,
    },
    /// Time to tell the scheduler we are alive.
    Tick,
    /// A spill of [`Command::Spill`] ended: the file, or why it failed.
    Spilled {
        target: SpillTarget,
        result: Result<SpillFile, String>,
    },
    /// We connected to the scheduler again and it gave us the id `id`.
    /// Every task and mailbox of the old connection is gone (running bodies
    /// finish unreported); the partitions are kept and re-registered
    /// ([`Command::Held`]) when `keep_partitions` (a new start of the
    /// scheduler), else dropped (the same start removed us: join fresh).
    Rejoin { id: u64, keep_partitions: bool },
}

/// A task to run now, with its inputs.
#[derive(Debug)]
pub struct Ready {
    pub id: TaskId,
    pub work: Work,
    /// The request's object-store options (secrets).
    pub storage: StorageOptions,
}

/// Something to do.
#[derive(Debug)]
pub enum Command {
    /// Run this task body on a compute thread now and feed its result back
    /// as [`Event::TaskDone`].
    Execute(Box<Ready>),
    /// Tell the scheduler how a task ended.
    Report(TaskReport),
    /// Tell the scheduler we are alive.
    Heartbeat {
        /// Bytes the worker holds in RAM: partitions, mailboxes and the
        /// working memory reserved by running tasks.
        memory_used: u64,
        /// Tasks on this worker: running, or waiting for a compute thread.
        running: u32,
        /// Bytes of partitions on disk only.
        spilled: u64,
        /// Whether tasks that add data wait for spills.
        paused: bool,
    },
    /// Write this partition to the spill directory, then feed back
    /// [`Event::Spilled`] (its batches stay counted in RAM until then).
    Spill {
        target: SpillTarget,
        batches: Vec<RecordBatch>,
    },
    /// Delete this spill file: its partition is gone.
    DeleteSpill(SpillFile),
    /// A cancelled task ended without a report (its result, if any, dropped).
    Cancelled { id: TaskId },
    /// The answer to the [`Event::Delivery`] with this ticket: kept, or
    /// refused with the reason (sent back to the peer).
    Answer {
        ticket: u64,
        result: Result<(), String>,
    },
    /// Re-register these partitions (key, rows, bytes) with the scheduler,
    /// before anything else on the new connection.
    Held(Vec<(PartitionKey, u64, u64)>),
}

/// The worker's state: store, waiting and running tasks.
#[derive(Debug)]
pub struct WorkerState {
    name: String,
    id: u64,
    nthreads: usize,
    store: Store,
    /// Tasks waiting for a compute thread, in arrival order.
    waiting: VecDeque<Ready>,
    /// Their ids.
    waiting_ids: HashSet<TaskId>,
    /// Tasks whose bodies run.
    running: HashSet<TaskId>,
    /// Running tasks whose results are to be dropped.
    cancelled: HashSet<TaskId>,
    /// Spill files of deliveries a task took, deleted when it ends.
    task_files: HashMap<TaskId, Vec<SpillFile>>,
    /// What tasks are expected to work in.
    estimates: estimate::Estimates,
    /// Running tasks' working memory reservations: kind, input, bytes.
    reservations: HashMap<TaskId, (&'static str, u64, u64)>,
}

impl WorkerState {
    pub fn new(config: Config) -> Self {
        WorkerState {
            name: config.name,
            id: config.id,
            nthreads: config.nthreads.max(1) as usize,
            store: Store::new(config.memory_limit, config.spill),
            waiting: VecDeque::new(),
            waiting_ids: HashSet::new(),
            running: HashSet::new(),
            cancelled: HashSet::new(),
            task_files: HashMap::new(),
            estimates: estimate::Estimates::default(),
            reservations: HashMap::new(),
        }
    }

    /// What the worker holds (for metrics).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Tasks whose bodies run.
    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Tasks waiting for a compute thread.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// Handle one event; returns what to do, in order.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        match event {
            Event::Run(tasks) => {
                for task in tasks {
                    self.arrive(task, &mut out);
                }
                self.start_waiting(&mut out);
            }
            Event::Cancel(ids) => self.cancel(ids, &mut out),
            Event::Drop(keys) => {
                for key in keys {
                    self.store.remove(&key);
                }
            }
            Event::Forget { job } => self.store.forget_job(job),
            Event::Delivery {
                ticket,
                mailbox,
                batches,
            } => {
                if let Some(result) = self.store.deliver(&self.name, ticket, mailbox, batches) {
                    out.push(Command::Answer { ticket, result });
                }
            }
            Event::TaskDone {
                id,
                result,
                working,
            } => {
                self.learn(id, working);
                self.done(id, result, &mut out);
                self.start_waiting(&mut out);
            }
            Event::Tick => {
                self.store.tick();
                out.push(Command::Heartbeat {
                    memory_used: self.store.used() + self.store.in_flight() + self.store.working(),
                    running: (self.running.len() + self.waiting.len()) as u32,
                    spilled: self.store.spilled(),
                    paused: self.store.paused(),
                });
                // A retried spill may make room for a waiting load.
                self.start_waiting(&mut out);
            }
            Event::Spilled { target, result } => {
                self.store.spilled_to(target, result);
                self.start_waiting(&mut out);
            }
            Event::Rejoin {
                id,
                keep_partitions,
            } => self.rejoin(id, keep_partitions, &mut out),
        }
        // Deliveries parked for room that fit now (or never will).
        for (ticket, result) in self.store.admit_parked(&self.name) {
            out.push(Command::Answer { ticket, result });
        }
        // Memory past the target goes to disk; files of dropped partitions go.
        for (target, batches) in self.store.plan_spills() {
            out.push(Command::Spill { target, batches });
        }
        for file in self.store.take_doomed() {
            out.push(Command::DeleteSpill(file));
        }
        out
    }

    /// A new connection to the scheduler: forget the old one's work.
    fn rejoin(&mut self, id: u64, keep_partitions: bool, out: &mut Vec<Command>) {
        self.id = id;
        let all: Vec<TaskId> = self
            .running
            .iter()
            .chain(self.waiting_ids.iter())
            .copied()
            .collect();
        self.cancel(all, out);
        self.store.clear_mailboxes();
        if keep_partitions {
            out.push(Command::Held(self.store.held()));
        } else {
            self.store.clear_partitions();
        }
    }

    /// A task arrived: resolve its inputs and queue it, or fail it.
    fn arrive(&mut self, task: TaskAssignment, out: &mut Vec<Command>) {
        let id = task.id;
        if self.running.contains(&id) || self.waiting_ids.contains(&id) {
            // Already here (the scheduler sends each task once): one report.
            return;
        }
        let resolved = work::resolve(&mut self.store, &self.name, self.id, task.kind);
        let taken = self.store.take_taken();
        if !taken.is_empty() {
            self.task_files.insert(id, taken);
        }
        if resolved.is_err() {
            self.release_files(id);
        }
        match resolved {
            Ok(work) => {
                self.waiting_ids.insert(id);
                self.waiting.push_back(Ready {
                    id,
                    work,
                    storage: task.storage,
                });
            }
            Err(error) => out.push(Command::Report(TaskReport::Failed {
                id,
                error,
                unreachable_peer: None,
            })),
        }
    }

    /// Start waiting tasks while compute threads are free, in arrival
    /// order; while the store is paused, tasks that would add data wait
    /// (others go past them).
    fn start_waiting(&mut self, out: &mut Vec<Command>) {
        while self.running.len() < self.nthreads {
            let paused = self.store.paused();
            // The first task that may start: not one that adds data while
            // paused, and one whose working memory fits (when nothing runs,
            // the first goes anyway: waiting would free nothing).
            let alone = self.running.is_empty();
            let Some(at) = self.waiting.iter().position(|ready| {
                !(paused && ready.work.adds_data())
                    && (alone
                        || self
                            .store
                            .has_room_for(self.estimates.estimate(&ready.work)))
            }) else {
                break;
            };
            let ready = self.waiting.remove(at).expect("position in range");
            let (label, units) = (ready.work.label(), ready.work.input_size());
            let reserved = self.estimates.for_kind(label, units);
            self.store.reserve_working(reserved);
            self.reservations.insert(ready.id, (label, units, reserved));
            self.waiting_ids.remove(&ready.id);
            self.running.insert(ready.id);
            out.push(Command::Execute(Box::new(ready)));
        }
    }

    /// A task body ended having worked in `working` bytes at most: its
    /// reservation goes, and the estimate for its kind learns from it.
    fn learn(&mut self, id: TaskId, working: u64) {
        if let Some((label, units, reserved)) = self.reservations.remove(&id) {
            self.store.release_working(reserved);
            self.estimates.observe(label, units, working);
        }
    }

    /// A task ended: the spill files it read go.
    fn release_files(&mut self, id: TaskId) {
        if let Some(files) = self.task_files.remove(&id) {
            self.store.discard(files);
        }
    }

    fn cancel(&mut self, ids: Vec<TaskId>, out: &mut Vec<Command>) {
        let mut waiting = HashSet::new();
        for id in ids {
            if self.running.contains(&id) {
                self.cancelled.insert(id);
            } else if self.waiting_ids.remove(&id) {
                waiting.insert(id);
            }
        }
        if waiting.is_empty() {
            return;
        }
        // Waiting ones never start; their inputs are dropped with them.
        self.waiting.retain(|task| {
            let keep = !waiting.contains(&task.id);
            if !keep {
                out.push(Command::Cancelled { id: task.id });
            }
            keep
        });
        for id in waiting {
            self.release_files(id);
        }
    }

    /// A running task's body ended: keep what it loaded and report it, or
    /// drop its result if it was cancelled.
    fn done(&mut self, id: TaskId, result: Result<Computed, TaskError>, out: &mut Vec<Command>) {
        if !self.running.remove(&id) {
            return;
        }
        self.release_files(id);
        if self.cancelled.remove(&id) {
            out.push(Command::Cancelled { id });
            return;
        }
        let report = match result {
            Ok(Computed::Output(output)) => TaskReport::Finished { id, output },
            Ok(Computed::Loaded {
                key,
                batches,
                fetched,
            }) => match self.store.insert(&self.name, key, batches) {
                Ok((rows, bytes)) => TaskReport::Finished {
                    id,
                    output: TaskOutput::Loaded {
                        key,
                        rows,
                        bytes,
                        fetched,
                    },
                },
                Err(error) => TaskReport::Failed {
                    id,
                    error,
                    unreachable_peer: None,
                },
            },
            Ok(Computed::LoadedMany(parts)) => match self.keep_all(parts) {
                Ok(kept) => TaskReport::Finished {
                    id,
                    output: TaskOutput::LoadedMany(kept),
                },
                Err(error) => TaskReport::Failed {
                    id,
                    error,
                    unreachable_peer: None,
                },
            },
            Err(TaskError {
                message,
                unreachable_peer,
            }) => TaskReport::Failed {
                id,
                error: message,
                unreachable_peer,
            },
        };
        out.push(Command::Report(report));
    }

    /// Keep every partition, or none if one is refused.
    fn keep_all(
        &mut self,
        parts: Vec<(PartitionKey, Vec<RecordBatch>)>,
    ) -> Result<Vec<(PartitionKey, u64, u64)>, String> {
        let mut kept: Vec<(PartitionKey, u64, u64)> = Vec::with_capacity(parts.len());
        for (key, batches) in parts {
            match self.store.insert(&self.name, key, batches) {
                Ok((rows, bytes)) => kept.push((key, rows, bytes)),
                Err(error) => {
                    for (key, _, _) in kept {
                        self.store.remove(&key);
                    }
                    return Err(error);
                }
            }
        }
        Ok(kept)
    }
}
