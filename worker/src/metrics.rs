//! The worker's Prometheus metrics and the HTTP endpoint that serves them
//! (`--metrics-address`, `/metrics`). Names follow the metric contract in
//! ARCHITECTURE.md: `stratus_worker_*` for this worker, `stratus_quic_*` and
//! `stratus_network_*` for its QUIC connections.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{
    HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};
use std::sync::atomic::Ordering;
use stratus_storage::StorageStats;
use tracing::error;

use stratus_protocol::messages::{TaskKind, TaskReport};
use stratus_protocol::metrics::{register, QuicCollector};
use stratus_protocol::netstats::ConnectionTracker;
use stratus_protocol::STRATUS_VERSION;

use crate::store::Store;

/// Buckets of task durations: 1 ms to 60 s.
/// Buckets of a task's working memory, in bytes (64 KiB to 16 GiB).
const WORKING_BYTES: [f64; 10] = [
    65536.0,
    262144.0,
    1048576.0,
    4194304.0,
    16777216.0,
    67108864.0,
    268435456.0,
    1073741824.0,
    4294967296.0,
    17179869184.0,
];

const TASK_SECONDS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// How a task ended, as the `outcome` label says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskOutcome {
    Ok,
    Failed,
    Cancelled,
}

impl TaskOutcome {
    fn as_str(self) -> &'static str {
        match self {
            TaskOutcome::Ok => "ok",
            TaskOutcome::Failed => "failed",
            TaskOutcome::Cancelled => "cancelled",
        }
    }
}

/// The worker's metric families.
pub struct WorkerMetrics {
    registry: Registry,
    nthreads: u32,
    memory_used: IntGauge,
    persisted_partitions: IntGauge,
    persisted_bytes: IntGauge,
    tasks: IntGaugeVec,
    completed: IntCounterVec,
    task_seconds: HistogramVec,
    task_peak_working: HistogramVec,
    /// Tasks received and not yet ended: their kind and when they arrived.
    in_flight: Mutex<HashMap<u64, (&'static str, Instant)>>,
    connections: ConnectionTracker,
    /// Object-store traffic, read from its counters at each scrape.
    storage: Arc<StorageStats>,
    storage_requests: IntCounter,
    storage_errors: IntCounter,
    storage_fetched: IntCounter,
    storage_uploaded: IntCounter,
    parquet_rows: IntCounter,
    storage_in_flight: IntGauge,
    storage_peak: IntGauge,
    /// 1 while registered with the scheduler (what `/ready` answers).
    registered: IntGauge,
    /// Registrations after a lost connection.
    reconnects: IntCounter,
    spilled_bytes: IntGauge,
    spilled_partitions: IntGauge,
    paused: IntGauge,
    parked_deliveries: IntGauge,
    task_working: IntGauge,
    spill_written: IntCounter,
    spill_read: IntCounter,
    spill_failures: IntCounter,
}

impl std::fmt::Debug for WorkerMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerMetrics")
            .field("nthreads", &self.nthreads)
            .finish_non_exhaustive()
    }
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).expect("valid metric"))
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).expect("valid metric"))
}

