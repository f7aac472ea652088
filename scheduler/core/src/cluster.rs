//! The cluster as the scheduler sees it: registered workers (threads, memory,
//! what they run and hold), every task (queued or running, of which job), the
//! queue, and placement: [`Cluster::dispatch`] hands queued tasks to workers
//! with free threads. Nothing here knows what a job is for.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use stratus_protocol::messages::{
    HeadInput, LoadInput, PartitionKey, PeerRef, StorageOptions, TaskAssignment, TaskKind,
    ToWorker, WorkerInfo,
};

use crate::event::Command;
use crate::frames::Frames;
use crate::ids::{JobId, TaskId, WorkerId};

/// A registered worker.
#[derive(Debug, Clone)]
pub struct Worker {
    pub id: WorkerId,
    pub info: WorkerInfo,
    pub last_seen: Instant,
    pub memory_used: u64,
    pub running: HashSet<TaskId>,
    pub partitions: HashSet<PartitionKey>,
    pub persisted_bytes: u64,
    /// Bytes of its partitions on disk only (its last heartbeat).
    pub spilled_bytes: u64,
    /// Holding back tasks that add data until spills end (its last heartbeat).
    pub paused: bool,
    /// Being retired by this job (`jobs/retire.rs`): it gets that job's
    /// tasks only, and stays so until it leaves.
    pub retiring: Option<JobId>,
}

impl Worker {
    fn new(id: WorkerId, info: WorkerInfo, now: Instant) -> Worker {
        Worker {
            id,
            info,
            last_seen: now,
            memory_used: 0,
            running: HashSet::new(),
            partitions: HashSet::new(),
            persisted_bytes: 0,
            spilled_bytes: 0,
            paused: false,
            retiring: None,
        }
    }

    /// Whether a task of `job` may be placed here (a retiring worker takes
    /// only its retire job's tasks).
    pub fn takes(&self, job: JobId) -> bool {
        self.retiring.is_none_or(|j| j == job)
    }

    /// Bytes its memory limit still admits (`u64::MAX` without a limit).
    pub fn free_memory(&self) -> u64 {
        if self.info.memory_limit == 0 {
            return u64::MAX;
        }
        let used = self.memory_used.max(self.persisted_bytes);
        self.info.memory_limit.saturating_sub(used)
    }

    /// Threads not running a task.
    pub fn free_slots(&self) -> usize {
        (self.info.nthreads as usize).saturating_sub(self.running.len())
    }

    /// Partitions it holds or is loading, per thread, in thousandths.
    fn load_per_thread(&self) -> usize {
        let load = self.partitions.len() + self.running.len();
        load * 1000 / self.info.nthreads.max(1) as usize
    }

    /// How to reach this worker's peer endpoint.
    pub fn peer_ref(&self) -> PeerRef {
        PeerRef {
            worker: self.id.0,
            address: self.info.peer_address.clone(),
            cert_name: self.info.cert_name.clone(),
        }
    }

    /// `'name' (host)`, for messages.
    pub fn label(&self) -> String {
        format!("'{}' ({})", self.info.name, self.info.host)
    }
}

/// A task: queued (no worker) or running on `worker`.
#[derive(Debug, Clone)]
pub struct Task {
    pub job: JobId,
    pub kind: TaskKind,
    /// Object-store options its worker reads or writes with.
    pub storage: Arc<StorageOptions>,
    pub worker: Option<WorkerId>,
    /// Workers lost while running it.
    pub attempts: u32,
    /// A worker-level task (a round over all its partitions) runs only there.
    pub worker_pin: Option<WorkerId>,
    /// When it was handed to its worker.
    pub started: Option<Instant>,
}

impl Task {
    /// The persisted partition this task must run next to, if any.
    pub fn pinned_to(&self) -> Option<PartitionKey> {
        match &self.kind {
            TaskKind::Head {
                input: HeadInput::Persisted(key),
                ..
            }
            | TaskKind::Load {
                input: LoadInput::Persisted(key),
                ..
            } => Some(*key),
            _ => None,
        }
    }
}

/// A task that can never run (its input partition is gone for good).
#[derive(Debug)]
pub struct Doomed {
    pub job: JobId,
    pub task: Task,
    pub error: String,
}

/// Workers, tasks and the queue.
#[derive(Debug, Default)]
pub struct Cluster {
    workers: BTreeMap<WorkerId, Worker>,
    tasks: HashMap<TaskId, Task>,
    queue: VecDeque<TaskId>,
    by_job: HashMap<JobId, BTreeSet<TaskId>>,
    /// Workers with a free thread: placement looks at these only.
    free: BTreeSet<WorkerId>,
    /// Tasks were queued since the last placement (each is looked at once
    /// even when no thread is free: it may be doomed already).
    queued_since_dispatch: bool,
    /// [`Frames::doom_generation`] at the last placement.
    seen_doom_generation: u64,
    /// A queued task may be pinned to a worker that is gone (a worker left,
    /// or a task was queued pinned to a missing one) since the last look.
    pins_may_dangle: bool,
    /// The least partitions per thread a worker held when last counted
    /// (see [`Cluster::may_load_more`]).
    least_load_seen: usize,
}

