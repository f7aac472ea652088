//! What the systemd units and the container image rely on, checked on the
//! real processes without systemd or podman (scripts/deploy-test runs
//! them under both): the `Type=notify` messages (`READY=1` once serving,
//! `STOPPING=1` on SIGTERM) sent to `NOTIFY_SOCKET`, and `stratus probe`,
//! the image's health check.

mod common;

use common::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_stratus"))
        .parent()
        .unwrap()
        .join(name)
}

/// The next datagram on `socket`, within `timeout`.
fn next_message(socket: &UnixDatagram, timeout: Duration) -> Option<String> {
    socket.set_read_timeout(Some(timeout)).unwrap();
    let mut buf = [0u8; 512];
    let n = socket.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

fn sigterm(child: &Child) {
    // SAFETY: a signal to our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
}

fn wait_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("process did not exit within {timeout:?} of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn scheduler_and_worker_tell_systemd_when_ready_and_when_stopping() {
    let dir = TempDir::new("sd-notify");
    let file = dir.path().join("scheduler.json");
    let scheduler_socket = dir.path().join("scheduler-notify.sock");
    let scheduler_notify = UnixDatagram::bind(&scheduler_socket).unwrap();

    let mut scheduler = Command::new(bin("stratus-scheduler"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--dashboard-address", "127.0.0.1:0"])
        .arg("--scheduler-file")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &scheduler_socket)
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = next_message(&scheduler_notify, Duration::from_secs(60));
    assert_eq!(ready.as_deref(), Some("READY=1"), "scheduler readiness");
    // Ready means serving: the scheduler file is written and the probes answer.
    let sf: serde_json::Value = serde_json::from_str(&read_text(&file)).unwrap();
    let dashboard = sf["dashboard"].as_str().unwrap().to_string();
    assert!(http_get(&format!("{dashboard}ready")).contains("ready"));

    // An abstract socket name (`@...`), the other form systemd uses.
    let abstract_name = format!("stratus-test-worker-notify-{}", std::process::id());
    let abstract_socket = {
        use std::os::linux::net::SocketAddrExt;
        let address =
            std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes()).unwrap();
        UnixDatagram::bind_addr(&address).unwrap()
    };
    let mut worker = Command::new(bin("stratus-worker"))
        .arg("--scheduler-file")
        .arg(&file)
        .args([
            "--nthreads",
            "1",
            "--memory-limit",
            "1GiB",
            "--name",
            "notify-w",
        ])
        .env("NOTIFY_SOCKET", format!("@{abstract_name}"))
        .env_remove("STRATUS_SCHEDULER")
        .env_remove("STRATUS_TLS_CA")
        .env_remove("STRATUS_TLS_CERT")
        .env_remove("STRATUS_TLS_KEY")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = next_message(&abstract_socket, Duration::from_secs(60));
    assert_eq!(ready.as_deref(), Some("READY=1"), "worker readiness");
    // Ready means registered: the scheduler lists it at once.
    let info = ok(&file, &["info"]);
    assert!(info.contains("workers=1 "), "{info}");

    sigterm(&worker);
    assert_eq!(
        next_message(&abstract_socket, Duration::from_secs(30)).as_deref(),
        Some("STOPPING=1"),
        "worker on SIGTERM"
    );
    assert!(wait_exit(&mut worker, Duration::from_secs(30)).success());

    sigterm(&scheduler);
    assert_eq!(
        next_message(&scheduler_notify, Duration::from_secs(30)).as_deref(),
        Some("STOPPING=1"),
        "scheduler on SIGTERM"
    );
    assert!(wait_exit(&mut scheduler, Duration::from_secs(30)).success());
    assert!(!file.exists(), "scheduler file left after a clean stop");
}

/// A one-shot HTTP server on loopback answering `status_line`.
fn serve_once(status_line: &'static str) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        // The whole request head, then the answer.
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let _ = write!(stream, "{status_line}\r\nContent-Length: 3\r\n\r\nok\n");
    });
    port
}

fn probe(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_stratus"))
        .arg("probe")
        .args(args)
        .env_remove("STRATUS_PROBE_URL")
        .output()
        .unwrap()
}

#[test]
fn probe_exits_0_on_2xx_and_1_otherwise() {
    let port = serve_once("HTTP/1.1 200 OK");
    let o = probe(&[&format!("http://127.0.0.1:{port}/ready")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "HTTP/1.1 200 OK");

    let port = serve_once("HTTP/1.1 503 Service Unavailable");
    let o = probe(&[&format!("http://localhost:{port}/ready")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("503"), "{}", stderr(&o));

    // Nothing listens there (a port just released).
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = probe(&[
        &format!("http://127.0.0.1:{closed}/health"),
        "--timeout",
        "2",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("cannot connect"), "{}", stderr(&o));

    // The URL from the environment (the image's HEALTHCHECK has none).
    let port = serve_once("HTTP/1.0 204 No Content");
    let o = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .arg("probe")
        .env("STRATUS_PROBE_URL", format!("http://127.0.0.1:{port}/"))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    for bad in ["https://127.0.0.1:1/", "http://example.invalid:80/"] {
        let o = probe(&[bad]);
        assert_eq!(o.status.code(), Some(1), "{bad}");
    }
}
