//! The sans-IO scheduler alone, at scale (issue 13): no sockets, no worker
//! processes. A driver joins N simulated workers of 8 threads, persists a
//! frame of P partitions from a simulated Parquet listing, then runs every
//! job kind on it (len, describe, group-by, memory usage, head, sort ranged
//! and by shuffle, write), answering every task with a plausible output as
//! soon as it is dispatched (oldest first, one report per event). Only the
//! time spent inside `SchedulerState::handle` counts as scheduler time; the
//! driver's own work (making answers) is left out.
//!
//! ```sh
//! cargo bench -p stratus-scheduler-core --bench scheduler            # 100/1000 workers x 10k/100k partitions
//! cargo bench -p stratus-scheduler-core --bench scheduler -- --quick # 10/100 workers x 1k/10k partitions
//! ```
//!
//! Flags: `--workers 100,1000`, `--partitions 10000,100000`, `--threads 8`,
//! `--max-seconds S` (scheduler time a job may take before it is reported
//! as timed out and the configuration's remaining jobs skipped),
//! `--max-owner-refs N` (a shuffle sort hands each holder every owner once:
//! holders x owners peer references; above N it is skipped).
//! The table is printed and written to `target/bench-scheduler.md`.

use std::collections::{HashSet, VecDeque};
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use stratus_engine::describe;
use stratus_protocol::messages::{
    AggFunc, ClientRequest, FileRef, FooterMeta, LoadInput, PartitionBoundsWire, ReduceOp,
    RowGroupMeta, TaskAssignment, TaskKind, TaskOutput, TaskReport, ToClient, ToWorker, WorkerInfo,
};
use stratus_scheduler_core::{Command, Config, Event, RequestId, SchedulerState, WorkerId};

const SOURCE: &str = "/data/bench/*.parquet";

struct Args {
    workers: Vec<usize>,
    partitions: Vec<usize>,
    threads: u32,
    max_seconds: f64,
    max_owner_refs: u64,
    quick: bool,
}

fn list(s: &str) -> Vec<usize> {
    s.split(',')
        .map(|v| v.replace('_', "").parse().expect("a number"))
        .collect()
}

fn args() -> Args {
    let mut a = Args {
        workers: vec![100, 1000],
        partitions: vec![10_000, 100_000],
        threads: 8,
        max_seconds: 120.0,
        max_owner_refs: 20_000_000,
        quick: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => {
                a.quick = true;
                a.workers = vec![10, 100];
                a.partitions = vec![1_000, 10_000];
            }
            "--workers" => a.workers = list(&it.next().expect("--workers N,M")),
            "--partitions" => a.partitions = list(&it.next().expect("--partitions N,M")),
            "--threads" => a.threads = it.next().expect("--threads N").parse().unwrap(),
            "--max-seconds" => a.max_seconds = it.next().expect("--max-seconds S").parse().unwrap(),
            "--max-owner-refs" => {
                a.max_owner_refs = it.next().expect("--max-owner-refs N").parse().unwrap()
            }
            _ => {} // `--bench` and the like, from cargo
        }
    }
    a
}

// ----- plausible data ----------------------------------------------------------

fn ipc_of(batch: &RecordBatch) -> Vec<u8> {
    stratus_protocol::ipc::encode_batches(&batch.schema(), std::slice::from_ref(batch)).unwrap()
}

fn floats(columns: Vec<(&str, Vec<f64>)>) -> Vec<u8> {
    let batch = RecordBatch::try_from_iter(
        columns
            .into_iter()
            .map(|(name, values)| (name, Arc::new(Float64Array::from(values)) as ArrayRef)),
    )
    .unwrap();
    ipc_of(&batch)
}

/// The rows of partition `index` as the describe kernels see them: a few
/// temperatures, all distinct across partitions (quantile rounds run).
fn partition_batch(index: u32) -> RecordBatch {
    let values: Vec<f64> = (0..4)
        .map(|i| ((index as usize * 4 + i) * 7919 % 1_000_003) as f64 * 0.001 - 20.0)
        .collect();
    let cities: Vec<&str> = values.iter().map(|_| "x").collect();
    RecordBatch::try_from_iter([
        ("city", Arc::new(StringArray::from(cities)) as ArrayRef),
        (
            "temperature",
            Arc::new(Float64Array::from(values)) as ArrayRef,
        ),
    ])
    .unwrap()
}

fn file_path(i: usize) -> String {
    format!("/data/bench/part-{i:07}.parquet")
}

