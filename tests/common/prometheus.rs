//! A real Prometheus next to a test cluster: `promtool`, the test config
//! generated from deploy/prometheus/prometheus.yml, a Prometheus server
//! (Debian's package) with its own storage on a free port, its HTTP API and
//! readable renderings of query results for failure messages.

use super::http::{excerpt, percent_encode, try_get};
use super::{deploy, poll, read_text, start_local, write_text, Local, TempDir};
use serde_json::Value;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

/// How long a cluster, Prometheus and its first scrapes may take.
pub const SCRAPE_WAIT: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------- programs and configs

/// A program on PATH, or a failure that says how to get it.
pub fn program(name: &str) -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH: scripts/test installs it (Debian package `prometheus`: \
                 apt-get install --no-install-recommends prometheus)"
            )
        })
}

/// A finished program's stdout and stderr.
pub fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run promtool; require success and no warning.
pub fn promtool(args: &[&str]) -> String {
    let o = Command::new(program("promtool"))
        .args(args)
        .output()
        .expect("run promtool");
    let text = output_text(&o);
    assert!(o.status.success(), "promtool {args:?} failed:\n{text}");
    assert!(
        !text.contains("WARNING"),
        "promtool {args:?} warns:\n{text}"
    );
    text
}

/// Replace `from` by `to` on the non-comment lines of a config, requiring
/// exactly `expected` replacements (so the generated config stays in step
/// with the deploy file it comes from).
pub fn substitute(config: &str, origin: &str, from: &str, to: &str, expected: usize) -> String {
    let mut found = 0;
    let lines: Vec<String> = config
        .lines()
        .map(|line| {
            if line.trim_start().starts_with('#') {
                return line.to_string();
            }
            found += line.matches(from).count();
            line.replace(from, to)
        })
        .collect();
    assert_eq!(
        found, expected,
        "{origin}: expected `{from}` {expected} time(s) outside comments, found {found}; \
         tests/common/prometheus.rs generates the test config from that file: keep them in step"
    );
    lines.join("\n") + "\n"
}

/// deploy/prometheus/prometheus.yml pointed at a scheduler's dashboard
/// address, with 1 s scrapes, evaluations and discovery refreshes.
pub fn test_config(dashboard: &str) -> String {
    let origin = "deploy/prometheus/prometheus.yml";
    let rules = deploy("prometheus/rules.yml");
    let mut config = read_text(&deploy("prometheus/prometheus.yml"));
    for (from, to, expected) in [
        ("stratus-head:8787", dashboard.to_string(), 2),
        ("scrape_interval: 15s", "scrape_interval: 1s".into(), 1),
        (
            "evaluation_interval: 15s",
            "evaluation_interval: 1s".into(),
            1,
        ),
        ("refresh_interval: 30s", "refresh_interval: 1s".into(), 1),
        ("- rules.yml", format!("- {}", rules.display()), 1),
    ] {
        config = substitute(&config, origin, from, &to, expected);
    }
    config
}

// ---------------------------------------------------------------- Prometheus

