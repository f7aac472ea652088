//! The harness of the state-machine tests: data builders, command
//! inspection, and [`Sim`], the state machine plus a model of what every
//! worker runs, built only from the commands the machine returns. Every
//! event checks that no worker is handed more tasks than it has threads and
//! that the machine's invariants (`check_invariants`) hold.
#![allow(dead_code)]

pub use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
pub use std::sync::Arc;
pub use std::time::{Duration, Instant};

pub use arrow_schema::{DataType, Field, Schema};
pub use stratus_protocol::messages::{
    ClientRequest, FileRef, FooterMeta, FrameSummary, LoadInput, ParquetPartition, PartitionKey,
    RowGroupMeta, TaskAssignment, TaskKind, TaskOutput, TaskReport, ToClient, ToWorker, WorkerInfo,
};
pub use stratus_scheduler_core::{Command, Config, Event, RequestId, SchedulerState, WorkerId};

/// Task ids as the wire carries them (assignments, reports).
pub type TaskId = u64;

// ----- data builders ---------------------------------------------------------

pub const SOURCE: &str = "/data/trips/*.parquet";

pub fn schema_ipc(temperature: DataType) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("city", DataType::Utf8, true),
        Field::new("temperature", temperature, true),
    ]));
    stratus_protocol::ipc::encode_schema(&schema).expect("encode schema")
}

pub fn file_ref(path: &str) -> FileRef {
    FileRef {
        path: path.to_string(),
        size: 4096,
        hive: Vec::new(),
    }
}

/// The footer of a file with a single row group of `rows` rows.
pub fn footer_with(path: &str, rows: u64, temperature: DataType) -> FooterMeta {
    FooterMeta {
        file: file_ref(path),
        num_rows: rows,
        row_groups: vec![RowGroupMeta {
            rows,
            uncompressed_bytes: rows * 16,
        }],
        schema_ipc: schema_ipc(temperature),
    }
}

/// `n` files `/data/trips/part-<i>.parquet` with 10, 20, 30, ... rows. Each has one
/// small row group, so each becomes exactly one partition.
pub fn dataset(n: usize) -> Vec<FooterMeta> {
    (0..n)
        .map(|i| {
            footer_with(
                &format!("/data/trips/part-{i}.parquet"),
                10 * (i as u64 + 1),
                DataType::Float64,
            )
        })
        .collect()
}

pub fn total_rows(footers: &[FooterMeta]) -> u64 {
    footers.iter().map(|f| f.num_rows).sum()
}

pub fn worker_info(name: &str, nthreads: u32) -> WorkerInfo {
    WorkerInfo {
        name: name.to_string(),
        host: "node".to_string(),
        pid: 1000,
        nthreads,
        memory_limit: 1 << 30,
        metrics_address: None,
        peer_address: "127.0.0.1:1".into(),
        cert_name: format!("cert-{name}"),
    }
}

pub fn persist(name: &str, replace: bool) -> ClientRequest {
    ClientRequest::Persist {
        source: SOURCE.to_string(),
        name: name.to_string(),
        replace,
        columns: None,
        steps: Vec::new(),
    }
}

/// Bytes a worker reports for a loaded partition.
pub fn loaded_bytes(rows: u64) -> u64 {
    rows * 100
}

// ----- command inspection ----------------------------------------------------

/// The tasks handed out by these commands, in order.
pub fn run_tasks(cmds: &[Command]) -> Vec<(WorkerId, TaskAssignment)> {
    let mut out = Vec::new();
    for c in cmds {
        if let Command::ToWorker {
            worker,
            message: ToWorker::Run(tasks),
        } = c
        {
            out.extend(tasks.iter().map(|t| (*worker, t.clone())));
        }
    }
    out
}

pub fn load_runs(cmds: &[Command]) -> Vec<(WorkerId, TaskId, PartitionKey, ParquetPartition)> {
    run_tasks(cmds)
        .into_iter()
        .filter_map(|(w, t)| match t.kind {
            TaskKind::Load {
                key,
                input: LoadInput::Parquet(input),
                ..
            } => Some((w, t.id, key, input)),
            _ => None,
        })
        .collect()
}