fn file_index(path: &str) -> usize {
    path.trim_start_matches("/data/bench/part-")
        .trim_end_matches(".parquet")
        .parse()
        .expect("a bench file")
}

#[derive(Clone, Copy, PartialEq)]
enum SortMode {
    /// Partitions range the key: the sort is a derived persist.
    Ranged,
    /// Partitions overlap: samples, a shuffle, collected ranges.
    Shuffle,
}

// ----- the driver ----------------------------------------------------------------

#[derive(Default, Clone)]
struct JobStats {
    name: String,
    events: u64,
    reports: u64,
    busy: Duration,
    max_event: Duration,
    /// Scheduler time from the request to the event that dispatched the
    /// job's last task.
    to_last_dispatch: Duration,
    /// Wall time (driver included) from the request to that event.
    wall_to_last_dispatch: Duration,
    tasks: u64,
    note: Option<String>,
}

struct Driver {
    state: SchedulerState,
    now: Instant,
    workers: Vec<WorkerId>,
    threads: u32,
    partitions: usize,
    next_heartbeat: usize,
    pending: VecDeque<(WorkerId, TaskAssignment)>,
    cancelled: HashSet<u64>,
    finals: Vec<(RequestId, ToClient)>,
    schema_ipc: Vec<u8>,
    head_ipc: Vec<u8>,
    sort_mode: SortMode,
    next_request: u64,
    // counters of the job in progress
    job: JobStats,
    job_started: Instant,
}

impl Driver {
    fn new(threads: u32, partitions: usize) -> Driver {
        let schema = Arc::new(Schema::new(vec![
            Field::new("city", DataType::Utf8, true),
            Field::new("temperature", DataType::Float64, true),
        ]));
        Driver {
            state: SchedulerState::new(Config::default()),
            now: Instant::now(),
            workers: Vec::new(),
            threads,
            partitions,
            next_heartbeat: 0,
            pending: VecDeque::new(),
            cancelled: HashSet::new(),
            finals: Vec::new(),
            schema_ipc: stratus_protocol::ipc::encode_schema(&schema).unwrap(),
            head_ipc: ipc_of(&partition_batch(0)),
            sort_mode: SortMode::Ranged,
            next_request: 1,
            job: JobStats::default(),
            job_started: Instant::now(),
        }
    }

    /// One event through the machine; Run batches go to the workers' queue.
    fn send(&mut self, event: Event) {
        // A virtual clock: 1 us per event (heartbeats keep every worker alive).
        self.now += Duration::from_micros(1);
        let t = Instant::now();
        let cmds = self.state.handle(self.now, event);
        let took = t.elapsed();
        self.job.events += 1;
        self.job.busy += took;
        self.job.max_event = self.job.max_event.max(took);
        let mut dispatched = false;
        for c in cmds {
            match c {
                Command::ToWorker {
                    worker,
                    message: ToWorker::Run(tasks),
                } => {
                    dispatched = true;
                    self.job.tasks += tasks.len() as u64;
                    self.pending.extend(tasks.into_iter().map(|t| (worker, t)));
                }
                Command::ToWorker {
                    message: ToWorker::Cancel(ids),
                    ..
                } => self.cancelled.extend(ids),
                Command::Reply { request, message } if message.is_final() => {
                    self.finals.push((request, message))
                }
                _ => {}
            }
        }
        if dispatched {
            self.job.to_last_dispatch = self.job.busy;
            self.job.wall_to_last_dispatch = self.job_started.elapsed();
        }
    }

    fn begin(&mut self, name: &str) {
        self.job = JobStats {
            name: name.to_string(),
            ..JobStats::default()
        };
        self.job_started = Instant::now();
    }

    fn join_workers(&mut self, n: usize) -> JobStats {
        self.begin("join workers");
        for i in 0..n {
            let id = WorkerId(i as u64 + 1);
            self.workers.push(id);
            let name = format!("w{}", id.0);
            self.send(Event::WorkerJoined {
                worker: id,
                info: WorkerInfo {
                    name: name.clone(),
                    host: format!("node-{i}"),
                    pid: 1000,
                    nthreads: self.threads,
                    memory_limit: 64 << 30,
                    metrics_address: None,
                    peer_address: format!("10.0.{}.{}:7000", i / 250, i % 250),
                    cert_name: format!("cert-{name}"),
                },
            });
        }
        self.job.clone()
    }