impl WorkerMetrics {
    /// The metrics of worker `name` of the scheduler at `scheduler`.
    pub fn new(
        name: &str,
        scheduler: &str,
        nthreads: u32,
        memory_limit: u64,
        storage: Arc<StorageStats>,
    ) -> Self {
        let registry = Registry::new();
        let connections = ConnectionTracker::new();
        registry
            .register(Box::new(QuicCollector::new(connections.clone())))
            .expect("metric names are unique");
        let info = register(
            &registry,
            IntGaugeVec::new(
                Opts::new(
                    "stratus_worker_info",
                    "This worker: its name, version and scheduler (always 1).",
                ),
                &["worker", "version", "scheduler"],
            )
            .expect("valid metric"),
        );
        info.with_label_values(&[name, STRATUS_VERSION, scheduler])
            .set(1);
        gauge(
            &registry,
            "stratus_worker_threads",
            "Compute threads of this worker.",
        )
        .set(nthreads as i64);
        gauge(
            &registry,
            "stratus_worker_memory_limit_bytes",
            "Memory this worker may hold for persisted partitions (0: no limit).",
        )
        .set(memory_limit as i64);
        let metrics = WorkerMetrics {
            reconnects: counter(
                &registry,
                "stratus_worker_reconnects_total",
                "Times this worker registered with its scheduler again after losing it (a new \
                 start of the scheduler gets back the partitions it kept).",
            ),
            registered: gauge(
                &registry,
                "stratus_worker_registered",
                "1 while this worker is registered with its scheduler (GET /ready answers 200), else 0.",
            ),
            memory_used: gauge(
                &registry,
                "stratus_worker_memory_used_bytes",
                "Memory counted against the limit: the Arrow buffers of persisted partitions and of data peers delivered for running jobs, and the working memory reserved by running tasks.",
            ),
            persisted_partitions: gauge(
                &registry,
                "stratus_worker_persisted_partitions",
                "Persisted partitions this worker holds.",
            ),
            persisted_bytes: gauge(
                &registry,
                "stratus_worker_persisted_bytes",
                "Bytes of the persisted partitions this worker holds (in RAM or spilled to disk).",
            ),
            spilled_bytes: gauge(
                &registry,
                "stratus_worker_spilled_bytes",
                "Bytes (as Arrow buffers) of persisted partitions this worker holds on disk only.",
            ),
            spilled_partitions: gauge(
                &registry,
                "stratus_worker_spilled_partitions",
                "Persisted partitions this worker holds on disk only.",
            ),
            task_working: gauge(
                &registry,
                "stratus_worker_task_working_bytes",
                "Working memory reserved by running tasks (estimated per kind from what earlier tasks allocated at most).",
            ),
            parked_deliveries: gauge(
                &registry,
                "stratus_worker_parked_deliveries",
                "Deliveries from peers held back (their senders waiting) until spills make room in RAM.",
            ),
            paused: gauge(
                &registry,
                "stratus_worker_paused",
                "1 while tasks that add data wait for spills (memory past the pause fraction of the limit), else 0.",
            ),
            spill_written: counter(
                &registry,
                "stratus_worker_spill_bytes_written_total",
                "Bytes of spill files written (rate(): the spill rate).",
            ),
            spill_read: counter(
                &registry,
                "stratus_worker_spill_bytes_read_total",
                "Bytes of spill files read back by tasks (rate(): the unspill rate).",
            ),
            spill_failures: counter(
                &registry,
                "stratus_worker_spill_failures_total",
                "Spills that failed (disk full, read-only, past --spill-limit).",
            ),
            tasks: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "stratus_worker_tasks",
                        "Tasks on this worker: running on a compute thread, or waiting for one.",
                    ),
                    &["state"],
                )
                .expect("valid metric"),
            ),
            completed: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "stratus_worker_tasks_completed_total",
                        "Tasks this worker ended, by kind and outcome (ok, failed, cancelled).",
                    ),
                    &["kind", "outcome"],
                )
                .expect("valid metric"),
            ),
            task_peak_working: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "stratus_worker_task_peak_working_bytes",
                        "The most a task's body allocated at once (its working memory), by kind.",
                    )
                    .buckets(WORKING_BYTES.to_vec()),
                    &["kind"],
                )
                .expect("valid metric"),
            ),
            task_seconds: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "stratus_worker_task_duration_seconds",
                        "Time from a task's arrival on this worker to its end, by kind.",
                    )
                    .buckets(TASK_SECONDS.to_vec()),
                    &["kind"],
                )
                .expect("valid metric"),
            ),
            storage_requests: counter(
                &registry,
                "stratus_worker_storage_requests_total",
                "Object-store requests this worker made (listings, ranged GETs, uploads and their parts, deletes).",
            ),
            storage_errors: counter(
                &registry,
                "stratus_worker_storage_errors_total",
                "Object-store requests that failed after their retries.",
            ),
            storage_fetched: counter(
                &registry,
                "stratus_worker_storage_bytes_fetched_total",
                "Bytes this worker read from object stores.",
            ),
            storage_uploaded: counter(
                &registry,
                "stratus_worker_storage_bytes_uploaded_total",
                "Bytes this worker wrote to object stores.",
            ),
            parquet_rows: counter(
                &registry,
                "stratus_worker_parquet_rows_read_total",
                "Rows this worker read from Parquet (loads, rebuilds from lineage, heads of a source).",
            ),
            storage_in_flight: gauge(
                &registry,
                "stratus_worker_storage_requests_in_flight",
                "Object-store requests in flight now.",
            ),
            storage_peak: gauge(
                &registry,
                "stratus_worker_storage_requests_in_flight_peak",
                "Most object-store requests this worker had in flight at once.",
            ),
            storage,
            registry,
            nthreads: nthreads.max(1),
            in_flight: Mutex::new(HashMap::new()),
            connections,
        };
        metrics.set_task_gauges(0);
        metrics
    }

    /// The QUIC connections of this worker (scheduler and peers).
    pub fn connections(&self) -> &ConnectionTracker {
        &self.connections
    }

    fn in_flight(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (&'static str, Instant)>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every task holds a compute thread once one is free, so of the tasks
    /// in flight, up to `nthreads` run and the rest wait.
    fn set_task_gauges(&self, in_flight: usize) {
        let running = in_flight.min(self.nthreads as usize);
        self.tasks
            .with_label_values(&["running"])
            .set(running as i64);
        self.tasks
            .with_label_values(&["waiting"])
            .set((in_flight - running) as i64);
    }

    /// Task `id` arrived.
    pub fn task_started(&self, id: u64, kind: &TaskKind) {
        let mut in_flight = self.in_flight();
        in_flight.insert(id, (kind.label(), Instant::now()));
        self.set_task_gauges(in_flight.len());
    }

    /// Task `id`'s body ended having allocated `bytes` at most at once.
    pub fn task_worked(&self, id: u64, bytes: u64) {
        let kind = self.in_flight().get(&id).map(|(kind, _)| *kind);
        if let Some(kind) = kind {
            self.task_peak_working
                .with_label_values(&[kind])
                .observe(bytes as f64);
        }
    }

    /// Task `id` ended (a task not seen arriving is ignored).
    pub fn task_ended(&self, id: u64, outcome: TaskOutcome) {
        let mut in_flight = self.in_flight();
        let Some((kind, arrived)) = in_flight.remove(&id) else {
            return;
        };
        self.set_task_gauges(in_flight.len());
        drop(in_flight);
        self.completed
            .with_label_values(&[kind, outcome.as_str()])
            .inc();
        self.task_seconds
            .with_label_values(&[kind])
            .observe(arrived.elapsed().as_secs_f64());
    }

    /// A task's report is on its way to the scheduler.
    pub fn task_reported(&self, report: &TaskReport) {
        match report {
            TaskReport::Finished { id, .. } => self.task_ended(*id, TaskOutcome::Ok),
            TaskReport::Failed { id, .. } => self.task_ended(*id, TaskOutcome::Failed),
        }
    }

    /// Read what the store holds.
    pub fn observe_store(&self, store: &Store) {
        self.memory_used
            .set((store.used() + store.in_flight() + store.working()) as i64);
        self.persisted_bytes
            .set((store.used() + store.spilled()) as i64);
        self.persisted_partitions.set(store.len() as i64);
        self.spilled_bytes.set(store.spilled() as i64);
        self.spilled_partitions
            .set(store.spilled_partitions() as i64);
        self.paused.set(i64::from(store.paused()));
        self.parked_deliveries.set(store.parked() as i64);
        self.task_working.set(store.working() as i64);
    }

    /// A spill file of `bytes` was written.
    pub fn spilled(&self, bytes: u64) {
        self.spill_written.inc_by(bytes);
    }

    /// A spill failed.
    pub fn spill_failed(&self) {
        self.spill_failures.inc();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let load = |v: &std::sync::atomic::AtomicU64| v.load(Ordering::Relaxed);
        let catch_up = |counter: &IntCounter, now: u64| {
            counter.inc_by(now.saturating_sub(counter.get()));
        };
        let stats = &self.storage;
        catch_up(&self.storage_requests, load(&stats.requests));
        catch_up(&self.storage_errors, load(&stats.errors));
        catch_up(&self.storage_fetched, load(&stats.bytes_fetched));
        catch_up(&self.storage_uploaded, load(&stats.bytes_uploaded));
        catch_up(&self.parquet_rows, crate::tasks::parquet_rows_read());
        catch_up(&self.spill_read, crate::spill::bytes_read());
        self.storage_in_flight.set(load(&stats.in_flight) as i64);
        self.storage_peak.set(load(&stats.peak_in_flight) as i64);
        stratus_protocol::metrics::render(&self.registry)
    }
}

/// Bind the metrics endpoint (`--metrics-address`; port 0 picks a free one).
pub fn bind(address: SocketAddr) -> Result<std::net::TcpListener, String> {
    let listener = std::net::TcpListener::bind(address)
        .map_err(|e| format!("--metrics-address {address}: cannot listen: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("--metrics-address {address}: {e}"))?;
    Ok(listener)
}

/// The address the scheduler lists for a metrics endpoint bound to `bound`:
/// a wildcard bind is reached on `advertised` (the address peers use).
pub fn public_address(bound: SocketAddr, advertised: IpAddr) -> String {
    let ip = if bound.ip().is_unspecified() {
        advertised
    } else {
        bound.ip()
    };
    SocketAddr::new(ip, bound.port()).to_string()
}

impl WorkerMetrics {
    /// Say whether the worker is registered with its scheduler.
    pub fn reconnected(&self) {
        self.reconnects.inc();
    }

    pub fn set_registered(&self, registered: bool) {
        self.registered.set(registered as i64);
    }

    /// Whether the worker is registered with its scheduler.
    pub fn is_registered(&self) -> bool {
        self.registered.get() == 1
    }
}

/// Serve `GET /metrics`, and the probes `GET /health` (the process
/// answers) and `GET /ready` (registered with its scheduler: 200, else 503),
/// on `listener` until the process ends.
pub async fn serve(listener: std::net::TcpListener, metrics: Arc<WorkerMetrics>) {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            error!("metrics endpoint: {e}");
            return;
        }
    };
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/health", get(|| async { "ok\n" }))
        .route("/ready", get(ready))
        .with_state(metrics);
    if let Err(e) = axum::serve(listener, app).await {
        error!("metrics endpoint stopped: {e}");
    }
}

async fn ready(State(metrics): State<Arc<WorkerMetrics>>) -> Response {
    if metrics.is_registered() {
        "ready\n".into_response()
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "not registered with a scheduler\n",
        )
            .into_response()
    }
}

