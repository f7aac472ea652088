//! The scheduler's state machine. [`SchedulerState::handle`] takes one
//! [`Event`] and returns the [`Command`]s to carry out. It routes: worker
//! events to the [`Cluster`], reports to the job that owns the task (loads
//! are recorded in [`Frames`] first), requests through validation to a new
//! job ([`jobs::for_request`]), a lost worker to requeued tasks, a rebuild
//! job and the jobs that had work pinned there. After every event it tells
//! jobs about frames whose partitions changed, places queued tasks, and
//! reports progress. It knows no job kind.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Instant;

use stratus_protocol::catalog::Catalog;
use stratus_protocol::messages::{
    ClientRequest, ClusterInfo, HeldPartition, PartitionKey, StorageOptions, TaskOutput,
    TaskReport, ToClient, ToWorker,
};

use crate::activity::{Activity, RequestState, TaskRecord};
use crate::cluster::{Cluster, Task, Worker};
use crate::event::{Command, Config, Event};
use crate::frames::{Frame, Frames};
use crate::ids::{FrameId, IdGen, JobId, RequestId, TaskId, WorkerId};
use crate::jobs::rebuild::RebuildJob;
use crate::jobs::{self, Flow, Job, JobCx, Planning};

/// Counters for metrics.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub tasks_finished: u64,
    pub tasks_failed: u64,
    pub tasks_retried: u64,
    pub workers_lost: u64,
    pub partitions_rebuilt: u64,
    /// Partitions workers re-registered after a restart (not read again).
    pub partitions_restored: u64,
}

/// Something a job is asked to handle.
type JobCall<'a> = Box<dyn FnOnce(&mut dyn Job, &mut JobCx) -> Flow + 'a>;

/// A job and the request it answers (None: a background job).
#[derive(Debug)]
pub(crate) struct JobEntry {
    pub(crate) request: Option<RequestId>,
    pub(crate) job: Box<dyn Job>,
    /// The object-store options its tasks carry (its request's).
    pub(crate) storage: Arc<StorageOptions>,
}

/// The scheduler's whole state.
#[derive(Debug)]
pub struct SchedulerState {
    pub(crate) config: Config,
    pub(crate) ids: IdGen,
    pub(crate) cluster: Cluster,
    pub(crate) frames: Frames,
    pub(crate) jobs: BTreeMap<JobId, JobEntry>,
    pub(crate) job_of_request: HashMap<RequestId, JobId>,
    pub(crate) counters: Counters,
    pub(crate) activity: Activity,
    /// Frames whose partitions changed during this event.
    changed: BTreeSet<FrameId>,
    /// The `now` of the event being handled.
    clock: Instant,
    /// Since when the cluster has had no worker (None while it has one).
    workerless_since: Option<Instant>,
    /// Scheduler starts on this data directory, this one included.
    starts: u64,
    /// Until when restored partitions wait for their workers (None once
    /// the restore ended, or when nothing was restored).
    pub(crate) restoring: Option<Instant>,
    /// What the catalog last written holds.
    saved_catalog: crate::catalog::CatalogSignature,
    /// Failures blamed on a peer that is still a member, waiting for the
    /// verdict on it.
    held_failures: Vec<HeldFailure>,
}

/// A task that failed because it could not reach another worker, while that
/// worker is still a member: a receiver that died fails its senders before
/// the scheduler notices it is gone (its heartbeats stop). The failure is
/// held, its task still counted, until the peer is removed (the job hears
/// that a worker of its round is lost and runs the round again: the answer
/// is the same as without the fault) or the hold ends with the peer still
/// here (the failure stands).
#[derive(Debug, Clone)]
struct HeldFailure {
    task: TaskId,
    worker: WorkerId,
    peer: WorkerId,
    error: String,
    until: Instant,
}

/// A [`JobCx`] over the state's fields (a macro, so that the job table
/// stays borrowable beside it).
macro_rules! job_cx {
    ($state:ident, $id:expr, $entry:expr, $out:expr, $spawned:expr) => {
        JobCx {
            id: $id,
            request: $entry.request,
            storage: $entry.storage.clone(),
            now: $state.clock,
            cluster: &mut $state.cluster,
            frames: &mut $state.frames,
            ids: &mut $state.ids,
            activity: &mut $state.activity,
            out: $out,
            counters: &mut $state.counters,
            changed: &mut $state.changed,
            spawned: $spawned,
            // The job at hand is out of the table while it is driven.
            others_read: crate::jobs::OthersRead::of($state.jobs.values().map(|e| e.job.as_ref())),
        }
    };
}

