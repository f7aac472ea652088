//! Object-storage read benchmark: the ISD-like sample (12 M rows by default)
//! uploaded once to Azurite (Azure Blob) and to moto (S3), both on free
//! loopback ports, read by a `stratus local --workers 2 --threads-per-worker 1`
//! cluster through the real `stratus` CLI. For each store it times `len` and
//! `persist` (then `unpersist`) of the glob `.../year=*/month=*/*.parquet`,
//! and in the same run, as baselines:
//!
//! - the same two steps on the same files on local disk;
//! - a plain loop of ranged GETs of every object's bytes (8 MiB requests, 32
//!   in flight) from the same emulator, through `stratus-storage` in this
//!   process;
//! - on moto, Polars' `scan_parquet(...).collect()` and pyarrow's
//!   `dataset(...).to_table()` over `S3FileSystem` (timed inside Python, so
//!   interpreter start-up and imports are excluded).
//!
//! Each is the best of `--reps` runs (the first run is shown too: it is the
//! one with cold footer caches). Requests, bytes fetched and the peak of
//! requests in flight come from the workers' Prometheus endpoints (summed over
//! workers, scraped before and after each step) when the workers export
//! `stratus_worker_storage_*`. The emulators run on the same cores as the
//! workers: their CPU seconds per step are shown next to the workers'.
//!
//! Run: `cargo build --release -p stratus -p stratus-worker -p stratus-scheduler --bins
//! && cargo bench --bench objstore -- --rows 12000000 --reps 3`
//! (`--threads-per-worker N` changes the cluster's compute threads, for a
//! diagnosis; the targets are for 1).
//! (needs `.ci/node/` Azurite as scripts/test installs it, and Python with
//! moto[server], boto3, azure-storage-blob, pyarrow; polars is optional).

#[allow(dead_code)]
#[path = "../tests/common/objstore.rs"]
mod objstore;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use objstore::{Azurite, Moto, MOTO_ACCESS_KEY, MOTO_REGION, MOTO_SECRET_KEY};
use stratus::local::sibling_binary;
use stratus_protocol::units::format_bytes;
use stratus_storage::{Storage, StoragePolicy};

/// A directory removed on drop (tests/common/objstore.rs uses `super::TempDir`).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!(
            "stratus-bench-{tag}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temp dir");
        TempDir(dir)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const CONTAINER: &str = "bench";
const BUCKET: &str = "bench";
const PREFIX: &str = "isd";
const GLOB: &str = "year=*/month=*/*.parquet";
/// The GET loop's request size and concurrency.
const GET_BYTES: u64 = 8 << 20;
const GETS_IN_FLIGHT: usize = 32;

struct Args {
    rows: u64,
    reps: usize,
    /// Compute threads per worker (1 by default; more for a diagnosis).
    threads: u32,
}

fn args() -> Args {
    let mut rows = std::env::var("STRATUS_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12_000_000);
    let mut reps = 3;
    let mut threads = 1;
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        // `cargo bench` adds --bench; anything unknown is ignored.
        match argv[i].as_str() {
            "--rows" if i + 1 < argv.len() => {
                rows = argv[i + 1].parse().expect("--rows N");
                i += 1;
            }
            "--reps" if i + 1 < argv.len() => {
                reps = argv[i + 1].parse().expect("--reps N");
                i += 1;
            }
            "--threads-per-worker" if i + 1 < argv.len() => {
                threads = argv[i + 1].parse().expect("--threads-per-worker N");
                i += 1;
            }
            _ => {}
        }
        i += 1;
    }
    Args {
        rows,
        reps: reps.max(1),
        threads: threads.max(1),
    }
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn best(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

/// CPU seconds (user + system) used so far by these processes.
fn cpu_seconds(pids: &[u32]) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            let ticks = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / tick)
        })
        .sum()
}

/// Processes whose command line holds every one of `needles`.
fn pids_matching(needles: &[&str]) -> Vec<u32> {
    let me = std::process::id();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| *pid != me)
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            needles.iter().all(|n| cmdline.contains(n))
        })
        .collect()
}

