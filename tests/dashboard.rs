//! The live dashboard in a real browser: headless Chromium, driven over the
//! DevTools protocol on a pipe (`--remote-debugging-pipe`), watches a real
//! `stratus local` cluster while jobs run, and the test reads what the page
//! shows from its DOM. A screenshot is kept at `target/test-artifacts/dashboard.png`.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

// ---- headless Chromium over the DevTools protocol ---------------------------

/// A headless Chromium with a fresh profile, driven over
/// `--remote-debugging-pipe` (JSON messages ending in NUL on fds 3 and 4), and
/// one page target attached in flat session mode. Killed, with every process
/// of its group, on drop.
struct Browser {
    child: Child,
    commands: std::io::PipeWriter,
    messages: mpsc::Receiver<Value>,
    next_id: u64,
    session: String,
    /// JavaScript exceptions and console errors the page raised.
    page_errors: Vec<String>,
    dir: TempDir,
}

/// The Chromium executable: `$STRATUS_CHROMIUM`, or `chromium` /
/// `chromium-browser` on PATH.
fn chromium_executable() -> PathBuf {
    if let Some(path) = std::env::var_os("STRATUS_CHROMIUM") {
        return PathBuf::from(path);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    panic!(
        "this test needs headless Chromium and found no `chromium` on PATH: \
         apt-get install chromium (or set STRATUS_CHROMIUM to its path)"
    );
}

impl Browser {
    fn launch(width: u32, height: u32) -> Browser {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;

        let dir = TempDir::new("chromium");
        let profile = dir.path().join("profile");
        std::fs::create_dir_all(&profile).unwrap();
        let log = std::fs::File::create(dir.path().join("chromium.log")).unwrap();

        // The browser reads commands on fd 3 and writes answers on fd 4.
        let (browser_in, commands) = std::io::pipe().expect("pipe");
        let (answers, browser_out) = std::io::pipe().expect("pipe");
        let (fd_in, fd_out) = (browser_in.as_raw_fd(), browser_out.as_raw_fd());
        let mut command = Command::new(chromium_executable());
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--remote-debugging-pipe",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(format!("--window-size={width},{height}"))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .process_group(0);
        // SAFETY: only async-signal-safe calls (fcntl, dup2, close) between
        // fork and exec. The pipe ends are first moved above fd 10 so that
        // dup2 onto 3 and 4 never clobbers one with the other, and dup2 leaves
        // the new descriptors without close-on-exec.
        unsafe {
            command.pre_exec(move || {
                let high_in = libc::fcntl(fd_in, libc::F_DUPFD, 10);
                let high_out = libc::fcntl(fd_out, libc::F_DUPFD, 10);
                if high_in < 0
                    || high_out < 0
                    || libc::dup2(high_in, 3) < 0
                    || libc::dup2(high_out, 4) < 0
                {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(high_in);
                libc::close(high_out);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromium_executable().display()));
        drop(browser_in);
        drop(browser_out);

        let (sender, messages) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(answers);
            let mut message = Vec::new();
            loop {
                message.clear();
                match reader.read_until(0, &mut message) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if message.last() == Some(&0) {
                    message.pop();
                }
                match serde_json::from_slice::<Value>(&message) {
                    Ok(value) => {
                        if sender.send(value).is_err() {
                            return;
                        }
                    }
                    Err(e) => eprintln!("chromium sent a message that is not JSON: {e}"),
                }
            }
        });

        let mut browser = Browser {
            child,
            commands,
            messages,
            next_id: 0,
            session: String::new(),
            page_errors: Vec::new(),
            dir,
        };
        let target = browser.call_browser("Target.createTarget", json!({"url": "about:blank"}));
        let target_id = target["targetId"].as_str().expect("targetId").to_string();
        let attached = browser.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target_id, "flatten": true}),
        );
        browser.session = attached["sessionId"]
            .as_str()
            .expect("sessionId")
            .to_string();
        browser.call("Runtime.enable", json!({}));
        browser.call("Page.enable", json!({}));
        browser.set_viewport(width, height);
        browser
    }

    /// The tail of Chromium's own log, for failure messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("chromium.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| !l.contains("dbus")).collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({"id": id, "method": method, "params": params});
        if let Some(session) = session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        if let Err(e) = self.commands.write_all(&bytes) {
            panic!(
                "send {method} to chromium: {e}; its log:\n{}",
                self.log_tail()
            );
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.messages.recv_timeout(left) {
                Ok(message) => message,
                Err(e) => panic!(
                    "no answer from chromium to {method} ({e}); its log:\n{}",
                    self.log_tail()
                ),
            };
            if message["id"].as_u64() == Some(id) {
                if let Some(error) = message.get("error") {
                    panic!("chromium refused {method}: {error}");
                }
                return message["result"].clone();
            }
            self.note_event(&message);
        }
    }

    fn note_event(&mut self, message: &Value) {
        let params = &message["params"];
        match message["method"].as_str() {
            Some("Runtime.exceptionThrown") => {
                let details = &params["exceptionDetails"];
                let text = details["exception"]["description"]
                    .as_str()
                    .or(details["text"].as_str())
                    .unwrap_or("exception");
                self.page_errors.push(format!(
                    "{text} at {}:{}",
                    details["url"].as_str().unwrap_or("?"),
                    details["lineNumber"]
                ));
            }
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                self.page_errors
                    .push(format!("console.error: {}", params["args"]));
            }
            Some("Target.targetCrashed") | Some("Inspector.targetCrashed") => {
                panic!("the page crashed; chromium's log:\n{}", self.log_tail());
            }
            _ => {}
        }
    }

    /// A command to the browser itself.
    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A command to the attached page.
    fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session))
    }

    fn set_viewport(&mut self, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        );
    }

    /// Load `url` and wait for its load event.
    fn navigate(&mut self, url: &str) {
        let result = self.call("Page.navigate", json!({ "url": url }));
        if let Some(error) = result.get("errorText") {
            panic!("chromium could not load {url}: {error}");
        }
        self.wait_for_event("Page.loadEventFired", Duration::from_secs(30));
    }

    fn wait_for_event(&mut self, method: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let message = match self.messages.recv_timeout(left) {
                Ok(message) => message,
                Err(e) => panic!(
                    "no {method} from chromium ({e}); its log:\n{}",
                    self.log_tail()
                ),
            };
            if message["method"].as_str() == Some(method) {
                return;
            }
            self.note_event(&message);
        }
    }

    /// Evaluate a JavaScript expression in the page; its value as JSON.
    fn evaluate(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true}),
        );
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("evaluating in the page failed: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// A PNG of the whole page (not only the viewport) at `path`.
    fn screenshot(&mut self, path: &Path, width: u32) {
        let metrics = self.call("Page.getLayoutMetrics", json!({}));
        let height = metrics["cssContentSize"]["height"]
            .as_f64()
            .unwrap_or(1000.0)
            .ceil() as u32;
        self.set_viewport(width, height.clamp(600, 8000));
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        let png = base64_decode(shot["data"].as_str().expect("screenshot data"));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot is not a PNG"
        );
        std::fs::create_dir_all(path.parent().unwrap()).expect("create the artifact directory");
        std::fs::write(path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on the process group Chromium leads (it was
        // started with process_group(0)): the browser, its renderers and helpers.
        unsafe {
            libc::kill(-(self.child.id() as libc::pid_t), libc::SIGKILL);
        }
        let _ = self.child.wait();
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes() {
        let value = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            b'=' => break,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

// ---- what the page shows ----------------------------------------------------

/// Reads the dashboard's DOM: its stable ids and data attributes (null
/// before the page is there).
const PAGE_STATE: &str = r#"(() => {
  if (!document.getElementById('connection')) return null;
  const all = (root, selector) => Array.from(root.querySelectorAll(selector));
  return {
    connection: document.getElementById('connection').dataset.state,
    snapshots: Number(document.body.dataset.snapshots || 0),
    sse_snapshots: Number(document.body.dataset.sseSnapshots || 0),
    address: document.getElementById('cluster-address').textContent,
    total_workers: document.getElementById('total-workers').textContent,
    workers: all(document, 'tr[data-worker]').map((row) => ({
      name: row.dataset.worker,
      text: row.innerText,
    })),
    jobs: all(document, '[data-job-id]').map((job) => ({
      id: job.dataset.jobId,
      kind: job.dataset.jobKind,
      state: job.dataset.jobState,
      text: job.innerText,
      steps: all(job, '[data-step]').map((step) => ({
        name: step.dataset.step,
        done: Number(step.dataset.done),
        total: Number(step.dataset.total),
      })),
    })),
    frames: all(document, 'tr[data-frame]').map((row) => ({
      name: row.dataset.frame,
      text: row.innerText,
    })),
    runs: all(document, '[data-run-id]').map((run) => ({
      name: run.dataset.runName,
      metrics: all(run, '[data-metric]').map((row) => row.dataset.metric),
    })),
    stream_lanes: Number(document.getElementById('task-stream').dataset.lanes),
    stream_tasks: Number(document.getElementById('task-stream').dataset.tasks),
  };
})()"#;

fn job<'a>(page: &'a Value, kind: &str) -> Option<&'a Value> {
    page["jobs"]
        .as_array()?
        .iter()
        .find(|j| j["kind"].as_str() == Some(kind))
}

