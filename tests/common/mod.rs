//! Helpers shared by the integration tests: temp dirs, the fixture, running
//! the real `stratus` binary, plain HTTP GETs against the dashboard port.
#![allow(dead_code)]

use std::io::{Read, Write};
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

/// Run `stratus ARGS` against a scheduler file.
pub fn stratus(scheduler_file: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_stratus"))
        .arg("--scheduler-file")
        .arg(scheduler_file)
        .args(args)
        .env_remove("STRATUS_SCHEDULER")
        .env_remove("STRATUS_TLS_CA")
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

/// An HTTP response.
pub struct HttpResponse {
    pub status: u16,
    pub content_type: String,
    pub body: Vec<u8>,
}

/// GET an http://127.0.0.1:PORT/path URL, whatever the status.
pub fn http_get_raw(url: &str) -> HttpResponse {
    let rest = url.strip_prefix("http://").expect("http URL");
    let (host, path) = rest
        .split_once('/')
        .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
    let mut stream = std::net::TcpStream::connect(host).expect("connect dashboard");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("HTTP response");
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("HTTP status");
    let content_type = head
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-type:")
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    let body = &response[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_vec()
    };
    HttpResponse {
        status,
        content_type,
        body,
    }
}

/// GET an http://127.0.0.1:PORT/path URL that must answer 200; return the body.
pub fn http_get(url: &str) -> String {
    let response = http_get_raw(url);
    let body = String::from_utf8_lossy(&response.body).into_owned();
    assert_eq!(response.status, 200, "GET {url}: {body}");
    body
}

fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = body.windows(2).position(|w| w == b"\r\n") {
        let size = String::from_utf8_lossy(&body[..end]);
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        let start = end + 2;
        out.extend_from_slice(&body[start..start + n]);
        body = &body[start + n + 2..];
    }
    out
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
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start `stratus local` with `workers` workers of one thread, the dashboard
/// on a free loopback port, and `extra` flags; wait for its scheduler file.
pub fn start_local(workers: u32, extra: &[&str]) -> Local {
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

    /// The dashboard URL, ending in `/`.
    pub fn dashboard(&self) -> String {
        let sf: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&self.file).unwrap()).unwrap();
        sf["dashboard"].as_str().unwrap().to_string()
    }

    /// GET a JSON document under the dashboard URL (`api/cluster`, ...).
    pub fn json(&self, path: &str) -> serde_json::Value {
        let url = format!("{}{path}", self.dashboard());
        serde_json::from_str(&http_get(&url)).unwrap()
    }
}