impl SchedulerState {
    pub fn new(config: Config) -> Self {
        SchedulerState {
            config,
            ids: IdGen::default(),
            cluster: Cluster::default(),
            frames: Frames::default(),
            jobs: BTreeMap::new(),
            job_of_request: HashMap::new(),
            counters: Counters::default(),
            activity: Activity::default(),
            changed: BTreeSet::new(),
            clock: Instant::now(),
            workerless_since: None,
            starts: 1,
            restoring: None,
            saved_catalog: Frames::default().catalog_signature(),
            held_failures: Vec::new(),
        }
    }

    /// Start from the durable catalog, `catalog.starts` being this start's
    /// number: ids begin above every earlier start's (`starts << 32`), and
    /// its frames are registered complete, their partitions awaiting their
    /// workers for the restore grace, after which those still missing are
    /// rebuilt from lineage. Returns how many frames were restored and a
    /// warning per record that could not be.
    pub fn start_from(&mut self, now: Instant, catalog: &Catalog) -> (usize, Vec<String>) {
        self.starts = catalog.starts.max(1);
        self.ids = IdGen::starting_at(self.starts << 32);
        let (restored, warnings) = self.frames.restore(catalog);
        if self.frames.any_awaiting() {
            self.restoring = Some(now + self.config.restore_grace);
        }
        self.saved_catalog = self.frames.catalog_signature();
        (restored, warnings)
    }

    /// The durable catalog as it stands.
    pub fn catalog(&self) -> Catalog {
        self.frames.catalog(self.starts)
    }

    /// Whether restored partitions still wait for their workers.
    pub fn restoring(&self) -> bool {
        self.restoring.is_some()
    }

