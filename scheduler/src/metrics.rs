//! Prometheus metrics of the scheduler (names per Prometheus conventions:
//! `stratus_` prefix, base units, `_total` for counters; the metric contract
//! is in ARCHITECTURE.md). Other modules register their own families into
//! [`Metrics::registry`].

use std::time::Duration;

use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

use stratus_protocol::metrics::{register, QuicCollector};
use stratus_protocol::netstats::ConnectionTracker;
use stratus_protocol::STRATUS_VERSION;

use stratus_scheduler_core::SchedulerState;

/// Buckets of client request durations: 1 ms to 10 minutes.
const REQUEST_SECONDS: [f64; 18] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0,
];

/// The scheduler's metric families.
pub struct Metrics {
    registry: Registry,
    info: IntGaugeVec,
    workers: IntGauge,
    threads: IntGauge,
    worker_memory_limit: IntGaugeVec,
    worker_memory_used: IntGaugeVec,
    worker_spilled_bytes: IntGaugeVec,
    worker_paused: IntGaugeVec,
    worker_persisted_partitions: IntGaugeVec,
    worker_persisted_bytes: IntGaugeVec,
    worker_running_tasks: IntGaugeVec,
    tasks: IntGaugeVec,
    tasks_done: IntCounterVec,
    workers_lost: IntCounter,
    partitions_rebuilt: IntCounter,
    partitions_restored: IntCounter,
    catalog_writes: IntCounterVec,
    restoring: IntGauge,
    persisted_frames: IntGauge,
    persisted_partitions: IntGauge,
    persisted_bytes: IntGauge,
    jobs: IntGauge,
    desired_workers: IntGauge,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    connections: ConnectionTracker,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("valid metric"))
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