/// A plain HTTP/1.0 GET on the loopback: the body.
fn http_get(url: &str) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let (host, path) = match rest.split_once('/') {
        Some((h, p)) => (h, format!("/{p}")),
        None => (rest, "/".to_string()),
    };
    assert!(host.starts_with("127.0.0.1:"), "loopback only: {url}");
    let mut stream = TcpStream::connect(host).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_string()))
}

const METRICS: [&str; 5] = [
    "stratus_worker_storage_requests_total",
    "stratus_worker_storage_bytes_fetched_total",
    "stratus_worker_storage_bytes_uploaded_total",
    "stratus_worker_storage_requests_in_flight_peak",
    "stratus_worker_storage_requests_in_flight",
];

/// How often the in-flight gauge is sampled during a step.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

/// The storage metrics, each summed over every worker (and its labels);
/// a metric no worker exports is absent.
fn scrape(metrics_urls: &[String]) -> BTreeMap<&'static str, f64> {
    let mut out = BTreeMap::new();
    for url in metrics_urls {
        let Some(body) = http_get(url) else { continue };
        for line in body.lines().filter(|l| !l.starts_with('#')) {
            for name in METRICS {
                let Some(rest) = line.strip_prefix(name) else {
                    continue;
                };
                if !(rest.starts_with(' ') || rest.starts_with('{')) {
                    continue;
                }
                if let Some(v) = rest
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.trim().parse::<f64>().ok())
                {
                    *out.entry(name).or_insert(0.0) += v;
                }
            }
        }
    }
    out
}

/// What one run of one step cost, beyond its time.
#[derive(Default, Clone)]
struct Cost {
    requests: Option<f64>,
    fetched: Option<f64>,
    peak_before: Option<f64>,
    peak_after: Option<f64>,
    /// The most requests in flight (summed over workers) seen while sampling
    /// the gauge every [`SAMPLE_EVERY`] during the step.
    peak_sampled: Option<f64>,
    /// CPU seconds of whoever did the reading (workers, this process, Python).
    reader_cpu: f64,
    emulator_cpu: f64,
}

/// A step's runs: seconds and costs, in order.
#[derive(Default)]
struct Runs {
    seconds: Vec<f64>,
    costs: Vec<Cost>,
}

impl Runs {
    fn best(&self) -> f64 {
        best(&self.seconds)
    }
    fn best_index(&self) -> usize {
        let b = self.best();
        self.seconds.iter().position(|s| *s == b).unwrap_or(0)
    }
}

/// The local cluster (`stratus local`), SIGTERM then SIGKILL on drop.
struct Cluster {
    child: Child,
    file: PathBuf,
    dashboard: String,
    stratus: PathBuf,
    _dir: TempDir,
}

