//! Sans-IO tests of the scheduler's decision state machine.
//!
//! Each test plays a small cluster story: workers join, clients ask, workers
//! report, time passes (by handing a later `Instant` to the machine). The
//! [`Sim`] harness keeps a model of what every worker is running, built only
//! from the commands the machine returns, and checks on every step that no
//! worker is handed more tasks than it has threads.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_schema::{DataType, Field, Schema};
use stratus_protocol::messages::{
    AggFunc, ClientRequest, FileRef, FooterMeta, FrameSummary, HeadInput, LoadInput, MailboxKey,
    ParquetPartition, PartitionKey, RowGroupMeta, TaskAssignment, TaskKind, TaskOutput, TaskReport,
    ToClient, ToWorker, WorkerInfo,
};
use stratus_scheduler::activity::RequestState;
use stratus_scheduler::state::{
    Command, Config, Event, RequestId, SchedulerState, TaskId, WorkerId,
};

// ----- data builders ---------------------------------------------------------

const SOURCE: &str = "/data/trips/*.parquet";

fn schema_ipc(temperature: DataType) -> Vec<u8> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("city", DataType::Utf8, true),
        Field::new("temperature", temperature, true),
    ]));
    stratus_protocol::ipc::encode_schema(&schema).expect("encode schema")
}

fn file_ref(path: &str) -> FileRef {
    FileRef {
        path: path.to_string(),
        size: 4096,
        hive: Vec::new(),
    }
}

