//! The scheduler's HTTP side under attack, against a real `stratus-scheduler`
//! process: the dashboard binds loopback unless told otherwise; a token,
//! when set, guards the page, every API and /metrics; a slow client
//! (slowloris) is cut off within the header timeout while others are served;
//! the connection limit holds; artifacts are PNG only and never served as
//! HTML; every response carries nosniff and a strict CSP; the run store's
//! limits and retention hold.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, TempDir};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

/// A `stratus-scheduler` process, killed on drop.
struct Scheduler {
    child: Child,
    file: PathBuf,
    dir: TempDir,
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Scheduler {
    /// Start one on loopback with `args` and environment `env`, its runs in
    /// a data directory of its own (`data`, made beforehand by `prepare`).
    fn start(args: &[&str], env: &[(&str, &str)], prepare: impl FnOnce(&std::path::Path)) -> Self {
        let dir = TempDir::new("sec-http");
        let file = dir.path().join("s.json");
        let data = dir.path().join("data");
        prepare(&data);
        let binary = std::path::Path::new(env!("CARGO_BIN_EXE_stratus"))
            .parent()
            .unwrap()
            .join("stratus-scheduler");
        let log = std::fs::File::create(dir.path().join("scheduler.log")).unwrap();
        let mut command = Command::new(binary);
        command
            .args(["--host", "127.0.0.1", "--port", "0"])
            .arg("--scheduler-file")
            .arg(&file)
            .arg("--data-dir")
            .arg(&data)
            .args(args)
            .env_remove("STRATUS_DASHBOARD_TOKEN")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command
            .spawn()
            .expect("start stratus-scheduler (build with cargo build --workspace --bins)");
        let mut s = Scheduler { child, file, dir };
        eventually(Duration::from_secs(30), "the scheduler file", || {
            if let Ok(Some(status)) = s.child.try_wait() {
                panic!("stratus-scheduler exited: {status}\n{}", s.log());
            }
            s.file.exists().then_some(())
        });
        s
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("scheduler.log")).unwrap_or_default()
    }

    fn scheduler_file(&self) -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(&self.file).unwrap()).unwrap()
    }

    /// The dashboard's `HOST:PORT`.
    fn address(&self) -> String {
        let url = self.scheduler_file()["dashboard"]
            .as_str()
            .unwrap()
            .to_string();
        url["http://".len()..].trim_end_matches('/').to_string()
    }

    fn target(&self) -> stratus::Target {
        stratus::Locator {
            scheduler_file: Some(self.file.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap()
    }
}

/// An HTTP answer: status, the header block (lower case) and the body.
struct Answer {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<String> {
        self.head.lines().find_map(|l| {
            l.strip_prefix(&format!("{name}:"))
                .map(|v| v.trim().to_string())
        })
    }
}

/// GET `path` from `address` with extra request headers.
fn get(address: &str, path: &str, headers: &[(&str, &str)]) -> Answer {
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("GET {path}: no header in {response:?}"));
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    Answer {
        status,
        head,
        body: response[split + 4..].to_vec(),
    }
}

/// Whether the server closed `stream` (EOF, a reset, or an answer such as
/// 408 followed by EOF) within `within`.
fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 1024];
    while start.elapsed() < within {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return true,
        }
    }
    false
}