    /// Send a request and answer its tasks until it gets its final answer.
    fn run(&mut self, name: &str, body: ClientRequest, max: Duration) -> Result<JobStats, String> {
        self.begin(name);
        let request = RequestId(self.next_request);
        self.next_request += 1;
        self.send(Event::Request {
            request,
            body,
            storage: Default::default(),
            run: None,
            client: "bench".into(),
        });
        loop {
            if let Some(i) = self.finals.iter().position(|(r, _)| *r == request) {
                let (_, answer) = self.finals.swap_remove(i);
                if let ToClient::Error(e) = answer {
                    return Err(format!("{name}: {e}"));
                }
                return Ok(self.job.clone());
            }
            if self.job.busy > max {
                let mut stats = self.job.clone();
                stats.note = Some(format!(
                    "timed out after {:.0} s of scheduler time",
                    max.as_secs_f64()
                ));
                return Ok(stats);
            }
            // Every worker heartbeats about once a virtual second; a tick
            // every 100,000 events.
            if self.job.events.is_multiple_of(1000) {
                let worker = self.workers[self.next_heartbeat % self.workers.len()];
                self.next_heartbeat += 1;
                self.send(Event::Heartbeat {
                    worker,
                    memory_used: 1 << 30,
                    spilled: 0,
                    paused: false,
                });
            }
            if self.job.events.is_multiple_of(100_000) {
                self.send(Event::Tick);
            }
            let Some((worker, task)) = self.pending.pop_front() else {
                return Err(format!("{name}: no task to answer and no answer"));
            };
            if self.cancelled.remove(&task.id) {
                continue;
            }
            let output = self.answer(&task.kind);
            self.job.reports += 1;
            self.send(Event::TaskReports {
                worker,
                reports: vec![TaskReport::Finished {
                    id: task.id,
                    output,
                }],
            });
        }
    }

