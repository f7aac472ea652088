//! Runs: the "run logging" of the workflow. A run groups one client session's
//! work under a name; clients log numbers (step timings, row counts, anything)
//! and files (PNG plots) to it.
//!
//! Runs live on the scheduler's disk under `DATA_DIR/runs/<id>/`: `run.json`
//! (written once, atomically, when the run is created), `log.jsonl` (one JSON
//! line appended per log: a batch of metric values or an artifact's
//! metadata; nothing is ever rewritten) and `artifacts/<name>` (temporary
//! file, then rename). They are read back at start-up (`run.json`, then the
//! log's lines; a run written before the log existed has everything in its
//! `run.json`, and is read the same way), so they survive a restart.
//!
//! Limits ([`RunLimits`], from the scheduler's settings): runs kept
//! (`max_runs`; past `run_retention` the least recently updated runs are
//! deleted), artifacts per run, bytes per artifact, metric values per run.
//! Artifacts must be PNG images (their bytes are checked, not the content
//! type the client claims). They are served
//! as JSON by `http.rs` and exported as Prometheus series with bounded
//! cardinality: only the [`EXPORTED_RUNS`] most recently updated runs, and at
//! most [`EXPORTED_METRICS_PER_RUN`] metric names of each, become
//! `stratus_run_metric{run,metric}` series. Everything stays in the JSON API.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use chrono::{SecondsFormat, Utc};
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};

/// Runs exported to Prometheus (the most recently updated ones).
pub const EXPORTED_RUNS: usize = 20;
/// Metric names exported per run (the first ones logged).
pub const EXPORTED_METRICS_PER_RUN: usize = 50;
/// Largest artifact accepted (default of `max_artifact_bytes`).
pub const MAX_ARTIFACT_BYTES: usize = 32 << 20;
/// Most artifacts one run keeps (default of `max_artifacts_per_run`).
pub const MAX_ARTIFACTS_PER_RUN: usize = 500;
/// Most runs kept (default of `max_runs`).
pub const MAX_RUNS: usize = 10_000;
/// Runs kept before the least recently updated are deleted (default of
/// `run_retention`).
pub const RUN_RETENTION: usize = 1_000;
/// The first bytes of every PNG file.
pub const PNG_SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// What the store keeps at most.
#[derive(Debug, Clone)]
pub struct RunLimits {
    /// Runs kept; a new run past it is refused.
    pub max_runs: usize,
    /// Past this many runs, the least recently updated are deleted to make
    /// room for a new one (0: never).
    pub retention: usize,
    pub max_artifacts_per_run: usize,
    pub max_artifact_bytes: usize,
    pub max_points_per_run: usize,
}

impl Default for RunLimits {
    fn default() -> Self {
        RunLimits {
            max_runs: MAX_RUNS,
            retention: RUN_RETENTION,
            max_artifacts_per_run: MAX_ARTIFACTS_PER_RUN,
            max_artifact_bytes: MAX_ARTIFACT_BYTES,
            max_points_per_run: MAX_POINTS_PER_RUN,
        }
    }
}
/// Most metric values one run keeps (older values of a name are still
/// summarized in `latest`).
pub const MAX_POINTS_PER_RUN: usize = 100_000;