fn names(page: &Value, list: &str) -> Vec<String> {
    page[list]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["name"].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Poll the page until `check` accepts what it shows.
fn wait_for_page(
    browser: &mut Browser,
    timeout: Duration,
    what: &str,
    mut check: impl FnMut(&Value) -> bool,
) -> Value {
    let start = Instant::now();
    loop {
        let page = browser.evaluate(PAGE_STATE);
        if check(&page) {
            return page;
        }
        assert!(
            start.elapsed() < timeout,
            "timed out waiting for the dashboard to show {what}; it shows:\n{}\npage errors: {:?}",
            serde_json::to_string_pretty(&page).unwrap(),
            browser.page_errors
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn artifact_path() -> PathBuf {
    // CARGO_TARGET_TMPDIR is TARGET/tmp: keep artifacts next to it.
    Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target directory")
        .join("test-artifacts/dashboard.png")
}

#[test]
fn dashboard_shows_workers_and_jobs_live_in_headless_chromium() {
    let local = start_local(2, &[]);
    let f = local.file.as_path();
    let url = local.dashboard();
    let info = ok(f, &["info"]);
    assert!(info.contains(" workers=2 "), "{info}");

    let (width, height) = (1400, 1000);
    let mut browser = Browser::launch(width, height);

    // A persist runs in the background while the page loads.
    let mut persist = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .arg("--scheduler-file")
        .arg(f)
        .args(["--run", "dash-test", "persist", &fixture(), "--as", "isd"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start stratus persist");
    browser.navigate(&url);

    let page = wait_for_page(
        &mut browser,
        Duration::from_secs(30),
        "both workers on a live connection",
        |page| {
            let workers = names(page, "workers");
            page["connection"] == "live"
                && workers.contains(&"local-0".to_string())
                && workers.contains(&"local-1".to_string())
        },
    );
    assert_eq!(names(&page, "workers").len(), 2, "{page:#}");
    assert_eq!(page["total_workers"], "2", "{page:#}");
    assert!(
        page["address"]
            .as_str()
            .is_some_and(|a| a.starts_with("quic://127.0.0.1:")),
        "{page:#}"
    );
    if job(&page, "persist").is_some_and(|j| j["state"] == "running") {
        eprintln!("the page showed the persist job running");
    }

    let mut output = String::new();
    persist
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut output)
        .unwrap();
    let status = persist.wait().unwrap();
    let mut errors = String::new();
    persist
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut errors)
        .unwrap();
    assert!(status.success(), "persist failed: {errors}");
    assert!(output.starts_with("isd: 60000 rows"), "{output}");

    // The page stays open: the describe job reaches it through live updates.
    let snapshots_before = page["snapshots"].as_u64().unwrap();
    let described = ok(f, &["--run", "dash-test", "describe", "isd"]);
    assert!(described.contains("temperature"), "{described}");

    let page = wait_for_page(
        &mut browser,
        Duration::from_secs(60),
        "the finished describe and persist jobs",
        |page| {
            job(page, "describe").is_some_and(|j| j["state"] == "ok")
                && job(page, "persist").is_some_and(|j| j["state"] == "ok")
                && names(page, "frames").contains(&"isd".to_string())
                && page["runs"].as_array().is_some_and(|runs| {
                    runs.iter().any(|r| {
                        r["name"] == "dash-test"
                            && r["metrics"]
                                .as_array()
                                .is_some_and(|m| m.iter().any(|m| m == "describe.seconds"))
                    })
                })
        },
    );
    assert!(
        page["sse_snapshots"].as_u64().unwrap() > 0
            && page["snapshots"].as_u64().unwrap() > snapshots_before,
        "the page was not updated by server-sent events: {page:#}"
    );
    assert_eq!(page["connection"], "live", "{page:#}");

    let describe = job(&page, "describe").unwrap();
    let text = describe["text"].as_str().unwrap();
    assert!(
        text.contains("isd") && text.contains("dash-test"),
        "the describe job shows no target or run: {text}"
    );
    // ... and the name of the client certificate that sent it.
    assert!(
        text.contains("by scheduler-file-client"),
        "the describe job does not name its client certificate: {text}"
    );
    let steps = describe["steps"].as_array().unwrap();
    assert!(!steps.is_empty(), "describe shows no step: {describe:#}");
    for step in steps {
        assert!(
            step["total"].as_u64().unwrap() > 0 && step["done"] == step["total"],
            "an unfinished step of a finished job: {describe:#}"
        );
    }
    let isd = page["frames"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "isd")
        .unwrap();
    assert!(
        isd["text"].as_str().unwrap().contains("60,000"),
        "frame row: {isd:#}"
    );
    // Both workers ran tasks in the last minute: one lane each, bars drawn.
    assert_eq!(page["stream_lanes"], 2, "{page:#}");
    assert!(
        page["stream_tasks"].as_u64().unwrap() > 0,
        "no task in the task stream: {page:#}"
    );

    let shot = artifact_path();
    browser.screenshot(&shot, width);
    eprintln!("dashboard screenshot: {}", shot.display());
    assert!(
        browser.page_errors.is_empty(),
        "the page raised errors: {:?}",
        browser.page_errors
    );
}

/// The page's own scripts, styles and requests work under its
/// Content-Security-Policy, behind a dashboard token: the browser opens
/// `/?token=TOKEN` once, gets the HttpOnly cookie (its scripts can not read
/// it), and the page's fetch and event stream carry it by themselves.
#[test]
fn the_dashboard_works_behind_a_token_and_under_its_csp_in_headless_chromium() {
    const TOKEN: &str = "f00dfeedf00dfeedf00dfeedf00dfeed";
    let local = start_local_env(1, &[], &[("STRATUS_DASHBOARD_TOKEN", TOKEN)]);
    let url = local.dashboard();
    assert_eq!(local.scheduler_file()["dashboard_token"], TOKEN);
    assert_eq!(try_get(&format!("{url}api/dashboard")).unwrap().status, 401);
    // Some tasks, so that the legend's colour swatches (styled by script)
    // are drawn.
    ok(&local.file, &["persist", &fixture(), "--as", "isd"]);

    let mut browser = Browser::launch(1200, 900);
    // Installed before any page script runs: every CSP violation is kept.
    browser.call(
        "Page.addScriptToEvaluateOnNewDocument",
        json!({"source": "window.__csp = []; document.addEventListener('securitypolicyviolation', \
            (e) => window.__csp.push(e.violatedDirective + ' ' + (e.blockedURI || '') + ' ' + (e.sourceFile || '') + ':' + e.lineNumber));"}),
    );
    browser.navigate(&format!("{url}?token={TOKEN}"));
    let page = wait_for_page(
        &mut browser,
        Duration::from_secs(30),
        "the worker on a live connection",
        |page| {
            page["connection"] == "live"
                && names(page, "workers").contains(&"local-0".to_string())
                && page["stream_tasks"].as_u64().unwrap_or(0) > 0
        },
    );
    assert_eq!(page["total_workers"], "1", "{page:#}");
    let location = browser.evaluate("location.pathname + location.search");
    assert_eq!(location, "/", "the token stays in the address bar");
    assert_eq!(
        browser.evaluate("document.cookie"),
        "",
        "the cookie is readable by scripts"
    );
    let swatch = browser.evaluate(
        "(() => { const s = document.querySelector('.swatch'); return s ? s.style.background : null; })()",
    );
    assert!(
        swatch.as_str().is_some_and(|b| !b.is_empty()),
        "the legend's swatches have no colour: {swatch}"
    );
    let violations = browser.evaluate("JSON.stringify(window.__csp)");
    assert_eq!(violations, "[]", "CSP violations");
    assert!(
        browser.page_errors.is_empty(),
        "the page raised errors: {:?}",
        browser.page_errors
    );
}