    /// What a worker would answer, made up but consistent.
    fn answer(&self, kind: &TaskKind) -> TaskOutput {
        match kind {
            TaskKind::ListFiles { .. } => TaskOutput::Files(
                (0..self.partitions)
                    .map(|i| FileRef {
                        path: file_path(i),
                        size: 1 << 20,
                        hive: Vec::new(),
                    })
                    .collect(),
            ),
            TaskKind::ReadFooters { files } => TaskOutput::Footers(
                files
                    .iter()
                    .map(|f| {
                        let rows = 1000 + (file_index(&f.path) % 7) as u64;
                        FooterMeta {
                            file: f.clone(),
                            num_rows: rows,
                            // ~100 MB per file: a partition each (small
                            // files of a listing this long would be grouped).
                            row_groups: vec![RowGroupMeta {
                                rows,
                                uncompressed_bytes: 100 << 20,
                            }],
                            schema_ipc: self.schema_ipc.clone(),
                        }
                    })
                    .collect(),
            ),
            TaskKind::Load { key, input, .. } => {
                let rows = match input {
                    LoadInput::Parquet(p) => p.rows,
                    LoadInput::Persisted(_) => 1000,
                };
                TaskOutput::Loaded {
                    key: *key,
                    rows,
                    bytes: rows * 100,
                    fetched: 0,
                }
            }
            TaskKind::Reduce { partitions, op } => match op {
                ReduceOp::Summary {
                    columns,
                    max_distinct,
                } => {
                    let batches: Vec<RecordBatch> = partitions
                        .iter()
                        .map(|k| partition_batch(k.index))
                        .collect();
                    TaskOutput::Summaries(
                        describe::summaries(&batches, columns, *max_distinct as usize).unwrap(),
                    )
                }
                ReduceOp::Histograms { columns } => {
                    let batches: Vec<RecordBatch> = partitions
                        .iter()
                        .map(|k| partition_batch(k.index))
                        .collect();
                    TaskOutput::Histograms(describe::range_histograms(&batches, columns).unwrap())
                }
                ReduceOp::MemoryUsage => {
                    let n = partitions.len() as u64;
                    TaskOutput::ColumnBytes(vec![
                        ("city".into(), n * 4_000),
                        ("temperature".into(), n * 8_000),
                    ])
                }
                ReduceOp::SortSample { .. } => {
                    let mut sample = Vec::new();
                    let bounds = partitions
                        .iter()
                        .map(|k| {
                            let i = k.index as f64;
                            let (lo, hi) = match self.sort_mode {
                                SortMode::Ranged => (10.0 * i, 10.0 * i + 5.0),
                                SortMode::Shuffle => {
                                    let lo = ((k.index as u64 * 7919) % 500_000) as f64 * 0.01;
                                    (lo, lo + 5_000.0)
                                }
                            };
                            sample.extend([lo, (lo + hi) / 2.0, hi]);
                            PartitionBoundsWire {
                                index: k.index,
                                bounds_ipc: Some(floats(vec![
                                    ("min", vec![lo]),
                                    ("max", vec![hi]),
                                ])),
                                invalid: 0,
                            }
                        })
                        .collect();
                    TaskOutput::SortSample {
                        partitions: bounds,
                        sample_ipc: floats(vec![("sample", sample)]),
                    }
                }
            },
            TaskKind::GroupByPartial { .. } | TaskKind::GroupByMerge { .. } => {
                TaskOutput::Delivered {
                    rows: 365,
                    bytes: 365 * 24,
                }
            }
            TaskKind::ShuffleSend { partitions, .. } => TaskOutput::Delivered {
                rows: partitions.len() as u64 * 1000,
                bytes: partitions.len() as u64 * 100_000,
            },
            TaskKind::GroupByFinal { .. } => TaskOutput::Table {
                rows: 4,
                ipc: self.head_ipc.clone(),
            },
            TaskKind::Head { n, .. } => TaskOutput::Table {
                rows: (*n).min(4),
                ipc: self.head_ipc.clone(),
            },
            TaskKind::PrepareWrite { .. } | TaskKind::AbortWrite { .. } => TaskOutput::Ok,
            TaskKind::WriteParts { partitions, spec } => TaskOutput::Staged(
                partitions
                    .iter()
                    .map(|k| stratus_protocol::messages::StagedFile {
                        temp_path: format!(
                            "{}/_temporary/{}/part-{}.parquet",
                            spec.dest, spec.job_id, k.index
                        ),
                        final_path: format!("{}/part-{}.parquet", spec.dest, k.index),
                        rows: 1000,
                        bytes: 50_000,
                    })
                    .collect(),
            ),
            TaskKind::CommitWrite { staged, .. } => TaskOutput::Committed {
                rows: staged.iter().map(|f| f.rows).sum(),
                files: staged.len() as u64,
            },
            TaskKind::ShuffleCollect { ranges, frame, .. } => TaskOutput::LoadedMany(
                ranges
                    .iter()
                    .map(|&r| {
                        let key = stratus_protocol::messages::PartitionKey {
                            frame: *frame,
                            index: r,
                        };
                        (key, 1000, 100_000)
                    })
                    .collect(),
            ),
            other => panic!("the bench does not answer {}", other.label()),
        }
    }
}

// ----- one configuration -----------------------------------------------------------

struct Run {
    workers: usize,
    partitions: usize,
    jobs: Vec<JobStats>,
}

fn run_config(a: &Args, workers: usize, partitions: usize) -> Run {
    let max = Duration::from_secs_f64(a.max_seconds);
    let mut d = Driver::new(a.threads, partitions);
    let mut jobs = vec![d.join_workers(workers)];
    let t = "t".to_string();
    let plan: Vec<(&str, ClientRequest, Option<SortMode>)> = vec![
        (
            "len (parquet)",
            ClientRequest::Len {
                source: SOURCE.into(),
            },
            None,
        ),
        (
            "persist",
            ClientRequest::Persist {
                source: SOURCE.into(),
                name: t.clone(),
                replace: false,
                columns: None,
                steps: Vec::new(),
            },
            None,
        ),
        (
            "describe",
            ClientRequest::Describe {
                source: t.clone(),
                columns: None,
            },
            None,
        ),
        (
            "groupby",
            ClientRequest::GroupBy {
                source: t.clone(),
                keys: vec!["city".into()],
                aggs: vec![("temperature".into(), AggFunc::Mean)],
                all_numeric: None,
            },
            None,
        ),
        (
            "memory_usage",
            ClientRequest::MemoryUsage { source: t.clone() },
            None,
        ),
        (
            "head",
            ClientRequest::Head {
                source: t.clone(),
                n: 5,
                columns: None,
            },
            None,
        ),
        (
            "sort (ranged)",
            ClientRequest::Sort {
                source: t.clone(),
                by: "temperature".into(),
                into: Some("t_ranged".into()),
            },
            Some(SortMode::Ranged),
        ),
        (
            "sort (shuffle)",
            ClientRequest::Sort {
                source: t.clone(),
                by: "temperature".into(),
                into: Some("t_shuffled".into()),
            },
            Some(SortMode::Shuffle),
        ),
        (
            "write",
            ClientRequest::Write {
                source: t.clone(),
                dest: "/out/bench".into(),
                partition_by: Vec::new(),
                overwrite: true,
            },
            None,
        ),
    ];
    let mut stopped = false;
    for (name, body, mode) in plan {
        if stopped {
            jobs.push(JobStats {
                name: name.into(),
                note: Some("skipped (an earlier job timed out)".into()),
                ..JobStats::default()
            });
            continue;
        }
        if let Some(mode) = mode {
            d.sort_mode = mode;
        }
        // Each send names every owner once: holders x owners peer refs.
        let holders = workers.min(partitions) as u64;
        if mode == Some(SortMode::Shuffle) && holders * holders > a.max_owner_refs {
            jobs.push(JobStats {
                name: name.into(),
                note: Some(format!(
                    "skipped: each of {holders} sends would carry {holders} owner peer refs \
                     ({} in all, over --max-owner-refs)",
                    holders * holders
                )),
                ..JobStats::default()
            });
            continue;
        }
        eprintln!("  {workers} workers, {partitions} partitions: {name}");
        match d.run(name, body, max) {
            Ok(stats) => {
                stopped = stats.note.is_some();
                jobs.push(stats);
            }
            Err(e) => panic!("{workers} workers, {partitions} partitions: {e}"),
        }
    }
    Run {
        workers,
        partitions,
        jobs,
    }
}