/// Why a log was refused.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("this session logs to no run: pass --run NAME or set STRATUS_RUN to log metrics and artifacts")]
    NoRun,
    #[error("run name {0:?} is not allowed: use 1 to 100 printable characters")]
    BadRunName(String),
    #[error("metric name {0:?} is not allowed: use 1 to 100 printable characters")]
    BadMetricName(String),
    #[error("metric '{name}' of run '{run}' is not a finite number ({value})")]
    BadValue {
        run: String,
        name: String,
        value: f64,
    },
    #[error("artifact name {0:?} is not allowed: use 1 to 128 letters, digits, '.', '_' or '-', not starting with '.'")]
    BadArtifactName(String),
    #[error("content type {0:?} is not a MIME type like image/png")]
    BadContentType(String),
    #[error("artifact '{name}' is {bytes} bytes, more than the limit of {limit} bytes (the scheduler's max_artifact_bytes)")]
    ArtifactTooLarge {
        name: String,
        bytes: usize,
        limit: usize,
    },
    #[error("artifact '{name}' is refused: {reason}; runs keep PNG images only (image/png)")]
    NotPng { name: String, reason: String },
    #[error("run '{run}' already holds {limit} artifacts (the scheduler's max_artifacts_per_run)")]
    TooManyArtifacts { run: String, limit: usize },
    #[error("run '{run}' already holds {limit} metric values")]
    TooManyPoints { run: String, limit: usize },
    #[error("cannot create run '{run}': the scheduler already keeps {limit} runs (its max_runs); raise max_runs, or set run_retention to delete the oldest runs")]
    TooManyRuns { run: String, limit: usize },
    #[error("cannot store run data in {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One logged value.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MetricPoint {
    pub name: String,
    pub value: f64,
    pub time: String,
}

/// A stored file.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ArtifactMeta {
    pub name: String,
    pub bytes: u64,
    pub content_type: String,
}

/// A run as stored in `run.json` and served by `/api/runs/{id}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub name: String,
    pub started: String,
    pub updated: String,
    pub metrics: Vec<MetricPoint>,
    pub artifacts: Vec<ArtifactMeta>,
}

impl Run {
    /// Latest value of each metric name, in order of first logging.
    pub fn latest(&self) -> Vec<(&str, f64)> {
        let mut order: Vec<&str> = Vec::new();
        let mut value: HashMap<&str, f64> = HashMap::new();
        for p in &self.metrics {
            if value.insert(&p.name, p.value).is_none() {
                order.push(&p.name);
            }
        }
        order.into_iter().map(|n| (n, value[n])).collect()
    }

    fn latest_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.latest()
            .into_iter()
            .map(|(n, v)| (n.to_string(), serde_json::json!(v)))
            .collect()
    }

    /// The `/api/runs` entry.
    pub fn summary_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "started": self.started,
            "updated": self.updated,
            "metrics": self.metrics.len(),
            "artifacts": self.artifacts.len(),
        })
    }

    /// The `/api/runs/{id}` document.
    pub fn detail_json(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "name": self.name,
            "started": self.started,
            "updated": self.updated,
            "metrics": self.metrics,
            "latest": self.latest_json(),
            "artifacts": self.artifacts,
        })
    }

    /// The dashboard's entry: the summary plus latest values and file names.
    pub fn dashboard_json(&self) -> serde_json::Value {
        let mut v = self.summary_json();
        v["latest"] = serde_json::Value::Object(self.latest_json());
        v["artifact_names"] = self.artifacts.iter().map(|a| a.name.clone()).collect();
        v
    }
}

struct Families {
    runs: IntGauge,
    metric: prometheus::GaugeVec,
    artifacts: IntGaugeVec,
}

/// One line of a run's `log.jsonl`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LogLine {
    /// Metric values logged together.
    Metrics(Vec<MetricPoint>),
    /// An artifact stored (or replaced) at `time`.
    Artifact { meta: ArtifactMeta, time: String },
}

/// Every run, on disk and in memory.
pub struct RunStore {
    dir: Option<PathBuf>,
    runs: Mutex<Vec<Run>>,
    families: Families,
    limits: RunLimits,
    /// The highest id given.
    last_id: AtomicU64,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn valid_text(name: &str) -> bool {
    (1..=100).contains(&name.chars().count()) && !name.chars().any(char::is_control)
}

/// Artifact names become file names: keep them to a safe alphabet.
pub fn valid_artifact_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn valid_content_type(ct: &str) -> bool {
    let mut parts = ct.split('/');
    let ok = |p: Option<&str>| {
        p.is_some_and(|p| {
            !p.is_empty()
                && p.len() <= 64
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'+' | b'-'))
        })
    };
    ok(parts.next()) && ok(parts.next()) && parts.next().is_none()
}