/// The footer of a file with a single row group of `rows` rows.
fn footer_with(path: &str, rows: u64, temperature: DataType) -> FooterMeta {
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
fn dataset(n: usize) -> Vec<FooterMeta> {
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

fn total_rows(footers: &[FooterMeta]) -> u64 {
    footers.iter().map(|f| f.num_rows).sum()
}

fn worker_info(name: &str, nthreads: u32) -> WorkerInfo {
    WorkerInfo {
        name: name.to_string(),
        host: "node".to_string(),
        pid: 1000,
        nthreads,
        memory_limit: 1 << 30,
        metrics_address: None,
        peer_address: "127.0.0.1:1".into(),
        peer_cert: String::new(),
    }
}

fn persist(name: &str, replace: bool) -> ClientRequest {
    ClientRequest::Persist {
        source: SOURCE.to_string(),
        name: name.to_string(),
        replace,
        columns: None,
        steps: Vec::new(),
    }
}

/// Bytes a worker reports for a loaded partition.
fn loaded_bytes(rows: u64) -> u64 {
    rows * 100
}

// ----- command inspection ----------------------------------------------------

/// The tasks handed out by these commands, in order.
fn run_tasks(cmds: &[Command]) -> Vec<(WorkerId, TaskAssignment)> {
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

fn load_runs(cmds: &[Command]) -> Vec<(WorkerId, TaskId, PartitionKey, ParquetPartition)> {
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

fn cancels(cmds: &[Command]) -> BTreeMap<WorkerId, BTreeSet<TaskId>> {
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

fn drops(cmds: &[Command]) -> BTreeMap<WorkerId, BTreeSet<PartitionKey>> {
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
fn replies(cmds: &[Command], request: RequestId) -> Vec<ToClient> {
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
fn final_reply(cmds: &[Command], request: RequestId) -> Option<ToClient> {
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
fn no_reply_at_all(cmds: &[Command]) -> bool {
    !cmds
        .iter()
        .any(|c| matches!(c, Command::Reply { message, .. } if message.is_final()))
}

fn expect_error(cmds: &[Command], request: RequestId) -> String {
    match final_reply(cmds, request) {
        Some(ToClient::Error(e)) => e,
        other => panic!("expected an error for request {request}, got {other:?} in {cmds:#?}"),
    }
}

// ----- the harness -----------------------------------------------------------

/// The state machine plus a model of the cluster derived from its commands.
struct Sim {
    state: SchedulerState,
    t0: Instant,
    now: Instant,
    threads: BTreeMap<WorkerId, u32>,
    /// What each live worker is running, as the machine told it.
    running: BTreeMap<WorkerId, BTreeMap<TaskId, TaskKind>>,
    /// Every task ever handed out, by id (the latest assignment).
    history: HashMap<TaskId, TaskKind>,
    /// Every assignment ever made, in order.
    assignments: Vec<(WorkerId, TaskAssignment)>,
}

impl Sim {
    fn new(config: Config) -> Self {
        let t0 = Instant::now();
        Sim {
            state: SchedulerState::new(config),
            t0,
            now: t0,
            threads: BTreeMap::new(),
            running: BTreeMap::new(),
            history: HashMap::new(),
            assignments: Vec::new(),
        }
    }

    fn with_workers(workers: &[(WorkerId, u32)]) -> Self {
        let mut sim = Sim::new(Config::default());
        for &(id, threads) in workers {
            let cmds = sim.join(id, threads);
            assert!(cmds.is_empty(), "joining an idle cluster: {cmds:?}");
        }
        sim
    }

    fn at(&mut self, since_start: Duration) {
        self.now = self.t0 + since_start;
    }

    fn send(&mut self, event: Event) -> Vec<Command> {
        let cmds = self.state.handle(self.now, event);
        for c in &cmds {
            match c {
                Command::ToWorker { worker, message } => match message {
                    ToWorker::Run(tasks) => {
                        assert!(!tasks.is_empty(), "empty Run batch to worker {worker}");
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
                    ToWorker::Drop(_) | ToWorker::Forget { .. } => {}
                },
                Command::DisconnectWorker { worker, .. } => {
                    self.running.remove(worker);
                }
                Command::Reply { .. } => {}
            }
        }
        cmds
    }

    fn join(&mut self, worker: WorkerId, nthreads: u32) -> Vec<Command> {
        self.threads.insert(worker, nthreads);
        self.running.insert(worker, BTreeMap::new());
        let name = format!("w{worker}");
        self.send(Event::WorkerJoined {
            worker,
            info: worker_info(&name, nthreads),
        })
    }

    fn leave(&mut self, worker: WorkerId) -> Vec<Command> {
        self.running.remove(&worker);
        self.send(Event::WorkerLeft {
            worker,
            reason: "connection lost".to_string(),
        })
    }

    fn request(&mut self, request: RequestId, body: ClientRequest) -> Vec<Command> {
        self.send(Event::Request {
            request,
            body,
            run: None,
        })
    }

    fn report(&mut self, worker: WorkerId, report: TaskReport) -> Vec<Command> {
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

    fn finish(&mut self, worker: WorkerId, id: TaskId, output: TaskOutput) -> Vec<Command> {
        self.report(worker, TaskReport::Finished { id, output })
    }

    fn fail(&mut self, worker: WorkerId, id: TaskId, error: &str) -> Vec<Command> {
        self.report(
            worker,
            TaskReport::Failed {
                id,
                error: error.to_string(),
            },
        )
    }

    /// Report a Load task (running now, or handed out earlier) as loaded.
    fn finish_load(&mut self, worker: WorkerId, id: TaskId) -> Vec<Command> {
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
            },
        )
    }

    /// Running tasks matching `pred`, as (worker, id, kind), oldest id first.
    fn running_where(&self, pred: impl Fn(&TaskKind) -> bool) -> Vec<(WorkerId, TaskId, TaskKind)> {
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

    fn running_count(&self) -> usize {
        self.running.values().map(BTreeMap::len).sum()
    }

    /// Answer the one running ListFiles task with the files of `footers`.
    fn answer_listing(&mut self, footers: &[FooterMeta]) -> Vec<Command> {
        let listing = self.running_where(|k| matches!(k, TaskKind::ListFiles { .. }));
        assert_eq!(listing.len(), 1, "expected one ListFiles task: {listing:?}");
        let (worker, id, _) = listing[0].clone();
        let files = footers.iter().map(|f| f.file.clone()).collect();
        self.finish(worker, id, TaskOutput::Files(files))
    }

    /// Answer every running ReadFooters task with the footers of its files.
    fn answer_footers(&mut self, footers: &[FooterMeta]) -> Vec<Command> {
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
    fn start(
        &mut self,
        request: RequestId,
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
    fn run_loads_to_end(&mut self, request: RequestId) -> Vec<Command> {
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

    fn persist_all_loads(&mut self, request: RequestId) -> (FrameSummary, Vec<Command>) {
        let seen = self.run_loads_to_end(request);
        match final_reply(&seen, request) {
            Some(ToClient::Persisted(summary)) => (summary, seen),
            other => panic!("expected Persisted, got {other:?}"),
        }
    }

    /// A complete persist of `footers` under `name`; returns the summary and the
    /// commands of the whole run (from the request on).
    fn persist_all(
        &mut self,
        request: RequestId,
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

    fn list(&mut self, request: RequestId) -> Vec<FrameSummary> {
        let cmds = self.request(request, ClientRequest::List);
        match final_reply(&cmds, request) {
            Some(ToClient::Frames(frames)) => frames,
            other => panic!("expected Frames, got {other:?}"),
        }
    }

    fn partitions_of(&self, worker: WorkerId) -> BTreeSet<PartitionKey> {
        self.state
            .workers()
            .find(|w| w.id == worker)
            .map(|w| w.partitions.iter().copied().collect())
            .unwrap_or_default()
    }

    fn assert_idle(&self) {
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

// ----- 1. len over Parquet ---------------------------------------------------

#[test]
fn len_over_parquet_lists_spreads_footers_and_sums_rows() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let footers = dataset(4);

    let cmds = sim.request(
        7,
        ClientRequest::Len {
            source: SOURCE.into(),
        },
    );
    let runs = run_tasks(&cmds);
    assert_eq!(runs.len(), 1, "{cmds:?}");
    assert!(
        matches!(&runs[0].1.kind, TaskKind::ListFiles { source } if source == SOURCE),
        "{runs:?}"
    );
    assert!(no_reply_at_all(&cmds));

    let cmds = sim.answer_listing(&footers);
    let runs = run_tasks(&cmds);
    assert_eq!(runs.len(), 2, "two footer tasks for two threads: {runs:?}");
    let workers: BTreeSet<WorkerId> = runs.iter().map(|(w, _)| *w).collect();
    assert_eq!(workers, BTreeSet::from([1, 2]), "footers on both workers");
    let mut paths = Vec::new();
    for (_, t) in &runs {
        let TaskKind::ReadFooters { files } = &t.kind else {
            panic!("expected ReadFooters, got {:?}", t.kind);
        };
        assert_eq!(files.len(), 2, "4 files over 2 tasks");
        paths.extend(files.iter().map(|f| f.path.clone()));
    }
    paths.sort();
    let expected: Vec<String> = footers.iter().map(|f| f.file.path.clone()).collect();
    assert_eq!(paths, expected, "every file read exactly once");

    // The first footer task alone does not answer.
    let (w, id, TaskKind::ReadFooters { files }) = sim
        .running_where(|k| matches!(k, TaskKind::ReadFooters { .. }))
        .remove(0)
    else {
        unreachable!()
    };
    let metas = files
        .iter()
        .map(|f| footers.iter().find(|m| m.file == *f).unwrap().clone())
        .collect();
    let cmds = sim.finish(w, id, TaskOutput::Footers(metas));
    assert!(no_reply_at_all(&cmds), "{cmds:?}");

    let cmds = sim.answer_footers(&footers);
    assert_eq!(final_reply(&cmds, 7), Some(ToClient::Count(100)));
    assert!(run_tasks(&cmds).is_empty(), "len needs no partition tasks");
    sim.assert_idle();
    assert!(sim.list(8).is_empty(), "len persists nothing");
}

// ----- 2. persist ------------------------------------------------------------

#[test]
fn persist_balances_partitions_then_serves_len_list_and_replace() {
    let mut sim = Sim::with_workers(&[(1, 2), (2, 2)]);
    let footers = dataset(8);

    let cmds = sim.start(1, persist("trips", false), &footers);
    let first_loads = load_runs(&cmds);
    assert_eq!(first_loads.len(), 4, "one Load per thread at first");
    let (summary, seen) = {
        let (summary, mut rest) = sim.persist_all_loads(1);
        let mut all = cmds;
        all.append(&mut rest);
        (summary, all)
    };

    // Balance: every partition was loaded once, about half on each worker.
    let loads = load_runs(&seen);
    assert_eq!(loads.len(), 8);
    let frame = loads[0].2.frame;
    let keys: BTreeSet<PartitionKey> = loads.iter().map(|l| l.2).collect();
    let expected_keys: BTreeSet<PartitionKey> =
        (0..8).map(|index| PartitionKey { frame, index }).collect();
    assert_eq!(keys, expected_keys);
    for worker in [1, 2] {
        let n = loads.iter().filter(|l| l.0 == worker).count();
        assert!((3..=5).contains(&n), "worker {worker} loaded {n} of 8");
        assert_eq!(sim.partitions_of(worker).len(), n);
    }
    // Progress of the load step came before the answer, counting up to 8.
    let progress: Vec<u64> = replies(&seen, 1)
        .iter()
        .filter_map(|m| match m {
            ToClient::Progress { stage, done, total } if stage == "load partitions" => {
                assert_eq!(*total, 8);
                Some(*done)
            }
            _ => None,
        })
        .collect();
    assert!(!progress.is_empty());
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(
        progress.last(),
        Some(&7),
        "the last load is answered by the result"
    );
    // Steps are reported in order: list files, read footers, load partitions.
    let mut stages: Vec<String> = replies(&seen, 1)
        .iter()
        .filter_map(|m| match m {
            ToClient::Progress { stage, .. } => Some(stage.clone()),
            _ => None,
        })
        .collect();
    stages.dedup();
    let order = ["list files", "read footers", "load partitions"];
    let ranks: Vec<usize> = stages
        .iter()
        .map(|s| order.iter().position(|o| o == s).expect("a known step"))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{stages:?}");
    assert_eq!(stages.last().map(String::as_str), Some("load partitions"));
    // The dashboard's record of the request: ended ok, every step complete.
    let record = sim
        .state
        .activity()
        .requests()
        .find(|r| r.id == 1)
        .expect("request recorded");
    assert_eq!(record.kind, "persist");
    assert_eq!(record.state, RequestState::Ok);
    let steps: Vec<(&str, u64, u64)> = record
        .steps
        .iter()
        .map(|s| (s.name, s.done, s.total))
        .collect();
    assert_eq!(
        steps,
        [
            ("list files", 1, 1),
            ("read footers", 4, 4),
            ("load partitions", 8, 8)
        ]
    );
    let stream: Vec<&str> = sim.state.activity().tasks().map(|t| t.kind).collect();
    assert_eq!(
        stream.iter().filter(|k| **k == "load").count(),
        8,
        "{stream:?}"
    );

    let rows = total_rows(&footers);
    let expected = FrameSummary {
        name: "trips".into(),
        source: SOURCE.into(),
        rows,
        bytes: loaded_bytes(rows),
        partitions: 8,
        partitions_held: 8,
    };
    assert_eq!(summary, expected);
    sim.assert_idle();

    // Len of the frame: from metadata, no task.
    let cmds = sim.request(
        2,
        ClientRequest::Len {
            source: "trips".into(),
        },
    );
    assert_eq!(
        cmds,
        vec![Command::Reply {
            request: 2,
            message: ToClient::Count(rows)
        }]
    );
    sim.assert_idle();

    assert_eq!(sim.list(3), vec![expected.clone()]);

    // Same name without replace: refused, nothing started.
    let cmds = sim.request(4, persist("trips", false));
    let error = expect_error(&cmds, 4);
    assert!(error.contains("--replace"), "{error}");
    assert!(error.contains("trips"), "{error}");
    assert!(run_tasks(&cmds).is_empty());
    sim.assert_idle();

    // With replace: the old frame stays until the new one is complete.
    let smaller = dataset(4);
    let old_keys = keys;
    let mut seen = sim.start(5, persist("trips", true), &smaller);
    loop {
        let loads = sim.running_where(|k| matches!(k, TaskKind::Load { .. }));
        let (w, id, _) = loads.first().cloned().expect("a Load task running");
        let cmds = sim.finish_load(w, id);
        let done = final_reply(&cmds, 5).is_some();
        if !done {
            assert!(
                drops(&cmds).is_empty(),
                "dropped before completion: {cmds:?}"
            );
            assert_eq!(
                sim.list(100 + id),
                vec![expected.clone()],
                "old frame listed meanwhile"
            );
        } else {
            let dropped: BTreeSet<PartitionKey> = drops(&cmds).into_values().flatten().collect();
            assert_eq!(dropped, old_keys, "old partitions dropped on completion");
            for (worker, keys) in drops(&cmds) {
                assert!(keys.iter().all(|k| k.frame == frame));
                assert!(sim.partitions_of(worker).iter().all(|k| k.frame != frame));
            }
        }
        seen.extend(cmds);
        if done {
            break;
        }
    }
    let Some(ToClient::Persisted(new)) = final_reply(&seen, 5) else {
        panic!("expected Persisted");
    };
    let new_rows = total_rows(&smaller);
    assert_eq!(new.rows, new_rows);
    assert_eq!((new.partitions, new.partitions_held), (4, 4));
    assert_eq!(sim.list(6), vec![new]);
    let cmds = sim.request(
        7,
        ClientRequest::Len {
            source: "trips".into(),
        },
    );
    assert_eq!(final_reply(&cmds, 7), Some(ToClient::Count(new_rows)));
    sim.assert_idle();
}

// ----- 3. worker lost mid-persist --------------------------------------------

#[test]
fn worker_lost_mid_persist_reruns_its_task_and_rebuilds_its_partition() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let footers = dataset(4);

    let cmds = sim.start(1, persist("trips", false), &footers);
    let loads = load_runs(&cmds);
    assert_eq!(loads.len(), 2, "{loads:?}");
    let (w, p0_task, p0_key, p0_input) = loads[0].clone();
    assert_eq!(w, 1);
    assert_eq!(loads[1].0, 2);

    // Worker 1 loads its partition and starts the next one.
    let cmds = sim.finish_load(1, p0_task);
    let next = load_runs(&cmds);
    assert_eq!(next.len(), 1, "{cmds:?}");
    let (w, p2_task, p2_key, _) = next[0].clone();
    assert_eq!(w, 1);

    // Worker 1 goes away holding one partition and running another.
    let cmds = sim.leave(1);
    assert!(no_reply_at_all(&cmds), "the job goes on: {cmds:?}");
    assert!(run_tasks(&cmds).is_empty(), "worker 2 is busy");
    assert_eq!(sim.partitions_of(1), BTreeSet::new());

    let seen = sim.run_loads_to_end(1);
    let reruns = load_runs(&seen);
    assert!(reruns.iter().all(|l| l.0 == 2), "only worker 2 is left");
    // The running task is re-run as it was.
    assert!(
        reruns.iter().any(|l| l.1 == p2_task && l.2 == p2_key),
        "lost running task re-run: {reruns:?}"
    );
    // The loaded partition is rebuilt by a new Load of the same input.
    let rebuild: Vec<_> = reruns.iter().filter(|l| l.2 == p0_key).collect();
    assert_eq!(rebuild.len(), 1, "{reruns:?}");
    assert_ne!(rebuild[0].1, p0_task, "a rebuild is a new task");
    assert_eq!(rebuild[0].3, p0_input);

    let Some(ToClient::Persisted(summary)) = final_reply(&seen, 1) else {
        panic!("expected Persisted: {seen:?}");
    };
    assert_eq!(summary.partitions, 4);
    assert_eq!(summary.partitions_held, 4);
    assert_eq!(summary.rows, total_rows(&footers));
    let frame = p0_key.frame;
    let all: BTreeSet<PartitionKey> = (0..4).map(|index| PartitionKey { frame, index }).collect();
    assert_eq!(sim.partitions_of(2), all, "worker 2 holds everything");
    assert_eq!(sim.state.counters().workers_lost, 1);
    assert_eq!(sim.state.counters().partitions_rebuilt, 1);
    assert_eq!(sim.state.counters().tasks_retried, 1);
    sim.assert_idle();
}

// ----- 4. worker lost after persist ------------------------------------------

#[test]
fn worker_lost_after_persist_rebuilds_and_head_waits_for_the_new_holder() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let footers = dataset(2);
    let columns = Some(vec!["temperature".to_string()]);

    let mut seen = sim.start(
        1,
        ClientRequest::Persist {
            source: SOURCE.into(),
            name: "trips".into(),
            replace: false,
            columns: columns.clone(),
            steps: Vec::new(),
        },
        &footers,
    );
    let original = load_runs(&seen);
    seen.extend(sim.run_loads_to_end(1));
    assert!(matches!(
        final_reply(&seen, 1),
        Some(ToClient::Persisted(_))
    ));
    let by_worker: BTreeMap<WorkerId, PartitionKey> = original.iter().map(|l| (l.0, l.2)).collect();
    assert_eq!(by_worker.len(), 2, "one partition per worker: {original:?}");
    let lost_key = by_worker[&1];
    let kept_key = by_worker[&2];
    let lost_input = original.iter().find(|l| l.2 == lost_key).unwrap().3.clone();

    // Worker 1 leaves: its partition is rebuilt on worker 2 from the same input.
    let cmds = sim.leave(1);
    let runs = run_tasks(&cmds);
    assert_eq!(runs.len(), 1, "{cmds:?}");
    let (w, rebuild) = runs[0].clone();
    assert_eq!(w, 2);
    assert_eq!(
        rebuild.kind,
        TaskKind::Load {
            key: lost_key,
            input: LoadInput::Parquet(lost_input),
            columns: columns.clone(),
            steps: Vec::new(),
        }
    );
    assert!(no_reply_at_all(&cmds));
    let frames = sim.list(2);
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].partitions, frames[0].partitions_held), (2, 1));
    assert_eq!(
        frames[0].rows,
        total_rows(&footers),
        "rows kept from lineage"
    );

    // A fresh worker with plenty of threads joins: it must not get the head of a
    // partition it does not hold.
    let cmds = sim.join(3, 4);
    assert!(cmds.is_empty(), "{cmds:?}");
    let cmds = sim.request(
        3,
        ClientRequest::Head {
            source: "trips".into(),
            n: 15,
            columns: None,
        },
    );
    assert!(
        run_tasks(&cmds).is_empty(),
        "head waits for the rebuild: {cmds:?}"
    );
    assert!(no_reply_at_all(&cmds));

    // The rebuild lands: the head runs on the partition's new holder.
    let cmds = sim.finish_load(2, rebuild.id);
    let runs = run_tasks(&cmds);
    assert_eq!(runs.len(), 1, "{cmds:?}");
    assert_eq!(runs[0].0, 2, "pinned to the holder, not the idle worker");
    assert_eq!(
        runs[0].1.kind,
        TaskKind::Head {
            input: HeadInput::Persisted(lost_key),
            n: 15,
            columns: None,
        }
    );
    let frames = sim.list(4);
    assert_eq!((frames[0].partitions, frames[0].partitions_held), (2, 2));
    assert_eq!(sim.partitions_of(2), BTreeSet::from([lost_key, kept_key]));

    // Not enough rows yet: the next partition's head, again on its holder.
    let first_table = vec![1u8, 2, 3];
    let cmds = sim.finish(
        2,
        runs[0].1.id,
        TaskOutput::Table {
            rows: 10,
            ipc: first_table.clone(),
        },
    );
    let runs = run_tasks(&cmds);
    assert_eq!(runs.len(), 1, "{cmds:?}");
    assert_eq!(runs[0].0, 2);
    assert_eq!(
        runs[0].1.kind,
        TaskKind::Head {
            input: HeadInput::Persisted(kept_key),
            n: 5,
            columns: None,
        }
    );
    let second_table = vec![4u8, 5];
    let cmds = sim.finish(
        2,
        runs[0].1.id,
        TaskOutput::Table {
            rows: 5,
            ipc: second_table.clone(),
        },
    );
    let mut expected = Vec::new();
    for t in [&first_table, &second_table] {
        expected.extend_from_slice(&(t.len() as u64).to_le_bytes());
        expected.extend_from_slice(t);
    }
    assert_eq!(final_reply(&cmds, 3), Some(ToClient::Table(expected)));
    sim.assert_idle();
}

// ----- 5. heartbeat timeout --------------------------------------------------

#[test]
fn heartbeat_timeout_disconnects_a_silent_worker_and_requeues_its_tasks() {
    let mut sim = Sim::new(Config {
        heartbeat_timeout: Duration::from_secs(5),
        ..Config::default()
    });
    sim.join(1, 1);
    sim.join(2, 1);
    let footers = dataset(2);

    let cmds = sim.request(
        1,
        ClientRequest::Len {
            source: SOURCE.into(),
        },
    );
    let runs = run_tasks(&cmds);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].0, 1);
    let listing = runs[0].1.clone();

    sim.at(Duration::from_secs(3));
    let cmds = sim.send(Event::Heartbeat {
        worker: 2,
        memory_used: 1234,
    });
    assert!(cmds.is_empty());
    assert_eq!(sim.state.cluster_info().memory_used, 1234);

    // Exactly the timeout: not yet "longer than".
    sim.at(Duration::from_secs(5));
    assert!(sim.send(Event::Tick).is_empty());

    sim.at(Duration::from_secs(6));
    let cmds = sim.send(Event::Tick);
    let disconnects: Vec<_> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::DisconnectWorker { worker, reason } => Some((*worker, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(disconnects.len(), 1, "{cmds:?}");
    assert_eq!(disconnects[0].0, 1, "only the silent worker goes");
    assert!(disconnects[0].1.contains("w1"), "{}", disconnects[0].1);
    // Its task runs again on the worker that kept in touch.
    assert_eq!(run_tasks(&cmds), vec![(2, listing)]);
    assert!(no_reply_at_all(&cmds));
    assert_eq!(
        sim.state.workers().map(|w| w.id).collect::<Vec<_>>(),
        vec![2]
    );

    // The job completes on worker 2.
    let cmds = sim.answer_listing(&footers);
    assert!(run_tasks(&cmds).iter().all(|(w, _)| *w == 2));
    let cmds = sim.answer_footers(&footers);
    assert_eq!(final_reply(&cmds, 1), Some(ToClient::Count(30)));

    // Reports count as signs of life: worker 2 last spoke at 6s.
    sim.at(Duration::from_secs(10));
    assert!(sim.send(Event::Tick).is_empty());
    sim.at(Duration::from_secs(11) + Duration::from_millis(500));
    let cmds = sim.send(Event::Tick);
    assert!(
        matches!(
            cmds.as_slice(),
            [Command::DisconnectWorker { worker: 2, .. }]
        ),
        "{cmds:?}"
    );
    assert_eq!(sim.state.workers().count(), 0);
    sim.assert_idle();
}

// ----- 6. task failure -------------------------------------------------------

#[test]
fn task_failure_fails_the_job_cancels_its_tasks_and_drops_its_partitions() {
    let mut sim = Sim::with_workers(&[(1, 2), (2, 2)]);
    let footers = dataset(4);

    let cmds = sim.start(1, persist("trips", false), &footers);
    let loads = load_runs(&cmds);
    assert_eq!(loads.len(), 4, "{loads:?}");
    let on = |w: WorkerId| -> Vec<_> { loads.iter().filter(|l| l.0 == w).cloned().collect() };
    let (w1, w2) = (on(1), on(2));
    assert_eq!((w1.len(), w2.len()), (2, 2));

    // Worker 1 loads one partition.
    let cmds = sim.finish_load(1, w1[0].1);
    assert!(final_reply(&cmds, 1).is_none(), "progress only: {cmds:?}");
    let loaded_key = w1[0].2;

    // Worker 2 fails on a file.
    let error = "file /data/trips/part-3.parquet: corrupt page header";
    let cmds = sim.fail(2, w2[1].1, error);
    let got = expect_error(&cmds, 1);
    assert!(got.contains("/data/trips/part-3.parquet"), "{got}");
    assert_eq!(
        cancels(&cmds),
        BTreeMap::from([
            (1, BTreeSet::from([w1[1].1])),
            (2, BTreeSet::from([w2[0].1])),
        ]),
        "the other running tasks are cancelled"
    );
    assert_eq!(
        drops(&cmds),
        BTreeMap::from([(1, BTreeSet::from([loaded_key]))]),
        "the loaded partition is released"
    );
    assert!(run_tasks(&cmds).is_empty());
    assert_eq!(sim.running_count(), 0);
    sim.assert_idle();
    assert!(sim.list(2).is_empty(), "no half-persisted frame");
    assert!(sim.partitions_of(1).is_empty());
    assert_eq!(sim.state.counters().tasks_failed, 1);

    // A late report of a cancelled load is released, not counted.
    let cmds = sim.finish_load(1, w1[1].1);
    assert_eq!(
        cmds,
        vec![Command::ToWorker {
            worker: 1,
            message: ToWorker::Drop(vec![w1[1].2]),
        }]
    );

    // The machine serves the next requests normally.
    let cmds = sim.start(
        3,
        ClientRequest::Len {
            source: SOURCE.into(),
        },
        &footers,
    );
    assert_eq!(final_reply(&cmds, 3), Some(ToClient::Count(100)));
    let (summary, _) = sim.persist_all(4, "trips", false, &footers);
    assert_eq!((summary.partitions, summary.partitions_held), (4, 4));
    sim.assert_idle();
}

// ----- 7. schema disagreement ------------------------------------------------

#[test]
fn footers_that_disagree_on_the_schema_fail_naming_file_and_field() {
    let mut sim = Sim::with_workers(&[(1, 1)]);
    let footers = vec![
        footer_with("/data/a.parquet", 10, DataType::Float64),
        footer_with("/data/b.parquet", 10, DataType::Int32),
    ];
    let cmds = sim.start(1, persist("weather", false), &footers);
    let error = expect_error(&cmds, 1);
    assert!(error.contains("/data/b.parquet"), "{error}");
    assert!(error.contains("temperature"), "{error}");
    assert!(
        error.contains("Int32") && error.contains("Float64"),
        "{error}"
    );
    assert!(load_runs(&cmds).is_empty(), "nothing loaded");
    sim.assert_idle();
    assert!(sim.list(2).is_empty());

    // The order in which workers return footers does not matter.
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let reversed: Vec<FooterMeta> = footers.iter().rev().cloned().collect();
    let cmds = sim.start(
        1,
        ClientRequest::Len {
            source: "/data/*.parquet".into(),
        },
        &reversed,
    );
    let error = expect_error(&cmds, 1);
    assert!(error.contains("/data/b.parquet"), "{error}");
    assert!(error.contains("temperature"), "{error}");
    sim.assert_idle();
}

// ----- 8. request cancelled --------------------------------------------------

#[test]
fn cancelled_request_stops_its_job_silently() {
    let mut sim = Sim::with_workers(&[(1, 2)]);
    let footers = dataset(4);

    let cmds = sim.start(1, persist("trips", false), &footers);
    let loads = load_runs(&cmds);
    assert_eq!(loads.len(), 2, "two threads: {loads:?}");
    assert_eq!(sim.state.task_counts(), (2, 2), "two queued, two running");
    let cmds = sim.finish_load(1, loads[0].1);
    let third = load_runs(&cmds);
    assert_eq!(third.len(), 1);

    let cmds = sim.send(Event::RequestCancelled { request: 1 });
    assert!(no_reply_at_all(&cmds), "nobody to answer: {cmds:?}");
    assert_eq!(
        cancels(&cmds),
        BTreeMap::from([(1, BTreeSet::from([loads[1].1, third[0].1]))])
    );
    assert_eq!(
        drops(&cmds),
        BTreeMap::from([(1, BTreeSet::from([loads[0].2]))]),
        "the partition loaded so far is released"
    );
    assert!(run_tasks(&cmds).is_empty(), "the queue is emptied");
    assert_eq!(sim.running_count(), 0);
    sim.assert_idle();
    assert!(sim.list(2).is_empty());

    // A report that crossed the cancel is released; nothing is answered.
    let cmds = sim.finish_load(1, loads[1].1);
    assert_eq!(
        cmds,
        vec![Command::ToWorker {
            worker: 1,
            message: ToWorker::Drop(vec![loads[1].2]),
        }]
    );
    // Cancelling again, or an unknown request, does nothing.
    assert!(sim.send(Event::RequestCancelled { request: 1 }).is_empty());

    // The name is free again.
    let (summary, _) = sim.persist_all(3, "trips", false, &footers);
    assert_eq!(summary.partitions_held, 4);
}

// ----- 9. stale reports ------------------------------------------------------

/// Two workers with one thread each persist two partitions; worker 1 is lost
/// while loading its partition, which is handed to worker 2 under the same task
/// id once worker 2 is free. Returns (task id, key) of the re-run partition.
fn lose_worker_one_mid_load(sim: &mut Sim) -> (TaskId, PartitionKey) {
    let footers = dataset(2);
    let cmds = sim.start(1, persist("trips", false), &footers);
    let loads = load_runs(&cmds);
    assert_eq!(loads.len(), 2);
    assert_eq!((loads[0].0, loads[1].0), (1, 2));
    let (task, key) = (loads[0].1, loads[0].2);

    let cmds = sim.leave(1);
    assert!(cmds.is_empty(), "worker 2 is busy: {cmds:?}");
    let cmds = sim.finish_load(2, loads[1].1);
    assert_eq!(
        run_tasks(&cmds)
            .into_iter()
            .map(|(w, t)| (w, t.id))
            .collect::<Vec<_>>(),
        vec![(2, task)],
        "the same task id re-run on worker 2"
    );
    (task, key)
}

#[test]
fn stale_report_after_the_rerun_is_dropped_and_the_counted_copy_kept() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let (task, key) = lose_worker_one_mid_load(&mut sim);
    let cmds = sim.finish_load(2, task);
    let Some(ToClient::Persisted(summary)) = final_reply(&cmds, 1) else {
        panic!("expected Persisted: {cmds:?}");
    };
    assert_eq!(summary.partitions_held, 2);

    // The old worker's report finally arrives.
    let cmds = sim.finish_load(1, task);
    assert_eq!(
        cmds,
        vec![Command::ToWorker {
            worker: 1,
            message: ToWorker::Drop(vec![key]),
        }],
        "only the stale copy is released"
    );
    assert!(sim.partitions_of(2).contains(&key), "counted copy kept");
    let frames = sim.list(2);
    assert_eq!((frames[0].partitions, frames[0].partitions_held), (2, 2));
    sim.assert_idle();
}

#[test]
fn stale_report_before_the_rerun_finishes_does_not_count() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let (task, key) = lose_worker_one_mid_load(&mut sim);

    let cmds = sim.finish_load(1, task);
    assert_eq!(
        cmds,
        vec![Command::ToWorker {
            worker: 1,
            message: ToWorker::Drop(vec![key]),
        }]
    );
    // A stale failure does not fail the job either.
    let cmds = sim.fail(1, task, "file /data/trips/part-0.parquet: gone");
    assert!(cmds.is_empty(), "{cmds:?}");
    assert!(sim.state.jobs_in_progress() == 1);

    // The re-run on worker 2 is the one that counts.
    let cmds = sim.finish_load(2, task);
    let Some(ToClient::Persisted(summary)) = final_reply(&cmds, 1) else {
        panic!("expected Persisted: {cmds:?}");
    };
    assert_eq!(summary.partitions_held, 2);
    assert!(sim.partitions_of(2).contains(&key));
    assert!(drops(&cmds).is_empty());
    sim.assert_idle();
}

// ----- 10. max attempts ------------------------------------------------------

#[test]
fn task_lost_with_max_attempts_workers_fails_its_job() {
    let mut sim = Sim::new(Config {
        max_task_attempts: 3,
        ..Config::default()
    });
    sim.join(1, 1);
    let cmds = sim.request(
        1,
        ClientRequest::Len {
            source: SOURCE.into(),
        },
    );
    let runs = run_tasks(&cmds);
    assert_eq!(runs.len(), 1);
    let task = runs[0].1.clone();

    for worker in [1, 2] {
        let cmds = sim.leave(worker);
        assert!(no_reply_at_all(&cmds), "lost {} time(s): retry", worker);
        assert!(cmds.is_empty());
        assert_eq!(sim.state.task_counts(), (1, 0), "queued while no worker");
        let cmds = sim.join(worker + 1, 1);
        assert_eq!(run_tasks(&cmds), vec![(worker + 1, task.clone())]);
    }
    let cmds = sim.leave(3);
    let error = expect_error(&cmds, 1);
    assert!(error.contains("lost"), "{error}");
    assert!(error.contains('3'), "{error}");
    assert!(error.contains("w3"), "names the last worker: {error}");
    sim.assert_idle();
    assert_eq!(sim.state.counters().tasks_retried, 2);

    // Nothing is left to run on a new worker; the next request works.
    let cmds = sim.join(4, 1);
    assert!(cmds.is_empty(), "{cmds:?}");
    let footers = dataset(3);
    let cmds = sim.start(
        2,
        ClientRequest::Len {
            source: SOURCE.into(),
        },
        &footers,
    );
    assert_eq!(final_reply(&cmds, 2), Some(ToClient::Count(60)));
}

// ----- bugs found ------------------------------------------------------------

/// Whether `request` can still get an answer: it was answered, or a Load of
/// `key` (a rebuild the head could wait for) is running somewhere.
fn head_can_progress(sim: &Sim, seen: &[Command], request: RequestId, key: PartitionKey) -> bool {
    final_reply(seen, request).is_some()
        || !sim
            .running_where(|k| matches!(k, TaskKind::Load { key: k2, .. } if *k2 == key))
            .is_empty()
}

#[test]
fn head_on_old_frame_queued_during_replace_gets_an_answer() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let footers = dataset(2);
    sim.persist_all(1, "trips", false, &footers);

    // A replace keeps both workers busy...
    let cmds = sim.start(2, persist("trips", true), &dataset(2));
    let loads = load_runs(&cmds);
    assert_eq!(loads.len(), 2);
    // ...so a head on the (still current) old frame waits for worker 1.
    let mut seen = sim.request(
        3,
        ClientRequest::Head {
            source: "trips".into(),
            n: 5,
            columns: None,
        },
    );
    assert!(run_tasks(&seen).is_empty());
    let on_2 = loads.iter().find(|l| l.0 == 2).unwrap().1;
    let on_1 = loads.iter().find(|l| l.0 == 1).unwrap().1;
    seen.extend(sim.finish_load(2, on_2));
    let cmds = sim.finish_load(1, on_1);
    assert!(matches!(
        final_reply(&cmds, 2),
        Some(ToClient::Persisted(_))
    ));
    seen.extend(cmds);
    // Both workers are idle now; time passes.
    sim.at(Duration::from_secs(1));
    seen.extend(sim.send(Event::Tick));
    assert!(
        final_reply(&seen, 3).is_some() || !run_tasks(&seen).is_empty(),
        "the head request is never answered: its task is pinned to a partition of the \
         dropped frame and can never be placed (jobs in progress: {}, tasks queued/running: {:?})",
        sim.state.jobs_in_progress(),
        sim.state.task_counts()
    );
}

#[test]
fn head_after_a_failed_rebuild_gets_an_answer() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let (_, seen) = sim.persist_all(1, "trips", false, &dataset(2));
    let lost_key = load_runs(&seen).iter().find(|l| l.0 == 1).unwrap().2;

    let cmds = sim.leave(1);
    let (_, rebuild) = run_tasks(&cmds).remove(0);
    let cmds = sim.fail(
        2,
        rebuild.id,
        "file /data/trips/part-0.parquet: No such file",
    );
    assert!(cmds.is_empty(), "{cmds:?}");

    let mut seen = sim.join(3, 2);
    seen.extend(sim.request(
        2,
        ClientRequest::Head {
            source: "trips".into(),
            n: 5,
            columns: None,
        },
    ));
    sim.at(Duration::from_secs(1));
    seen.extend(sim.send(Event::Tick));
    assert!(
        head_can_progress(&sim, &seen, 2, lost_key),
        "the head request hangs: partition {lost_key:?} has no holder and no rebuild, its \
         rebuild error was swallowed (list: {:?}, tasks queued/running: {:?})",
        sim.list(99),
        sim.state.task_counts()
    );
}

#[test]
fn head_after_a_rebuild_lost_max_attempts_times_gets_an_answer() {
    let mut sim = Sim::new(Config {
        max_task_attempts: 2,
        ..Config::default()
    });
    sim.join(1, 1);
    sim.join(2, 1);
    let (_, seen) = sim.persist_all(1, "trips", false, &dataset(2));
    let lost_key = load_runs(&seen).iter().find(|l| l.0 == 1).unwrap().2;

    // The rebuild of worker 1's partition is lost with worker 2, then worker 3.
    let cmds = sim.leave(1);
    assert_eq!(run_tasks(&cmds)[0].0, 2);
    sim.leave(2);
    let cmds = sim.join(3, 2);
    assert_eq!(run_tasks(&cmds).len(), 2, "both partitions rebuilt on 3");
    let cmds = sim.leave(3);
    assert!(no_reply_at_all(&cmds), "no job to fail: {cmds:?}");

    let mut seen = sim.join(4, 2);
    seen.extend(sim.request(
        2,
        ClientRequest::Head {
            source: "trips".into(),
            n: 5,
            columns: None,
        },
    ));
    sim.at(Duration::from_secs(1));
    seen.extend(sim.send(Event::Tick));
    assert!(
        head_can_progress(&sim, &seen, 2, lost_key),
        "the head request hangs: the rebuild task was dropped after max attempts but the \
         partition still records it as loading, so nothing rebuilds it (list: {:?}, tasks \
         queued/running: {:?})",
        sim.list(99),
        sim.state.task_counts()
    );
}

// ----- 11. group-by merge tree -----------------------------------------------

fn groupby_mean(source: &str) -> ClientRequest {
    ClientRequest::GroupBy {
        source: source.to_string(),
        keys: vec!["city".into()],
        aggs: vec![("temperature".into(), AggFunc::Mean)],
        all_numeric: None,
    }
}

fn is_groupby_task(kind: &TaskKind) -> bool {
    matches!(
        kind,
        TaskKind::GroupByPartial { .. }
            | TaskKind::GroupByMerge { .. }
            | TaskKind::GroupByFinal { .. }
    )
}

/// A mailbox on a worker: (worker, job, tag).
type Target = (WorkerId, u64, u32);

fn target(worker: WorkerId, m: MailboxKey) -> Target {
    (worker, m.job, m.tag)
}

/// Where a task delivers, for partials and merges.
fn delivery_of(kind: &TaskKind) -> Option<Target> {
    match kind {
        TaskKind::GroupByPartial {
            mailbox,
            deliver_to,
            ..
        } => Some(target(deliver_to.worker, *mailbox)),
        TaskKind::GroupByMerge {
            deliver_to, out, ..
        } => Some(target(deliver_to.worker, *out)),
        _ => None,
    }
}

/// The mailbox a merge or final on `worker` reads and how many deliveries
/// it expects.
fn reads_of(worker: WorkerId, kind: &TaskKind) -> Option<(Target, u32)> {
    match kind {
        TaskKind::GroupByMerge {
            mailbox, expect, ..
        }
        | TaskKind::GroupByFinal {
            mailbox, expect, ..
        } => Some((target(worker, *mailbox), *expect)),
        _ => None,
    }
}

/// Finish a group-by's running tasks round by round, as workers would:
/// partials and merges report a delivery, the final a table. Checks that
/// each merge and the final expect exactly what their mailbox received, that
/// no mailbox receives more than the fan-in (8), and that nothing is left
/// undelivered. Returns every round's tasks and the commands of the last step.
fn run_groupby_tree(
    sim: &mut Sim,
    request: RequestId,
) -> (Vec<Vec<(WorkerId, TaskKind)>>, Vec<Command>) {
    let mut mailboxes: BTreeMap<Target, u32> = BTreeMap::new();
    let mut rounds = Vec::new();
    for _ in 0..10 {
        let tasks = sim.running_where(is_groupby_task);
        assert!(!tasks.is_empty(), "no group-by task running, no answer");
        let mut last = Vec::new();
        for (worker, id, kind) in &tasks {
            if let Some((at, expect)) = reads_of(*worker, kind) {
                assert_eq!(mailboxes.remove(&at), Some(expect), "merge at {at:?}");
            }
            let output = match delivery_of(kind) {
                Some(to) => {
                    let got = mailboxes.entry(to).or_default();
                    *got += 1;
                    assert!(*got <= 8, "mailbox {to:?} received more than 8 partials");
                    TaskOutput::Delivered {
                        rows: 3,
                        bytes: 100,
                    }
                }
                None => TaskOutput::Table {
                    rows: 3,
                    ipc: vec![1, 2, 3],
                },
            };
            last = sim.finish(*worker, *id, output);
        }
        rounds.push(tasks.into_iter().map(|(w, _, k)| (w, k)).collect());
        if final_reply(&last, request).is_some() {
            assert!(mailboxes.is_empty(), "undelivered partials: {mailboxes:?}");
            return (rounds, last);
        }
    }
    panic!("the group-by did not end in 10 rounds");
}

/// Senders of these delivering tasks, by target.
fn targets(tasks: &[(WorkerId, TaskKind)]) -> BTreeMap<Target, Vec<WorkerId>> {
    let mut out: BTreeMap<Target, Vec<WorkerId>> = BTreeMap::new();
    for (worker, kind) in tasks {
        let to = delivery_of(kind).expect("a delivering task");
        out.entry(to).or_default().push(*worker);
    }
    out
}

/// 20 workers x 1 thread holding one partition each of a persisted "trips".
fn twenty_holders() -> Sim {
    let workers: Vec<(WorkerId, u32)> = (1..=20).map(|w| (w, 1)).collect();
    let mut sim = Sim::with_workers(&workers);
    sim.persist_all(1, "trips", false, &dataset(20));
    for w in 1..=20 {
        assert_eq!(sim.partitions_of(w).len(), 1, "worker {w}");
    }
    sim
}

#[test]
fn groupby_over_twenty_holders_merges_in_a_tree_of_fan_in_eight() {
    let mut sim = twenty_holders();
    let cmds = sim.request(2, groupby_mean("trips"));
    assert!(no_reply_at_all(&cmds));
    let (rounds, last) = run_groupby_tree(&mut sim, 2);
    assert_eq!(
        rounds.len(),
        3,
        "partials, one merge level, final: {rounds:#?}"
    );

    // (a) Every holder's partial goes to one of ceil(20/8) = 3 intermediate
    // mailboxes, on a worker of its own group, at most 8 each.
    let partials = &rounds[0];
    assert_eq!(partials.len(), 20);
    assert!(partials
        .iter()
        .all(|(_, k)| matches!(k, TaskKind::GroupByPartial { .. })));
    let level1 = targets(partials);
    assert_eq!(level1.len(), 3, "{level1:?}");
    let tags: BTreeSet<u32> = level1.keys().map(|(_, _, tag)| *tag).collect();
    assert_eq!(tags.len(), 3, "one tag per group");
    for ((merger, _, tag), senders) in &level1 {
        assert!(senders.len() <= 8, "mailbox {tag} gets {}", senders.len());
        assert!(senders.contains(merger), "the merger is one of its group");
    }

    // (b) The merge round: one merge per group, where its mailbox is, each
    // delivering one merged partial to the root.
    let merges = &rounds[1];
    assert_eq!(merges.len(), 3);
    let mut merged = BTreeSet::new();
    for (worker, kind) in merges {
        let Some((at, expect)) = reads_of(*worker, kind) else {
            panic!("expected a merge, got {kind:?}");
        };
        assert!(matches!(kind, TaskKind::GroupByMerge { .. }));
        assert_eq!(expect as usize, level1[&at].len());
        merged.insert(at);
    }
    assert_eq!(merged, level1.keys().copied().collect());
    let root = targets(merges);
    assert_eq!(root.len(), 1, "every merge delivers to the root: {root:?}");
    let (&(root_worker, _, root_tag), senders) = root.iter().next().unwrap();
    assert!(
        senders.contains(&root_worker),
        "the root merged a group itself"
    );
    assert!(
        !tags.contains(&root_tag),
        "the root's mailbox has its own tag"
    );

    // (c) The root merges at most 8 partials and finalizes.
    assert!(matches!(
        &rounds[2][..],
        [(w, TaskKind::GroupByFinal { mailbox, expect, .. })]
            if *w == root_worker && mailbox.tag == root_tag && *expect == 3
    ));
    let Some(ToClient::Table(table)) = final_reply(&last, 2) else {
        panic!("expected a table: {last:?}");
    };
    assert_eq!(&table[8..], &[1, 2, 3]);
    let forgotten: BTreeSet<WorkerId> = last
        .iter()
        .filter_map(|c| match c {
            Command::ToWorker {
                worker,
                message: ToWorker::Forget { .. },
            } => Some(*worker),
            _ => None,
        })
        .collect();
    assert_eq!(forgotten, (1..=20).collect(), "every mailbox forgotten");
    sim.assert_idle();
}

#[test]
fn groupby_over_eight_holders_stays_a_star_of_two_rounds() {
    let workers: Vec<(WorkerId, u32)> = (1..=8).map(|w| (w, 1)).collect();
    let mut sim = Sim::with_workers(&workers);
    sim.persist_all(1, "trips", false, &dataset(8));
    sim.request(2, groupby_mean("trips"));
    let (rounds, last) = run_groupby_tree(&mut sim, 2);
    assert_eq!(rounds.len(), 2);
    let to = targets(&rounds[0]);
    assert_eq!(to.len(), 1, "all 8 partials go to the root: {to:?}");
    let (&(root, _, tag), _) = to.iter().next().unwrap();
    assert!(matches!(
        &rounds[1][..],
        [(w, TaskKind::GroupByFinal { mailbox, expect: 8, .. })] if *w == root && mailbox.tag == tag
    ));
    assert!(matches!(final_reply(&last, 2), Some(ToClient::Table(_))));
    sim.assert_idle();
}

#[test]
fn groupby_tree_losing_an_intermediate_merger_restarts_under_new_tags() {
    let mut sim = twenty_holders();
    sim.request(2, groupby_mean("trips"));
    let partials = sim.running_where(|k| matches!(k, TaskKind::GroupByPartial { .. }));
    let first: Vec<(WorkerId, TaskKind)> =
        partials.iter().map(|(w, _, k)| (*w, k.clone())).collect();
    let level1 = targets(&first);
    let old_tags: BTreeSet<u32> = level1.keys().map(|(_, _, tag)| *tag).collect();

    // The first group's partials all reach its merger, which is then lost
    // while the other groups' partials still run.
    let (&group_mailbox, group) = level1.iter().next().unwrap();
    let merger = group_mailbox.0;
    let to_merger = |kind: &TaskKind| delivery_of(kind) == Some(group_mailbox);
    let delivered = TaskOutput::Delivered {
        rows: 3,
        bytes: 100,
    };
    for (worker, id, kind) in &partials {
        if to_merger(kind) {
            let cmds = sim.finish(*worker, *id, delivered.clone());
            assert!(no_reply_at_all(&cmds));
        }
    }
    let cmds = sim.leave(merger);
    let rebuild = load_runs(&cmds);
    assert_eq!(rebuild.len(), 1, "its partition is rebuilt: {cmds:?}");
    assert!(
        group.contains(&rebuild[0].0),
        "on a worker whose partial is done"
    );

    // The round ends; the merge round waits for the rebuild, then finds its
    // merger gone and starts the tree again from the partials.
    for (worker, id, kind) in &partials {
        if !to_merger(kind) {
            let cmds = sim.finish(*worker, *id, delivered.clone());
            assert!(no_reply_at_all(&cmds));
        }
    }
    assert!(
        sim.running_where(is_groupby_task).is_empty(),
        "nothing merges before the lost partition is back"
    );
    let cmds = sim.finish_load(rebuild[0].0, rebuild[0].1);
    assert!(no_reply_at_all(&cmds));
    let again = run_tasks(&cmds);
    assert_eq!(again.len(), 19, "a partial per remaining holder: {again:?}");
    let second: Vec<(WorkerId, TaskKind)> = again.into_iter().map(|(w, t)| (w, t.kind)).collect();
    let level1 = targets(&second);
    assert_eq!(level1.len(), 3);
    for ((to, _, tag), senders) in &level1 {
        assert_ne!(*to, merger);
        assert!(senders.len() <= 8);
        assert!(
            !old_tags.contains(tag),
            "tag {tag} of the first attempt reused"
        );
    }

    // The rest of the tree runs as usual and answers.
    let (rounds, last) = run_groupby_tree(&mut sim, 2);
    assert_eq!(rounds.len(), 3);
    assert!(matches!(final_reply(&last, 2), Some(ToClient::Table(_))));
    sim.assert_idle();
}

#[test]
fn groupby_tree_losing_a_merger_mid_merge_restarts_under_new_tags() {
    let mut sim = twenty_holders();
    sim.request(2, groupby_mean("trips"));
    let partials = sim.running_where(|k| matches!(k, TaskKind::GroupByPartial { .. }));
    let first: Vec<(WorkerId, TaskKind)> =
        partials.iter().map(|(w, _, k)| (*w, k.clone())).collect();
    let old_tags: BTreeSet<u32> = targets(&first).keys().map(|(_, _, tag)| *tag).collect();
    for (worker, id, _) in &partials {
        sim.finish(
            *worker,
            *id,
            TaskOutput::Delivered {
                rows: 3,
                bytes: 100,
            },
        );
    }

    // An intermediate merger (not the root) is lost while the merges run.
    let merges = sim.running_where(|k| matches!(k, TaskKind::GroupByMerge { .. }));
    assert_eq!(merges.len(), 3);
    let (merger, _, _) = merges
        .iter()
        .find(|(w, _, k)| delivery_of(k).is_some_and(|(to, _, _)| to != *w))
        .cloned()
        .expect("a merger that is not the root");
    let cmds = sim.leave(merger);
    assert!(no_reply_at_all(&cmds));
    let cancelled: BTreeSet<WorkerId> = cancels(&cmds).keys().copied().collect();
    let others: BTreeSet<WorkerId> = merges
        .iter()
        .map(|(w, _, _)| *w)
        .filter(|w| *w != merger)
        .collect();
    assert_eq!(cancelled, others, "the round's other merges are cancelled");
    let rebuild = load_runs(&cmds);
    assert_eq!(rebuild.len(), 1, "its partition is rebuilt: {cmds:?}");

    // Once the partition is back, the tree starts again under new tags.
    let cmds = sim.finish_load(rebuild[0].0, rebuild[0].1);
    let again = run_tasks(&cmds);
    assert_eq!(again.len(), 19, "a partial per remaining holder: {again:?}");
    let second: Vec<(WorkerId, TaskKind)> = again.into_iter().map(|(w, t)| (w, t.kind)).collect();
    for (to, _, tag) in targets(&second).keys() {
        assert_ne!(*to, merger);
        assert!(
            !old_tags.contains(tag),
            "tag {tag} of the first attempt reused"
        );
    }
    let (rounds, last) = run_groupby_tree(&mut sim, 2);
    assert_eq!(rounds.len(), 3);
    assert!(matches!(final_reply(&last, 2), Some(ToClient::Table(_))));
    sim.assert_idle();
}