    /// Registered workers.
    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.cluster.workers()
    }

    /// Persisted frames (complete ones).
    pub fn frames(&self) -> impl Iterator<Item = &Frame> {
        self.frames.complete()
    }

    /// Tasks waiting for a worker, and tasks running.
    pub fn task_counts(&self) -> (usize, usize) {
        self.cluster.task_counts()
    }

    /// Jobs in progress (background rebuilds included).
    pub fn jobs_in_progress(&self) -> usize {
        self.jobs.len()
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Requests and the task stream (for the dashboard).
    pub fn activity(&self) -> &Activity {
        &self.activity
    }

    /// Cluster summary as `stratus info` prints it.
    pub fn cluster_info(&self) -> ClusterInfo {
        let workers = || self.cluster.workers();
        ClusterInfo {
            address: self.config.address.clone(),
            dashboard: self.config.dashboard.clone(),
            workers: workers().count() as u32,
            threads: workers().map(|w| w.info.nthreads).sum(),
            memory_limit: workers().map(|w| w.info.memory_limit).sum(),
            memory_used: workers().map(|w| w.memory_used).sum(),
            no_workers_timeout_seconds: self.config.no_workers_timeout.as_secs_f64(),
        }
    }

    /// How many workers the cluster wants now (see [`crate::adaptive`]).
    pub fn adaptive(&self) -> crate::adaptive::Target {
        let info = self.cluster_info();
        let (queued, running) = self.task_counts();
        let ended: Vec<f64> = self
            .activity
            .tasks()
            .filter(|t| t.outcome == "ok")
            .map(|t| t.end.saturating_duration_since(t.start).as_secs_f64())
            .collect();
        let load = crate::adaptive::Load {
            workers: info.workers,
            threads: info.threads,
            memory_limit: info.memory_limit,
            persisted_bytes: self
                .frames
                .complete()
                .flat_map(|f| f.partitions.iter())
                .map(|p| p.bytes)
                .sum(),
            tasks: queued + running,
            mean_task_seconds: (!ended.is_empty())
                .then(|| ended.iter().sum::<f64>() / ended.len() as f64),
        };
        crate::adaptive::desired_workers(&load, self.config.adaptive)
    }

    /// Feed one event; get the commands to carry out.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        self.clock = now;
        match event {
            Event::WorkerJoined { worker, info } => self.cluster.join(worker, info, now),
            Event::Heartbeat {
                worker,
                memory_used,
                spilled,
                paused,
            } => {
                if let Some(w) = self.cluster.worker_mut(worker) {
                    w.last_seen = now;
                    w.memory_used = memory_used.min(crate::outputs::MAX_REPORTED_MEMORY);
                    w.spilled_bytes = spilled.min(crate::outputs::MAX_REPORTED_MEMORY);
                    w.paused = paused;
                }
            }
            Event::TaskReports { worker, reports } => {
                if let Some(w) = self.cluster.worker_mut(worker) {
                    w.last_seen = now;
                }
                let known = self.cluster.worker(worker).is_some();
                for report in reports {
                    // A worker disconnected for an invalid output says nothing more.
                    if known && self.cluster.worker(worker).is_none() {
                        break;
                    }
                    self.on_report(worker, report, &mut out);
                    self.tell_changed_frames(&mut out);
                }
            }
            Event::WorkerLeft { worker, reason } => self.remove_worker(worker, &reason, &mut out),
            Event::WorkerHeld { worker, partitions } => self.adopt(worker, &partitions, &mut out),
            Event::Request {
                request,
                body,
                storage,
                run,
                client,
            } => {
                let quiet = matches!(
                    body,
                    ClientRequest::Info
                        | ClientRequest::List
                        | ClientRequest::LogMetrics { .. }
                        | ClientRequest::LogArtifact { .. }
                );
                if !quiet {
                    let target = body.target().map(str::to_string);
                    self.activity
                        .request_started(request.0, body.kind(), target, run, client, now);
                }
                self.on_request(request, body, storage, &mut out)
            }
            Event::RequestCancelled { request } => {
                self.activity
                    .request_ended(request.0, RequestState::Cancelled, now);
                if let Some(job) = self.job_of_request.get(&request).copied() {
                    self.abort(job, None, &mut out);
                }
            }
            Event::Tick => {
                let timeout = self.config.heartbeat_timeout;
                let silent: Vec<WorkerId> = self
                    .cluster
                    .workers()
                    .filter(|w| now.saturating_duration_since(w.last_seen) > timeout)
                    .map(|w| w.id)
                    .collect();
                for worker in silent {
                    let reason = format!(
                        "worker {} silent for more than {timeout:?}",
                        self.cluster.label(worker)
                    );
                    out.push(Command::DisconnectWorker {
                        worker,
                        reason: reason.clone(),
                    });
                    self.remove_worker(worker, &reason, &mut out);
                }
                self.settle_held_failures(now, &mut out);
                self.tick_jobs(&mut out);
            }
            Event::WorkerRetiring { worker } => self.retire_worker(worker, &mut out),
        }
        self.end_restore(now, &mut out);
        self.tell_changed_frames(&mut out);
        self.dispatch(&mut out);
        self.reap_background_jobs();
        self.without_workers(now, &mut out);
        self.track_requests(now, &mut out);
        self.save_catalog(&mut out);
        out
    }

    /// When the set of complete frames changed, the catalog is written
    /// first, before any reply of this event (a persist is durable before
    /// its client hears of it).
    fn save_catalog(&mut self, out: &mut Vec<Command>) {
        let signature = self.frames.catalog_signature();
        if signature != self.saved_catalog {
            self.saved_catalog = signature;
            out.insert(0, Command::SaveCatalog(Box::new(self.catalog())));
        }
    }

    /// A reconnected worker re-registers the partitions it kept: those its
    /// restored frames await are held there again, the rest it drops.
    fn adopt(&mut self, worker: WorkerId, held: &[HeldPartition], out: &mut Vec<Command>) {
        if self.cluster.worker(worker).is_none() {
            return;
        }
        let mut refused = Vec::new();
        for partition in held {
            match self.frames.adopt(&mut self.cluster, worker, partition) {
                Some(frame) => {
                    self.counters.partitions_restored += 1;
                    self.changed.insert(frame);
                }
                None => refused.push(partition.key),
            }
        }
        if !refused.is_empty() {
            out.push(Command::ToWorker {
                worker,
                message: ToWorker::Drop(refused),
            });
        }
    }

    /// The restore ends when every restored partition is held again, or
    /// when the grace is over: what is still missing is rebuilt.
    fn end_restore(&mut self, now: Instant, out: &mut Vec<Command>) {
        let Some(until) = self.restoring else {
            return;
        };
        if self.frames.any_awaiting() && now < until {
            return;
        }
        self.restoring = None;
        let missing = self.frames.stop_awaiting();
        for key in &missing {
            self.changed.insert(FrameId(key.frame));
        }
        if !missing.is_empty() {
            self.start_job(
                None,
                Box::new(RebuildJob::new(missing)),
                Arc::default(),
                out,
            );
        }
    }

    /// With no worker registered, no request can progress: each says it
    /// waits for workers (to its client and on the dashboard), and one that
    /// has waited for `no_workers_timeout` (counted from when the last worker
    /// left, or from its arrival if later) fails, naming the wait, instead of
    /// hanging. Background jobs wait on: nobody waits for them.
    fn without_workers(&mut self, now: Instant, out: &mut Vec<Command>) {
        let requests: Vec<(JobId, RequestId)> = self
            .jobs
            .iter()
            .filter_map(|(&job, entry)| Some((job, entry.request?)))
            .collect();
        if self.cluster.workers().next().is_some() {
            self.workerless_since = None;
            for (_, request) in requests {
                self.activity.set_waiting(request.0, None);
            }
            return;
        }
        let since = *self.workerless_since.get_or_insert(now);
        let timeout = self.config.no_workers_timeout;
        for (job, request) in requests {
            if self.activity.set_waiting(request.0, Some("workers")) {
                out.push(Command::Reply {
                    request,
                    message: ToClient::Progress {
                        stage: "waiting for workers".into(),
                        done: 0,
                        total: 0,
                        fetched: 0,
                    },
                });
            }
            let waiting_from = self
                .activity
                .started(request.0)
                .map_or(since, |started| started.max(since));
            if now.saturating_duration_since(waiting_from) >= timeout {
                let error = format!(
                    "no worker to run this on for {} (the scheduler's --no-workers-timeout): \
                     start workers (stratus-worker --scheduler-file ...) or check their logs",
                    stratus_protocol::units::format_duration(timeout)
                );
                self.abort(job, Some(error), out);
            }
        }
    }

    // ----- jobs ------------------------------------------------------------

    /// Start a job (for a request, or in the background).
    fn start_job(
        &mut self,
        request: Option<RequestId>,
        job: Box<dyn Job>,
        storage: Arc<StorageOptions>,
        out: &mut Vec<Command>,
    ) {
        let id = self.ids.job();
        self.jobs.insert(
            id,
            JobEntry {
                request,
                job,
                storage,
            },
        );
        if let Some(request) = request {
            self.job_of_request.insert(request, id);
        }
        self.drive(id, out, |job, cx| job.start(cx));
    }

    /// Let a job handle something, then carry out what it wants.
    fn drive(
        &mut self,
        id: JobId,
        out: &mut Vec<Command>,
        f: impl FnOnce(&mut dyn Job, &mut JobCx) -> Flow,
    ) {
        self.drive_dyn(id, out, Box::new(f));
    }

    /// [`Self::drive`] without a type parameter (a job that carries on as
    /// another drives again).
    fn drive_dyn(&mut self, id: JobId, out: &mut Vec<Command>, f: JobCall) {
        let Some(mut entry) = self.jobs.remove(&id) else {
            return;
        };
        let mut spawned = Vec::new();
        let flow = {
            let mut cx = job_cx!(self, id, entry, out, &mut spawned);
            f(entry.job.as_mut(), &mut cx)
        };
        let storage = entry.storage.clone();
        match flow {
            Flow::Continue => {
                self.jobs.insert(id, entry);
            }
            Flow::Done(message) => {
                self.cluster.cancel_job(id, out);
                self.end(id, entry.request, Some(message), out);
            }
            Flow::Fail(error) => {
                self.jobs.insert(id, entry);
                self.abort(id, Some(error), out);
            }
            Flow::Then(next) => {
                entry.job = next;
                self.jobs.insert(id, entry);
                self.drive_dyn(id, out, Box::new(|job, cx| job.start(cx)));
            }
        }
        // Background jobs a job starts (a cleanup) carry its options.
        for job in spawned {
            self.start_job(None, job, storage.clone(), out);
        }
    }

    /// End a job early: it undoes what it left, its tasks are cancelled, and
    /// its client gets `error` (none when the client is gone).
    fn abort(&mut self, id: JobId, error: Option<String>, out: &mut Vec<Command>) {
        let Some(mut entry) = self.jobs.remove(&id) else {
            return;
        };
        let mut spawned = Vec::new();
        {
            let mut cx = job_cx!(self, id, entry, out, &mut spawned);
            entry.job.abort(&mut cx);
        }
        self.cluster.cancel_job(id, out);
        self.end(id, entry.request, error.map(ToClient::Error), out);
        for job in spawned {
            self.start_job(None, job, entry.storage.clone(), out);
        }
    }

    fn end(
        &mut self,
        id: JobId,
        request: Option<RequestId>,
        answer: Option<ToClient>,
        out: &mut Vec<Command>,
    ) {
        let Some(request) = request else {
            return;
        };
        if self.job_of_request.get(&request) == Some(&id) {
            self.job_of_request.remove(&request);
        }
        if let Some(message) = answer {
            out.push(Command::Reply { request, message });
        }
    }

    /// Tell every job about frames whose partitions became held or lost
    /// (a job's answer may change more frames: repeat, boundedly).
    fn tell_changed_frames(&mut self, out: &mut Vec<Command>) {
        for _ in 0..16 {
            if self.changed.is_empty() {
                return;
            }
            let frames = std::mem::take(&mut self.changed);
            let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
            for frame in frames {
                for &job in &jobs {
                    self.drive(job, out, |j, cx| j.on_frame_changed(cx, frame));
                }
            }
        }
    }

    /// Background jobs end when their last task has reported (unless they
    /// wait on the cluster: [`Job::in_progress`]).
    fn reap_background_jobs(&mut self) {
        let cluster = &self.cluster;
        self.jobs.retain(|id, entry| {
            entry.request.is_some() || cluster.pending(*id) > 0 || entry.job.in_progress()
        });
    }

    /// Every job hears the tick ([`Job::on_tick`]).
    fn tick_jobs(&mut self, out: &mut Vec<Command>) {
        let jobs: Vec<JobId> = self.jobs.keys().copied().collect();
        for job in jobs {
            self.drive(job, out, |j, cx| j.on_tick(cx));
        }
    }

    /// A worker asked to stop (SIGTERM): retire it in the background, as
    /// `stratus retire --force` would (it goes either way). Once only.
    fn retire_worker(&mut self, worker: WorkerId, out: &mut Vec<Command>) {
        if self
            .cluster
            .worker(worker)
            .is_some_and(|w| w.retiring.is_none())
        {
            let job = jobs::retire::RetireJob::for_worker(worker);
            self.start_job(None, Box::new(job), Arc::default(), out);
        }
    }

    /// Frame names reserved by running jobs, with the job's kind.
    fn reserved_names(&self) -> BTreeMap<String, &'static str> {
        self.jobs
            .values()
            .filter_map(|e| Some((e.job.reserves()?.to_string(), e.job.kind())))
            .collect()
    }

    // ----- client requests -------------------------------------------------

    fn on_request(
        &mut self,
        request: RequestId,
        body: ClientRequest,
        storage: StorageOptions,
        out: &mut Vec<Command>,
    ) {
        let reply = |message| Command::Reply { request, message };
        match body {
            ClientRequest::LogMetrics { .. } | ClientRequest::LogArtifact { .. } => {
                // Run logging is served at the edge (it touches only the run store).
                out.push(reply(ToClient::Error(
                    "run logging is not a cluster request".into(),
                )))
            }
            ClientRequest::Info => out.push(reply(ToClient::Info(self.cluster_info()))),
            ClientRequest::List => out.push(reply(ToClient::Frames(
                self.frames.complete().map(Frame::summary).collect(),
            ))),
            ClientRequest::Unpersist { name } => match self.frames.by_name(&name) {
                Some(id) => {
                    self.frames.drop_frame(&mut self.cluster, id, out);
                    // Jobs waiting for its partitions find it gone.
                    self.changed.insert(id);
                    out.push(reply(ToClient::Done));
                }
                None => out.push(reply(ToClient::Error(format!(
                    "no persisted frame named '{name}'"
                )))),
            },
            ClientRequest::Len { source } if self.frames.by_name(&source).is_some() => {
                let frame = self.frames.by_name(&source).expect("just found");
                let rows = self.frames.get(frame).map_or(0, Frame::rows);
                out.push(reply(ToClient::Count(rows)));
            }
            body => {
                let reserved = self.reserved_names();
                let consumed: BTreeSet<FrameId> = self
                    .jobs
                    .values()
                    .filter_map(|e| e.job.consumes_frame())
                    .collect();
                let mut at = Planning {
                    frames: &self.frames,
                    cluster: &self.cluster,
                    ids: &mut self.ids,
                    reserved: &reserved,
                    consumed: &consumed,
                };
                match jobs::for_request(body, &mut at) {
                    Ok(job) => self.start_job(Some(request), job, Arc::new(storage), out),
                    Err(error) => out.push(reply(ToClient::Error(error))),
                }
            }
        }
    }

    // ----- task outcomes ---------------------------------------------------

    fn on_report(&mut self, worker: WorkerId, report: TaskReport, out: &mut Vec<Command>) {
        let (id, result, unreachable_peer) = match report {
            TaskReport::Finished { id, output } => (TaskId(id), Ok(output), None),
            TaskReport::Failed {
                id,
                error,
                unreachable_peer,
            } => (TaskId(id), Err(error), unreachable_peer.map(WorkerId)),
        };
        // A report for a task we no longer track (cancelled, or reassigned after
        // the worker was presumed lost) is ignored; a partition it loaded is freed
        // unless it is the copy we count on.
        if !self.cluster.is_running_on(id, worker) {
            let loaded: Vec<PartitionKey> = match &result {
                Ok(TaskOutput::Loaded { key, .. }) => vec![*key],
                Ok(TaskOutput::LoadedMany(parts)) => parts.iter().map(|p| p.0).collect(),
                _ => Vec::new(),
            };
            let uncounted: Vec<PartitionKey> = loaded
                .into_iter()
                .filter(|key| self.frames.holder(*key) != Some(worker))
                .collect();
            if !uncounted.is_empty() {
                out.push(Command::ToWorker {
                    worker,
                    message: ToWorker::Drop(uncounted),
                });
            }
            return;
        }
        let name = self
            .cluster
            .worker(worker)
            .map(|w| w.info.name.clone())
            .unwrap_or_default();
        // An output is checked against its task before any job reads it; a
        // worker that sends a malformed one is disconnected and its tasks
        // (this one included) run elsewhere.
        if let (Ok(output), Some(task)) = (&result, self.cluster.task(id)) {
            if let Err(field) = crate::outputs::check_output(&task.kind, output) {
                let reason = format!(
                    "worker '{name}' sent an invalid output for task {id} ({}): {field}",
                    task.kind.label()
                );
                out.push(Command::DisconnectWorker {
                    worker,
                    reason: reason.clone(),
                });
                self.remove_worker(worker, &reason, out);
                return;
            }
        }
        let result = match (result, unreachable_peer) {
            (Err(error), Some(peer)) if peer != worker => {
                if self.cluster.worker(peer).is_some() {
                    // Wait for the verdict on the peer: gone within twice the
                    // heartbeat timeout (it stopped answering) or not.
                    self.held_failures.push(HeldFailure {
                        task: id,
                        worker,
                        peer,
                        error,
                        until: self.clock + 2 * self.config.heartbeat_timeout,
                    });
                    return;
                }
                // Gone already, and this task's job was not told (its task
                // still counts): it is now, and decides.
                if let Some(job) = self.cluster.task(id).map(|t| t.job) {
                    self.drive(job, out, |j, cx| j.on_worker_lost(cx, peer));
                }
                if !self.cluster.is_running_on(id, worker) {
                    return;
                }
                Err(error)
            }
            (result, _) => result,
        };
        let Some(task) = self.cluster.remove(id) else {
            return;
        };
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.record_task(id, &task, &name, outcome);
        match result {
            Ok(output) => {
                self.counters.tasks_finished += 1;
                if let TaskOutput::Loaded { fetched, .. } = &output {
                    if let Some(request) = self.jobs.get(&task.job).and_then(|j| j.request) {
                        self.activity.fetched(request.0, *fetched);
                    }
                }
                self.record_loads(worker, id, &task, &output, out);
                self.drive(task.job, out, |job, cx| {
                    job.on_output(cx, &task.kind, output)
                });
            }
            Err(error) => {
                self.counters.tasks_failed += 1;
                self.drive(task.job, out, |job, cx| {
                    job.on_task_failed(cx, &task.kind, error)
                });
            }
        }
    }

    /// Partitions a load or a rebuild of ranges produced are held now.
    fn record_loads(
        &mut self,
        worker: WorkerId,
        id: TaskId,
        task: &Task,
        output: &TaskOutput,
        out: &mut Vec<Command>,
    ) {
        let loaded: Vec<(PartitionKey, u64, u64)> = match (output, &task.kind) {
            (
                TaskOutput::Loaded {
                    key, rows, bytes, ..
                },
                _,
            ) => vec![(*key, *rows, *bytes)],
            (
                TaskOutput::LoadedMany(parts),
                stratus_protocol::messages::TaskKind::RebuildRanges { .. },
            ) => parts.clone(),
            _ => return,
        };
        for part in loaded {
            let frame = FrameId(part.0.frame);
            if self.frames.loaded(&mut self.cluster, worker, id, part, out) {
                self.changed.insert(frame);
            }
        }
    }

    /// Record a task that ended on `worker` in the task stream.
    fn record_task(&mut self, id: TaskId, task: &Task, worker: &str, outcome: &'static str) {
        let request = self.jobs.get(&task.job).and_then(|j| j.request);
        let record = TaskRecord {
            id: id.0,
            request: request.map(|r| r.0),
            kind: task.kind.label(),
            worker: worker.to_string(),
            start: task.started.unwrap_or(self.clock),
            end: self.clock,
            outcome,
        };
        self.activity.task_ended(record, task.kind.step());
    }

    // ----- workers leaving -------------------------------------------------

    /// A worker is gone: its running tasks go back to the queue (or fail
    /// their job after too many lost workers), the partitions it held are
    /// rebuilt from lineage by a background job, and jobs with work pinned
    /// to it decide what to do (rounds run again).
    fn remove_worker(&mut self, worker: WorkerId, reason: &str, out: &mut Vec<Command>) {
        let Some((w, running)) = self.cluster.leave(worker) else {
            return;
        };
        self.counters.workers_lost += 1;
        let mut failed = Vec::new();
        for &id in running.iter().rev() {
            if let Some(task) = self.cluster.task(id).cloned() {
                self.record_task(id, &task, &w.info.name, "lost");
            }
            let max_attempts = self.config.max_task_attempts;
            let Some(task) = self.cluster.task_mut(id) else {
                continue;
            };
            if task.worker_pin.is_some() {
                continue; // its job decides (its round runs again)
            }
            task.attempts += 1;
            if task.attempts >= max_attempts {
                let error = format!(
                    "a task was lost with {} workers in a row (last: worker '{}', {reason})",
                    task.attempts, w.info.name
                );
                failed.push((self.cluster.remove(id).expect("task present"), error));
            } else {
                self.counters.tasks_retried += 1;
                self.cluster.requeue_front(id);
            }
        }
        let mut lost: Vec<PartitionKey> = w.partitions.iter().copied().collect();
        lost.sort_unstable();
        self.frames.release_holder(&lost);
        let pinned = self.cluster.jobs_pinned_to(worker);
        for (task, error) in failed {
            self.drive(task.job, out, |job, cx| {
                job.on_task_failed(cx, &task.kind, error)
            });
        }
        if !lost.is_empty() {
            // Each rebuilt partition's task carries its frame's options.
            self.start_job(None, Box::new(RebuildJob::new(lost)), Arc::default(), out);
        }
        for &job in &pinned {
            self.drive(job, out, |j, cx| j.on_worker_lost(cx, worker));
        }
        // Failures blamed on this worker were its loss: their jobs hear it
        // (unless they just did); a task a job still counts then fails.
        let (blamed, kept): (Vec<HeldFailure>, Vec<HeldFailure>) =
            std::mem::take(&mut self.held_failures)
                .into_iter()
                .filter(|h| h.worker != worker)
                .partition(|h| h.peer == worker);
        self.held_failures = kept;
        for held in blamed {
            let Some(job) = self.cluster.task(held.task).map(|t| t.job) else {
                continue;
            };
            if !pinned.contains(&job) {
                self.drive(job, out, |j, cx| j.on_worker_lost(cx, worker));
            }
            self.fail_held(held, out);
        }
    }

    /// Held failures whose hold ended with their peer still a member stand.
    fn settle_held_failures(&mut self, now: Instant, out: &mut Vec<Command>) {
        let (due, waiting): (Vec<HeldFailure>, Vec<HeldFailure>) =
            std::mem::take(&mut self.held_failures)
                .into_iter()
                .partition(|h| now >= h.until);
        self.held_failures = waiting;
        for held in due {
            self.fail_held(held, out);
        }
    }

    /// A held failure's task fails its job, if the job still counts it.
    fn fail_held(&mut self, held: HeldFailure, out: &mut Vec<Command>) {
        if !self.cluster.is_running_on(held.task, held.worker) {
            return;
        }
        let Some(task) = self.cluster.remove(held.task) else {
            return;
        };
        let name = self
            .cluster
            .worker(held.worker)
            .map(|w| w.info.name.clone())
            .unwrap_or_default();
        self.record_task(held.task, &task, &name, "failed");
        self.counters.tasks_failed += 1;
        self.drive(task.job, out, |job, cx| {
            job.on_task_failed(cx, &task.kind, held.error)
        });
    }

    // ----- placement and progress -------------------------------------------

    /// A task pinned to a worker that left before it was placed (its job
    /// planned it from a stale view: the worker went between two rounds)
    /// would wait forever. Its job hears that the worker is lost (a round
    /// runs again); a task its job still leaves pinned there fails it.
    fn unpin_from_missing(&mut self, out: &mut Vec<Command>) {
        if !self.cluster.take_pins_may_dangle() {
            return;
        }
        let orphans = self.cluster.pinned_to_missing();
        if orphans.is_empty() {
            return;
        }
        let jobs: BTreeSet<(JobId, WorkerId)> = orphans
            .iter()
            .map(|&(_, job, worker)| (job, worker))
            .collect();
        for (job, worker) in jobs {
            self.drive(job, out, |j, cx| j.on_worker_lost(cx, worker));
        }
        for (id, _, worker) in self.cluster.pinned_to_missing() {
            let Some(task) = self.cluster.remove(id) else {
                continue;
            };
            let error = format!(
                "worker {worker} left before a task pinned to it ({}) could start",
                task.kind.label()
            );
            self.drive(task.job, out, |job, cx| {
                job.on_task_failed(cx, &task.kind, error)
            });
        }
    }

    /// Place queued tasks; tasks that can never run fail their job.
    fn dispatch(&mut self, out: &mut Vec<Command>) {
        self.unpin_from_missing(out);
        for _ in 0..4 {
            let doomed = self.cluster.dispatch(&self.frames, self.clock, out);
            if doomed.is_empty() {
                return;
            }
            for d in doomed {
                self.drive(d.job, out, |job, cx| {
                    job.on_task_failed(cx, &d.task.kind, d.error)
                });
            }
            self.tell_changed_frames(out);
        }
    }

    /// Note requests that got their final answer, and tell clients whose
    /// requests progressed (one message per request per event).
    fn track_requests(&mut self, now: Instant, out: &mut Vec<Command>) {
        for command in out.iter() {
            if let Command::Reply { request, message } = command {
                if message.is_final() {
                    let state = match message {
                        ToClient::Error(e) => RequestState::Error(e.clone()),
                        _ => RequestState::Ok,
                    };
                    self.activity.request_ended(request.0, state, now);
                }
            }
        }
        for (request, step, fetched) in self.activity.take_changed() {
            out.push(Command::Reply {
                request: RequestId(request),
                message: ToClient::Progress {
                    stage: step.name.to_string(),
                    done: step.done,
                    total: step.total,
                    fetched,
                },
            });
        }
    }
}
