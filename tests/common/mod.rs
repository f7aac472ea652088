//! Helpers shared by the integration tests: temp dirs, the fixture, files
//! of the repository, running the real `stratus` binary, waiting, killing,
//! and `stratus local` as a process. Submodules: [`cluster`] (the library's
//! `LocalCluster`, per test or shared), [`answer`] (comparing answers), [`duckdb`] (the oracle), [`http`]
//! (plain GETs), [`exposition`] (Prometheus text format), [`prometheus`] (a
//! real Prometheus server and promtool), [`promql`], [`grafana`], [`objstore`]
//! (Azurite and moto, and an independent client for them).
#![allow(dead_code)]

pub mod answer;
pub mod cluster;
pub mod duckdb;
pub mod exposition;
pub mod grafana;
pub mod http;
pub mod objstore;
pub mod prometheus;
pub mod promql;
pub mod raw;

// Not every test file uses every one of them.
#[allow(unused_imports)]
pub use answer::{same_answer, without_sizes};
#[allow(unused_imports)]
pub use http::{get_json, get_ok, http_get, http_get_raw, try_get, HttpResponse};

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// A directory removed at drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "stratus-test-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The pyarrow-written ISD-like fixture (60,000 rows, 144 files, INT96 datetimes).
pub fn fixture() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/isd-pyarrow")
        .display()
        .to_string()
}

pub const FIXTURE_ROWS: u64 = 60_000;

/// A file under the repository's deploy/ directory.
pub fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

