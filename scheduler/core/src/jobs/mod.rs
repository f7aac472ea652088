//! Jobs: what the cluster does for a request (or on its own, to rebuild
//! lost partitions). Each kind is one module behind the [`Job`] trait; the
//! state machine drives any job the same way and never matches on kinds.
//!
//! | kind | module | runs as |
//! |---|---|---|
//! | `len` of Parquet | [`len`] | list files, read footers ([`scan`]) |
//! | `head` | [`head`] | partition by partition until `n` rows |
//! | `persist` (Parquet or derived) | [`persist`] | one load per partition |
//! | `describe` | [`describe`] | rounds ([`rounds`]) of moments, then quantile histograms |
//! | `memory_usage` | [`memory`] | one round |
//! | group-by | [`groupby`] | partials, a merge tree, the final |
//! | sort / set_index | [`sort`] | sample; sort in place or shuffle |
//! | write | [`write`] | prepare, stage files, commit |
//! | rebuild (background) | [`rebuild`] | reload lost partitions from lineage |
//! | cleanup (background) | [`rebuild`] | undo what a failed job left |
//! | retire (a request, or a worker's SIGTERM) | [`retire`] | send partitions to other workers, they keep them, then exit |
//!
//! A new kind is one new module plus one line in [`for_request`].

pub mod describe;
pub mod groupby;
pub mod head;
pub mod len;
pub mod memory;
pub mod persist;
pub mod rebuild;
pub mod retire;
pub mod rounds;
pub mod scan;
pub mod sort;
pub mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use stratus_protocol::messages::{
    ClientRequest, StorageOptions, TaskKind, TaskOutput, ToClient, ToWorker,
};

use crate::activity::Activity;
use crate::cluster::Cluster;
use crate::event::Command;
use crate::frames::Frames;
use crate::ids::{FrameId, IdGen, JobId, RequestId, TaskId, WorkerId};
use crate::state::Counters;

/// What a job wants after handling something.
#[derive(Debug)]
pub enum Flow {
    /// Keep going (tasks are queued or it waits for partitions).
    Continue,
    /// The answer; the job ends.
    Done(ToClient),
    /// The job fails with this error: it is aborted (its tasks cancelled,
    /// [`Job::abort`] undoes what it left) and the client gets the error.
    Fail(String),
    /// The job carries on as another job (same request), started at once.
    Then(Box<dyn Job>),
}

/// One kind of work. Every method gets a [`JobCx`] to queue tasks and reach
/// the cluster and frames; none does I/O.
pub trait Job: Debug {
    /// Short name (`persist`, `describe`, ...).
    fn kind(&self) -> &'static str;

    /// The job was created: queue its first tasks (or answer at once).
    fn start(&mut self, cx: &mut JobCx) -> Flow;

    /// One of its tasks finished. Partitions a `Load` or `RebuildRanges`
    /// task loaded are already held in [`Frames`] when this is called.
    fn on_output(&mut self, cx: &mut JobCx, task: &TaskKind, output: TaskOutput) -> Flow;

    /// One of its tasks failed (or was lost with too many workers, or its
    /// input is gone for good).
    fn on_task_failed(&mut self, _cx: &mut JobCx, _task: &TaskKind, error: String) -> Flow {
        Flow::Fail(error)
    }

    /// A partition of `frame` became held, or was found lost for good.
    fn on_frame_changed(&mut self, _cx: &mut JobCx, _frame: FrameId) -> Flow {
        Flow::Continue
    }

    /// `worker` left while it ran, or was the pinned place of, a task of
    /// this job (those tasks are still counted; the job decides).
    fn on_worker_lost(&mut self, _cx: &mut JobCx, _worker: WorkerId) -> Flow {
        Flow::Continue
    }

    /// Time passed (the scheduler's tick): a job that waits on the cluster
    /// rather than on its own tasks (a retire waits for other jobs' tasks on
    /// its workers) looks again.
    fn on_tick(&mut self, _cx: &mut JobCx) -> Flow {
        Flow::Continue
    }

