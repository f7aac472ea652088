//! The scheduler's decision logic as a sans-IO state machine.
//!
//! [`SchedulerState::handle`] takes one [`Event`] (a worker joined, a task
//! finished, a client asked for something, time passed) and returns the
//! [`Command`]s to carry out (send tasks to a worker, answer a request, drop a
//! worker). It owns the cluster (workers, their threads and memory), the
//! persisted frames with their lineage, the jobs of client requests and the
//! task queue. It does no I/O and reads no clock: the caller passes `now`.
//! The actor in [`crate::server`] feeds it and executes its commands.
//!
//! A job on a Parquet source runs in phases: list the files (one task), read
//! their footers (tasks spread over the workers), then plan partitions and
//! run one task per partition. Persisted partitions remember the Parquet
//! partition they came from, so a partition lost with its worker is rebuilt by
//! loading it again on another worker.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use stratus_protocol::messages::{
    ClientRequest, ClusterInfo, FileRef, FooterMeta, FrameSummary, HeadInput, ParquetPartition,
    PartitionKey, TaskAssignment, TaskKind, TaskOutput, TaskReport, ToClient, ToWorker, WorkerInfo,
};

use crate::activity::{Activity, RequestState, TaskRecord};
use crate::planning;
use crate::reduce::{
    DescribeJob, GroupByJob, MemoryJob, ReduceJob, SortJob, SortOutcome, WriteJob,
};
use arrow_schema::{Schema, SchemaRef};
use stratus_protocol::messages::{
    AggFunc, GroupBySpec, LoadInput, PeerRef, RangeSource, Step, WriteSpec,
};

/// Identifies a worker connection.
pub type WorkerId = u64;
/// Identifies one client request (one stream).
pub type RequestId = u64;
/// Identifies a task.
pub type TaskId = u64;
type JobId = u64;
type FrameId = u64;

/// Settings of the state machine.
#[derive(Debug, Clone)]
pub struct Config {
    /// A worker silent for longer than this is removed.
    pub heartbeat_timeout: Duration,
    /// A task whose worker was lost this many times fails its job.
    pub max_task_attempts: u32,
    /// Public address (`quic://HOST:PORT`), for `info`.
    pub address: String,
    /// Dashboard URL, for `info`.
    pub dashboard: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_timeout: Duration::from_secs(5),
            max_task_attempts: 3,
            address: String::new(),
            dashboard: String::new(),
        }
    }
}

/// Something that happened.
#[derive(Debug, Clone)]
pub enum Event {
    WorkerJoined {
        worker: WorkerId,
        info: WorkerInfo,
    },
    Heartbeat {
        worker: WorkerId,
        memory_used: u64,
    },
    TaskReports {
        worker: WorkerId,
        reports: Vec<TaskReport>,
    },
    WorkerLeft {
        worker: WorkerId,
        reason: String,
    },
    Request {
        request: RequestId,
        body: ClientRequest,
        /// The run the client's session logs to.
        run: Option<String>,
    },
    /// The client went away or cancelled; no answer is wanted.
    RequestCancelled {
        request: RequestId,
    },
    /// Time passed (checks heartbeats).
    Tick,
}

/// Something to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    ToWorker {
        worker: WorkerId,
        message: ToWorker,
    },
    Reply {
        request: RequestId,
        message: ToClient,
    },
    DisconnectWorker {
        worker: WorkerId,
        reason: String,
    },
}

/// A registered worker as the scheduler sees it.
#[derive(Debug, Clone)]
pub struct Worker {
    pub id: WorkerId,
    pub info: WorkerInfo,
    pub last_seen: Instant,
    pub memory_used: u64,
    pub running: HashSet<TaskId>,
    pub partitions: HashSet<PartitionKey>,
    pub persisted_bytes: u64,
}

impl Worker {
    fn free_slots(&self) -> usize {
        (self.info.nthreads as usize).saturating_sub(self.running.len())
    }
}

#[derive(Debug, Clone)]
struct Task {
    job: Option<JobId>,
    kind: TaskKind,
    worker: Option<WorkerId>,
    attempts: u32,
    /// A worker-level task (a reduce over all its partitions) must run there.
    worker_pin: Option<WorkerId>,
    /// When it was handed to its worker.
    started: Option<Instant>,
}

impl Task {
    /// The persisted partition this task must run next to, if any.
    fn pinned_to(&self) -> Option<PartitionKey> {
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
    /// What it is rebuilt from if its worker is lost; None when it cannot
    /// be (a frame sorted twice by shuffles).
    pub origin: Option<Origin>,
    pub rows: u64,
    pub bytes: u64,
    pub holder: Option<WorkerId>,
    /// Load task in flight for it (first load or rebuild).
    pub loading: Option<TaskId>,
    /// Why it could not be rebuilt after its worker was lost, if it could not.
    pub lost: Option<String>,
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
    /// Schema of the persisted batches.
    pub schema: SchemaRef,
    pub partitions: Vec<PersistedPartition>,
    /// False while its persist job runs.
    pub complete: bool,
}

impl Frame {
    fn summary(&self) -> FrameSummary {
        FrameSummary {
            name: self.name.clone(),
            source: self.source.clone(),
            rows: self.partitions.iter().map(|p| p.rows).sum(),
            bytes: self.partitions.iter().map(|p| p.bytes).sum(),
            partitions: self.partitions.len() as u32,
            partitions_held: self
                .partitions
                .iter()
                .filter(|p| p.holder.is_some())
                .count() as u32,
        }
    }
}

#[derive(Debug)]
enum Goal {
    Len,
    Persist {
        name: String,
        replace: bool,
        columns: Option<Vec<String>>,
        steps: Vec<Step>,
    },
    Head {
        n: u64,
        columns: Option<Vec<String>>,
    },
    /// A reduction of a persisted frame (describe, memory usage).
    Reduce,
}

#[derive(Debug)]
enum Phase {
    Listing,
    Footers {
        footers: Vec<FooterMeta>,
    },
    Loading {
        frame: FrameId,
    },
    /// Reading heads partition by partition until enough rows.
    Heading {
        inputs: VecDeque<HeadInput>,
        tables: Vec<Vec<u8>>,
        rows: u64,
    },
    /// Rounds of worker-level reduce tasks over a persisted frame; a round
    /// starts once every partition is held (`running` false until then).
    Reducing {
        frame: FrameId,
        reduce: Box<ReduceJob>,
        running: bool,
    },
}

#[derive(Debug)]
struct Job {
    request: RequestId,
    source: String,
    goal: Goal,
    phase: Phase,
    tasks: HashSet<TaskId>,
}

/// Counters for metrics.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    pub tasks_finished: u64,
    pub tasks_failed: u64,
    pub tasks_retried: u64,
    pub workers_lost: u64,
    pub partitions_rebuilt: u64,
}

/// The scheduler's whole state.
#[derive(Debug)]
pub struct SchedulerState {
    config: Config,
    workers: BTreeMap<WorkerId, Worker>,
    frames: BTreeMap<FrameId, Frame>,
    tasks: HashMap<TaskId, Task>,
    queue: VecDeque<TaskId>,
    jobs: HashMap<JobId, Job>,
    job_of_request: HashMap<RequestId, JobId>,
    next_id: u64,
    counters: Counters,
    activity: Activity,
    /// The `now` of the event being handled.
    clock: Instant,
}