/// A text file's contents (panics naming the file).
pub fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Write a text file (panics naming the file).
pub fn write_text(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// Run `stratus ARGS` against a scheduler file.
pub fn stratus(scheduler_file: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stratus"))
        .arg("--scheduler-file")
        .arg(scheduler_file)
        .args(args)
        .env_remove("STRATUS_SCHEDULER")
        .env_remove("STRATUS_TLS_CA")
        .env_remove("STRATUS_TLS_CERT")
        .env_remove("STRATUS_TLS_KEY")
        .output()
        .expect("run stratus")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Run and require success; return stdout.
pub fn ok(scheduler_file: &Path, args: &[&str]) -> String {
    let o = stratus(scheduler_file, args);
    assert!(
        o.status.success(),
        "stratus {args:?} failed: {}\n{}",
        o.status,
        stderr(&o)
    );
    stdout(&o)
}

/// Run and require failure; return stderr.
pub fn fails(scheduler_file: &Path, args: &[&str]) -> String {
    let o = stratus(scheduler_file, args);
    assert!(
        !o.status.success(),
        "stratus {args:?} should fail but printed {}",
        stdout(&o)
    );
    assert!(
        stdout(&o).is_empty(),
        "a failed command printed to stdout: {}",
        stdout(&o)
    );
    stderr(&o)
}

/// Poll `check` until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Poll `check` every 250 ms until it succeeds or `timeout` passes; on
/// timeout, the last error.
pub fn poll<T>(
    timeout: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

/// Await `check` every 200 ms until it returns Some or `timeout` passes.
pub async fn eventually_async<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// SIGKILL a process.
pub fn kill9(pid: u32) {
    // SAFETY: plain kill(2).
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGKILL);
    }
}

/// `stratus local` as a child process, killed (with its cluster) on drop.
pub struct Local {
    pub child: std::process::Child,
    /// The scheduler file it wrote once every worker registered.
    pub file: PathBuf,
    pub dir: TempDir,
}

impl Drop for Local {
    /// SIGTERM (it stops its children and removes its run directory), then
    /// SIGKILL after 10 s.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `stratus local` with `workers` workers of one thread, the dashboard
/// on a free loopback port, and `extra` flags; wait for its scheduler file.
pub fn start_local(workers: u32, extra: &[&str]) -> Local {
    start_local_env(workers, extra, &[])
}

/// [`start_local`] with environment variables set for `stratus local` (and
/// so for the scheduler and workers it starts).
pub fn start_local_env(workers: u32, extra: &[&str], env: &[(&str, &str)]) -> Local {
    let dir = TempDir::new("local");
    let file = dir.path().join("scheduler.json");
    let mut command = Command::new(env!("CARGO_BIN_EXE_stratus"));
    command
        .args(["local", "--workers", &workers.to_string()])
        .args(["--threads-per-worker", "1"])
        .args(["--dashboard-address", "127.0.0.1:0"]);
    if !extra.contains(&"--data-dir") {
        command.arg("--data-dir").arg(dir.path().join("data"));
    }
    let log = std::fs::File::create(dir.path().join("local.log")).expect("create local.log");
    let child = command
        .args(extra)
        .arg("--scheduler-file")
        .arg(&file)
        .env_remove("STRATUS_SCHEDULER")
        .env_remove("STRATUS_RUN")
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("start stratus local");
    let mut local = Local { child, file, dir };
    eventually(Duration::from_secs(60), "the scheduler file", || {
        if let Ok(Some(status)) = local.child.try_wait() {
            panic!("stratus local exited early: {status}\n{}", local.log_tail());
        }
        local.file.exists().then_some(())
    });
    local
}

impl Local {
    /// The last lines of the cluster's log (for failure messages).
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("local.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "stratus local's log (last lines):\n{}",
            lines[lines.len().saturating_sub(20)..].join("\n")
        )
    }

    /// The scheduler file it wrote (address, dashboard, certificate).
    pub fn scheduler_file(&self) -> serde_json::Value {
        serde_json::from_str(&read_text(&self.file)).expect("the scheduler file is JSON")
    }

    /// The dashboard URL, `http://127.0.0.1:PORT/` (ending in `/`).
    pub fn dashboard(&self) -> String {
        let sf = self.scheduler_file();
        let url = sf["dashboard"]
            .as_str()
            .unwrap_or_else(|| panic!("no dashboard URL in the scheduler file: {sf}"));
        assert!(url.starts_with("http://127.0.0.1:"), "dashboard URL {url}");
        url.to_string()
    }

    /// The dashboard's `HOST:PORT`.
    pub fn dashboard_address(&self) -> String {
        let url = self.dashboard();
        url["http://".len()..].trim_end_matches('/').to_string()
    }

    /// Where a library client connects to it.
    pub fn target(&self) -> stratus::Target {
        stratus::Locator {
            scheduler_file: Some(self.file.clone()),
            ..Default::default()
        }
        .resolve()
        .expect("the scheduler file names a cluster")
    }

    /// The process id of worker `name` (`local-0`, ...), from `/api/cluster`.
    pub fn worker_pid(&self, name: &str) -> u32 {
        let cluster = self.json("api/cluster");
        cluster["workers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|w| w["name"] == name)
            .and_then(|w| w["pid"].as_u64())
            .unwrap_or_else(|| panic!("no pid for {name} in /api/cluster: {cluster}"))
            as u32
    }

    /// GET a JSON document under the dashboard URL (`api/cluster`, ...).
    pub fn json(&self, path: &str) -> serde_json::Value {
        get_json(&format!("{}{path}", self.dashboard()))
    }

    /// Run `stratus ARGS` against it; stdout on success, else the failure.
    pub fn client(&self, args: &[&str]) -> Result<String, String> {
        let o = stratus(&self.file, args);
        match o.status.success() {
            true => Ok(stdout(&o)),
            false => Err(format!(
                "`stratus {}` failed ({}): {}",
                args.join(" "),
                o.status,
                stderr(&o).trim()
            )),
        }
    }
}

/// The packets an nftables table's rules counted, from `nft list table`'s
/// output (the sum of every `counter packets N`).
pub fn nft_counted_packets(listing: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(listing);
    let words: Vec<&str> = text.split_whitespace().collect();
    words
        .windows(2)
        .filter(|w| w[0] == "packets")
        .filter_map(|w| w[1].parse::<u64>().ok())
        .sum()
}