impl Cluster {
    // ----- workers ---------------------------------------------------------

    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values()
    }

    pub fn worker(&self, id: WorkerId) -> Option<&Worker> {
        self.workers.get(&id)
    }

    pub fn worker_mut(&mut self, id: WorkerId) -> Option<&mut Worker> {
        self.workers.get_mut(&id)
    }

    pub fn worker_ids(&self) -> impl Iterator<Item = WorkerId> + '_ {
        self.workers.keys().copied()
    }

    /// `'name' (host)` of a worker, or `#id` once it is gone.
    pub fn label(&self, id: WorkerId) -> String {
        self.workers
            .get(&id)
            .map_or_else(|| format!("#{id}"), Worker::label)
    }

    pub fn join(&mut self, id: WorkerId, info: WorkerInfo, now: Instant) {
        let worker = Worker::new(id, info, now);
        self.set_free(&worker);
        self.workers.insert(id, worker);
    }

    /// Keep [`Self::free`] in step with a worker's running tasks.
    fn set_free(&mut self, worker: &Worker) {
        if worker.free_slots() > 0 {
            self.free.insert(worker.id);
        } else {
            self.free.remove(&worker.id);
        }
    }

    /// Workers with a free thread (for the invariant checker).
    pub(crate) fn free_workers(&self) -> &BTreeSet<WorkerId> {
        &self.free
    }

    /// Remove a worker. Its running tasks stay (with no worker, not queued)
    /// for the caller to requeue or end; they are returned oldest first.
    pub fn leave(&mut self, id: WorkerId) -> Option<(Worker, Vec<TaskId>)> {
        let worker = self.workers.remove(&id)?;
        self.free.remove(&id);
        self.pins_may_dangle = true;
        let mut running: Vec<TaskId> = worker.running.iter().copied().collect();
        running.sort_unstable();
        for task in &running {
            if let Some(t) = self.tasks.get_mut(task) {
                t.worker = None;
                t.started = None;
            }
        }
        Some((worker, running))
    }

    /// Threads of the whole cluster (at least 1, for planning).
    pub fn threads(&self) -> usize {
        self.workers
            .values()
            .map(|w| w.info.nthreads as usize)
            .sum::<usize>()
            .max(1)
    }

    /// How to reach every worker's peer endpoint.
    pub fn peers(&self) -> BTreeMap<WorkerId, PeerRef> {
        self.workers
            .values()
            .map(|w| (w.id, w.peer_ref()))
            .collect()
    }

    /// Tell every worker something (e.g. forget a job's mailboxes).
    pub fn broadcast(&self, message: ToWorker, out: &mut Vec<Command>) {
        for worker in self.workers.keys() {
            out.push(Command::ToWorker {
                worker: *worker,
                message: message.clone(),
            });
        }
    }

    // ----- tasks -----------------------------------------------------------

    pub fn task(&self, id: TaskId) -> Option<&Task> {
        self.tasks.get(&id)
    }

    pub fn task_mut(&mut self, id: TaskId) -> Option<&mut Task> {
        self.tasks.get_mut(&id)
    }

    pub fn tasks(&self) -> impl Iterator<Item = (TaskId, &Task)> {
        self.tasks.iter().map(|(id, t)| (*id, t))
    }

    pub fn queue(&self) -> impl Iterator<Item = TaskId> + '_ {
        self.queue.iter().copied()
    }

    /// Tasks of a job not yet reported.
    pub fn pending(&self, job: JobId) -> usize {
        self.by_job.get(&job).map_or(0, BTreeSet::len)
    }

    /// The ids of a job's tasks, in order.
    pub fn tasks_of(&self, job: JobId) -> Vec<TaskId> {
        self.by_job
            .get(&job)
            .map(|t| t.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The per-job index (for the invariant checker).
    pub(crate) fn job_index(&self) -> &HashMap<JobId, BTreeSet<TaskId>> {
        &self.by_job
    }

    /// Queue a task for `job` (at the back), optionally pinned to a worker.
    pub fn add(
        &mut self,
        id: TaskId,
        job: JobId,
        kind: TaskKind,
        pin: Option<WorkerId>,
        storage: Arc<StorageOptions>,
    ) {
        self.tasks.insert(
            id,
            Task {
                job,
                kind,
                storage,
                worker: None,
                attempts: 0,
                worker_pin: pin,
                started: None,
            },
        );
        self.by_job.entry(job).or_default().insert(id);
        self.queue.push_back(id);
        self.queued_since_dispatch = true;
        if pin.is_some_and(|w| !self.workers.contains_key(&w)) {
            self.pins_may_dangle = true;
        }
    }

    /// Put a task whose worker was lost back at the front of the queue.
    pub fn requeue_front(&mut self, id: TaskId) {
        if self.tasks.contains_key(&id) && !self.queue.contains(&id) {
            self.queue.push_front(id);
            self.queued_since_dispatch = true;
        }
    }

    /// Forget a task (reported, cancelled or given up); it leaves its
    /// worker's running set, the queue and its job's index.
    pub fn remove(&mut self, id: TaskId) -> Option<Task> {
        let task = self.tasks.remove(&id)?;
        if let Some(w) = task.worker.and_then(|w| self.workers.get_mut(&w)) {
            w.running.remove(&id);
            if w.free_slots() > 0 {
                self.free.insert(w.id);
            }
        }
        if let Some(set) = self.by_job.get_mut(&task.job) {
            set.remove(&id);
            if set.is_empty() {
                self.by_job.remove(&task.job);
            }
        }
        if task.worker.is_none() {
            self.queue.retain(|t| *t != id);
        }
        Some(task)
    }

    /// Forget tasks and tell the workers running them to stop (one message
    /// per worker).
    pub fn cancel(&mut self, ids: impl IntoIterator<Item = TaskId>, out: &mut Vec<Command>) {
        let mut cancels: BTreeMap<WorkerId, Vec<u64>> = BTreeMap::new();
        for id in ids {
            if let Some(task) = self.remove(id) {
                if let Some(w) = task.worker.filter(|w| self.workers.contains_key(w)) {
                    cancels.entry(w).or_default().push(id.0);
                }
            }
        }
        for (worker, ids) in cancels {
            out.push(Command::ToWorker {
                worker,
                message: ToWorker::Cancel(ids),
            });
        }
    }

    /// Cancel every task of a job.
    pub fn cancel_job(&mut self, job: JobId, out: &mut Vec<Command>) {
        let ids = self.tasks_of(job);
        self.cancel(ids, out);
    }

    /// Jobs with a task pinned to this worker (queued or running).
    /// Queued tasks pinned to a worker that is gone (a job planned them
    /// from a view of the cluster that the worker's removal made stale):
    /// their ids, jobs and workers.
    pub fn pinned_to_missing(&self) -> Vec<(TaskId, JobId, WorkerId)> {
        self.queue
            .iter()
            .filter_map(|id| {
                let task = self.tasks.get(id)?;
                let pin = task.worker_pin?;
                (!self.workers.contains_key(&pin)).then_some((*id, task.job, pin))
            })
            .collect()
    }

    /// Whether queued tasks may be pinned to a missing worker; the next
    /// call says no until a worker leaves or such a task is queued.
    pub fn take_pins_may_dangle(&mut self) -> bool {
        std::mem::take(&mut self.pins_may_dangle)
    }

    pub fn jobs_pinned_to(&self, worker: WorkerId) -> BTreeSet<JobId> {
        self.tasks
            .values()
            .filter(|t| t.worker_pin == Some(worker))
            .map(|t| t.job)
            .collect()
    }

    /// Whether `worker` is the one running task `id` (a report from anyone
    /// else is stale).
    pub fn is_running_on(&self, id: TaskId, worker: WorkerId) -> bool {
        self.tasks
            .get(&id)
            .is_some_and(|t| t.worker == Some(worker))
    }

    /// Tasks waiting for a worker, and tasks running.
    pub fn task_counts(&self) -> (usize, usize) {
        let running = self.tasks.values().filter(|t| t.worker.is_some()).count();
        (self.tasks.len() - running, running)
    }

    // ----- placement -------------------------------------------------------

    /// Whether a worker holding or loading `load` partitions per thread (in
    /// thousandths) may take one more load: only below twice the least any
    /// worker holds, plus two, so a fast worker does not take most of a
    /// frame (and its memory) while another lags; the load waits a moment
    /// instead. Paused and retiring workers do not count. The least is
    /// recounted (over every worker) only when the last count would refuse:
    /// loads only grow during a persist, so a stale count errs towards
    /// allowing, and a balanced persist recounts a few times, not per task.
    fn may_load_more(&mut self, load: usize) -> bool {
        let bound = |least: usize| least.saturating_mul(2).saturating_add(2000);
        if load < bound(self.least_load_seen) {
            return true;
        }
        self.least_load_seen = self
            .workers
            .values()
            .filter(|w| w.retiring.is_none() && !w.paused)
            .map(Worker::load_per_thread)
            .min()
            .unwrap_or(usize::MAX / 4);
        load < bound(self.least_load_seen)
    }

    /// Hand queued tasks to workers with free threads: one `Run` per worker.
    /// A task pinned to a worker waits for it; a task next to a persisted
    /// partition waits for its holder; loads go where the fewest partitions
    /// per thread are held, and wait rather than go to a worker holding more
    /// than twice the least (plus two) per thread (then the look stops: the
    /// queue waits in order); the rest where the most threads are free. A
    /// retiring worker gets only its retire job's tasks. Tasks whose
    /// partition is gone for good are returned, removed.
    pub fn dispatch(
        &mut self,
        frames: &Frames,
        now: Instant,
        out: &mut Vec<Command>,
    ) -> Vec<Doomed> {
        let mut doomed = Vec::new();
        if self.queue.is_empty() || self.workers.is_empty() {
            return doomed;
        }
        // Every queued task is looked at when some may be doomed (new
        // ones, or partitions lost or dropped since); otherwise the look
        // stops once no thread is free, as nothing more can be placed.
        let look_at_all = std::mem::take(&mut self.queued_since_dispatch)
            || self.seen_doom_generation != frames.doom_generation();
        self.seen_doom_generation = frames.doom_generation();
        let mut batches: BTreeMap<WorkerId, Vec<TaskAssignment>> = BTreeMap::new();
        let mut waiting = VecDeque::new();
        // A load was held back for balance: so are the loads after it.
        let mut loads_held = false;
        while let Some(id) = self.queue.pop_front() {
            if !look_at_all && (self.free.is_empty() || loads_held) {
                self.queue.push_front(id);
                break;
            }
            let Some(task) = self.tasks.get(&id) else {
                continue;
            };
            if let Some(error) = task.pinned_to().and_then(|key| frames.unreachable(key)) {
                let task = self.tasks.remove(&id).expect("task present");
                if let Some(set) = self.by_job.get_mut(&task.job) {
                    set.remove(&id);
                    if set.is_empty() {
                        self.by_job.remove(&task.job);
                    }
                }
                doomed.push(Doomed {
                    job: task.job,
                    task,
                    error,
                });
                continue;
            }
            let job = task.job;
            let free = |w: &WorkerId| {
                self.free.contains(w) && self.workers.get(w).is_some_and(|w| w.takes(job))
            };
            let chosen = match (task.worker_pin, task.pinned_to()) {
                (Some(pin), _) => Some(pin).filter(free),
                (None, Some(key)) => frames.holder(key).filter(free),
                (None, None) => {
                    let loads = matches!(task.kind, TaskKind::Load { .. });
                    if loads && loads_held {
                        waiting.push_back(id);
                        continue;
                    }
                    let best = self
                        .free
                        .iter()
                        .filter_map(|w| self.workers.get(w))
                        .filter(|w| w.takes(job))
                        .min_by_key(|w| {
                            if loads {
                                (w.load_per_thread(), w.id)
                            } else {
                                (usize::MAX - w.free_slots(), w.id)
                            }
                        })
                        .map(|w| (w.id, w.load_per_thread()));
                    let held = best.is_some_and(|(_, load)| loads && !self.may_load_more(load));
                    loads_held |= held;
                    best.filter(|_| !held).map(|(id, _)| id)
                }
            };
            match chosen {
                Some(worker) => {
                    let task = self.tasks.get_mut(&id).expect("task present");
                    task.worker = Some(worker);
                    task.started = Some(now);
                    let w = self.workers.get_mut(&worker).expect("worker present");
                    w.running.insert(id);
                    if w.free_slots() == 0 {
                        self.free.remove(&worker);
                    }
                    batches.entry(worker).or_default().push(TaskAssignment {
                        id: id.0,
                        kind: task.kind.clone(),
                        storage: (*task.storage).clone(),
                    });
                }
                None => waiting.push_back(id),
            }
        }
        // Tasks looked at and left go back in front of those not looked
        // at, in order (moving only the former: the look may have stopped
        // early in a long queue).
        while let Some(id) = waiting.pop_back() {
            self.queue.push_front(id);
        }
        // Announce every delivery to its receiver before the sender runs:
        // peer endpoints admit deliveries only for announced jobs and senders.
        let mut announced = BTreeSet::new();
        for (&sender, tasks) in &batches {
            let Some(name) = self.workers.get(&sender).map(|w| w.info.cert_name.clone()) else {
                continue;
            };
            for (receiver, job) in tasks.iter().flat_map(|t| t.kind.peer_deliveries()) {
                let receiver = WorkerId(receiver);
                if receiver != sender
                    && self.workers.contains_key(&receiver)
                    && announced.insert((receiver, job, sender))
                {
                    out.push(Command::ToWorker {
                        worker: receiver,
                        message: ToWorker::Expect {
                            job,
                            sender: name.clone(),
                        },
                    });
                }
            }
        }
        for (worker, tasks) in batches {
            out.push(Command::ToWorker {
                worker,
                message: ToWorker::Run(tasks),
            });
        }
        doomed
    }
}