/// Runs keep PNG images only: the content type must say so and the bytes
/// must start with the PNG signature (an HTML or SVG file is refused,
/// whatever it claims to be).
fn check_png(name: &str, content_type: &str, data: &[u8]) -> Result<(), RunError> {
    let refuse = |reason: String| {
        Err(RunError::NotPng {
            name: name.to_string(),
            reason,
        })
    };
    if !content_type.eq_ignore_ascii_case("image/png") {
        return refuse(format!("its content type is {content_type}"));
    }
    if !data.starts_with(PNG_SIGNATURE) {
        return refuse("its bytes do not start with the PNG signature".into());
    }
    Ok(())
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Write `bytes` to `path` through a temporary file and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    let tmp = path.with_extension("tmp-write");
    let mut file = fs::File::create(&tmp).map_err(io_error(&tmp))?;
    file.write_all(bytes).map_err(io_error(&tmp))?;
    file.sync_all().map_err(io_error(&tmp))?;
    fs::rename(&tmp, path).map_err(io_error(path))
}

/// Append one line to a run's log (one `write` of the whole line, so a
/// crash leaves at most a torn last line, which reading skips).
fn append_line(run_dir: &Path, line: &LogLine) -> Result<(), RunError> {
    let path = run_dir.join("log.jsonl");
    let mut text = serde_json::to_vec(line).expect("a log line serializes");
    text.push(b'\n');
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io_error(&path))?;
    file.write_all(&text).map_err(io_error(&path))
}

/// Read a run: its `run.json`, then every line of its `log.jsonl`.
fn read_run(run_dir: &Path) -> Option<Run> {
    let file = run_dir.join("run.json");
    let text = fs::read(&file).ok()?;
    let mut run = match serde_json::from_slice::<Run>(&text) {
        Ok(run) => run,
        Err(e) => {
            tracing::warn!("skipping {}: {e}", file.display());
            return None;
        }
    };
    let log = run_dir.join("log.jsonl");
    let Ok(text) = fs::read_to_string(&log) else {
        return Some(run);
    };
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<LogLine>(line) {
            Ok(LogLine::Metrics(points)) => {
                if let Some(last) = points.last() {
                    run.updated = last.time.clone();
                }
                run.metrics.extend(points);
            }
            Ok(LogLine::Artifact { meta, time }) => {
                match run.artifacts.iter_mut().find(|a| a.name == meta.name) {
                    Some(a) => *a = meta,
                    None => run.artifacts.push(meta),
                }
                run.updated = time;
            }
            Err(e) => tracing::warn!("{} line {}: skipped: {e}", log.display(), n + 1),
        }
    }
    Some(run)
}

impl RunStore {
    /// Open the store under `data_dir` (None: in memory only) with the
    /// default limits; see [`RunStore::open_with`].
    pub fn open(data_dir: Option<&Path>, registry: &Registry) -> Result<RunStore, RunError> {
        Self::open_with(data_dir, registry, RunLimits::default())
    }