impl Cluster {
    fn start(stratus: &Path, data_root: &Path, threads: u32) -> Cluster {
        let dir = TempDir::new("objstore-local");
        let file = dir.path().join("scheduler.json");
        let log = std::fs::File::create(dir.path().join("local.log")).expect("local.log");
        let child = Command::new(stratus)
            .args(["local", "--workers", "2", "--threads-per-worker"])
            .arg(threads.to_string())
            .args(["--dashboard-address", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--data-root")
            .arg(data_root)
            .arg("--data-root")
            .arg(dir.path())
            .arg("--scheduler-file")
            .arg(&file)
            .env_remove("STRATUS_SCHEDULER")
            .env_remove("STRATUS_RUN")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start stratus local");
        let deadline = Instant::now() + Duration::from_secs(60);
        let dashboard = loop {
            let sf: Option<serde_json::Value> = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| serde_json::from_str(&t).ok());
            if let Some(url) = sf.as_ref().and_then(|v| v["dashboard"].as_str()) {
                break url.trim_end_matches('/').to_string();
            }
            assert!(Instant::now() < deadline, "no scheduler file after 60 s");
            std::thread::sleep(Duration::from_millis(100));
        };
        Cluster {
            child,
            file,
            dashboard,
            stratus: stratus.to_path_buf(),
            _dir: dir,
        }
    }

    /// Every worker's (pid, metrics URL), once both have joined.
    fn workers(&self) -> Vec<(u32, Option<String>)> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let cluster: Option<serde_json::Value> =
                http_get(&format!("{}/api/cluster", self.dashboard))
                    .and_then(|b| serde_json::from_str(&b).ok());
            let workers: Vec<(u32, Option<String>)> = cluster
                .as_ref()
                .and_then(|c| c["workers"].as_array())
                .map(|ws| {
                    ws.iter()
                        .map(|w| {
                            (
                                w["pid"].as_u64().unwrap_or(0) as u32,
                                w["metrics_url"].as_str().map(str::to_string),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            if workers.len() == 2 {
                return workers;
            }
            assert!(Instant::now() < deadline, "2 workers did not join in 60 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `stratus --scheduler-file F ARGS`: its stdout, or a panic.
    fn cli(&self, args: &[&str]) -> String {
        let out = Command::new(&self.stratus)
            .arg("--scheduler-file")
            .arg(&self.file)
            .args(args)
            .output()
            .expect("run stratus");
        assert!(
            out.status.success(),
            "stratus {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe {
            libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The context a step is measured in.
struct Meter<'a> {
    metrics_urls: &'a [String],
    worker_pids: &'a [u32],
}

impl Meter<'_> {
    /// Time `f` (whose reading is done by `reader_pids`, the workers if
    /// empty), with the storage metrics and CPU of the emulator around it.
    fn measure<T>(
        &self,
        emulator_pids: &[u32],
        reader_pids: Option<&[u32]>,
        f: impl FnOnce() -> T,
    ) -> (f64, Cost, T) {
        let readers = reader_pids.unwrap_or(self.worker_pids);
        let m0 = scrape(self.metrics_urls);
        let (r0, e0) = (cpu_seconds(readers), cpu_seconds(emulator_pids));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampler = {
            let (done, urls) = (done.clone(), self.metrics_urls.to_vec());
            std::thread::spawn(move || {
                let mut peak: Option<f64> = None;
                while !done.load(Ordering::Relaxed) {
                    if let Some(v) = scrape(&urls).get(METRICS[4]) {
                        peak = Some(peak.map_or(*v, |p| p.max(*v)));
                    }
                    std::thread::sleep(SAMPLE_EVERY);
                }
                peak
            })
        };
        let start = Instant::now();
        let out = f();
        let seconds = secs(start.elapsed());
        done.store(true, Ordering::Relaxed);
        let peak_sampled = sampler.join().expect("the sampler");
        let (r1, e1) = (cpu_seconds(readers), cpu_seconds(emulator_pids));
        let m1 = scrape(self.metrics_urls);
        let delta = |name: &str| Some(m1.get(name)? - m0.get(name).copied().unwrap_or(0.0));
        let cost = Cost {
            requests: delta(METRICS[0]),
            fetched: delta(METRICS[1]),
            peak_before: m0.get(METRICS[3]).copied(),
            peak_after: m1.get(METRICS[3]).copied(),
            peak_sampled,
            reader_cpu: r1 - r0,
            emulator_cpu: e1 - e0,
        };
        (seconds, cost, out)
    }
}

/// `NAME: ROWS rows, ...` from `stratus persist`: the rows.
fn persisted_rows(out: &str) -> u64 {
    out.split_once(": ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a persist summary: {out}"))
}

/// The GET loop: list the glob, then every object's whole byte range in
/// [`GET_BYTES`] requests, [`GETS_IN_FLIGHT`] in flight over all objects
/// (the storage's request limit), pinned to the listed ETags. Returns
/// (objects, bytes, requests, peak in flight, seconds listing).
fn get_loop(
    runtime: &tokio::runtime::Runtime,
    storage: &Arc<Storage>,
    url: &str,
) -> (usize, u64, u64, u64, f64) {
    let stats = storage.stats.clone();
    let requests0 = stats.requests.load(Ordering::Relaxed);
    let fetched0 = stats.bytes_fetched.load(Ordering::Relaxed);
    stats.peak_in_flight.store(0, Ordering::Relaxed);
    let opened = storage.open(url, &[]).expect("open the store");
    let (objects, listing) = runtime.block_on(async {
        let start = Instant::now();
        let objects = opened.list_source().await.expect("list the objects");
        let listing = secs(start.elapsed());
        let mut tasks = tokio::task::JoinSet::new();
        for object in &objects {
            let ranges: Vec<std::ops::Range<u64>> = (0..object.size)
                .step_by(GET_BYTES as usize)
                .map(|start| start..(start + GET_BYTES).min(object.size))
                .collect();
            let (opened, key, etag) = (opened.clone(), object.key.clone(), object.etag.clone());
            tasks.spawn(async move {
                let pieces = opened
                    .get_ranges(&key, &ranges, etag.as_deref())
                    .await
                    .expect("ranged GETs");
                pieces.iter().map(|(_, b)| b.len() as u64).sum::<u64>()
            });
        }
        let mut bytes = 0;
        while let Some(got) = tasks.join_next().await {
            bytes += got.expect("a GET task");
        }
        let listed: u64 = objects.iter().map(|o| o.size).sum();
        assert_eq!(bytes, listed, "every byte of every object");
        (objects, listing)
    });
    (
        objects.len(),
        stats.bytes_fetched.load(Ordering::Relaxed) - fetched0,
        stats.requests.load(Ordering::Relaxed) - requests0,
        stats.peak_in_flight.load(Ordering::Relaxed),
        listing,
    )
}

/// Polars or pyarrow over moto, `reps` times in one interpreter: each run's
/// seconds and CPU seconds, or why it could not run.
fn python_baseline(which: &str, endpoint: &str, reps: usize, rows: u64) -> Result<Runs, String> {
    let common = format!(
        r#"
import json, time, sys
endpoint, bucket, prefix, reps, expected = {endpoint:?}, {BUCKET:?}, {PREFIX:?}, {reps}, {rows}
key, secret, region = {MOTO_ACCESS_KEY:?}, {MOTO_SECRET_KEY:?}, {MOTO_REGION:?}
glob = {GLOB:?}
"#
    );
    let body = match which {
        "polars" => {
            r#"
import polars as pl
opts = {"aws_endpoint_url": endpoint, "aws_allow_http": "true", "aws_access_key_id": key,
        "aws_secret_access_key": secret, "aws_region": region}
def run():
    return pl.scan_parquet(f"s3://{bucket}/{prefix}/{glob}", storage_options=opts, hive_partitioning=False).collect().height
"#
        }
        _ => {
            r#"
import pyarrow.dataset as ds
from pyarrow.fs import S3FileSystem
fs = S3FileSystem(endpoint_override=endpoint, scheme="http", access_key=key, secret_key=secret, region=region)
def run():
    d = ds.dataset(f"{bucket}/{prefix}", filesystem=fs, format="parquet")
    return d.to_table().num_rows
"#
        }
    };
    let tail = r#"
out = []
for _ in range(reps):
    c, t = time.process_time(), time.perf_counter()
    n = run()
    out.append([time.perf_counter() - t, time.process_time() - c])
    assert n == expected, (n, expected)
print(json.dumps(out))
"#;
    let script = format!("{common}{body}{tail}");
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last: Vec<&str> = err.lines().collect();
        return Err(last[last.len().saturating_sub(3)..].join(" / "));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let runs: Vec<Vec<f64>> = serde_json::from_str(text.lines().last().unwrap_or(""))
        .map_err(|e| format!("{which} printed no timings ({e}): {text}"))?;
    let mut result = Runs::default();
    for r in runs {
        result.seconds.push(r[0]);
        result.costs.push(Cost {
            reader_cpu: r[1],
            ..Cost::default()
        });
    }
    Ok(result)
}

fn opt(v: Option<f64>, f: impl Fn(f64) -> String) -> String {
    v.map_or_else(|| "n/a".to_string(), f)
}

fn main() {
    let Args {
        rows,
        reps,
        threads,
    } = args();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
    let stratus = sibling_binary("stratus")
        .expect("build the binaries: cargo build --release -p stratus -p stratus-worker -p stratus-scheduler --bins");
    println!(
        "stratus object-storage read benchmark: {rows} rows, 2 workers x {threads} thread(s), best of {reps}"
    );

    // 1. The sample (as benches/e2e.rs makes it: seed 42), uploaded once.
    let data = repo.join("target/bench-data").join(format!("isd-{rows}"));
    if !data.join("year=2019").exists() {
        let start = Instant::now();
        let out = Command::new(&stratus)
            .args([
                "datagen",
                "isd",
                "--rows",
                &rows.to_string(),
                "--seed",
                "42",
            ])
            .arg("--out")
            .arg(&data)
            .output()
            .expect("run stratus datagen");
        assert!(
            out.status.success(),
            "datagen: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("generated the sample in {:.1} s", secs(start.elapsed()));
    }
    let mut files: Vec<(PathBuf, u64)> = Vec::new();
    let mut stack = vec![data.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).expect("read the sample") {
            let e = e.expect("a directory entry");
            let meta = e.metadata().expect("metadata");
            if meta.is_dir() {
                stack.push(e.path());
            } else if e.path().extension().is_some_and(|x| x == "parquet") {
                files.push((e.path(), meta.len()));
            }
        }
    }
    let file_bytes: u64 = files.iter().map(|f| f.1).sum();
    println!(
        "sample: {} Parquet files, {} on disk",
        files.len(),
        format_bytes(file_bytes)
    );

    let azurite = Azurite::start();
    let moto = Moto::start();
    let start = Instant::now();
    azurite.create_container(CONTAINER);
    azurite.upload_dir(&data, CONTAINER, PREFIX);
    let az_upload = secs(start.elapsed());
    let start = Instant::now();
    moto.create_bucket(BUCKET);
    moto.upload_dir(&data, BUCKET, PREFIX);
    let s3_upload = secs(start.elapsed());
    for (store, n) in [
        ("Azurite", azurite.list(CONTAINER, PREFIX).len()),
        ("moto", moto.list(BUCKET, PREFIX).len()),
    ] {
        assert_eq!(n, files.len(), "objects uploaded to {store}");
    }
    println!("uploaded with the Python clients: Azurite {az_upload:.1} s, moto {s3_upload:.1} s");
    let azurite_pids = pids_matching(&["azurite", &format!("--blobPort {}", azurite.port)]);
    let moto_pids = pids_matching(&["moto.server", &format!("-p {}", moto.port)]);

    // The workers (and the GET loop here) get both emulators' settings.
    // Set before any thread of this process starts.
    for (k, v) in azurite.worker_env().into_iter().chain(moto.worker_env()) {
        std::env::set_var(k, v);
    }

    // 2. The cluster.
    let cluster = Cluster::start(&stratus, &data, threads);
    let workers = cluster.workers();
    let worker_pids: Vec<u32> = workers.iter().map(|w| w.0).collect();
    let metrics_urls: Vec<String> = workers.iter().filter_map(|w| w.1.clone()).collect();
    let exported = scrape(&metrics_urls);
    let have_metrics = exported.contains_key(METRICS[0]);
    println!(
        "workers' metrics endpoints: {} of 2; storage metrics exported: {}",
        metrics_urls.len(),
        if have_metrics {
            METRICS
                .iter()
                .filter(|m| exported.contains_key(*m))
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        } else {
            "none (requests of Stratus' steps not shown)".to_string()
        }
    );
    let meter = Meter {
        metrics_urls: &metrics_urls,
        worker_pids: &worker_pids,
    };

    let overhead: Vec<f64> = (0..reps.max(3))
        .map(|_| {
            let start = Instant::now();
            cluster.cli(&["list"]);
            secs(start.elapsed())
        })
        .collect();

    let local_glob = format!("{}/{GLOB}", data.display());
    let az_glob = format!("az://{CONTAINER}/{PREFIX}/{GLOB}");
    let s3_glob = format!("s3://{BUCKET}/{PREFIX}/{GLOB}");
    let stores: [(&str, &str, &[u32]); 3] = [
        ("local disk", local_glob.as_str(), &[]),
        ("Azurite", az_glob.as_str(), &azurite_pids),
        ("moto", s3_glob.as_str(), &moto_pids),
    ];
    let mut len_runs: BTreeMap<&str, Runs> = BTreeMap::new();
    let mut persist_runs: BTreeMap<&str, Runs> = BTreeMap::new();
    for (store, url, emulator) in stores {
        let runs = len_runs.entry(store).or_default();
        for _ in 0..reps {
            let (s, cost, n) = meter.measure(emulator, None, || cluster.cli(&["len", url]));
            assert_eq!(n, rows.to_string(), "len of {url}");
            runs.seconds.push(s);
            runs.costs.push(cost);
        }
        let runs = persist_runs.entry(store).or_default();
        for _ in 0..reps {
            let (s, cost, out) = meter.measure(emulator, None, || {
                cluster.cli(&["persist", url, "--as", "objbench"])
            });
            assert_eq!(persisted_rows(&out), rows, "{out}");
            cluster.cli(&["unpersist", "objbench"]);
            runs.seconds.push(s);
            runs.costs.push(cost);
        }
        eprintln!(
            "{store}: len {:.3} s, persist {:.3} s",
            len_runs[store].best(),
            persist_runs[store].best()
        );
    }

    // The GET loop, in this process (2 runtime threads, like the 2 workers).
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let storage = Arc::new(Storage::new(StoragePolicy {
        max_requests: GETS_IN_FLIGHT,
        ..StoragePolicy::default()
    }));
    let me = [std::process::id()];
    let mut get_runs: BTreeMap<&str, Runs> = BTreeMap::new();
    let mut listing: BTreeMap<&str, f64> = BTreeMap::new();
    for (store, url, emulator) in &stores[1..] {
        let runs = get_runs.entry(store).or_default();
        for _ in 0..reps {
            let (s, mut cost, (objects, bytes, requests, peak, list_s)) =
                meter.measure(emulator, Some(&me), || get_loop(&runtime, &storage, url));
            let l = listing.entry(store).or_insert(f64::INFINITY);
            *l = l.min(list_s);
            assert_eq!(objects, files.len(), "objects listed in {store}");
            cost.requests = Some(requests as f64);
            cost.fetched = Some(bytes as f64);
            cost.peak_before = None;
            cost.peak_after = Some(peak as f64);
            cost.peak_sampled = Some(peak as f64);
            runs.seconds.push(s);
            runs.costs.push(cost);
        }
        eprintln!("{store}: GET loop {:.3} s", runs.best());
    }
    drop(runtime);

    // Polars and pyarrow on moto (after the cluster's steps: they need the
    // RAM of the whole table).
    let mut py_runs: BTreeMap<&str, Result<Runs, String>> = BTreeMap::new();
    for which in ["polars", "pyarrow"] {
        let start_cpu = cpu_seconds(&moto_pids);
        let mut got = python_baseline(which, &moto.endpoint(), reps, rows);
        let emulator_cpu = cpu_seconds(&moto_pids) - start_cpu;
        if let Ok(runs) = &mut got {
            // The emulator's CPU over all runs, shared out evenly.
            let n = runs.costs.len() as f64;
            for c in &mut runs.costs {
                c.emulator_cpu = emulator_cpu / n;
            }
            eprintln!("{which} on moto: {:.3} s", runs.best());
        }
        py_runs.insert(which, got);
    }
    drop(cluster);

    // 3. The table.
    let row = |step: &str,
               store: &str,
               ours: &Runs,
               base_name: &str,
               base: Option<&Runs>,
               target: &str| {
        let b = ours.best_index();
        let first = &ours.costs[0];
        let later = &ours.costs[b];
        let base_s = base.map(Runs::best);
        let ratio = base_s.map(|x| ours.best() / x);
        let requests = match (first.requests, later.requests) {
            (Some(a), Some(c)) if ours.costs.len() > 1 => format!("{a:.0} / {c:.0}"),
            (Some(a), _) => format!("{a:.0}"),
            _ => "n/a".into(),
        };
        let bytes = |f: f64| format!("{} ({:.2}x)", format_bytes(f as u64), f / file_bytes as f64);
        let fetched = match (first.fetched, later.fetched) {
            (Some(a), Some(c)) if ours.costs.len() > 1 => format!("{} / {}", bytes(a), bytes(c)),
            (Some(a), _) => bytes(a),
            _ => "n/a".into(),
        };
        let peak = format!(
            "{} / {}",
            opt(later.peak_sampled, |p| format!("{p:.0}")),
            match (first.peak_before, later.peak_after) {
                (Some(a), Some(c)) => format!("{a:.0} -> {c:.0}"),
                _ => "n/a".into(),
            }
        );
        let base_cpu = base
            .map(|r| r.costs[r.best_index()].reader_cpu)
            .map_or("".into(), |c| format!(" / {c:.2}"));
        let base_emu = base
            .filter(|_| !base_name.contains("local disk"))
            .map(|r| r.costs[r.best_index()].emulator_cpu)
            .map_or("".into(), |c| format!(" / {c:.2}"));
        println!(
            "| {step} | {store} | {:.3} | {:.3} | {base_name} | {} | {} | {target} | {requests} | {fetched} | {peak} | {:.2}{base_cpu} | {}{base_emu} |",
            ours.best(),
            ours.seconds[0],
            opt(base_s, |x| format!("{x:.3}")),
            opt(ratio, |x| format!("{x:.2}")),
            later.reader_cpu,
            if store == "local disk" { "-".to_string() } else { format!("{:.2}", later.emulator_cpu) },
        );
    };
    println!();
    println!("| step | store | Stratus s (best) | Stratus s (1st run) | baseline | baseline s (best) | ratio | target | requests (1st / best run) | bytes fetched, vs files (1st / best run) | in flight: sampled peak in best run / since-start peak before 1st -> after best | CPU-s: workers / baseline | CPU-s: emulator (Stratus / baseline) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for store in ["Azurite", "moto"] {
        row(
            "len (glob)",
            store,
            &len_runs[store],
            "len, local disk",
            len_runs.get("local disk"),
            "<= 3",
        );
    }
    row(
        "len (glob)",
        "local disk",
        &len_runs["local disk"],
        "",
        None,
        "",
    );
    for store in ["Azurite", "moto"] {
        row(
            "persist (glob)",
            store,
            &persist_runs[store],
            "GET loop (8 MiB, 32 in flight)",
            get_runs.get(store),
            "<= 1.3",
        );
    }
    for which in ["polars", "pyarrow"] {
        let (name, runs) = match &py_runs[which] {
            Ok(r) => (
                if which == "polars" {
                    "Polars scan_parquet().collect()"
                } else {
                    "pyarrow dataset().to_table()"
                },
                Some(r),
            ),
            Err(_) => (which, None),
        };
        row(
            "persist (glob)",
            "moto",
            &persist_runs["moto"],
            name,
            runs,
            "< 1",
        );
    }
    row(
        "persist (glob)",
        "local disk",
        &persist_runs["local disk"],
        "",
        None,
        "",
    );
    for store in ["Azurite", "moto"] {
        row(
            "persist (glob)",
            store,
            &persist_runs[store],
            "persist, local disk",
            persist_runs.get("local disk"),
            "",
        );
    }
    println!();
    for store in ["Azurite", "moto"] {
        let g = &get_runs[store];
        let c = &g.costs[g.best_index()];
        let warm_len = &len_runs[store].costs[len_runs[store].best_index()];
        println!(
            "{store}: listing the glob takes {} requests (len with warm footer caches) and {:.3} s in the GET loop",
            opt(warm_len.requests, |x| format!("{x:.0}")),
            listing[store]
        );
        println!(
            "GET loop on {store}: {:.3} s best ({:.3} s 1st), {} requests, {} fetched, peak {} in flight, {:.2} GB/s",
            g.best(),
            g.seconds[0],
            opt(c.requests, |x| format!("{x:.0}")),
            opt(c.fetched, |x| format_bytes(x as u64)),
            opt(c.peak_after, |x| format!("{x:.0}")),
            file_bytes as f64 / g.best() / 1e9
        );
    }
    for (which, got) in &py_runs {
        if let Err(e) = got {
            println!("{which} baseline skipped: {e}");
        }
    }
    println!(
        "CLI overhead (process start, QUIC handshake: `stratus list`, best of {}): {:.3} s, included in every Stratus time",
        overhead.len(),
        best(&overhead)
    );
    println!(
        "Caveat: Azurite (node) and moto (Python) run on the same 2 cores as the 2 workers and as this process's GET loop; their CPU seconds above are time the readers could not use. Python baselines time inside the interpreter (imports excluded), default thread pools. In-flight samples: the workers' gauge scraped every 10 ms (a scrape costs a little CPU)."
    );
}
