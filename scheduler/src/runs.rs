//! Runs: the "run logging" of the workflow. A run groups one client session's
//! work under a name; clients log numbers (step timings, row counts, anything)
//! and files (PNG plots) to it.
//!
//! Runs live on the scheduler's disk under `DATA_DIR/runs/<id>/` (`run.json`
//! plus `artifacts/<name>`), written atomically (temporary file, then rename),
//! and are read back at start-up, so they survive a restart. They are served
//! as JSON by `http.rs` and exported as Prometheus series with bounded
//! cardinality: only the [`EXPORTED_RUNS`] most recently updated runs, and at
//! most [`EXPORTED_METRICS_PER_RUN`] metric names of each, become
//! `stratus_run_metric{run,metric}` series. Everything stays in the JSON API.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use chrono::{SecondsFormat, Utc};
use prometheus::{IntGauge, IntGaugeVec, Opts, Registry};
use serde::{Deserialize, Serialize};

/// Runs exported to Prometheus (the most recently updated ones).
pub const EXPORTED_RUNS: usize = 20;
/// Metric names exported per run (the first ones logged).
pub const EXPORTED_METRICS_PER_RUN: usize = 50;
/// Largest artifact accepted.
pub const MAX_ARTIFACT_BYTES: usize = 32 << 20;
/// Most artifacts one run keeps.
pub const MAX_ARTIFACTS_PER_RUN: usize = 500;
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
    #[error("artifact '{name}' is {bytes} bytes, more than the limit of {limit} bytes")]
    ArtifactTooLarge {
        name: String,
        bytes: usize,
        limit: usize,
    },
    #[error("run '{run}' already holds {limit} artifacts")]
    TooManyArtifacts { run: String, limit: usize },
    #[error("run '{run}' already holds {limit} metric values")]
    TooManyPoints { run: String, limit: usize },
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

/// Every run, on disk and in memory.
pub struct RunStore {
    dir: Option<PathBuf>,
    runs: Mutex<Vec<Run>>,
    families: Families,
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

impl RunStore {
    /// Open the store under `data_dir` (None: in memory only), reading every
    /// run kept there; register its metric families in `registry`.
    pub fn open(data_dir: Option<&Path>, registry: &Registry) -> Result<RunStore, RunError> {
        let mut runs = Vec::new();
        let dir = data_dir.map(|d| d.join("runs"));
        if let Some(dir) = &dir {
            fs::create_dir_all(dir).map_err(io_error(dir))?;
            for entry in fs::read_dir(dir).map_err(io_error(dir))? {
                let entry = entry.map_err(io_error(dir))?;
                let file = entry.path().join("run.json");
                let Ok(text) = fs::read(&file) else {
                    continue;
                };
                match serde_json::from_slice::<Run>(&text) {
                    Ok(run) => runs.push(run),
                    Err(e) => tracing::warn!("skipping {}: {e}", file.display()),
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
        };
        store.export(&store.lock());
        Ok(store)
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

    fn save(&self, run: &Run) -> Result<(), RunError> {
        let Some(dir) = self.run_dir(&run.id) else {
            return Ok(());
        };
        fs::create_dir_all(&dir).map_err(io_error(&dir))?;
        let json = serde_json::to_vec_pretty(run).expect("a run serializes");
        write_atomic(&dir.join("run.json"), &json)
    }

    /// The run named `name`, created if new; its index in `runs`.
    fn find_or_create(runs: &mut Vec<Run>, name: &str) -> Result<usize, RunError> {
        if !valid_text(name) {
            return Err(RunError::BadRunName(name.to_string()));
        }
        if let Some(i) = runs.iter().position(|r| r.name == name) {
            return Ok(i);
        }
        let id = runs
            .iter()
            .filter_map(|r| r.id.parse::<u64>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let t = now();
        runs.push(Run {
            id: id.to_string(),
            name: name.to_string(),
            started: t.clone(),
            updated: t,
            metrics: Vec::new(),
            artifacts: Vec::new(),
        });
        Ok(runs.len() - 1)
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
        let i = Self::find_or_create(&mut runs, run)?;
        let r = &mut runs[i];
        if r.metrics.len() + metrics.len() > MAX_POINTS_PER_RUN {
            return Err(RunError::TooManyPoints {
                run: run.to_string(),
                limit: MAX_POINTS_PER_RUN,
            });
        }
        let t = now();
        r.metrics
            .extend(metrics.iter().map(|(name, value)| MetricPoint {
                name: name.clone(),
                value: *value,
                time: t.clone(),
            }));
        r.updated = t;
        self.save(&runs[i])?;
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
        if data.len() > MAX_ARTIFACT_BYTES {
            return Err(RunError::ArtifactTooLarge {
                name: name.to_string(),
                bytes: data.len(),
                limit: MAX_ARTIFACT_BYTES,
            });
        }
        let mut runs = self.lock();
        let i = Self::find_or_create(&mut runs, run)?;
        let replaces = runs[i].artifacts.iter().position(|a| a.name == name);
        if replaces.is_none() && runs[i].artifacts.len() >= MAX_ARTIFACTS_PER_RUN {
            return Err(RunError::TooManyArtifacts {
                run: run.to_string(),
                limit: MAX_ARTIFACTS_PER_RUN,
            });
        }
        if let Some(dir) = self.run_dir(&runs[i].id) {
            let dir = dir.join("artifacts");
            fs::create_dir_all(&dir).map_err(io_error(&dir))?;
            write_atomic(&dir.join(name), data)?;
        } else {
            // Without a data directory artifacts cannot be kept.
            return Err(RunError::Io {
                path: PathBuf::from("(no --data-dir)"),
                source: std::io::Error::other("the scheduler was started without a data directory"),
            });
        }
        let meta = ArtifactMeta {
            name: name.to_string(),
            bytes: data.len() as u64,
            content_type: content_type.to_string(),
        };
        let r = &mut runs[i];
        match replaces {
            Some(j) => r.artifacts[j] = meta,
            None => r.artifacts.push(meta),
        }
        r.updated = now();
        self.save(&runs[i])?;
        self.export(&runs);
        Ok(runs[i].id.clone())
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
                .log_artifact("nightly", "t.png", "image/png", b"\x89PNG")
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
            Some(("image/png".into(), b"\x89PNG".to_vec()))
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
}