/// A real Prometheus server with its own config and storage in a temp dir,
/// on a port that was free a moment before; killed on drop.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`
    pub url: String,
    dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    /// Start with `config` (prometheus.yml text) and wait until it is ready.
    pub fn start(config: &str) -> Prometheus {
        let binary = program("prometheus");
        let mut last_error = String::new();
        // Another process may take the free port before Prometheus binds it.
        for _attempt in 0..3 {
            let dir = TempDir::new("prometheus");
            let config_file = dir.path().join("prometheus.yml");
            write_text(&config_file, config);
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let log = std::fs::File::create(dir.path().join("prometheus.log"))
                .expect("create prometheus.log");
            let child = Command::new(&binary)
                .arg(format!("--config.file={}", config_file.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address=127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
            let mut prometheus = Prometheus {
                child,
                url: format!("http://127.0.0.1:{port}"),
                dir,
            };
            let ready = poll(SCRAPE_WAIT, || {
                if let Ok(Some(status)) = prometheus.child.try_wait() {
                    return Ok(Err(format!("prometheus exited: {status}")));
                }
                match try_get(&format!("{}/-/ready", prometheus.url)) {
                    Ok(r) if r.status == 200 => Ok(Ok(())),
                    Ok(r) => Err(format!("/-/ready: HTTP {} {}", r.status, r.text())),
                    Err(e) => Err(e),
                }
            });
            match ready {
                Ok(Ok(())) => return prometheus,
                Ok(Err(e)) | Err(e) => {
                    let log = prometheus.log();
                    last_error = format!("{e}\n{log}");
                    if !log.contains("address already in use") {
                        break;
                    }
                }
            }
        }
        panic!("Prometheus did not start: {last_error}");
    }

    pub fn log(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "Prometheus log (last lines):\n{}",
            lines[lines.len().saturating_sub(15)..].join("\n")
        )
    }

    /// `data` of a successful API answer, else its error.
    pub fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let url = format!("{}{path_and_query}", self.url);
        let response = try_get(&url)?;
        let (status, body) = (response.status, response.text());
        let json: Value = serde_json::from_str(&body).map_err(|e| {
            format!(
                "GET {url}: HTTP {status}, not JSON ({e}): {}",
                excerpt(&body, 200)
            )
        })?;
        match json["status"].as_str() {
            Some("success") => Ok(json["data"].clone()),
            _ => Err(format!(
                "HTTP {status}, {}: {}",
                json["errorType"].as_str().unwrap_or("?"),
                json["error"].as_str().unwrap_or(&body)
            )),
        }
    }

    /// An instant query's result vector.
    pub fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
        let data = self
            .api(&format!("/api/v1/query?query={}", percent_encode(promql)))
            .map_err(|e| format!("query `{promql}`: {e}"))?;
        match data["result"].as_array() {
            Some(result) => Ok(result.clone()),
            // Scalars and strings: one value.
            None => Ok(vec![data["result"].clone()]),
        }
    }

    /// What Prometheus scrapes and how that goes: one line per target.
    pub fn targets(&self) -> String {
        let data = match self.api("/api/v1/targets") {
            Ok(data) => data,
            Err(e) => return format!("(targets: {e})"),
        };
        let mut lines: Vec<String> = data["activeTargets"]
            .as_array()
            .map(|targets| {
                targets
                    .iter()
                    .map(|t| {
                        format!(
                            "  {} {} worker={} health={} {}",
                            t["labels"]["job"].as_str().unwrap_or("?"),
                            t["scrapeUrl"].as_str().unwrap_or("?"),
                            t["labels"]["worker"].as_str().unwrap_or("-"),
                            t["health"].as_str().unwrap_or("?"),
                            t["lastError"].as_str().unwrap_or("")
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        if lines.is_empty() {
            lines.push("  (none)".to_string());
        }
        format!("Prometheus targets:\n{}", lines.join("\n"))
    }
}

/// `{label="value", ...} value` of one result sample.
pub fn sample(s: &Value) -> String {
    let labels: Vec<String> = s["metric"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("?")))
                .collect()
        })
        .unwrap_or_default();
    format!(
        "{{{}}} {}",
        labels.join(", "),
        s["value"][1].as_str().unwrap_or("?")
    )
}

/// Result samples, for failure messages.
pub fn samples(result: &[Value]) -> String {
    match result.len() {
        0 => "no series".to_string(),
        _ => result.iter().map(sample).collect::<Vec<_>>().join("; "),
    }
}

/// A result sample's value.
pub fn value_of(s: &Value) -> Option<f64> {
    s["value"][1].as_str()?.parse().ok()
}

/// A result sample's label.
pub fn label<'a>(s: &'a Value, name: &str) -> Option<&'a str> {
    s["metric"][name].as_str()
}

/// The scheduler's /api/sd answer, for failure messages.
pub fn sd_answer(local: &Local) -> String {
    match try_get(&format!("{}api/sd", local.dashboard())) {
        Ok(r) => format!(
            "scheduler /api/sd: HTTP {}: {}",
            r.status,
            excerpt(&r.text(), 300)
        ),
        Err(e) => format!("scheduler /api/sd: {e}"),
    }
}

/// A cluster with 2 workers and a Prometheus scraping it with the deploy config.
pub fn cluster_and_prometheus() -> (Local, Prometheus) {
    let local = start_local(2, &["--no-nanny"]);
    let prometheus = Prometheus::start(&test_config(&local.dashboard_address()));
    (local, prometheus)
}