/// Advance a counter to `total` (the state keeps the running totals).
fn advance(counter: &IntCounter, total: u64) {
    let seen = counter.get();
    if total > seen {
        counter.inc_by(total - seen);
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let connections = ConnectionTracker::new();
        registry
            .register(Box::new(QuicCollector::new(connections.clone())))
            .expect("metric names are unique");
        Metrics {
            info: gauge_vec(
                &registry,
                "stratus_info",
                "The cluster: scheduler address, dashboard URL, head node host and version (always 1).",
                &["version", "address", "dashboard", "head_node"],
            ),
            workers: gauge(&registry, "stratus_workers", "Registered workers."),
            threads: gauge(
                &registry,
                "stratus_threads",
                "Worker threads in the cluster.",
            ),
            worker_memory_limit: gauge_vec(
                &registry,
                "stratus_cluster_worker_memory_limit_bytes",
                "Memory limit of each worker.",
                &["worker"],
            ),
            worker_memory_used: gauge_vec(
                &registry,
                "stratus_cluster_worker_memory_used_bytes",
                "Memory held by each worker's persisted partitions (its last heartbeat).",
                &["worker"],
            ),
            worker_spilled_bytes: gauge_vec(
                &registry,
                "stratus_cluster_worker_spilled_bytes",
                "Bytes of each worker's persisted partitions on disk only (its last heartbeat).",
                &["worker"],
            ),
            worker_paused: gauge_vec(
                &registry,
                "stratus_cluster_worker_paused",
                "1 while a worker holds back tasks that add data until its spills end (its last heartbeat).",
                &["worker"],
            ),
            worker_persisted_partitions: gauge_vec(
                &registry,
                "stratus_cluster_worker_persisted_partitions",
                "Persisted partitions each worker holds.",
                &["worker"],
            ),
            worker_persisted_bytes: gauge_vec(
                &registry,
                "stratus_cluster_worker_persisted_bytes",
                "Bytes of the persisted partitions each worker holds.",
                &["worker"],
            ),
            worker_running_tasks: gauge_vec(
                &registry,
                "stratus_cluster_worker_running_tasks",
                "Tasks placed on each worker and not yet reported.",
                &["worker"],
            ),
            tasks: gauge_vec(
                &registry,
                "stratus_tasks",
                "Tasks by state (queued, running).",
                &["state"],
            ),
            tasks_done: counter_vec(
                &registry,
                "stratus_tasks_completed_total",
                "Tasks completed since start, by outcome (finished, failed, retried).",
                &["outcome"],
            ),
            workers_lost: counter(
                &registry,
                "stratus_scheduler_workers_lost_total",
                "Workers lost since start (connection closed or heartbeats missed); their \
                 running tasks are retried and their persisted partitions rebuilt.",
            ),
            partitions_rebuilt: counter(
                &registry,
                "stratus_scheduler_partitions_rebuilt_total",
                "Persisted partitions sent for a rebuild from their lineage since start, \
                 because the worker holding them was lost.",
            ),
            partitions_restored: counter(
                &registry,
                "stratus_scheduler_partitions_restored_total",
                "Persisted partitions that workers re-registered after a scheduler restart \
                 (taken back as they were: nothing read again).",
            ),
            catalog_writes: counter_vec(
                &registry,
                "stratus_scheduler_catalog_writes_total",
                "Writes of the durable catalog of persisted frames (<data-dir>/catalog), by \
                 outcome (ok, error).",
                &["outcome"],
            ),
            restoring: gauge(
                &registry,
                "stratus_scheduler_restoring",
                "1 while partitions of frames restored after a restart wait for their workers \
                 to re-register them (--restore-grace), else 0.",
            ),
            persisted_frames: gauge(&registry, "stratus_persisted_frames", "Persisted frames."),
            persisted_partitions: gauge(
                &registry,
                "stratus_persisted_partitions",
                "Partitions of persisted frames.",
            ),
            persisted_bytes: gauge(
                &registry,
                "stratus_persisted_bytes",
                "Bytes of Arrow buffers held by persisted frames.",
            ),
            jobs: gauge(
                &registry,
                "stratus_jobs_in_progress",
                "Client jobs running.",
            ),
            desired_workers: gauge(
                &registry,
                "stratus_scheduler_desired_workers",
                "Workers the cluster wants now, for an autoscaler: enough to hold the persisted data and finish the queued work soon, within the minimum and maximum (GET /api/adaptive has the parts).",
            ),
            requests: counter_vec(
                &registry,
                "stratus_client_requests_total",
                "Client requests answered, by kind and outcome (ok, error).",
                &["kind", "outcome"],
            ),
            request_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "stratus_request_duration_seconds",
                        "Time from a client request's arrival to its answer, by kind.",
                    )
                    .buckets(REQUEST_SECONDS.to_vec()),
                    &["kind"],
                )
                .expect("valid metric"),
            ),
            connections,
            registry,
        }
    }

    /// The registry, for families registered elsewhere (runs).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The QUIC connections this scheduler serves (workers and clients).
    pub fn connections(&self) -> &ConnectionTracker {
        &self.connections
    }

    /// Describe this scheduler in `stratus_info`.
    pub fn set_identity(&self, address: &str, dashboard: &str, head_node: &str) {
        self.info.reset();
        self.info
            .with_label_values(&[STRATUS_VERSION, address, dashboard, head_node])
            .set(1);
    }

    /// Count an answered client request and observe how long it took.
    pub fn finish_request(&self, kind: &str, outcome: &str, elapsed: Duration) {
        self.requests.with_label_values(&[kind, outcome]).inc();
        self.request_seconds
            .with_label_values(&[kind])
            .observe(elapsed.as_secs_f64());
    }

    /// Refresh gauges from the state.
    pub fn observe(&self, state: &SchedulerState) {
        self.workers.set(state.workers().count() as i64);
        self.threads
            .set(state.workers().map(|w| w.info.nthreads as i64).sum());
        let per_worker = [
            &self.worker_memory_limit,
            &self.worker_memory_used,
            &self.worker_persisted_partitions,
            &self.worker_persisted_bytes,
            &self.worker_running_tasks,
            &self.worker_spilled_bytes,
            &self.worker_paused,
        ];
        for family in per_worker {
            family.reset();
        }
        for w in state.workers() {
            let label = [w.info.name.as_str()];
            let values = [
                w.info.memory_limit as i64,
                w.memory_used as i64,
                w.partitions.len() as i64,
                w.persisted_bytes as i64,
                w.running.len() as i64,
                w.spilled_bytes as i64,
                i64::from(w.paused),
            ];
            for (family, value) in per_worker.iter().zip(values) {
                family.with_label_values(&label).set(value);
            }
        }
        let (queued, running) = state.task_counts();
        self.tasks.with_label_values(&["queued"]).set(queued as i64);
        self.tasks
            .with_label_values(&["running"])
            .set(running as i64);
        let c = state.counters();
        for (outcome, total) in [
            ("finished", c.tasks_finished),
            ("failed", c.tasks_failed),
            ("retried", c.tasks_retried),
        ] {
            advance(&self.tasks_done.with_label_values(&[outcome]), total);
        }
        advance(&self.workers_lost, c.workers_lost);
        advance(&self.partitions_rebuilt, c.partitions_rebuilt);
        advance(&self.partitions_restored, c.partitions_restored);
        self.restoring.set(state.restoring() as i64);
        let frames: Vec<_> = state.frames().collect();
        self.persisted_frames.set(frames.len() as i64);
        self.persisted_partitions
            .set(frames.iter().map(|f| f.partitions.len() as i64).sum());
        self.persisted_bytes.set(
            frames
                .iter()
                .flat_map(|f| f.partitions.iter())
                .map(|p| p.bytes as i64)
                .sum(),
        );
        self.jobs.set(state.jobs_in_progress() as i64);
        self.desired_workers.set(state.adaptive().target as i64);
    }

    /// A write of the durable catalog ended.
    pub fn catalog_written(&self, ok: bool) {
        self.catalog_writes
            .with_label_values(&[if ok { "ok" } else { "error" }])
            .inc();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        stratus_protocol::metrics::render(&self.registry)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