    /// Whether a background job goes on with no task of its own pending
    /// (background jobs otherwise end with their last task).
    fn in_progress(&self) -> bool {
        false
    }

    /// The job ends early: undo what it left behind (its tasks are
    /// cancelled by the caller).
    fn abort(&mut self, _cx: &mut JobCx) {}

    /// The frame name this job will create, reserved while it runs.
    fn reserves(&self) -> Option<&str> {
        None
    }

    /// The incomplete frame this job is loading.
    fn loads_frame(&self) -> Option<FrameId> {
        None
    }

    /// The persisted frames whose partitions this job reads (None: it may
    /// touch any frame's, as a retire or a rebuild does). A frame another
    /// running job reads is never consumed under it.
    fn reads_frames(&self) -> Option<Vec<FrameId>> {
        None
    }

    /// The frame this job replaces in place, freeing each old partition once
    /// its replacement exists ([`crate::frames::PersistedPartition::consumed`]);
    /// new requests on it are refused until the job ends.
    fn consumes_frame(&self) -> Option<FrameId> {
        None
    }
}

/// The frames the other running jobs read ([`Job::reads_frames`]).
#[derive(Debug, Default)]
pub struct OthersRead {
    any: bool,
    frames: BTreeSet<FrameId>,
}

impl OthersRead {
    /// Over `jobs` (the running jobs but the one at hand).
    pub fn of<'a>(jobs: impl Iterator<Item = &'a dyn Job>) -> OthersRead {
        let mut read = OthersRead::default();
        for job in jobs {
            match job.reads_frames() {
                Some(frames) => read.frames.extend(frames),
                None => read.any = true,
            }
        }
        read
    }

    /// Whether another running job may read `frame`'s partitions.
    pub fn reads(&self, frame: FrameId) -> bool {
        self.any || self.frames.contains(&frame)
    }
}

/// What a job may touch while it handles something.
pub struct JobCx<'a> {
    pub id: JobId,
    /// None for background jobs (rebuilds, cleanups).
    pub request: Option<RequestId>,
    /// Object-store options of the request, carried by the tasks it spawns
    /// (and kept by the frames it creates, for rebuilds).
    pub storage: Arc<StorageOptions>,
    pub now: Instant,
    pub cluster: &'a mut Cluster,
    pub frames: &'a mut Frames,
    pub(crate) ids: &'a mut IdGen,
    pub(crate) activity: &'a mut Activity,
    pub out: &'a mut Vec<Command>,
    pub counters: &'a mut Counters,
    /// Frames whose partitions changed (jobs waiting on them are told).
    pub(crate) changed: &'a mut BTreeSet<FrameId>,
    /// Background jobs to start once this one returns.
    pub(crate) spawned: &'a mut Vec<Box<dyn Job>>,
    /// What the other running jobs read.
    pub others_read: OthersRead,
}

impl JobCx<'_> {
    /// Queue a task for this job.
    pub fn spawn(&mut self, kind: TaskKind) -> TaskId {
        self.add(None, kind, self.storage.clone())
    }

    /// Queue a task that reads with other object-store options than the
    /// job's (a rebuild reads with its frame's).
    pub fn spawn_with_storage(&mut self, kind: TaskKind, storage: Arc<StorageOptions>) -> TaskId {
        self.add(None, kind, storage)
    }

    /// Queue a task that must run on `worker`.
    pub fn spawn_on(&mut self, worker: WorkerId, kind: TaskKind) -> TaskId {
        self.add(Some(worker), kind, self.storage.clone())
    }

    fn add(
        &mut self,
        pin: Option<WorkerId>,
        kind: TaskKind,
        storage: Arc<StorageOptions>,
    ) -> TaskId {
        let id = self.ids.task();
        let step = kind.step();
        self.cluster.add(id, self.id, kind, pin, storage);
        if let Some(request) = self.request {
            self.activity.task_added(request.0, step);
        }
        id
    }

    /// A fresh frame id.
    pub fn new_frame_id(&mut self) -> FrameId {
        self.ids.frame()
    }

    /// Tasks of this job not yet reported.
    pub fn pending(&self) -> usize {
        self.cluster.pending(self.id)
    }

    /// Cancel every task of this job.
    pub fn cancel_tasks(&mut self) {
        self.cluster.cancel_job(self.id, self.out);
    }

    /// Forget a frame (its holders free it; its loads are cancelled; jobs
    /// waiting for it find it gone).
    pub fn drop_frame(&mut self, frame: FrameId) {
        self.frames.drop_frame(self.cluster, frame, self.out);
        self.changed.insert(frame);
    }

    /// Tell every worker to drop what peers delivered for this job.
    pub fn forget_mailboxes(&mut self) {
        self.cluster
            .broadcast(ToWorker::Forget { job: self.id.0 }, self.out);
    }

    /// Partitions of `frame` became held or lost.
    pub fn frame_changed(&mut self, frame: FrameId) {
        self.changed.insert(frame);
    }

    /// Start a background job (no request) once this one returns.
    pub fn start_background(&mut self, job: Box<dyn Job>) {
        self.spawned.push(job);
    }
}