pub fn cancels(cmds: &[Command]) -> BTreeMap<WorkerId, BTreeSet<TaskId>> {
    let mut out: BTreeMap<WorkerId, BTreeSet<TaskId>> = BTreeMap::new();
    for c in cmds {
        if let Command::ToWorker {
            worker,
            message: ToWorker::Cancel(ids),
        } = c
        {
            out.entry(*worker).or_default().extend(ids.iter().copied());
        }
    }
    out
}

pub fn drops(cmds: &[Command]) -> BTreeMap<WorkerId, BTreeSet<PartitionKey>> {
    let mut out: BTreeMap<WorkerId, BTreeSet<PartitionKey>> = BTreeMap::new();
    for c in cmds {
        if let Command::ToWorker {
            worker,
            message: ToWorker::Drop(keys),
        } = c
        {
            out.entry(*worker).or_default().extend(keys.iter().copied());
        }
    }
    out
}

/// Every message sent to `request`, in order.
pub fn replies(cmds: &[Command], request: impl Into<RequestId>) -> Vec<ToClient> {
    let request = request.into();
    cmds.iter()
        .filter_map(|c| match c {
            Command::Reply {
                request: r,
                message,
            } if *r == request => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// The final (non-progress) answer to `request`, if these commands hold one.
pub fn final_reply(cmds: &[Command], request: impl Into<RequestId>) -> Option<ToClient> {
    let request = request.into();
    let finals: Vec<ToClient> = replies(cmds, request)
        .into_iter()
        .filter(ToClient::is_final)
        .collect();
    assert!(
        finals.len() <= 1,
        "request {request} got more than one final answer: {finals:?}"
    );
    finals.into_iter().next()
}

/// No answer yet (progress reports aside).
pub fn no_reply_at_all(cmds: &[Command]) -> bool {
    !cmds
        .iter()
        .any(|c| matches!(c, Command::Reply { message, .. } if message.is_final()))
}

pub fn expect_error(cmds: &[Command], request: impl Into<RequestId>) -> String {
    let request = request.into();
    match final_reply(cmds, request) {
        Some(ToClient::Error(e)) => e,
        other => panic!("expected an error for request {request}, got {other:?} in {cmds:#?}"),
    }
}

// ----- the harness -----------------------------------------------------------

/// The state machine plus a model of the cluster derived from its commands.
pub struct Sim {
    pub state: SchedulerState,
    pub t0: Instant,
    pub now: Instant,
    pub threads: BTreeMap<WorkerId, u32>,
    /// What each live worker is running, as the machine told it.
    pub running: BTreeMap<WorkerId, BTreeMap<TaskId, TaskKind>>,
    /// Every task ever handed out, by id (the latest assignment).
    pub history: HashMap<TaskId, TaskKind>,
    /// Every assignment ever made, in order.
    pub assignments: Vec<(WorkerId, TaskAssignment)>,
    /// Deliveries announced: (receiver, job, sender's certificate name).
    pub announced: HashSet<(WorkerId, u64, String)>,
}

impl Sim {
    pub fn new(config: Config) -> Self {
        let t0 = Instant::now();
        Sim {
            state: SchedulerState::new(config),
            t0,
            now: t0,
            threads: BTreeMap::new(),
            running: BTreeMap::new(),
            history: HashMap::new(),
            announced: HashSet::new(),
            assignments: Vec::new(),
        }
    }

    pub fn with_workers(workers: &[(u64, u32)]) -> Self {
        let mut sim = Sim::new(Config::default());
        for &(id, threads) in workers {
            let cmds = sim.join(WorkerId(id), threads);
            assert!(cmds.is_empty(), "joining an idle cluster: {cmds:?}");
        }
        sim
    }

    pub fn at(&mut self, since_start: Duration) {
        self.now = self.t0 + since_start;
    }

    pub fn send(&mut self, event: Event) -> Vec<Command> {
        let shown = format!("{event:?}");
        let cmds = self.state.handle(self.now, event);
        if let Err(broken) = self.state.check_invariants() {
            panic!("invariants broken after {shown}:\n{broken}\ncommands: {cmds:#?}");
        }
        for c in &cmds {
            match c {
                Command::ToWorker { worker, message } => match message {
                    ToWorker::Run(tasks) => {
                        assert!(!tasks.is_empty(), "empty Run batch to worker {worker}");
                        // Every delivery to another worker was announced to
                        // it first, with this worker's certificate name.
                        let me = format!("cert-w{worker}");
                        for t in tasks {
                            for (receiver, job) in t.kind.peer_deliveries() {
                                let receiver = WorkerId(receiver);
                                if receiver != *worker && self.threads.contains_key(&receiver) {
                                    assert!(
                                        self.announced.contains(&(receiver, job, me.clone())),
                                        "task {} delivers to worker {receiver} for job {job} unannounced",
                                        t.id
                                    );
                                }
                            }
                        }
                        let limit = *self
                            .threads
                            .get(worker)
                            .unwrap_or_else(|| panic!("Run sent to unknown worker {worker}"));
                        let running = self.running.entry(*worker).or_default();
                        for t in tasks {
                            assert!(
                                running.insert(t.id, t.kind.clone()).is_none(),
                                "task {} handed twice to worker {worker}",
                                t.id
                            );
                            self.history.insert(t.id, t.kind.clone());
                            self.assignments.push((*worker, t.clone()));
                        }
                        assert!(
                            running.len() <= limit as usize,
                            "worker {worker} runs {} tasks with {limit} threads",
                            running.len()
                        );
                    }
                    ToWorker::Cancel(ids) => {
                        if let Some(running) = self.running.get_mut(worker) {
                            for id in ids {
                                running.remove(id);
                            }
                        }
                    }
                    ToWorker::Expect { job, sender } => {
                        self.announced.insert((*worker, *job, sender.clone()));
                    }
                    ToWorker::Drop(_) | ToWorker::Forget { .. } | ToWorker::Exit { .. } => {}
                },
                Command::DisconnectWorker { worker, .. } => {
                    self.running.remove(worker);
                }
                Command::Reply { .. } | Command::SaveCatalog(_) => {}
            }
        }
        cmds
    }

    pub fn join(&mut self, worker: impl Into<WorkerId>, nthreads: u32) -> Vec<Command> {
        let worker = worker.into();
        self.threads.insert(worker, nthreads);
        self.running.insert(worker, BTreeMap::new());
        let name = format!("w{worker}");
        self.send(Event::WorkerJoined {
            worker,
            info: worker_info(&name, nthreads),
        })
    }

    pub fn leave(&mut self, worker: impl Into<WorkerId>) -> Vec<Command> {
        let worker = worker.into();
        self.running.remove(&worker);
        self.send(Event::WorkerLeft {
            worker,
            reason: "connection lost".to_string(),
        })
    }

    pub fn request(&mut self, request: impl Into<RequestId>, body: ClientRequest) -> Vec<Command> {
        self.request_with_storage(request, body, Default::default())
    }

    /// [`Self::request`] with object-store options.
    pub fn request_with_storage(
        &mut self,
        request: impl Into<RequestId>,
        body: ClientRequest,
        storage: stratus_protocol::messages::StorageOptions,
    ) -> Vec<Command> {
        let request = request.into();
        self.send(Event::Request {
            request,
            body,
            storage,
            run: None,
            client: "test-client".into(),
        })
    }

    pub fn report(&mut self, worker: impl Into<WorkerId>, report: TaskReport) -> Vec<Command> {
        let worker = worker.into();
        let id = match &report {
            TaskReport::Finished { id, .. } | TaskReport::Failed { id, .. } => *id,
        };
        if let Some(running) = self.running.get_mut(&worker) {
            running.remove(&id);
        }
        self.send(Event::TaskReports {
            worker,
            reports: vec![report],
        })
    }

    pub fn finish(
        &mut self,
        worker: impl Into<WorkerId>,
        id: TaskId,
        output: TaskOutput,
    ) -> Vec<Command> {
        self.report(worker, TaskReport::Finished { id, output })
    }

    pub fn fail(&mut self, worker: impl Into<WorkerId>, id: TaskId, error: &str) -> Vec<Command> {
        self.report(
            worker,
            TaskReport::Failed {
                id,
                error: error.to_string(),
                unreachable_peer: None,
            },
        )
    }

    /// Fail a task because it could not reach worker `peer`.
    pub fn fail_unreachable(
        &mut self,
        worker: impl Into<WorkerId>,
        id: TaskId,
        peer: impl Into<WorkerId>,
    ) -> Vec<Command> {
        let peer: WorkerId = peer.into();
        self.report(
            worker,
            TaskReport::Failed {
                id,
                error: format!(
                    "worker {} did not acknowledge the delivery: connection lost",
                    peer.0
                ),
                unreachable_peer: Some(peer.0),
            },
        )
    }

    /// Report a Load task (running now, or handed out earlier) as loaded.
    pub fn finish_load(&mut self, worker: impl Into<WorkerId>, id: TaskId) -> Vec<Command> {
        let Some(TaskKind::Load {
            key,
            input: LoadInput::Parquet(input),
            ..
        }) = self.history.get(&id).cloned()
        else {
            panic!("task {id} is not a Load task from Parquet");
        };
        self.finish(
            worker,
            id,
            TaskOutput::Loaded {
                key,
                rows: input.rows,
                bytes: loaded_bytes(input.rows),
                fetched: 0,
            },
        )
    }

    /// Running tasks matching `pred`, as (worker, id, kind), oldest id first.
    pub fn running_where(
        &self,
        pred: impl Fn(&TaskKind) -> bool,
    ) -> Vec<(WorkerId, TaskId, TaskKind)> {
        let mut out: Vec<_> = self
            .running
            .iter()
            .flat_map(|(w, tasks)| {
                tasks
                    .iter()
                    .filter(|(_, k)| pred(k))
                    .map(|(id, k)| (*w, *id, k.clone()))
            })
            .collect();
        out.sort_by_key(|(_, id, _)| *id);
        out
    }

    /// Finish every task running now that matches `pred`, oldest first,
    /// with the output `answer` gives it; returns every command seen.
    pub fn answer_running(
        &mut self,
        pred: impl Fn(&TaskKind) -> bool,
        answer: impl Fn(WorkerId, &TaskKind) -> TaskOutput,
    ) -> Vec<Command> {
        let mut seen = Vec::new();
        for (worker, id, kind) in self.running_where(pred) {
            let output = answer(worker, &kind);
            seen.extend(self.finish(worker, id, output));
        }
        seen
    }

    /// A frame named `name` persisted from `dataset(partitions)`; returns
    /// its id (on the wire) and the partitions each worker holds.
    pub fn persisted_frame(
        &mut self,
        request: u64,
        name: &str,
        partitions: usize,
    ) -> (u64, BTreeMap<WorkerId, Vec<PartitionKey>>) {
        let (summary, seen) = self.persist_all(request, name, false, &dataset(partitions));
        assert_eq!(summary.partitions as usize, partitions);
        let frame = load_runs(&seen)[0].2.frame;
        let mut holders: BTreeMap<WorkerId, Vec<PartitionKey>> = BTreeMap::new();
        for w in self.state.workers() {
            let mut keys: Vec<PartitionKey> = w
                .partitions
                .iter()
                .filter(|k| k.frame == frame)
                .copied()
                .collect();
            keys.sort_unstable();
            holders.insert(w.id, keys);
        }
        (frame, holders)
    }

    /// Finish running loads from Parquet, oldest first, until none runs
    /// (queued ones start as threads free up); returns every command seen.
    pub fn finish_parquet_loads(&mut self) -> Vec<Command> {
        let mut seen = Vec::new();
        for _ in 0..1000 {
            let loads = self.running_where(|k| {
                matches!(
                    k,
                    TaskKind::Load {
                        input: LoadInput::Parquet(_),
                        ..
                    }
                )
            });
            let Some((worker, id, _)) = loads.first().cloned() else {
                return seen;
            };
            seen.extend(self.finish_load(worker, id));
        }
        panic!("loads never ended");
    }

    pub fn running_count(&self) -> usize {
        self.running.values().map(BTreeMap::len).sum()
    }

    /// Answer the one running ListFiles task with the files of `footers`.
    pub fn answer_listing(&mut self, footers: &[FooterMeta]) -> Vec<Command> {
        let listing = self.running_where(|k| matches!(k, TaskKind::ListFiles { .. }));
        assert_eq!(listing.len(), 1, "expected one ListFiles task: {listing:?}");
        let (worker, id, _) = listing[0].clone();
        let files = footers.iter().map(|f| f.file.clone()).collect();
        self.finish(worker, id, TaskOutput::Files(files))
    }

    /// Answer every running ReadFooters task with the footers of its files.
    pub fn answer_footers(&mut self, footers: &[FooterMeta]) -> Vec<Command> {
        let tasks = self.running_where(|k| matches!(k, TaskKind::ReadFooters { .. }));
        assert!(!tasks.is_empty(), "no ReadFooters task running");
        let mut all = Vec::new();
        for (worker, id, kind) in tasks {
            let TaskKind::ReadFooters { files } = kind else {
                unreachable!()
            };
            let metas = files
                .iter()
                .map(|f| {
                    footers
                        .iter()
                        .find(|m| m.file.path == f.path)
                        .unwrap_or_else(|| panic!("asked for unknown file {}", f.path))
                        .clone()
                })
                .collect();
            all.extend(self.finish(worker, id, TaskOutput::Footers(metas)));
        }
        all
    }

    /// Send a Parquet request and answer its listing and footer tasks; returns the
    /// commands of the last step (the partition tasks, or the answer).
    pub fn start(
        &mut self,
        request: impl Into<RequestId> + Copy,
        body: ClientRequest,
        footers: &[FooterMeta],
    ) -> Vec<Command> {
        let cmds = self.request(request, body);
        assert!(
            final_reply(&cmds, request).is_none(),
            "answered before listing: {cmds:?}"
        );
        let cmds = self.answer_listing(footers);
        assert!(
            final_reply(&cmds, request).is_none(),
            "answered before footers: {cmds:?}"
        );
        self.answer_footers(footers)
    }

    /// Finish running Load tasks oldest first until `request` gets its final
    /// answer; returns every command seen on the way.
    pub fn run_loads_to_end(&mut self, request: impl Into<RequestId> + Copy) -> Vec<Command> {
        let mut seen = Vec::new();
        for _ in 0..1000 {
            let loads = self.running_where(|k| matches!(k, TaskKind::Load { .. }));
            let Some((worker, id, _)) = loads.first().cloned() else {
                panic!("no Load task running and no answer yet; seen {seen:#?}");
            };
            let cmds = self.finish_load(worker, id);
            let done = final_reply(&cmds, request).is_some();
            seen.extend(cmds);
            if done {
                return seen;
            }
        }
        panic!("persist did not finish");
    }

    pub fn persist_all_loads(
        &mut self,
        request: impl Into<RequestId> + Copy,
    ) -> (FrameSummary, Vec<Command>) {
        let seen = self.run_loads_to_end(request);
        match final_reply(&seen, request) {
            Some(ToClient::Persisted(summary)) => (summary, seen),
            other => panic!("expected Persisted, got {other:?}"),
        }
    }

    /// A complete persist of `footers` under `name`; returns the summary and the
    /// commands of the whole run (from the request on).
    pub fn persist_all(
        &mut self,
        request: impl Into<RequestId> + Copy,
        name: &str,
        replace: bool,
        footers: &[FooterMeta],
    ) -> (FrameSummary, Vec<Command>) {
        let mut seen = self.start(request, persist(name, replace), footers);
        seen.extend(self.run_loads_to_end(request));
        match final_reply(&seen, request) {
            Some(ToClient::Persisted(summary)) => (summary, seen),
            other => panic!("expected Persisted, got {other:?}"),
        }
    }

    pub fn list(&mut self, request: impl Into<RequestId> + Copy) -> Vec<FrameSummary> {
        let cmds = self.request(request, ClientRequest::List);
        match final_reply(&cmds, request) {
            Some(ToClient::Frames(frames)) => frames,
            other => panic!("expected Frames, got {other:?}"),
        }
    }

    pub fn partitions_of(&self, worker: impl Into<WorkerId>) -> BTreeSet<PartitionKey> {
        let worker = worker.into();
        self.state
            .workers()
            .find(|w| w.id == worker)
            .map(|w| w.partitions.iter().copied().collect())
            .unwrap_or_default()
    }

    pub fn assert_idle(&self) {
        assert_eq!(self.state.task_counts(), (0, 0), "tasks left behind");
        assert_eq!(self.state.jobs_in_progress(), 0, "jobs left behind");
        for w in self.state.workers() {
            assert!(
                w.running.is_empty(),
                "worker {} still runs {:?}",
                w.id,
                w.running
            );
        }
    }
}