/// A non-loopback address of this host, if it has one (no packet is sent:
/// connecting a UDP socket only picks the route).
fn non_loopback_ip() -> Option<std::net::IpAddr> {
    let socket = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[test]
fn the_dashboard_listens_on_loopback_unless_told_otherwise() {
    if std::net::TcpListener::bind("127.0.0.1:8787").is_err() {
        eprintln!("skipped: 127.0.0.1:8787 is taken on this machine");
        return;
    }
    let s = Scheduler::start(&[], &[], |_| {});
    assert_eq!(s.scheduler_file()["dashboard"], "http://127.0.0.1:8787/");
    assert_eq!(get("127.0.0.1:8787", "/metrics", &[]).status, 200);
    // No token configured: the scheduler file carries none.
    assert!(s.scheduler_file().get("dashboard_token").is_none());
    if let Some(ip) = non_loopback_ip() {
        let other = std::net::SocketAddr::new(ip, 8787);
        assert!(
            TcpStream::connect_timeout(&other, Duration::from_secs(2)).is_err(),
            "the dashboard answers on {other}, not only on loopback"
        );
    }
}

#[test]
fn a_token_guards_the_page_every_api_and_metrics() {
    let s = Scheduler::start(
        &["--dashboard-address", "127.0.0.1:0"],
        &[("STRATUS_DASHBOARD_TOKEN", TOKEN)],
        |_| {},
    );
    let address = s.address();
    // The scheduler file carries it, and is readable by its owner only.
    assert_eq!(s.scheduler_file()["dashboard_token"], TOKEN);
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&s.file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "scheduler file mode {mode:o}");

    let bearer = format!("Bearer {TOKEN}");
    let wrong = format!("Bearer {}", TOKEN.replace('0', "1"));
    for path in [
        "/",
        "/static/app.js",
        "/static/app.css",
        "/metrics",
        "/api/cluster",
        "/api/adaptive",
        "/api/sd",
        "/api/dashboard",
        "/api/runs",
        "/api/runs/1",
        "/api/runs/1/artifacts/a.png",
        "/api/events",
    ] {
        let none = get(&address, path, &[]);
        assert_eq!(none.status, 401, "{path} without a token");
        assert!(
            none.header("www-authenticate")
                .is_some_and(|v| v.contains("bearer")),
            "{path}: {}",
            none.head
        );
        assert!(String::from_utf8_lossy(&none.body).contains("Authorization: Bearer"));
        assert_eq!(
            get(&address, path, &[("Authorization", &wrong)]).status,
            401,
            "{path} with a wrong token"
        );
        if path == "/api/events" {
            continue; // a stream: 200 would never end
        }
        let with = get(&address, path, &[("Authorization", &bearer)]);
        let expect = if path.starts_with("/api/runs/1") {
            404
        } else {
            200
        };
        assert_eq!(with.status, expect, "{path} with the token");
    }
    let metrics = get(&address, "/metrics", &[("Authorization", &bearer)]);
    assert!(String::from_utf8_lossy(&metrics.body).contains("stratus_workers"));

    // A browser: /?token= once sets an HttpOnly SameSite=Strict cookie and
    // sends it back to a clean address; the page's own requests then work.
    assert_eq!(get(&address, "/?token=nope", &[]).status, 401);
    let login = get(&address, &format!("/?token={TOKEN}"), &[]);
    assert_eq!(login.status, 303);
    assert_eq!(login.header("location").as_deref(), Some("/"));
    let cookie = login.header("set-cookie").expect("a cookie");
    assert!(
        cookie.contains("httponly") && cookie.contains("samesite=strict"),
        "{cookie}"
    );
    let pair = cookie.split(';').next().unwrap().to_string();
    let (name, _) = pair.split_once('=').unwrap();
    let cookie_header = format!("{name}={TOKEN}");
    for path in ["/", "/static/app.js", "/api/dashboard", "/metrics"] {
        assert_eq!(
            get(&address, path, &[("Cookie", &cookie_header)]).status,
            200,
            "{path} with the cookie"
        );
    }
    // The probes need no token (they say nothing about the cluster).
    for (path, body) in [("/health", "ok\n"), ("/ready", "ready\n")] {
        let probe = get(&address, path, &[]);
        assert_eq!(probe.status, 200, "{path} without a token");
        assert_eq!(String::from_utf8_lossy(&probe.body), body, "{path}");
        assert_eq!(
            probe.header("x-content-type-options").as_deref(),
            Some("nosniff")
        );
    }
    // A token in the query string opens nothing but the page.
    assert_eq!(
        get(&address, &format!("/api/cluster?token={TOKEN}"), &[]).status,
        401
    );
}

#[test]
fn a_token_that_is_too_short_stops_the_scheduler_with_a_clear_error() {
    let dir = TempDir::new("short-token");
    let binary = std::path::Path::new(env!("CARGO_BIN_EXE_stratus"))
        .parent()
        .unwrap()
        .join("stratus-scheduler");
    let o = Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--dashboard-address", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("STRATUS_DASHBOARD_TOKEN", "secret")
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("dashboard_token") && err.contains("16"),
        "{err}"
    );
}