/// What requests are checked against when they become jobs.
pub struct Planning<'a> {
    pub frames: &'a Frames,
    pub cluster: &'a Cluster,
    /// For ids a job needs before it starts (a sort's new frame).
    pub ids: &'a mut IdGen,
    /// Frame names reserved by running jobs, with the kind of the job.
    pub reserved: &'a BTreeMap<String, &'static str>,
    /// Frames running jobs replace in place ([`Job::consumes_frame`]).
    pub consumed: &'a BTreeSet<FrameId>,
}

impl Planning<'_> {
    /// An error if `name` is reserved by a running job.
    pub fn check_not_reserved(&self, name: &str) -> Result<(), String> {
        match self.reserved.get(name) {
            Some(kind) => Err(format!("a {kind} into '{name}' is already running")),
            None => Ok(()),
        }
    }

    /// The complete frame `source` names, or the error for a step that needs one
    /// (also while a running job replaces it in place).
    pub fn persisted(&self, source: &str) -> Result<FrameId, String> {
        self.frame_named(source)?
            .ok_or_else(|| crate::requests::not_persisted(source))
    }

    /// The complete frame `source` names, if any (a source that is not one
    /// is a Parquet path); an error while a running job replaces it in place.
    pub fn frame_named(&self, source: &str) -> Result<Option<FrameId>, String> {
        let Some(frame) = self.frames.by_name(source) else {
            return Ok(None);
        };
        if self.consumed.contains(&frame) {
            return Err(format!(
                "frame '{source}' is being replaced in place by a running job (its old partitions are freed as the new ones are made); use it when that job ends"
            ));
        }
        Ok(Some(frame))
    }
}

/// The job for a request, checked against the frames: the registry of job
/// kinds. Requests answered at once (`info`, `list`, ...) never get here.
pub fn for_request(body: ClientRequest, at: &mut Planning) -> Result<Box<dyn Job>, String> {
    match body {
        ClientRequest::Len { source } => Ok(Box::new(len::LenJob::new(source))),
        ClientRequest::Head { source, n, columns } => head::HeadJob::plan(at, source, n, columns),
        ClientRequest::Persist {
            source,
            name,
            replace,
            columns,
            steps,
        } => persist::plan(at, source, name, replace, columns, steps),
        ClientRequest::Describe { source, columns } => describe::plan(at, source, columns),
        ClientRequest::MemoryUsage { source } => memory::plan(at, source),
        ClientRequest::GroupBy {
            source,
            keys,
            aggs,
            all_numeric,
        } => groupby::plan(at, source, keys, aggs, all_numeric),
        ClientRequest::Sort { source, by, into } => sort::plan(at, source, by, into),
        ClientRequest::Write {
            source,
            dest,
            partition_by,
            overwrite,
        } => write::plan(at, source, dest, partition_by, overwrite),
        ClientRequest::Retire { workers, force } => retire::plan(at, workers, force),
        other => Err(format!("'{}' is not a cluster job", other.kind())),
    }
}