// ----- the report ------------------------------------------------------------------

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1e3)
}

fn report(a: &Args, runs: &[Run]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Scheduler bench: {} threads per worker; scheduler time only (inside `handle`), one task report per event.\n",
        a.threads
    );
    let _ = writeln!(
        s,
        "| workers | partitions | job | events | task reports | tasks dispatched | sched s | events/s | us/event | max event ms | request to last dispatch ms (sched / wall) |"
    );
    let _ = writeln!(s, "|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in runs {
        let mut total = JobStats::default();
        for j in &r.jobs {
            if let Some(note) = &j.note {
                if j.events == 0 {
                    let _ = writeln!(
                        s,
                        "| {} | {} | {} | | | | | | | | {note} |",
                        r.workers, r.partitions, j.name
                    );
                    continue;
                }
            }
            let secs = j.busy.as_secs_f64().max(1e-9);
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {:.3} | {:.0} | {:.2} | {} | {} / {}{} |",
                r.workers,
                r.partitions,
                j.name,
                j.events,
                j.reports,
                j.tasks,
                secs,
                j.events as f64 / secs,
                secs * 1e6 / j.events.max(1) as f64,
                ms(j.max_event),
                ms(j.to_last_dispatch),
                ms(j.wall_to_last_dispatch),
                j.note
                    .as_ref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default(),
            );
            total.events += j.events;
            total.reports += j.reports;
            total.tasks += j.tasks;
            total.busy += j.busy;
            total.max_event = total.max_event.max(j.max_event);
        }
        let secs = total.busy.as_secs_f64().max(1e-9);
        let _ = writeln!(
            s,
            "| {} | {} | **all** | {} | {} | {} | {:.3} | **{:.0}** | **{:.2}** | {} | (task reports/s: {:.0}) |",
            r.workers,
            r.partitions,
            total.events,
            total.reports,
            total.tasks,
            secs,
            total.events as f64 / secs,
            secs * 1e6 / total.events.max(1) as f64,
            ms(total.max_event),
            total.reports as f64 / secs,
        );
    }
    s
}

fn main() {
    let a = args();
    let mut runs = Vec::new();
    for &partitions in &a.partitions {
        for &workers in &a.workers {
            runs.push(run_config(&a, workers, partitions));
            eprintln!(
                "{}",
                report(&a, runs.last().map(std::slice::from_ref).unwrap())
            );
        }
    }
    let text = report(&a, &runs);
    println!("{text}");
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-scheduler.md");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| std::path::PathBuf::from(t).join("bench-scheduler.md"))
        .unwrap_or(path);
    match std::fs::write(&target, &text) {
        Ok(()) => eprintln!("written to {}", target.display()),
        Err(e) => eprintln!("could not write {}: {e}", target.display()),
    }
    if a.quick {
        eprintln!("(quick run: 10/100 workers x 1k/10k partitions)");
    }
}