#[test]
fn slowloris_is_cut_off_within_the_header_timeout_and_others_are_served() {
    let s = Scheduler::start(
        &["--dashboard-address", "127.0.0.1:0"],
        &[
            ("STRATUS_SCHEDULER__DASHBOARD_HEADER_TIMEOUT", "2"),
            ("STRATUS_SCHEDULER__DASHBOARD_MAX_CONNECTIONS", "8"),
        ],
        |_| {},
    );
    let address = s.address();
    // One header byte per second, on its own thread.
    let slow_address = address.clone();
    let slow = std::thread::spawn(move || {
        let mut stream = TcpStream::connect(&slow_address).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let start = Instant::now();
        let request =
            b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
        let mut buf = [0u8; 256];
        for byte in request.iter().cycle().take(60) {
            if stream.write_all(&[*byte]).is_err() {
                return start.elapsed();
            }
            let tick = Instant::now();
            while tick.elapsed() < Duration::from_secs(1) {
                match stream.read(&mut buf) {
                    Ok(0) => return start.elapsed(),
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(_) => return start.elapsed(),
                }
            }
        }
        panic!("the slow client was never cut off");
    });
    // Meanwhile, normal requests on other connections are answered (the
    // slow client is still trickling: it would take 60 s uncut).
    std::thread::sleep(Duration::from_millis(500));
    for _ in 0..3 {
        assert_eq!(get(&address, "/metrics", &[]).status, 200);
        std::thread::sleep(Duration::from_millis(300));
    }
    // Cut off by the header timeout, long before its 60 bytes at one a
    // second would end (a generous bound: the machine is shared).
    let cut_after = slow.join().unwrap();
    assert!(
        cut_after < Duration::from_secs(30),
        "the slow client was cut off only after {cut_after:?} (header timeout 2 s)"
    );

    // An idle connection is closed after the same time.
    let mut idle = TcpStream::connect(&address).unwrap();
    assert!(
        closed_within(&mut idle, Duration::from_secs(30)),
        "an idle connection stayed open"
    );

    // The connection limit: past 8 open connections a new one is closed at
    // once; once the idle ones time out, requests are served again.
    let held: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(&address).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut extra = TcpStream::connect(&address).unwrap();
    let _ = extra.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut answer = Vec::new();
    let _ = extra.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = extra.read_to_end(&mut answer);
    assert!(
        !String::from_utf8_lossy(&answer).contains("200 OK"),
        "a connection past the limit was served"
    );
    std::thread::sleep(Duration::from_secs(3));
    drop(held);
    eventually(Duration::from_secs(5), "the server to serve again", || {
        (get(&address, "/metrics", &[]).status == 200).then_some(())
    });
    assert!(s.log().contains("dashboard_max_connections"), "{}", s.log());
}

/// An 8-byte PNG signature and a little more: enough for the checks.
fn png(extra: usize) -> Vec<u8> {
    let mut bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    bytes.resize(8 + extra, 7);
    bytes
}

