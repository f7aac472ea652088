//! Prometheus metrics of the scheduler (names per Prometheus conventions:
//! `stratus_` prefix, base units, `_total` for counters).

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::state::SchedulerState;

/// The scheduler's metric families.
pub struct Metrics {
    registry: Registry,
    workers: IntGauge,
    threads: IntGauge,
    worker_memory_limit: IntGaugeVec,
    worker_memory_used: IntGaugeVec,
    worker_persisted: IntGaugeVec,
    tasks: IntGaugeVec,
    tasks_done: IntCounterVec,
    persisted_frames: IntGauge,
    persisted_partitions: IntGauge,
    persisted_bytes: IntGauge,
    jobs: IntGauge,
    requests: IntCounterVec,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(g.clone()))
        .expect("unique metric");
    g
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    registry
        .register(Box::new(c.clone()))
        .expect("unique metric");
    c
}

/// Advance a counter to `total` (the state keeps the running totals).
fn advance(counter: &IntCounterVec, label: &str, total: u64) {
    let c = counter.with_label_values(&[label]);
    let seen = c.get();
    if total > seen {
        c.inc_by(total - seen);
    }
}

impl Metrics {
    pub fn new() -> Self {
        let registry = Registry::new();
        let requests = counter_vec(
            &registry,
            "stratus_client_requests_total",
            "Client requests by kind and outcome.",
            &["kind", "outcome"],
        );
        Metrics {
            workers: gauge(&registry, "stratus_workers", "Registered workers."),
            threads: gauge(
                &registry,
                "stratus_threads",
                "Worker threads in the cluster.",
            ),
            worker_memory_limit: gauge_vec(
                &registry,
                "stratus_worker_memory_limit_bytes",
                "Memory limit of each worker.",
                &["worker"],
            ),
            worker_memory_used: gauge_vec(
                &registry,
                "stratus_worker_memory_used_bytes",
                "Memory held by each worker's persisted partitions (last heartbeat).",
                &["worker"],
            ),
            worker_persisted: gauge_vec(
                &registry,
                "stratus_worker_persisted_partitions",
                "Persisted partitions held by each worker.",
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
            requests,
            registry,
        }
    }

    /// Count a client request by kind and outcome.
    pub fn count_request(&self, kind: &str, outcome: &str) {
        self.requests.with_label_values(&[kind, outcome]).inc();
    }

    /// Refresh gauges from the state.
    pub fn observe(&self, state: &SchedulerState) {
        self.workers.set(state.workers().count() as i64);
        self.threads
            .set(state.workers().map(|w| w.info.nthreads as i64).sum());
        self.worker_memory_limit.reset();
        self.worker_memory_used.reset();
        self.worker_persisted.reset();
        for w in state.workers() {
            let label = [w.info.name.as_str()];
            self.worker_memory_limit
                .with_label_values(&label)
                .set(w.info.memory_limit as i64);
            self.worker_memory_used
                .with_label_values(&label)
                .set(w.memory_used as i64);
            self.worker_persisted
                .with_label_values(&label)
                .set(w.partitions.len() as i64);
        }
        let (queued, running) = state.task_counts();
        self.tasks.with_label_values(&["queued"]).set(queued as i64);
        self.tasks
            .with_label_values(&["running"])
            .set(running as i64);
        let c = state.counters();
        advance(&self.tasks_done, "finished", c.tasks_finished);
        advance(&self.tasks_done, "failed", c.tasks_failed);
        advance(&self.tasks_done, "retried", c.tasks_retried);
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
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut buf)
            .expect("text encoding cannot fail");
        String::from_utf8(buf).expect("exposition is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