async fn metrics_text(State(metrics): State<Arc<WorkerMetrics>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        metrics.render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_binds_are_listed_on_the_advertised_address() {
        let advertised: IpAddr = "10.0.0.7".parse().unwrap();
        assert_eq!(
            public_address("0.0.0.0:9100".parse().unwrap(), advertised),
            "10.0.0.7:9100"
        );
        assert_eq!(
            public_address("127.0.0.1:4000".parse().unwrap(), advertised),
            "127.0.0.1:4000"
        );
    }

    #[test]
    fn tasks_are_counted_by_kind_and_outcome() {
        let metrics = WorkerMetrics::new("w", "quic://127.0.0.1:1", 1, 0, Arc::default());
        let kind = TaskKind::ListFiles {
            source: "/data".into(),
        };
        metrics.task_started(1, &kind);
        metrics.task_started(2, &kind);
        let text = metrics.render();
        assert!(
            text.contains("stratus_worker_tasks{state=\"running\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("stratus_worker_tasks{state=\"waiting\"} 1"),
            "{text}"
        );
        metrics.task_ended(1, TaskOutcome::Ok);
        metrics.task_ended(2, TaskOutcome::Cancelled);
        metrics.task_ended(2, TaskOutcome::Failed); // already ended: ignored
        let text = metrics.render();
        for line in [
            "stratus_worker_tasks_completed_total{kind=\"list_files\",outcome=\"ok\"} 1",
            "stratus_worker_tasks_completed_total{kind=\"list_files\",outcome=\"cancelled\"} 1",
            "stratus_worker_task_duration_seconds_count{kind=\"list_files\"} 2",
            "stratus_worker_tasks{state=\"running\"} 0",
            "stratus_worker_info{scheduler=\"quic://127.0.0.1:1\",version=",
            "stratus_quic_connections{peer_kind=\"scheduler\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(!text.contains("outcome=\"failed\""), "{text}");
    }
}