#[test]
fn artifacts_are_png_only_and_responses_carry_nosniff_and_a_strict_csp() {
    // A run an older scheduler stored with an HTML "artifact".
    let s = Scheduler::start(&["--dashboard-address", "127.0.0.1:0"], &[], |data| {
        let run = data.join("runs/1");
        std::fs::create_dir_all(run.join("artifacts")).unwrap();
        std::fs::write(
            run.join("artifacts/page.html"),
            b"<html><script>alert(document.cookie)</script></html>",
        )
        .unwrap();
        std::fs::write(
            run.join("run.json"),
            r#"{"id":"1","name":"old","started":"2025-01-01T00:00:00.000Z",
                "updated":"2025-01-01T00:00:00.000Z","metrics":[],
                "artifacts":[{"name":"page.html","bytes":51,"content_type":"text/html"}]}"#,
        )
        .unwrap();
    });
    let address = s.address();
    let old = get(&address, "/api/runs/1/artifacts/page.html", &[]);
    assert_eq!(old.status, 200);
    assert_eq!(
        old.header("content-type").as_deref(),
        Some("application/octet-stream")
    );
    assert!(old
        .header("content-disposition")
        .is_some_and(|v| v.starts_with("attachment")));
    assert_eq!(
        old.header("x-content-type-options").as_deref(),
        Some("nosniff")
    );
    assert!(old
        .header("content-security-policy")
        .is_some_and(|v| v.contains("sandbox")));

    // New uploads: HTML and SVG are refused, whatever they claim.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let client = runtime
        .block_on(stratus::Client::connect_run(&s.target(), "attack"))
        .unwrap();
    for (name, content_type, data) in [
        ("x.html", "text/html", b"<script>alert(1)</script>".to_vec()),
        ("x.png", "image/png", b"<script>alert(1)</script>".to_vec()),
        (
            "x.svg",
            "image/svg+xml",
            b"<svg xmlns='http://www.w3.org/2000/svg' onload='alert(1)'/>".to_vec(),
        ),
    ] {
        let e = runtime
            .block_on(client.log_artifact(name, content_type, data))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(name) && e.contains("PNG images only"),
            "{name}: {e}"
        );
    }
    let id = runtime
        .block_on(client.log_artifact("plot.png", "image/png", png(100)))
        .unwrap();
    runtime.block_on(client.close());
    let plot = get(&address, &format!("/api/runs/{id}/artifacts/plot.png"), &[]);
    assert_eq!(plot.status, 200);
    assert_eq!(plot.header("content-type").as_deref(), Some("image/png"));
    assert_eq!(plot.body, png(100));
    let names: Vec<String> = serde_json::from_slice::<serde_json::Value>(
        &get(&address, &format!("/api/runs/{id}"), &[]).body,
    )
    .unwrap()["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["plot.png"]);

    // Every response: nosniff and a CSP that allows only the page's own files.
    for path in ["/", "/static/app.js", "/api/runs", "/metrics", "/nothing"] {
        let a = get(&address, path, &[]);
        assert_eq!(
            a.header("x-content-type-options").as_deref(),
            Some("nosniff"),
            "{path}"
        );
        let csp = a.header("content-security-policy").unwrap_or_default();
        assert!(
            csp.contains("default-src 'none'")
                && csp.contains("script-src 'self'")
                && !csp.contains("unsafe-inline"),
            "{path}: {csp}"
        );
        assert_eq!(
            a.header("x-frame-options").as_deref(),
            Some("deny"),
            "{path}"
        );
    }
    // The page works under that CSP: no inline script, no style attribute.
    let page = String::from_utf8(get(&address, "/", &[]).body).unwrap();
    assert!(!page.contains("style="), "inline style in the page");
    for script in page.split("<script").skip(1) {
        let tag = script.split('>').next().unwrap();
        assert!(tag.contains("src="), "an inline script: <script{tag}>");
    }
}

#[test]
fn run_store_limits_refuse_big_artifacts_and_prune_old_runs() {
    let s = Scheduler::start(
        &["--dashboard-address", "127.0.0.1:0"],
        &[
            ("STRATUS_SCHEDULER__MAX_ARTIFACT_BYTES", "1000"),
            ("STRATUS_SCHEDULER__RUN_RETENTION", "2"),
        ],
        |_| {},
    );
    let address = s.address();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let target = s.target();
    let mut ids = Vec::new();
    for run in ["first", "second", "third"] {
        let client = runtime
            .block_on(stratus::Client::connect_run(&target, run))
            .unwrap();
        if run == "first" {
            let e = runtime
                .block_on(client.log_artifact("big.png", "image/png", png(1000)))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("big.png") && e.contains("1000") && e.contains("max_artifact_bytes"),
                "{e}"
            );
        }
        ids.push(
            runtime
                .block_on(client.log_metrics(&[("step.seconds", 1.0)]))
                .unwrap(),
        );
        runtime.block_on(client.close());
        std::thread::sleep(Duration::from_millis(20));
    }
    let runs: serde_json::Value =
        serde_json::from_slice(&get(&address, "/api/runs", &[]).body).unwrap();
    let names: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["third", "second"], "{runs}");
    assert_eq!(get(&address, "/api/runs/first", &[]).status, 404);
    let runs_dir = s.dir.path().join("data/runs");
    assert!(
        !runs_dir.join(&ids[0]).exists(),
        "the pruned run's files are gone"
    );
    assert!(runs_dir.join(&ids[2]).join("log.jsonl").exists());
}