impl SchedulerState {
    pub fn new(config: Config) -> Self {
        SchedulerState {
            config,
            workers: BTreeMap::new(),
            frames: BTreeMap::new(),
            tasks: HashMap::new(),
            queue: VecDeque::new(),
            jobs: HashMap::new(),
            job_of_request: HashMap::new(),
            next_id: 1,
            counters: Counters::default(),
            activity: Activity::default(),
            clock: Instant::now(),
        }
    }

    /// Registered workers.
    pub fn workers(&self) -> impl Iterator<Item = &Worker> {
        self.workers.values()
    }

    /// Persisted frames (complete ones).
    pub fn frames(&self) -> impl Iterator<Item = &Frame> {
        self.frames.values().filter(|f| f.complete)
    }

    /// Tasks waiting for a worker, and tasks running.
    pub fn task_counts(&self) -> (usize, usize) {
        let running = self.tasks.values().filter(|t| t.worker.is_some()).count();
        (self.tasks.len() - running, running)
    }

    /// Jobs in progress.
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
        ClusterInfo {
            address: self.config.address.clone(),
            dashboard: self.config.dashboard.clone(),
            workers: self.workers.len() as u32,
            threads: self.workers.values().map(|w| w.info.nthreads).sum(),
            memory_limit: self.workers.values().map(|w| w.info.memory_limit).sum(),
            memory_used: self.workers.values().map(|w| w.memory_used).sum(),
        }
    }

    fn fresh_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        id
    }

    /// Feed one event; get the commands to carry out.
    pub fn handle(&mut self, now: Instant, event: Event) -> Vec<Command> {
        let mut out = Vec::new();
        self.clock = now;
        match event {
            Event::WorkerJoined { worker, info } => {
                self.workers.insert(
                    worker,
                    Worker {
                        id: worker,
                        info,
                        last_seen: now,
                        memory_used: 0,
                        running: HashSet::new(),
                        partitions: HashSet::new(),
                        persisted_bytes: 0,
                    },
                );
            }
            Event::Heartbeat {
                worker,
                memory_used,
            } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.last_seen = now;
                    w.memory_used = memory_used;
                }
            }
            Event::TaskReports { worker, reports } => {
                if let Some(w) = self.workers.get_mut(&worker) {
                    w.last_seen = now;
                }
                for report in reports {
                    self.on_report(worker, report, &mut out);
                }
            }
            Event::WorkerLeft { worker, reason } => self.remove_worker(worker, &reason, &mut out),
            Event::Request { request, body, run } => {
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
                        .request_started(request, body.kind(), target, run, now);
                }
                self.on_request(request, body, &mut out)
            }
            Event::RequestCancelled { request } => {
                self.activity
                    .request_ended(request, RequestState::Cancelled, now);
                if let Some(job) = self.job_of_request.get(&request).copied() {
                    self.abort_job(job, None, &mut out);
                }
            }
            Event::Tick => {
                let timeout = self.config.heartbeat_timeout;
                let silent: Vec<WorkerId> = self
                    .workers
                    .values()
                    .filter(|w| now.saturating_duration_since(w.last_seen) > timeout)
                    .map(|w| w.id)
                    .collect();
                for worker in silent {
                    let reason = format!(
                        "worker {} silent for more than {:?}",
                        self.worker_label(worker),
                        timeout
                    );
                    out.push(Command::DisconnectWorker {
                        worker,
                        reason: reason.clone(),
                    });
                    self.remove_worker(worker, &reason, &mut out);
                }
            }
        }
        self.dispatch(&mut out);
        self.track_requests(now, &mut out);
        out
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
                    self.activity.request_ended(*request, state, now);
                }
            }
        }
        for (request, step) in self.activity.take_changed() {
            out.push(Command::Reply {
                request,
                message: ToClient::Progress {
                    stage: step.name.to_string(),
                    done: step.done,
                    total: step.total,
                },
            });
        }
    }

    /// Record a task that ended on `worker` in the task stream.
    fn record_task(&mut self, id: TaskId, task: &Task, worker: &str, outcome: &'static str) {
        let request = task.job.and_then(|j| self.jobs.get(&j)).map(|j| j.request);
        let record = TaskRecord {
            id,
            request,
            kind: task.kind.label(),
            worker: worker.to_string(),
            start: task.started.unwrap_or(self.clock),
            end: self.clock,
            outcome,
        };
        self.activity.task_ended(record, task.kind.step());
    }

    fn worker_label(&self, worker: WorkerId) -> String {
        match self.workers.get(&worker) {
            Some(w) => format!("'{}' ({})", w.info.name, w.info.host),
            None => format!("#{worker}"),
        }
    }

    // ----- client requests -------------------------------------------------

    fn on_request(&mut self, request: RequestId, body: ClientRequest, out: &mut Vec<Command>) {
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
                self.frames().map(Frame::summary).collect(),
            ))),
            ClientRequest::Unpersist { name } => match self.frame_by_name(&name) {
                Some(id) => {
                    self.drop_frame(id, out);
                    out.push(reply(ToClient::Done));
                }
                None => out.push(reply(ToClient::Error(format!(
                    "no persisted frame named '{name}'"
                )))),
            },
            ClientRequest::Len { source } => {
                if let Some(id) = self.frame_by_name(&source) {
                    let rows = self.frames[&id].partitions.iter().map(|p| p.rows).sum();
                    out.push(reply(ToClient::Count(rows)));
                } else {
                    self.start_job(request, source, Goal::Len, out);
                }
            }
            ClientRequest::Head { source, n, columns } => {
                if let Some(id) = self.frame_by_name(&source) {
                    let frame = &self.frames[&id];
                    let inputs = (0..frame.partitions.len() as u32)
                        .map(|index| HeadInput::Persisted(PartitionKey { frame: id, index }))
                        .collect();
                    let job = self.new_job(request, source, Goal::Head { n, columns });
                    self.jobs.get_mut(&job).expect("job just made").phase = Phase::Heading {
                        inputs,
                        tables: Vec::new(),
                        rows: 0,
                    };
                    self.next_head(job, out);
                } else {
                    self.start_job(request, source, Goal::Head { n, columns }, out);
                }
            }
            ClientRequest::Describe { source, columns } => {
                self.start_describe(request, source, columns, out)
            }
            ClientRequest::MemoryUsage { source } => {
                let Some(frame) = self.frame_by_name(&source) else {
                    out.push(reply(ToClient::Error(not_persisted(&source))));
                    return;
                };
                let job = self.new_job(request, source, Goal::Reduce);
                self.jobs.get_mut(&job).expect("job just made").phase = Phase::Reducing {
                    frame,
                    reduce: Box::new(ReduceJob::Memory(MemoryJob::default())),
                    running: false,
                };
                self.start_round(job, out);
            }
            ClientRequest::GroupBy {
                source,
                keys,
                aggs,
                all_numeric,
            } => self.start_groupby(request, source, keys, aggs, all_numeric, out),
            ClientRequest::Sort { source, by, into } => {
                let Some(frame) = self.frame_by_name(&source) else {
                    out.push(reply(ToClient::Error(not_persisted(&source))));
                    return;
                };
                if self.frames[&frame].schema.field_with_name(&by).is_err() {
                    out.push(reply(ToClient::Error(format!(
                        "sort: '{source}' has no column '{by}'"
                    ))));
                    return;
                }
                if let Some(name) = &into {
                    if self.frame_by_name(name).is_some() {
                        out.push(reply(ToClient::Error(format!(
                            "a frame named '{name}' is already persisted (unpersist it first)"
                        ))));
                        return;
                    }
                }
                let partitions = self.frames[&frame].partitions.len();
                let new_frame = self.fresh_id();
                let job = self.new_job(request, source, Goal::Reduce);
                self.jobs.get_mut(&job).expect("job just made").phase = Phase::Reducing {
                    frame,
                    reduce: Box::new(ReduceJob::Sort(SortJob::new(
                        by, into, new_frame, partitions,
                    ))),
                    running: false,
                };
                self.start_round(job, out);
            }
            ClientRequest::Write {
                source,
                dest,
                partition_by,
                overwrite,
            } => {
                let Some(frame) = self.frame_by_name(&source) else {
                    out.push(reply(ToClient::Error(not_persisted(&source))));
                    return;
                };
                let schema = &self.frames[&frame].schema;
                if let Some(missing) = partition_by
                    .iter()
                    .find(|c| schema.field_with_name(c).is_err())
                {
                    out.push(reply(ToClient::Error(format!(
                        "write: '{source}' has no column '{missing}' to partition by"
                    ))));
                    return;
                }
                let job = self.new_job(request, source, Goal::Reduce);
                let spec = WriteSpec {
                    dest,
                    partition_by,
                    job_id: format!("job-{job}"),
                    overwrite,
                };
                self.jobs.get_mut(&job).expect("job just made").phase = Phase::Reducing {
                    frame,
                    reduce: Box::new(ReduceJob::Write(WriteJob::new(spec))),
                    running: false,
                };
                self.start_round(job, out);
            }
            ClientRequest::Persist {
                source,
                name,
                replace,
                columns,
                steps,
            } => {
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
                if !valid {
                    out.push(reply(ToClient::Error(format!(
                        "invalid frame name '{name}': use letters, digits, '_', '-' and '.'"
                    ))));
                    return;
                }
                if self.frame_by_name(&name).is_some() && !replace {
                    out.push(reply(ToClient::Error(format!(
                        "a frame named '{name}' is already persisted (use --replace to replace it)"
                    ))));
                    return;
                }
                let busy = self.jobs.values().any(
                    |j| matches!(&j.goal, Goal::Persist { name: other, .. } if *other == name),
                );
                if busy {
                    out.push(reply(ToClient::Error(format!(
                        "a persist of '{name}' is already running"
                    ))));
                    return;
                }
                if let Some(parent) = self.frame_by_name(&source) {
                    let mut own = Vec::new();
                    if let Some(columns) = columns {
                        own.push(Step::Select(columns));
                    }
                    own.extend(steps);
                    let derived = Derived {
                        name,
                        replace,
                        steps: own,
                        order: None,
                    };
                    self.persist_derived(request, parent, derived, out);
                    return;
                }
                self.start_job(
                    request,
                    source,
                    Goal::Persist {
                        name,
                        replace,
                        columns,
                        steps,
                    },
                    out,
                );
            }
        }
    }

    /// Persist a frame derived from a persisted one: each new partition is
    /// computed next to its parent partition, moving no data.
    fn persist_derived(
        &mut self,
        request: RequestId,
        parent: FrameId,
        derived: Derived,
        out: &mut Vec<Command>,
    ) {
        let Derived {
            name,
            replace,
            steps: own,
            order,
        } = derived;
        let p = &self.frames[&parent];
        let schema = match stratus_plan::steps_schema(&p.schema, &own) {
            Ok(schema) => schema,
            Err(e) => {
                out.push(Command::Reply {
                    request,
                    message: ToClient::Error(e.to_string()),
                });
                return;
            }
        };
        let mut lineage = p.steps.clone();
        lineage.extend(own.iter().cloned());
        let (columns, parents) = (p.columns.clone(), p.partitions.clone());
        let source = p.name.clone();
        let job = self.new_job(
            request,
            source.clone(),
            Goal::Persist {
                name: name.clone(),
                replace,
                columns: None,
                steps: own.clone(),
            },
        );
        let frame = self.fresh_id();
        let order = order.unwrap_or_else(|| (0..parents.len()).collect());
        let mut partitions = Vec::with_capacity(parents.len());
        for (index, parent_index) in order.into_iter().enumerate() {
            let parent_part = parents[parent_index].clone();
            let index = index as u32;
            let task = self.add_task(
                Some(job),
                TaskKind::Load {
                    key: PartitionKey { frame, index },
                    input: LoadInput::Persisted(PartitionKey {
                        frame: parent,
                        index: parent_index as u32,
                    }),
                    columns: None,
                    steps: own.clone(),
                },
            );
            let origin = parent_part.origin.map(|origin| match origin {
                Origin::Range {
                    lineage,
                    range,
                    mut steps,
                } => {
                    steps.extend(own.iter().cloned());
                    Origin::Range {
                        lineage,
                        range,
                        steps,
                    }
                }
                parquet @ Origin::Parquet(_) => parquet,
            });
            partitions.push(PersistedPartition {
                origin,
                rows: parent_part.rows,
                bytes: 0,
                holder: None,
                loading: Some(task),
                lost: None,
            });
        }
        self.jobs.get_mut(&job).expect("job just made").phase = Phase::Loading { frame };
        self.frames.insert(
            frame,
            Frame {
                id: frame,
                name,
                source,
                columns,
                steps: lineage,
                schema,
                partitions,
                complete: false,
            },
        );
    }

    fn start_groupby(
        &mut self,
        request: RequestId,
        source: String,
        keys: Vec<String>,
        mut aggs: Vec<(String, AggFunc)>,
        all_numeric: Option<AggFunc>,
        out: &mut Vec<Command>,
    ) {
        let reply = |message| Command::Reply { request, message };
        let Some(frame) = self.frame_by_name(&source) else {
            out.push(reply(ToClient::Error(not_persisted(&source))));
            return;
        };
        let schema = self.frames[&frame].schema.clone();
        if let Some(func) = all_numeric {
            for f in schema.fields() {
                // pandas: count() covers every column, the others numeric ones.
                let eligible = func == AggFunc::Count || stratus_plan::is_numeric(f.data_type());
                if eligible && !keys.contains(f.name()) {
                    aggs.push((f.name().clone(), func));
                }
            }
        }
        let spec = GroupBySpec { keys, aggs };
        // Check the spec against the schema now: errors before any task runs.
        let engine_spec = stratus_engine::groupby::GroupBy {
            keys: spec.keys.clone(),
            aggs: spec
                .aggs
                .iter()
                .map(|(c, f)| stratus_engine::groupby::AggSpec::new(c.clone(), *f))
                .collect(),
        };
        if let Err(e) = engine_spec.partial_schema(&schema) {
            out.push(reply(ToClient::Error(format!(
                "group-by on '{source}': {e}"
            ))));
            return;
        }
        let job = self.new_job(request, source, Goal::Reduce);
        self.jobs.get_mut(&job).expect("job just made").phase = Phase::Reducing {
            frame,
            reduce: Box::new(ReduceJob::GroupBy(GroupByJob::new(spec))),
            running: false,
        };
        self.start_round(job, out);
    }

    fn start_describe(
        &mut self,
        request: RequestId,
        source: String,
        columns: Option<Vec<String>>,
        out: &mut Vec<Command>,
    ) {
        let reply = |message| Command::Reply { request, message };
        let Some(frame) = self.frame_by_name(&source) else {
            out.push(reply(ToClient::Error(not_persisted(&source))));
            return;
        };
        let schema = self.frames[&frame].schema.clone();
        let columns = match columns {
            Some(c) => c,
            None => schema
                .fields()
                .iter()
                .filter(|f| stratus_plan::is_numeric(f.data_type()))
                .map(|f| f.name().clone())
                .collect(),
        };
        let mut types = Vec::with_capacity(columns.len());
        for c in &columns {
            match schema.field_with_name(c) {
                Ok(f) if stratus_plan::is_numeric(f.data_type()) => {
                    types.push(f.data_type().clone())
                }
                Ok(f) => {
                    out.push(reply(ToClient::Error(format!(
                        "describe: column '{c}' is {}, not a number",
                        f.data_type()
                    ))));
                    return;
                }
                Err(_) => {
                    out.push(reply(ToClient::Error(format!(
                        "describe: no column named '{c}' in '{source}'"
                    ))));
                    return;
                }
            }
        }
        if columns.is_empty() {
            out.push(reply(ToClient::Error(format!(
                "describe: '{source}' has no numeric columns"
            ))));
            return;
        }
        let job = self.new_job(request, source, Goal::Reduce);
        self.jobs.get_mut(&job).expect("job just made").phase = Phase::Reducing {
            frame,
            reduce: Box::new(ReduceJob::Describe(DescribeJob::new(
                columns,
                types,
                self.workers.len(),
            ))),
            running: false,
        };
        self.start_round(job, out);
    }

    /// Start the next round of a reduce job once every partition of its frame
    /// is held, or answer when it needs no more rounds.
    fn start_round(&mut self, job: JobId, out: &mut Vec<Command>) {
        let Some(Job {
            phase:
                Phase::Reducing {
                    frame,
                    reduce,
                    running,
                },
            ..
        }) = self.jobs.get(&job)
        else {
            return;
        };
        if *running {
            return;
        }
        let frame = *frame;
        if reduce.done() {
            if matches!(**reduce, ReduceJob::Sort(_)) {
                return self.finish_sort(job, out);
            }
            let result = reduce.result().map(|ipc| {
                let mut message = (ipc.len() as u64).to_le_bytes().to_vec();
                message.extend_from_slice(&ipc);
                message
            });
            match result {
                Ok(table) => {
                    self.forget_mailboxes(job, out);
                    self.finish_job(job, ToClient::Table(table), out)
                }
                Err(e) => self.abort_job(job, Some(e), out),
            }
            return;
        }
        let Some(f) = self.frames.get(&frame) else {
            return self.abort_job(
                job,
                Some("the frame was unpersisted or replaced while this request ran".into()),
                out,
            );
        };
        for index in 0..f.partitions.len() as u32 {
            if let Some(error) = self.unreachable(PartitionKey { frame, index }) {
                return self.abort_job(job, Some(error), out);
            }
        }
        if f.partitions.iter().any(|p| p.holder.is_none()) {
            return; // resumed when the missing partitions are loaded again
        }
        let mut holders: BTreeMap<WorkerId, Vec<PartitionKey>> = BTreeMap::new();
        for (index, p) in f.partitions.iter().enumerate() {
            let holder = p.holder.expect("all held");
            holders.entry(holder).or_default().push(PartitionKey {
                frame,
                index: index as u32,
            });
        }
        let peers: BTreeMap<WorkerId, PeerRef> = self
            .workers
            .values()
            .map(|w| {
                (
                    w.id,
                    PeerRef {
                        worker: w.id,
                        address: w.info.peer_address.clone(),
                        cert: w.info.peer_cert.clone(),
                    },
                )
            })
            .collect();
        let Some(Job {
            phase: Phase::Reducing {
                reduce, running, ..
            },
            ..
        }) = self.jobs.get_mut(&job)
        else {
            return;
        };
        let Some(tasks) = reduce.round_tasks(job, &holders, &|w| peers.get(&w).cloned()) else {
            return self.abort_job(job, Some("no worker to run this on".into()), out);
        };
        *running = true;
        for (worker, kind) in tasks {
            let task = self.add_task(Some(job), kind);
            self.tasks
                .get_mut(&task)
                .expect("task just made")
                .worker_pin = Some(worker);
        }
    }

    /// A sort decided or shuffled: turn it into the sorted frame.
    fn finish_sort(&mut self, job: JobId, out: &mut Vec<Command>) {
        self.forget_mailboxes(job, out);
        let Some(j) = self.jobs.remove(&job) else {
            return;
        };
        self.job_of_request.remove(&j.request);
        let Phase::Reducing { frame, reduce, .. } = j.phase else {
            return;
        };
        let ReduceJob::Sort(sort) = *reduce else {
            return;
        };
        let Some(parent) = self.frames.get(&frame) else {
            out.push(Command::Reply {
                request: j.request,
                message: ToClient::Error(
                    "the frame was unpersisted or replaced while it was being sorted".into(),
                ),
            });
            return;
        };
        let name = sort.into.clone().unwrap_or_else(|| parent.name.clone());
        let replace = sort.into.is_none();
        match sort.outcome() {
            Some(SortOutcome::Ranged(order)) => {
                // Already ranged: sort each partition where it is, in range order.
                let derived = Derived {
                    name,
                    replace,
                    steps: vec![Step::SortWithin(sort.key.clone())],
                    order: Some(order),
                };
                self.persist_derived(j.request, frame, derived, out);
            }
            Some(SortOutcome::Shuffled(mut ranges)) => {
                ranges.sort_unstable();
                let parent = &self.frames[&frame];
                // The lineage of every range: the parent's Parquet inputs
                // (none if the parent is itself a shuffled frame).
                let sources: Option<Vec<RangeSource>> = parent
                    .partitions
                    .iter()
                    .map(|p| match &p.origin {
                        Some(Origin::Parquet(partition)) => Some(RangeSource {
                            partition: partition.clone(),
                            columns: parent.columns.clone(),
                            steps: parent.steps.clone(),
                        }),
                        _ => None,
                    })
                    .collect();
                let lineage = sources.map(|sources| {
                    Arc::new(SortLineage {
                        sources,
                        key: sort.key.clone(),
                        boundaries_ipc: sort.boundaries_ipc().to_vec(),
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
                    })
                    .collect();
                let new = Frame {
                    id: sort.new_frame,
                    name: name.clone(),
                    source: parent.name.clone(),
                    columns: parent.columns.clone(),
                    steps: parent.steps.clone(),
                    schema: parent.schema.clone(),
                    partitions,
                    complete: true,
                };
                for (r, worker, _, bytes) in &ranges {
                    if let Some(w) = self.workers.get_mut(worker) {
                        w.partitions.insert(PartitionKey {
                            frame: sort.new_frame,
                            index: *r,
                        });
                        w.persisted_bytes += bytes;
                    }
                }
                if replace {
                    self.drop_frame(frame, out);
                }
                let summary = new.summary();
                self.frames.insert(sort.new_frame, new);
                out.push(Command::Reply {
                    request: j.request,
                    message: ToClient::Persisted(summary),
                });
            }
            None => out.push(Command::Reply {
                request: j.request,
                message: ToClient::Error("sort ended without a result".into()),
            }),
        }
    }

    /// Tell every worker to drop what peers delivered for this job.
    fn forget_mailboxes(&self, job: JobId, out: &mut Vec<Command>) {
        let uses = matches!(
            self.jobs.get(&job),
            Some(Job { phase: Phase::Reducing { reduce, .. }, .. }) if reduce.uses_mailboxes()
        );
        if uses {
            for worker in self.workers.keys() {
                out.push(Command::ToWorker {
                    worker: *worker,
                    message: ToWorker::Forget { job },
                });
            }
        }
    }

    fn on_reduce_output(&mut self, job: JobId, output: TaskOutput, out: &mut Vec<Command>) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let round_done = j.tasks.is_empty();
        let Phase::Reducing {
            reduce, running, ..
        } = &mut j.phase
        else {
            return;
        };
        let mut result = reduce.absorb(output);
        if result.is_ok() && round_done {
            result = reduce.end_round();
            *running = false;
        }
        match result {
            Err(e) => self.abort_job(job, Some(e), out),
            Ok(()) if round_done => self.start_round(job, out),
            Ok(()) => {}
        }
    }

    /// Reduce jobs waiting for partitions of `frame` may be able to run now.
    fn resume_reducers(&mut self, frame: FrameId, out: &mut Vec<Command>) {
        let waiting: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| {
                matches!(j.phase, Phase::Reducing { frame: f, running: false, .. } if f == frame)
            })
            .map(|(id, _)| *id)
            .collect();
        for job in waiting {
            self.start_round(job, out);
        }
    }

    /// A worker of a running round was lost: drop the round's tasks and
    /// results, and run it again once the lost partitions are rebuilt.
    fn restart_round(&mut self, job: JobId, out: &mut Vec<Command>) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let tasks: Vec<TaskId> = j.tasks.drain().collect();
        if let Phase::Reducing {
            reduce, running, ..
        } = &mut j.phase
        {
            reduce.reset_round();
            *running = false;
        }
        for task in tasks {
            if let Some(t) = self.tasks.remove(&task) {
                if let Some(w) = t.worker {
                    if let Some(worker) = self.workers.get_mut(&w) {
                        worker.running.remove(&task);
                        out.push(Command::ToWorker {
                            worker: w,
                            message: ToWorker::Cancel(vec![task]),
                        });
                    }
                }
            }
        }
        self.queue.retain(|t| self.tasks.contains_key(t));
        self.start_round(job, out);
    }

    fn frame_by_name(&self, name: &str) -> Option<FrameId> {
        self.frames
            .values()
            .find(|f| f.complete && f.name == name)
            .map(|f| f.id)
    }

    fn new_job(&mut self, request: RequestId, source: String, goal: Goal) -> JobId {
        let id = self.fresh_id();
        self.jobs.insert(
            id,
            Job {
                request,
                source,
                goal,
                phase: Phase::Listing,
                tasks: HashSet::new(),
            },
        );
        self.job_of_request.insert(request, id);
        id
    }

    /// Start a job on a Parquet source: list its files first.
    fn start_job(
        &mut self,
        request: RequestId,
        source: String,
        goal: Goal,
        out: &mut Vec<Command>,
    ) {
        let job = self.new_job(request, source.clone(), goal);
        self.add_task(Some(job), TaskKind::ListFiles { source });
        let _ = out;
    }

    fn add_task(&mut self, job: Option<JobId>, kind: TaskKind) -> TaskId {
        let id = self.fresh_id();
        self.tasks.insert(
            id,
            Task {
                job,
                kind,
                worker: None,
                attempts: 0,
                worker_pin: None,
                started: None,
            },
        );
        self.queue.push_back(id);
        if let Some(job) = job.and_then(|j| self.jobs.get_mut(&j)) {
            job.tasks.insert(id);
            let request = job.request;
            let step = self.tasks[&id].kind.step();
            self.activity.task_added(request, step);
        }
        id
    }

    fn reply(&self, job: JobId, message: ToClient, out: &mut Vec<Command>) {
        if let Some(j) = self.jobs.get(&job) {
            out.push(Command::Reply {
                request: j.request,
                message,
            });
        }
    }

    fn finish_job(&mut self, job: JobId, message: ToClient, out: &mut Vec<Command>) {
        self.reply(job, message, out);
        if let Some(j) = self.jobs.remove(&job) {
            self.job_of_request.remove(&j.request);
        }
    }

    /// End a job early: cancel its tasks, undo a half-done persist, and answer
    /// with `error` (or not at all when the client is gone).
    fn abort_job(&mut self, job: JobId, error: Option<String>, out: &mut Vec<Command>) {
        self.forget_mailboxes(job, out);
        if let Some(Job {
            phase: Phase::Reducing { reduce, .. },
            ..
        }) = self.jobs.get(&job)
        {
            // Undo what the job left behind (staged files), with no job of its own.
            if let Some(kind) = reduce.cleanup() {
                self.add_task(None, kind);
            }
        }
        let Some(j) = self.jobs.remove(&job) else {
            return;
        };
        self.job_of_request.remove(&j.request);
        let mut cancels: BTreeMap<WorkerId, Vec<TaskId>> = BTreeMap::new();
        for task in &j.tasks {
            if let Some(t) = self.tasks.remove(task) {
                if let Some(w) = t.worker {
                    cancels.entry(w).or_default().push(*task);
                    if let Some(worker) = self.workers.get_mut(&w) {
                        worker.running.remove(task);
                    }
                }
            }
        }
        self.queue.retain(|t| self.tasks.contains_key(t));
        for (worker, ids) in cancels {
            out.push(Command::ToWorker {
                worker,
                message: ToWorker::Cancel(ids),
            });
        }
        if let Phase::Loading { frame } = j.phase {
            self.drop_frame(frame, out);
        }
        if let Some(error) = error {
            out.push(Command::Reply {
                request: j.request,
                message: ToClient::Error(error),
            });
        }
    }

    /// Forget a frame and tell its holders to free its partitions.
    fn drop_frame(&mut self, frame: FrameId, out: &mut Vec<Command>) {
        let Some(f) = self.frames.remove(&frame) else {
            return;
        };
        let mut drops: BTreeMap<WorkerId, Vec<PartitionKey>> = BTreeMap::new();
        for (index, p) in f.partitions.iter().enumerate() {
            let key = PartitionKey {
                frame,
                index: index as u32,
            };
            if let Some(w) = p.holder {
                drops.entry(w).or_default().push(key);
                if let Some(worker) = self.workers.get_mut(&w) {
                    worker.partitions.remove(&key);
                    worker.persisted_bytes = worker.persisted_bytes.saturating_sub(p.bytes);
                }
            }
            if let Some(task) = p.loading {
                if let Some(t) = self.tasks.remove(&task) {
                    if let Some(w) = t.worker {
                        if let Some(worker) = self.workers.get_mut(&w) {
                            worker.running.remove(&task);
                        }
                        out.push(Command::ToWorker {
                            worker: w,
                            message: ToWorker::Cancel(vec![task]),
                        });
                    }
                }
            }
        }
        self.queue.retain(|t| self.tasks.contains_key(t));
        for (worker, keys) in drops {
            out.push(Command::ToWorker {
                worker,
                message: ToWorker::Drop(keys),
            });
        }
    }

    // ----- task outcomes ---------------------------------------------------

    fn on_report(&mut self, worker: WorkerId, report: TaskReport, out: &mut Vec<Command>) {
        let (id, result) = match report {
            TaskReport::Finished { id, output } => (id, Ok(output)),
            TaskReport::Failed { id, error } => (id, Err(error)),
        };
        // A report for a task we no longer track (cancelled, or reassigned after
        // the worker was presumed lost) is ignored; a partition it loaded is freed
        // unless it is the copy we count on.
        let current = self
            .tasks
            .get(&id)
            .is_some_and(|t| t.worker == Some(worker));
        if !current {
            let loaded: Vec<PartitionKey> = match &result {
                Ok(TaskOutput::Loaded { key, .. }) => vec![*key],
                Ok(TaskOutput::LoadedMany(parts)) => parts.iter().map(|p| p.0).collect(),
                _ => Vec::new(),
            };
            let uncounted: Vec<PartitionKey> = loaded
                .into_iter()
                .filter(|key| {
                    self.frames
                        .get(&key.frame)
                        .and_then(|f| f.partitions.get(key.index as usize))
                        .is_none_or(|p| p.holder != Some(worker))
                })
                .collect();
            if !uncounted.is_empty() {
                out.push(Command::ToWorker {
                    worker,
                    message: ToWorker::Drop(uncounted),
                });
            }
            return;
        }
        let task = self.tasks.remove(&id).expect("task present");
        if let Some(w) = self.workers.get_mut(&worker) {
            w.running.remove(&id);
        }
        let name = self
            .workers
            .get(&worker)
            .map(|w| w.info.name.clone())
            .unwrap_or_default();
        let outcome = if result.is_ok() { "ok" } else { "failed" };
        self.record_task(id, &task, &name, outcome);
        if let Some(job) = task.job.and_then(|j| self.jobs.get_mut(&j)) {
            job.tasks.remove(&id);
        }
        match result {
            Ok(output) => {
                self.counters.tasks_finished += 1;
                self.on_task_output(worker, id, task, output, out);
            }
            Err(error) => {
                self.counters.tasks_failed += 1;
                match task.job {
                    Some(job) => self.abort_job(job, Some(error), out),
                    None => self.on_rebuild_failed(&task, error),
                }
            }
        }
    }

    /// A rebuild (a load with no job) failed: the partition is lost for good;
    /// requests that need it get `error`.
    fn on_rebuild_failed(&mut self, task: &Task, error: String) {
        let keys: Vec<PartitionKey> = match &task.kind {
            TaskKind::Load { key, .. } => vec![*key],
            TaskKind::RebuildRanges { frame, parts, .. } => parts
                .iter()
                .map(|&(_, index)| PartitionKey {
                    frame: *frame,
                    index,
                })
                .collect(),
            _ => Vec::new(),
        };
        for key in keys {
            if let Some(p) = self
                .frames
                .get_mut(&key.frame)
                .and_then(|f| f.partitions.get_mut(key.index as usize))
            {
                p.loading = None;
                p.lost = Some(error.clone());
            }
        }
    }

    fn on_task_output(
        &mut self,
        worker: WorkerId,
        id: TaskId,
        task: Task,
        output: TaskOutput,
        out: &mut Vec<Command>,
    ) {
        match output {
            TaskOutput::Loaded { key, rows, bytes } => {
                self.on_loaded(worker, id, key, rows, bytes, out);
                if let Some(job) = task.job {
                    self.check_persist_done(job, out);
                }
            }
            TaskOutput::Files(files) => {
                if let Some(job) = task.job {
                    self.on_files(job, files, out);
                }
            }
            TaskOutput::Footers(footers) => {
                if let Some(job) = task.job {
                    self.on_footers(job, footers, out);
                }
            }
            TaskOutput::Table { rows, ipc } => {
                if let Some(job) = task.job {
                    let reducing = matches!(
                        self.jobs.get(&job),
                        Some(Job {
                            phase: Phase::Reducing { .. },
                            ..
                        })
                    );
                    if reducing {
                        self.on_reduce_output(job, TaskOutput::Table { rows, ipc }, out);
                    } else {
                        self.on_head_table(job, rows, ipc, out);
                    }
                }
            }
            TaskOutput::LoadedMany(parts)
                if matches!(task.kind, TaskKind::RebuildRanges { .. }) =>
            {
                for (key, rows, bytes) in parts {
                    self.on_loaded(worker, id, key, rows, bytes, out);
                }
                if let Some(job) = task.job {
                    self.check_persist_done(job, out);
                }
            }
            output @ (TaskOutput::Summaries(_)
            | TaskOutput::Histograms(_)
            | TaskOutput::ColumnBytes(_)
            | TaskOutput::Delivered { .. }
            | TaskOutput::Staged(_)
            | TaskOutput::Committed { .. }
            | TaskOutput::SortSample { .. }
            | TaskOutput::LoadedMany(_)
            | TaskOutput::Ok) => {
                if let Some(job) = task.job {
                    self.on_reduce_output(job, output, out);
                }
            }
        }
    }

    fn on_loaded(
        &mut self,
        worker: WorkerId,
        id: TaskId,
        key: PartitionKey,
        rows: u64,
        bytes: u64,
        out: &mut Vec<Command>,
    ) {
        let Some(p) = self
            .frames
            .get_mut(&key.frame)
            .and_then(|f| f.partitions.get_mut(key.index as usize))
        else {
            // The frame is gone: free the partition on the worker.
            out.push(Command::ToWorker {
                worker,
                message: ToWorker::Drop(vec![key]),
            });
            return;
        };
        if p.loading == Some(id) {
            p.loading = None;
        }
        p.holder = Some(worker);
        p.rows = rows;
        p.bytes = bytes;
        if let Some(w) = self.workers.get_mut(&worker) {
            w.partitions.insert(key);
            w.persisted_bytes += bytes;
        }
        self.resume_reducers(key.frame, out);
    }

    fn on_files(&mut self, job: JobId, files: Vec<FileRef>, out: &mut Vec<Command>) {
        if files.is_empty() {
            let source = self.jobs[&job].source.clone();
            self.abort_job(job, Some(format!("no Parquet files match '{source}'")), out);
            return;
        }
        let threads: usize = self
            .workers
            .values()
            .map(|w| w.info.nthreads as usize)
            .sum::<usize>()
            .max(1);
        let chunks = files.len().min(threads);
        let per_chunk = files.len().div_ceil(chunks);
        let mut files = files;
        let mut groups = Vec::new();
        while !files.is_empty() {
            let rest = files.split_off(per_chunk.min(files.len()));
            groups.push(std::mem::replace(&mut files, rest));
        }
        if let Some(j) = self.jobs.get_mut(&job) {
            j.phase = Phase::Footers {
                footers: Vec::new(),
            };
        }
        for files in groups {
            self.add_task(Some(job), TaskKind::ReadFooters { files });
        }
    }

    fn on_footers(&mut self, job: JobId, mut footers: Vec<FooterMeta>, out: &mut Vec<Command>) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let Phase::Footers { footers: all } = &mut j.phase else {
            return;
        };
        all.append(&mut footers);
        if !j.tasks.is_empty() {
            return;
        }
        let mut all = std::mem::take(all);
        all.sort_by(|a, b| a.file.path.cmp(&b.file.path));
        let threads: usize = self
            .workers
            .values()
            .map(|w| w.info.nthreads as usize)
            .sum::<usize>()
            .max(1);
        let (schema, partitions) = match planning::plan(&all, threads) {
            Ok(plan) => plan,
            Err(error) => return self.abort_job(job, Some(error), out),
        };
        let persist = match &self.jobs[&job].goal {
            Goal::Len => {
                let rows = all.iter().map(|f| f.num_rows).sum();
                return self.finish_job(job, ToClient::Count(rows), out);
            }
            Goal::Head { .. } => None,
            Goal::Persist {
                name,
                columns,
                steps,
                ..
            } => Some((name.clone(), columns.clone(), steps.clone())),
            Goal::Reduce => None,
        };
        let Some((name, columns, steps)) = persist else {
            self.jobs.get_mut(&job).expect("job present").phase = Phase::Heading {
                inputs: partitions.into_iter().map(HeadInput::Parquet).collect(),
                tables: Vec::new(),
                rows: 0,
            };
            return self.next_head(job, out);
        };
        let schema = match frame_schema(&schema, columns.as_deref(), &steps) {
            Ok(schema) => schema,
            Err(e) => return self.abort_job(job, Some(e), out),
        };
        let frame = self.fresh_id();
        let j = self.jobs.get_mut(&job).expect("job present");
        j.phase = Phase::Loading { frame };
        let source = j.source.clone();
        let mut parts = Vec::with_capacity(partitions.len());
        for (index, input) in partitions.into_iter().enumerate() {
            let key = PartitionKey {
                frame,
                index: index as u32,
            };
            let task = self.add_task(
                Some(job),
                TaskKind::Load {
                    key,
                    input: LoadInput::Parquet(input.clone()),
                    columns: columns.clone(),
                    steps: steps.clone(),
                },
            );
            parts.push(PersistedPartition {
                rows: input.rows,
                origin: Some(Origin::Parquet(input)),
                bytes: 0,
                holder: None,
                loading: Some(task),
                lost: None,
            });
        }
        self.frames.insert(
            frame,
            Frame {
                id: frame,
                name,
                source,
                columns,
                steps,
                schema,
                partitions: parts,
                complete: false,
            },
        );
    }

    fn check_persist_done(&mut self, job: JobId, out: &mut Vec<Command>) {
        let Some(j) = self.jobs.get(&job) else {
            return;
        };
        let Phase::Loading { frame } = j.phase else {
            return;
        };
        let Some(f) = self.frames.get(&frame) else {
            return;
        };
        let total = f.partitions.len() as u64;
        let held = f.partitions.iter().filter(|p| p.holder.is_some()).count() as u64;
        if held < total {
            return;
        }
        let Goal::Persist { name, replace, .. } = &j.goal else {
            return;
        };
        if *replace {
            let name = name.clone();
            if let Some(old) = self.frame_by_name(&name) {
                self.drop_frame(old, out);
            }
        }
        let f = self.frames.get_mut(&frame).expect("frame present");
        f.complete = true;
        let summary = f.summary();
        self.finish_job(job, ToClient::Persisted(summary), out);
    }

    fn next_head(&mut self, job: JobId, out: &mut Vec<Command>) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        let Goal::Head { n, columns } = &j.goal else {
            return;
        };
        let (n, columns) = (*n, columns.clone());
        let Phase::Heading {
            inputs,
            tables,
            rows,
        } = &mut j.phase
        else {
            return;
        };
        if *rows >= n || inputs.is_empty() {
            let tables = std::mem::take(tables);
            // Each table is a complete IPC stream; the client concatenates.
            let mut message = Vec::new();
            for t in tables {
                message.extend_from_slice(&(t.len() as u64).to_le_bytes());
                message.extend_from_slice(&t);
            }
            self.finish_job(job, ToClient::Table(message), out);
            return;
        }
        let input = inputs.pop_front().expect("not empty");
        let remaining = n - *rows;
        self.add_task(
            Some(job),
            TaskKind::Head {
                input,
                n: remaining,
                columns,
            },
        );
    }

    fn on_head_table(&mut self, job: JobId, rows: u64, ipc: Vec<u8>, out: &mut Vec<Command>) {
        if let Some(Job {
            phase: Phase::Heading {
                tables, rows: got, ..
            },
            ..
        }) = self.jobs.get_mut(&job)
        {
            if rows > 0 || tables.is_empty() {
                tables.push(ipc);
            }
            *got += rows;
        }
        self.next_head(job, out);
    }

    // ----- workers leaving -------------------------------------------------

    fn remove_worker(&mut self, worker: WorkerId, reason: &str, out: &mut Vec<Command>) {
        let Some(w) = self.workers.remove(&worker) else {
            return;
        };
        self.counters.workers_lost += 1;
        // Running tasks go back to the queue (front: they were started first).
        let mut running: Vec<TaskId> = w.running.into_iter().collect();
        running.sort_unstable();
        let mut rounds_to_restart = Vec::new();
        for id in running.into_iter().rev() {
            if let Some(task) = self.tasks.get(&id).cloned() {
                self.record_task(id, &task, &w.info.name, "lost");
            }
            let Some(task) = self.tasks.get_mut(&id) else {
                continue;
            };
            task.started = None;
            if task.worker_pin.is_some() {
                // Worker-level tasks (reduce, group-by, shuffle, write rounds)
                // cannot move: their round runs again.
                rounds_to_restart.extend(task.job);
                continue;
            }
            task.worker = None;
            task.attempts += 1;
            if task.attempts >= self.config.max_task_attempts {
                let job = task.job;
                let error = format!(
                    "a task was lost with {} workers in a row (last: worker '{}', {reason})",
                    task.attempts, w.info.name
                );
                let task = self.tasks.remove(&id).expect("task present");
                match job {
                    Some(job) => self.abort_job(job, Some(error), out),
                    None => self.on_rebuild_failed(&task, error),
                }
            } else {
                self.counters.tasks_retried += 1;
                self.queue.push_front(id);
            }
        }
        // Persisted partitions it held are rebuilt from their lineage: a
        // Parquet input each, the ranges of a sorted frame together (one pass
        // over its sources).
        let mut lost: Vec<PartitionKey> = w.partitions.into_iter().collect();
        lost.sort_unstable();
        let mut ranges: BTreeMap<FrameId, Vec<(u32, u32)>> = BTreeMap::new();
        for key in lost {
            let Some(frame) = self.frames.get_mut(&key.frame) else {
                continue;
            };
            let columns = frame.columns.clone();
            let steps = frame.steps.clone();
            let p = &mut frame.partitions[key.index as usize];
            p.holder = None;
            if p.loading.is_some() || p.lost.is_some() {
                continue;
            }
            let input = match &p.origin {
                Some(Origin::Parquet(input)) => input.clone(),
                Some(Origin::Range { range, .. }) => {
                    ranges
                        .entry(key.frame)
                        .or_default()
                        .push((*range, key.index));
                    continue;
                }
                None => {
                    p.lost = Some(format!(
                        "partition {} of '{}' (a range of a frame sorted twice by shuffles) was \
                         lost with its worker; sort the frame again",
                        key.index, frame.name
                    ));
                    continue;
                }
            };
            let job = self.loading_job(key.frame);
            let task = self.add_task(
                job,
                TaskKind::Load {
                    key,
                    input: LoadInput::Parquet(input),
                    columns,
                    steps,
                },
            );
            self.counters.partitions_rebuilt += 1;
            self.set_loading(key, task);
        }
        for (frame_id, parts) in ranges {
            let Some(frame) = self.frames.get(&frame_id) else {
                continue;
            };
            let Some(Origin::Range { lineage, steps, .. }) = parts
                .first()
                .and_then(|&(_, index)| frame.partitions.get(index as usize))
                .and_then(|p| p.origin.clone())
            else {
                continue;
            };
            let job = self.loading_job(frame_id);
            let task = self.add_task(
                job,
                TaskKind::RebuildRanges {
                    frame: frame_id,
                    parts: parts.clone(),
                    sources: lineage.sources.clone(),
                    key: lineage.key.clone(),
                    boundaries_ipc: lineage.boundaries_ipc.clone(),
                    steps,
                },
            );
            self.counters.partitions_rebuilt += parts.len() as u64;
            for (_, index) in parts {
                self.set_loading(
                    PartitionKey {
                        frame: frame_id,
                        index,
                    },
                    task,
                );
            }
        }
        // Rounds with tasks still queued for the lost worker run again too.
        rounds_to_restart.extend(
            self.tasks
                .values()
                .filter(|t| t.worker_pin == Some(worker))
                .filter_map(|t| t.job),
        );
        rounds_to_restart.sort_unstable();
        rounds_to_restart.dedup();
        for job in rounds_to_restart {
            self.restart_round(job, out);
        }
    }

    /// The persist job loading this frame, if one runs.
    fn loading_job(&self, frame: FrameId) -> Option<JobId> {
        self.jobs
            .iter()
            .find(|(_, j)| matches!(j.phase, Phase::Loading { frame: f } if f == frame))
            .map(|(id, _)| *id)
    }

    /// Note the task that (re)loads a partition.
    fn set_loading(&mut self, key: PartitionKey, task: TaskId) {
        if let Some(p) = self
            .frames
            .get_mut(&key.frame)
            .and_then(|f| f.partitions.get_mut(key.index as usize))
        {
            p.loading = Some(task);
        }
    }

    // ----- placement ------------------------------------------------------

    /// Why a persisted partition will never be available again, if so.
    fn unreachable(&self, key: PartitionKey) -> Option<String> {
        let Some(frame) = self.frames.get(&key.frame) else {
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

    /// Hand queued tasks to workers with free threads: one message per worker.
    fn dispatch(&mut self, out: &mut Vec<Command>) {
        if self.queue.is_empty() || self.workers.is_empty() {
            return;
        }
        let mut batches: BTreeMap<WorkerId, Vec<TaskAssignment>> = BTreeMap::new();
        let mut waiting = VecDeque::new();
        let mut doomed: Vec<(JobId, String)> = Vec::new();
        while let Some(id) = self.queue.pop_front() {
            let Some(task) = self.tasks.get(&id) else {
                continue;
            };
            if let Some(error) = task.pinned_to().and_then(|key| self.unreachable(key)) {
                if let Some(job) = task.job {
                    doomed.push((job, error));
                }
                continue;
            }
            let chosen = match (task.worker_pin, task.pinned_to()) {
                (Some(pin), _) => {
                    Some(pin).filter(|w| self.workers.get(w).is_some_and(|w| w.free_slots() > 0))
                }
                (None, pinned) => match pinned {
                    Some(key) => self
                        .frames
                        .get(&key.frame)
                        .and_then(|f| f.partitions.get(key.index as usize))
                        .and_then(|p| p.holder)
                        .filter(|w| self.workers.get(w).is_some_and(|w| w.free_slots() > 0)),
                    None => {
                        let loads = matches!(task.kind, TaskKind::Load { .. });
                        self.workers
                            .values()
                            .filter(|w| w.free_slots() > 0)
                            .min_by_key(|w| {
                                if loads {
                                    // Balance persisted data: fewest partitions held or
                                    // loading per thread.
                                    let load = w.partitions.len() + w.running.len();
                                    (load * 1000 / w.info.nthreads.max(1) as usize, w.id)
                                } else {
                                    (usize::MAX - w.free_slots(), w.id)
                                }
                            })
                            .map(|w| w.id)
                    }
                },
            };
            match chosen {
                Some(worker) => {
                    let task = self.tasks.get_mut(&id).expect("task present");
                    task.worker = Some(worker);
                    task.started = Some(self.clock);
                    self.workers
                        .get_mut(&worker)
                        .expect("worker present")
                        .running
                        .insert(id);
                    batches.entry(worker).or_default().push(TaskAssignment {
                        id,
                        kind: task.kind.clone(),
                    });
                }
                None => waiting.push_back(id),
            }
        }
        self.queue = waiting;
        for (job, error) in doomed {
            self.abort_job(job, Some(error), out);
        }
        for (worker, tasks) in batches {
            out.push(Command::ToWorker {
                worker,
                message: ToWorker::Run(tasks),
            });
        }
    }
}

/// A frame to derive from a persisted one.
struct Derived {
    name: String,
    replace: bool,
    /// Steps applied to each parent partition.
    steps: Vec<Step>,
    /// Parent partitions in the new frame's order (default: same order).
    order: Option<Vec<usize>>,
}

fn not_persisted(source: &str) -> String {
    format!(
        "no persisted frame named '{source}': this step runs on a frame in the workers' RAM (stratus persist SOURCE --as {source})"
    )
}

/// Schema of a frame read with an optional projection and derived by steps.
fn frame_schema(
    dataset: &SchemaRef,
    columns: Option<&[String]>,
    steps: &[Step],
) -> Result<SchemaRef, String> {
    let projected = match columns {
        Some(cols) => {
            let mut fields = Vec::with_capacity(cols.len());
            for c in cols {
                let f = dataset
                    .field_with_name(c)
                    .map_err(|_| format!("no column named '{c}' in the source"))?;
                fields.push(f.clone());
            }
            std::sync::Arc::new(Schema::new(fields))
        }
        None => dataset.clone(),
    };
    stratus_plan::steps_schema(&projected, steps).map_err(|e| e.to_string())
}