    /// Open the store under `data_dir` (None: in memory only), reading every
    /// run kept there (and deleting the oldest past `limits.retention`);
    /// register its metric families in `registry`.
    pub fn open_with(
        data_dir: Option<&Path>,
        registry: &Registry,
        limits: RunLimits,
    ) -> Result<RunStore, RunError> {
        let mut runs = Vec::new();
        let dir = data_dir.map(|d| d.join("runs"));
        if let Some(dir) = &dir {
            fs::create_dir_all(dir).map_err(io_error(dir))?;
            for entry in fs::read_dir(dir).map_err(io_error(dir))? {
                let entry = entry.map_err(io_error(dir))?;
                if let Some(run) = read_run(&entry.path()) {
                    runs.push(run);
                }
            }
        }
        runs.sort_by_key(|r: &Run| r.id.parse::<u64>().unwrap_or(u64::MAX));
        let families = Families {
            runs: IntGauge::new("stratus_runs", "Runs known to the scheduler.")
                .expect("valid metric"),
            metric: prometheus::GaugeVec::new(
                Opts::new(
                    "stratus_run_metric",
                    "Latest value of each metric logged to a run (the 20 most recently updated runs, 50 names each).",
                ),
                &["run", "metric"],
            )
            .expect("valid metric"),
            artifacts: IntGaugeVec::new(
                Opts::new(
                    "stratus_run_artifacts",
                    "Artifacts (files) logged to a run (the 20 most recently updated runs).",
                ),
                &["run"],
            )
            .expect("valid metric"),
        };
        registry
            .register(Box::new(families.runs.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(families.metric.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(families.artifacts.clone()))
            .expect("unique metric");
        let store = RunStore {
            dir,
            runs: Mutex::new(runs),
            families,
            limits,
            last_id: AtomicU64::new(0),
        };
        {
            let mut runs = store.lock();
            store.prune(&mut runs, None);
            store.export(&runs);
        }
        Ok(store)
    }

    /// Delete the least recently updated runs (never `keep`) until at most
    /// `limits.retention` remain.
    fn prune(&self, runs: &mut Vec<Run>, keep: Option<&str>) {
        let retention = self.limits.retention;
        if retention == 0 {
            return;
        }
        while runs.len() > retention {
            let Some(oldest) = runs
                .iter()
                .enumerate()
                .filter(|(_, r)| Some(r.id.as_str()) != keep)
                .min_by(|(_, a), (_, b)| a.updated.cmp(&b.updated))
                .map(|(i, _)| i)
            else {
                return;
            };
            let run = runs.remove(oldest);
            tracing::info!(
                "deleting run '{}' (id {}, last updated {}): more than {retention} runs (run_retention)",
                run.name,
                run.id,
                run.updated
            );
            if let Some(dir) = self.run_dir(&run.id) {
                if let Err(e) = fs::remove_dir_all(&dir) {
                    tracing::warn!("cannot delete {}: {e}", dir.display());
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Run>> {
        self.runs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Refresh the Prometheus series from `runs`.
    fn export(&self, runs: &[Run]) {
        self.families.runs.set(runs.len() as i64);
        self.families.metric.reset();
        self.families.artifacts.reset();
        let mut recent: Vec<&Run> = runs.iter().collect();
        recent.sort_by(|a, b| b.updated.cmp(&a.updated));
        for run in recent.into_iter().take(EXPORTED_RUNS) {
            for (name, value) in run.latest().into_iter().take(EXPORTED_METRICS_PER_RUN) {
                self.families
                    .metric
                    .with_label_values(&[run.name.as_str(), name])
                    .set(value);
            }
            self.families
                .artifacts
                .with_label_values(&[run.name.as_str()])
                .set(run.artifacts.len() as i64);
        }
    }

    fn run_dir(&self, id: &str) -> Option<PathBuf> {
        self.dir.as_ref().map(|d| d.join(id))
    }

    /// Append a line to run `id`'s log (nothing without a data directory).
    fn append(&self, id: &str, line: &LogLine) -> Result<(), RunError> {
        match self.run_dir(id) {
            Some(dir) => append_line(&dir, line),
            None => Ok(()),
        }
    }

    /// The run named `name`, created if new (its `run.json` written, the
    /// oldest runs pruned past the retention); its index in `runs`.
    fn find_or_create(&self, runs: &mut Vec<Run>, name: &str) -> Result<usize, RunError> {
        if !valid_text(name) {
            return Err(RunError::BadRunName(name.to_string()));
        }
        if let Some(i) = runs.iter().position(|r| r.name == name) {
            return Ok(i);
        }
        let limits = &self.limits;
        // With a retention at most max_runs, pruning keeps room; without
        // one (or a larger one), max_runs refuses.
        let prunes_first = limits.retention > 0 && limits.retention <= limits.max_runs;
        if runs.len() >= limits.max_runs && !prunes_first {
            return Err(RunError::TooManyRuns {
                run: name.to_string(),
                limit: limits.max_runs,
            });
        }
        // Not reused while the process runs, even once pruned.
        let id = runs
            .iter()
            .filter_map(|r| r.id.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            .max(self.last_id.load(Ordering::Relaxed))
            + 1;
        self.last_id.store(id, Ordering::Relaxed);
        let t = now();
        let run = Run {
            id: id.to_string(),
            name: name.to_string(),
            started: t.clone(),
            updated: t,
            metrics: Vec::new(),
            artifacts: Vec::new(),
        };
        if let Some(dir) = self.run_dir(&run.id) {
            fs::create_dir_all(&dir).map_err(io_error(&dir))?;
            let json = serde_json::to_vec_pretty(&run).expect("a run serializes");
            write_atomic(&dir.join("run.json"), &json)?;
        }
        runs.push(run);
        if limits.retention > 0 {
            let id = id.to_string();
            self.prune(runs, Some(&id));
        }
        Ok(runs
            .iter()
            .position(|r| r.name == name)
            .expect("just created"))
    }

    /// Log numbers to run `run` (created on first use); returns its id.
    pub fn log_metrics(&self, run: &str, metrics: &[(String, f64)]) -> Result<String, RunError> {
        for (name, value) in metrics {
            if !valid_text(name) {
                return Err(RunError::BadMetricName(name.clone()));
            }
            if !value.is_finite() {
                return Err(RunError::BadValue {
                    run: run.to_string(),
                    name: name.clone(),
                    value: *value,
                });
            }
        }
        let mut runs = self.lock();
        let i = self.find_or_create(&mut runs, run)?;
        let limit = self.limits.max_points_per_run;
        if runs[i].metrics.len() + metrics.len() > limit {
            return Err(RunError::TooManyPoints {
                run: run.to_string(),
                limit,
            });
        }
        let t = now();
        let points: Vec<MetricPoint> = metrics
            .iter()
            .map(|(name, value)| MetricPoint {
                name: name.clone(),
                value: *value,
                time: t.clone(),
            })
            .collect();
        self.append(&runs[i].id, &LogLine::Metrics(points.clone()))?;
        let r = &mut runs[i];
        r.metrics.extend(points);
        r.updated = t;
        self.export(&runs);
        Ok(runs[i].id.clone())
    }

    /// Store a file with run `run` (replacing one of the same name); returns
    /// the run's id.
    pub fn log_artifact(
        &self,
        run: &str,
        name: &str,
        content_type: &str,
        data: &[u8],
    ) -> Result<String, RunError> {
        if !valid_artifact_name(name) {
            return Err(RunError::BadArtifactName(name.to_string()));
        }
        if !valid_content_type(content_type) {
            return Err(RunError::BadContentType(content_type.to_string()));
        }
        let limit = self.limits.max_artifact_bytes;
        if data.len() > limit {
            return Err(RunError::ArtifactTooLarge {
                name: name.to_string(),
                bytes: data.len(),
                limit,
            });
        }
        check_png(name, content_type, data)?;
        let Some(runs_dir) = &self.dir else {
            // Without a data directory artifacts cannot be kept.
            return Err(RunError::Io {
                path: PathBuf::from("(no --data-dir)"),
                source: std::io::Error::other("the scheduler was started without a data directory"),
            });
        };
        let too_many = |run: &Run| {
            let replaces = run.artifacts.iter().any(|a| a.name == name);
            (!replaces && run.artifacts.len() >= self.limits.max_artifacts_per_run).then(|| {
                RunError::TooManyArtifacts {
                    run: run.name.clone(),
                    limit: self.limits.max_artifacts_per_run,
                }
            })
        };
        // The file is written without holding the store's lock (it may be
        // large): the dashboard and other logs go on meanwhile.
        let id = {
            let mut runs = self.lock();
            let i = self.find_or_create(&mut runs, run)?;
            if let Some(e) = too_many(&runs[i]) {
                return Err(e);
            }
            runs[i].id.clone()
        };
        let dir = runs_dir.join(&id).join("artifacts");
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        write_atomic(&dir.join(name), data)?;
        let mut runs = self.lock();
        let Some(i) = runs.iter().position(|r| r.id == id) else {
            return Err(RunError::Io {
                path: dir,
                source: std::io::Error::other(format!(
                    "run '{run}' was deleted meanwhile (run_retention)"
                )),
            });
        };
        if let Some(e) = too_many(&runs[i]) {
            let _ = fs::remove_file(dir.join(name));
            return Err(e);
        }
        let meta = ArtifactMeta {
            name: name.to_string(),
            bytes: data.len() as u64,
            content_type: "image/png".to_string(),
        };
        let t = now();
        self.append(
            &id,
            &LogLine::Artifact {
                meta: meta.clone(),
                time: t.clone(),
            },
        )?;
        let r = &mut runs[i];
        match r.artifacts.iter_mut().find(|a| a.name == name) {
            Some(a) => *a = meta,
            None => r.artifacts.push(meta),
        }
        r.updated = t;
        self.export(&runs);
        Ok(id)
    }

    /// Every run, newest first (`/api/runs`).
    pub fn list_json(&self) -> serde_json::Value {
        let runs = self.lock();
        runs.iter().rev().map(Run::summary_json).collect()
    }

    /// The newest `n` runs for the dashboard.
    pub fn dashboard_json(&self, n: usize) -> serde_json::Value {
        let runs = self.lock();
        runs.iter().rev().take(n).map(Run::dashboard_json).collect()
    }

    /// One run (`/api/runs/{id}`), by id or by name.
    pub fn detail_json(&self, id: &str) -> Option<serde_json::Value> {
        let runs = self.lock();
        runs.iter()
            .find(|r| r.id == id)
            .or_else(|| runs.iter().find(|r| r.name == id))
            .map(Run::detail_json)
    }

    /// An artifact's bytes and content type.
    pub fn artifact(&self, id: &str, name: &str) -> Option<(String, Vec<u8>)> {
        if !valid_artifact_name(name) {
            return None;
        }
        let (run_id, content_type) = {
            let runs = self.lock();
            let run = runs
                .iter()
                .find(|r| r.id == id)
                .or_else(|| runs.iter().find(|r| r.name == id))?;
            let meta = run.artifacts.iter().find(|a| a.name == name)?;
            (run.id.clone(), meta.content_type.clone())
        };
        let path = self.run_dir(&run_id)?.join("artifacts").join(name);
        fs::read(path).ok().map(|bytes| (content_type, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest thing that passes as a PNG here: its signature.
    const PNG: &[u8] = PNG_SIGNATURE;

    fn temp_dir(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stratus-runs-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn runs_survive_a_restart() {
        let dir = temp_dir("restart");
        {
            let store = RunStore::open(Some(&dir), &Registry::new()).unwrap();
            store
                .log_metrics("nightly", &[("describe.seconds".into(), 1.5)])
                .unwrap();
            store
                .log_artifact("nightly", "t.png", "image/png", PNG)
                .unwrap();
            store.log_metrics("other", &[("x".into(), 2.0)]).unwrap();
        }
        let registry = Registry::new();
        let store = RunStore::open(Some(&dir), &registry).unwrap();
        let detail = store.detail_json("1").unwrap();
        assert_eq!(detail["name"], "nightly");
        assert_eq!(detail["latest"]["describe.seconds"], 1.5);
        assert_eq!(
            store.artifact("1", "t.png"),
            Some(("image/png".into(), PNG.to_vec()))
        );
        // A new run after the restart gets a fresh id.
        store.log_metrics("third", &[("y".into(), 3.0)]).unwrap();
        assert_eq!(store.detail_json("third").unwrap()["id"], "3");
        let text = prometheus::TextEncoder::new()
            .encode_to_string(&registry.gather())
            .unwrap();
        assert!(
            text.contains("stratus_run_metric{metric=\"describe.seconds\",run=\"nightly\"} 1.5"),
            "{text}"
        );
        assert!(text.contains("stratus_runs 3"), "{text}");
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_names_and_sizes_are_refused() {
        let dir = temp_dir("bad");
        let store = RunStore::open(Some(&dir), &Registry::new()).unwrap();
        for name in ["../x", "a/b", ".hidden", "", "x\0y"] {
            let e = store
                .log_artifact("r", name, "image/png", b"x")
                .unwrap_err();
            assert!(matches!(e, RunError::BadArtifactName(_)), "{name}: {e}");
        }
        for (data, content_type) in [
            (&b"<html><script>alert(1)</script></html>"[..], "image/png"),
            (
                &b"<svg xmlns='http://www.w3.org/2000/svg'/>"[..],
                "image/svg+xml",
            ),
            (PNG, "text/html"),
        ] {
            let e = store
                .log_artifact("r", "x.png", content_type, data)
                .unwrap_err();
            assert!(matches!(e, RunError::NotPng { .. }), "{e}");
            assert!(e.to_string().contains("PNG images only"), "{e}");
        }
        let big = vec![0u8; MAX_ARTIFACT_BYTES + 1];
        let e = store
            .log_artifact("r", "big.png", "image/png", &big)
            .unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        let e = store
            .log_artifact("r", "a.png", "../../etc", b"x")
            .unwrap_err();
        assert!(matches!(e, RunError::BadContentType(_)), "{e}");
        let e = store
            .log_metrics("r", &[("nan".into(), f64::NAN)])
            .unwrap_err();
        assert!(matches!(e, RunError::BadValue { .. }), "{e}");
        assert!(store.log_metrics("\n", &[("a".into(), 1.0)]).is_err());
        // Nothing was created by the refused calls.
        assert_eq!(store.list_json(), serde_json::json!([]));
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn prometheus_export_is_bounded() {
        let registry = Registry::new();
        let store = RunStore::open(None, &registry).unwrap();
        for r in 0..EXPORTED_RUNS + 5 {
            let metrics: Vec<(String, f64)> = (0..EXPORTED_METRICS_PER_RUN + 3)
                .map(|m| (format!("m{m}"), m as f64))
                .collect();
            store.log_metrics(&format!("run{r}"), &metrics).unwrap();
        }
        let series: usize = registry
            .gather()
            .iter()
            .filter(|f| f.name() == "stratus_run_metric")
            .map(|f| f.get_metric().len())
            .sum();
        assert_eq!(series, EXPORTED_RUNS * EXPORTED_METRICS_PER_RUN);
    }

    fn limits(retention: usize, max_runs: usize) -> RunLimits {
        RunLimits {
            retention,
            max_runs,
            max_artifacts_per_run: 2,
            max_artifact_bytes: 100,
            ..RunLimits::default()
        }
    }

    #[test]
    fn configured_limits_are_enforced_and_named() {
        let dir = temp_dir("limits");
        let store = RunStore::open_with(Some(&dir), &Registry::new(), limits(0, 2)).unwrap();
        let mut big = PNG.to_vec();
        big.resize(101, 0);
        let e = store
            .log_artifact("a", "big.png", "image/png", &big)
            .unwrap_err();
        assert!(e.to_string().contains("max_artifact_bytes"), "{e}");
        store.log_artifact("a", "1.png", "image/png", PNG).unwrap();
        store.log_artifact("a", "2.png", "image/png", PNG).unwrap();
        // Replacing one is fine, a third is not.
        store.log_artifact("a", "2.png", "image/png", PNG).unwrap();
        let e = store
            .log_artifact("a", "3.png", "image/png", PNG)
            .unwrap_err();
        assert!(e.to_string().contains("max_artifacts_per_run"), "{e}");
        store.log_metrics("b", &[("x".into(), 1.0)]).unwrap();
        // No retention: the third run is refused, naming the limit.
        let e = store.log_metrics("c", &[("x".into(), 1.0)]).unwrap_err();
        assert!(
            e.to_string().contains("max_runs") && e.to_string().contains('2'),
            "{e}"
        );
        assert!(!dir.join("runs/3").exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_least_recently_updated_runs_are_pruned_past_the_retention() {
        let dir = temp_dir("prune");
        let store = RunStore::open_with(Some(&dir), &Registry::new(), limits(2, 10)).unwrap();
        store.log_metrics("first", &[("x".into(), 1.0)]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        store.log_metrics("second", &[("x".into(), 1.0)]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        // `first` is updated again: `second` is now the oldest.
        store.log_metrics("first", &[("x".into(), 2.0)]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(5));
        store.log_metrics("third", &[("x".into(), 1.0)]).unwrap();
        let names: Vec<String> = store
            .list_json()
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(names, ["third", "first"]);
        assert!(
            !dir.join("runs/2").exists(),
            "the pruned run's files are gone"
        );
        assert_eq!(store.detail_json("third").unwrap()["id"], "3");
        // A restart with a smaller retention prunes at once.
        drop(store);
        let store = RunStore::open_with(Some(&dir), &Registry::new(), limits(1, 10)).unwrap();
        assert_eq!(store.list_json().as_array().unwrap().len(), 1);
        assert!(store.detail_json("third").is_some());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn logs_append_and_old_run_json_files_still_read() {
        let dir = temp_dir("append");
        // A run as an older scheduler wrote it: everything in run.json.
        let old = dir.join("runs/7");
        fs::create_dir_all(old.join("artifacts")).unwrap();
        fs::write(old.join("artifacts/a.png"), PNG).unwrap();
        fs::write(
            old.join("run.json"),
            r#"{"id":"7","name":"old","started":"2025-01-01T00:00:00.000Z",
               "updated":"2025-01-01T00:00:01.000Z",
               "metrics":[{"name":"m","value":1.0,"time":"2025-01-01T00:00:01.000Z"}],
               "artifacts":[{"name":"a.png","bytes":8,"content_type":"image/png"}]}"#,
        )
        .unwrap();
        {
            let store = RunStore::open(Some(&dir), &Registry::new()).unwrap();
            assert_eq!(store.detail_json("old").unwrap()["latest"]["m"], 1.0);
            let before = fs::read(old.join("run.json")).unwrap();
            store.log_metrics("old", &[("m".into(), 2.0)]).unwrap();
            store.log_metrics("new", &[("n".into(), 3.0)]).unwrap();
            // run.json is never rewritten: the log grows instead.
            assert_eq!(fs::read(old.join("run.json")).unwrap(), before);
            let log = fs::read_to_string(old.join("log.jsonl")).unwrap();
            assert_eq!(log.lines().count(), 1, "{log}");
            assert_eq!(store.detail_json("new").unwrap()["id"], "8");
        }
        // A torn last line (a crash mid-append) is skipped.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(old.join("log.jsonl"))
            .unwrap();
        f.write_all(b"{\"metrics\":[{\"na").unwrap();
        let store = RunStore::open(Some(&dir), &Registry::new()).unwrap();
        let detail = store.detail_json("old").unwrap();
        assert_eq!(detail["latest"]["m"], 2.0);
        assert_eq!(detail["metrics"].as_array().unwrap().len(), 2);
        assert_eq!(detail["artifacts"][0]["name"], "a.png");
        assert_eq!(store.detail_json("new").unwrap()["latest"]["n"], 3.0);
        let _ = fs::remove_dir_all(&dir);
    }
}
