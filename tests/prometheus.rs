//! Prometheus and Grafana against a real local cluster: `promtool` checks of
//! deploy/prometheus/, a real Prometheus server (Debian's package) scraping
//! `stratus local` with the deploy scrape config, the deploy rules evaluated
//! live (and alerting when a worker dies), and every query of the Grafana
//! dashboard checked against the metrics the cluster really exports.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long the cluster, Prometheus and its first scrapes may take.
const SCRAPE_WAIT: Duration = Duration::from_secs(30);
/// The run the client logs to.
const RUN: &str = "prom-test";

// ---------------------------------------------------------------- files

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// A program on PATH, or a failure that says how to get it.
fn program(name: &str) -> PathBuf {
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

fn output_text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Run promtool; require success and no warning.
fn promtool(args: &[&str]) -> String {
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
fn substitute(config: &str, origin: &str, from: &str, to: &str, expected: usize) -> String {
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
         tests/prometheus.rs generates its test config from that file: keep them in step"
    );
    lines.join("\n") + "\n"
}

/// deploy/prometheus/prometheus.yml pointed at a scheduler's dashboard
/// address, with 1 s scrapes, evaluations and discovery refreshes.
fn test_config(dashboard: &str) -> String {
    let origin = "deploy/prometheus/prometheus.yml";
    let rules = deploy("prometheus/rules.yml");
    let mut config = read(&deploy("prometheus/prometheus.yml"));
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

// ---------------------------------------------------------------- HTTP

/// GET an `http://HOST:PORT/path` URL over HTTP/1.0: status and body.
fn get(url: &str) -> Result<(u16, String), String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: not an http:// URL"))?;
    let (host, path) = match rest.split_once('/') {
        Some((host, path)) => (host, format!("/{path}")),
        None => (rest, "/".to_string()),
    };
    let mut stream = TcpStream::connect(host).map_err(|e| format!("GET {url}: {e}"))?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| format!("GET {url}: {e}"))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n")
        .map_err(|e| format!("GET {url}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("GET {url}: {e}"))?;
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("GET {url}: no HTTP header in the response"))?;
    let head = String::from_utf8_lossy(&response[..split]).to_ascii_lowercase();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("GET {url}: bad status line in {head:?}"))?;
    let mut body = response[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        body = dechunk(&body).ok_or_else(|| format!("GET {url}: bad chunked body"))?;
    }
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn dechunk(mut body: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n")?;
        let size = std::str::from_utf8(&body[..eol]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        let chunk = body.get(eol + 2..eol + 2 + size)?;
        out.extend_from_slice(chunk);
        body = body.get(eol + 4 + size..)?;
    }
}

/// GET that must answer 200.
fn get_ok(url: &str) -> Result<String, String> {
    match get(url)? {
        (200, body) => Ok(body),
        (status, body) => Err(format!("GET {url}: HTTP {status}: {}", excerpt(&body, 300))),
    }
}

fn excerpt(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Poll `check` every 250 ms until it succeeds or `timeout` passes; on
/// timeout, the last error.
fn poll<T>(timeout: Duration, mut check: impl FnMut() -> Result<T, String>) -> Result<T, String> {
    let start = Instant::now();
    loop {
        match check() {
            Ok(value) => return Ok(value),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(250)),
        }
    }
}

// ---------------------------------------------------------------- cluster

impl Local {
    /// The dashboard URL without its trailing slash: `http://127.0.0.1:PORT`.
    fn dashboard_url(&self) -> String {
        let file: Value = serde_json::from_str(&read(&self.file)).expect("scheduler file is JSON");
        file["dashboard"]
            .as_str()
            .expect("the scheduler file names its dashboard")
            .trim_end_matches('/')
            .to_string()
    }

    /// The dashboard's `HOST:PORT`.
    fn dashboard_address(&self) -> String {
        self.dashboard_url()
            .strip_prefix("http://")
            .expect("an http:// dashboard")
            .to_string()
    }

    fn cluster_json(&self) -> Value {
        let url = format!("{}/api/cluster", self.dashboard_url());
        let body = get_ok(&url).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: not JSON: {e}"))
    }

    /// Run `stratus ARGS`; stdout on success, else the failure.
    fn client(&self, args: &[&str]) -> Result<String, String> {
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

// ---------------------------------------------------------------- Prometheus

/// A real Prometheus server with its own config and storage in a temp dir,
/// on a port that was free a moment before; killed on drop.
struct Prometheus {
    child: Child,
    url: String,
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
    fn start(config: &str) -> Prometheus {
        let binary = program("prometheus");
        let mut last_error = String::new();
        // Another process may take the free port before Prometheus binds it.
        for _attempt in 0..3 {
            let dir = TempDir::new("prometheus");
            let config_file = dir.path().join("prometheus.yml");
            write(&config_file, config);
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
                match get(&format!("{}/-/ready", prometheus.url)) {
                    Ok((200, _)) => Ok(Ok(())),
                    Ok((status, body)) => Err(format!("/-/ready: HTTP {status} {body}")),
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

    fn log(&self) -> String {
        let log =
            std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        format!(
            "Prometheus log (last lines):\n{}",
            lines[lines.len().saturating_sub(15)..].join("\n")
        )
    }

    /// `data` of a successful API answer, else its error.
    fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let url = format!("{}{path_and_query}", self.url);
        let (status, body) = get(&url)?;
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
    fn query(&self, promql: &str) -> Result<Vec<Value>, String> {
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
    fn targets(&self) -> String {
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
fn sample(s: &Value) -> String {
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

fn samples(result: &[Value]) -> String {
    match result.len() {
        0 => "no series".to_string(),
        _ => result.iter().map(sample).collect::<Vec<_>>().join("; "),
    }
}

fn value_of(s: &Value) -> Option<f64> {
    s["value"][1].as_str()?.parse().ok()
}

fn label<'a>(s: &'a Value, name: &str) -> Option<&'a str> {
    s["metric"][name].as_str()
}

/// The scheduler's /api/sd answer, for failure messages.
fn sd_answer(local: &Local) -> String {
    match get(&format!("{}/api/sd", local.dashboard_url())) {
        Ok((status, body)) => format!("scheduler /api/sd: HTTP {status}: {}", excerpt(&body, 300)),
        Err(e) => format!("scheduler /api/sd: {e}"),
    }
}

/// A cluster with 2 workers and a Prometheus scraping it with the deploy config.
fn cluster_and_prometheus() -> (Local, Prometheus) {
    let local = start_local(2, &[]);
    let prometheus = Prometheus::start(&test_config(&local.dashboard_address()));
    (local, prometheus)
}

// ---------------------------------------------------------------- PromQL

/// PromQL aggregation operators: keywords, never metric names.
const AGGREGATIONS: &[&str] = &[
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];
/// Keywords followed by a parenthesized list of label names.
const LABEL_LIST_KEYWORDS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];
/// Other keywords and literals.
const KEYWORDS: &[&str] = &[
    "and", "or", "unless", "bool", "offset", "atan2", "inf", "nan",
];

/// Skip a quoted string starting at `i` (at the quote); the index after it.
fn skip_string(bytes: &[u8], i: usize) -> Result<usize, String> {
    let quote = bytes[i];
    let mut j = i + 1;
    while j < bytes.len() {
        match bytes[j] {
            b'\\' if quote != b'`' => j += 2,
            b if b == quote => return Ok(j + 1),
            _ => j += 1,
        }
    }
    Err(format!("unterminated string at byte {i}"))
}

/// Skip from the opening bracket at `i` to after its closing one, stepping
/// over strings (label matchers may contain brackets).
fn skip_brackets(bytes: &[u8], i: usize) -> Result<usize, String> {
    let (open, close) = (
        bytes[i],
        match bytes[i] {
            b'{' => b'}',
            b'[' => b']',
            _ => b')',
        },
    );
    let mut depth = 0;
    let mut j = i;
    while j < bytes.len() {
        match bytes[j] {
            b'"' | b'\'' | b'`' => {
                j = skip_string(bytes, j)?;
                continue;
            }
            b'$' => return Err(format!("unsubstituted variable at byte {j}")),
            b if b == open => depth += 1,
            b if b == close => {
                depth -= 1;
                if depth == 0 {
                    return Ok(j + 1);
                }
            }
            _ => {}
        }
        j += 1;
    }
    Err(format!("unclosed `{}` at byte {i}", open as char))
}

fn next_non_space(bytes: &[u8], mut i: usize) -> Option<(usize, u8)> {
    while i < bytes.len() && bytes[i].is_ascii_whitespace() {
        i += 1;
    }
    bytes.get(i).map(|&b| (i, b))
}

/// The metric names a PromQL expression selects: identifiers that are not
/// functions (followed by `(`), aggregation operators, keywords, label names
/// in `by (...)`-style lists, or inside `{...}` matchers, `[...]` ranges and
/// strings.
fn metric_names(promql: &str) -> Result<BTreeSet<String>, String> {
    let bytes = promql.as_bytes();
    let mut names = BTreeSet::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'"' | b'\'' | b'`' => i = skip_string(bytes, i)?,
            b'{' | b'[' => i = skip_brackets(bytes, i)?,
            b'$' => return Err(format!("unsubstituted variable at byte {i} of `{promql}`")),
            b'0'..=b'9' | b'.' => {
                // Numbers and durations (1e3, 0x1f, 5m, 1h30m).
                while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.') {
                    i += 1;
                }
            }
            b'a'..=b'z' | b'A'..=b'Z' | b'_' | b':' => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
                {
                    i += 1;
                }
                let word = &promql[start..i];
                let lower = word.to_ascii_lowercase();
                let next = next_non_space(bytes, i);
                if LABEL_LIST_KEYWORDS.contains(&lower.as_str()) {
                    if let Some((at, b'(')) = next {
                        i = skip_brackets(bytes, at)?;
                    }
                } else if AGGREGATIONS.contains(&lower.as_str())
                    || KEYWORDS.contains(&lower.as_str())
                    || matches!(next, Some((_, b'(')))
                {
                    // An operator, keyword or function call.
                } else {
                    names.insert(word.to_string());
                }
            }
            _ => i += 1,
        }
    }
    Ok(names)
}

// ---------------------------------------------------------------- Grafana

fn dashboard() -> Value {
    let path = deploy("grafana/stratus-dashboard.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every `expr` in the dashboard with the title of the panel it is in.
fn dashboard_exprs(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(value: &Value, panel: &str, out: &mut Vec<(String, String)>) {
        match value {
            Value::Object(map) => {
                let panel = map
                    .get("title")
                    .and_then(Value::as_str)
                    .filter(|_| map.contains_key("gridPos"))
                    .unwrap_or(panel);
                for (key, v) in map {
                    match (key.as_str(), v) {
                        ("expr", Value::String(expr)) => {
                            out.push((panel.to_string(), expr.clone()))
                        }
                        _ => walk(v, panel, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, panel, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], "?", &mut out);
    out
}

/// A query variable: its name and `label_values(SELECTOR, LABEL)`.
struct LabelValues {
    variable: String,
    selector: String,
    label: String,
}

fn dashboard_variables(dashboard: &Value) -> Result<Vec<LabelValues>, String> {
    let mut out = Vec::new();
    let list = dashboard["templating"]["list"]
        .as_array()
        .ok_or("the dashboard has no templating.list")?;
    for variable in list.iter().filter(|v| v["type"] == "query") {
        let name = variable["name"].as_str().unwrap_or("?").to_string();
        let query = match &variable["query"] {
            Value::String(q) => q.as_str(),
            q => q["query"].as_str().unwrap_or(""),
        };
        let inner = query
            .trim()
            .strip_prefix("label_values(")
            .and_then(|q| q.strip_suffix(')'))
            .ok_or_else(|| {
                format!("variable ${name}: expected label_values(SELECTOR, LABEL), got `{query}`")
            })?;
        let (selector, label) = inner
            .rsplit_once(',')
            .ok_or_else(|| format!("variable ${name}: `{query}` names no selector"))?;
        out.push(LabelValues {
            variable: name,
            selector: selector.trim().to_string(),
            label: label.trim().to_string(),
        });
    }
    Ok(out)
}

/// Replace Grafana's variables by what Grafana would send: intervals for
/// the built-in ones, `.*` (every value) for the dashboard's own.
fn substitute_variables(expr: &str, own: &BTreeSet<String>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, consumed) = match after.strip_prefix('{') {
            Some(braced) => {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("unclosed ${{ in `{expr}`"))?;
                let name = braced[..end].split(':').next().unwrap_or("");
                (name, end + 2)
            }
            None => {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], end)
            }
        };
        let value = match name {
            "__rate_interval" => "1m",
            "__interval" => "15s",
            "__range" => "1h",
            _ if own.contains(name) => ".*",
            // `$1` in a label_replace() replacement is PromQL's, not Grafana's.
            _ if !name.is_empty() && name.bytes().all(|b| b.is_ascii_digit()) => {
                out.push('$');
                rest = after;
                continue;
            }
            _ => return Err(format!("unknown variable ${name} in `{expr}`")),
        };
        out.push_str(value);
        rest = &after[consumed..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Every query of the dashboard, variables substituted: (where, PromQL).
fn dashboard_queries(dashboard: &Value) -> Result<Vec<(String, String)>, String> {
    let variables = dashboard_variables(dashboard)?;
    let own: BTreeSet<String> = variables.iter().map(|v| v.variable.clone()).collect();
    let mut queries = Vec::new();
    for (panel, expr) in dashboard_exprs(dashboard) {
        queries.push((
            format!("panel \"{panel}\""),
            substitute_variables(&expr, &own)?,
        ));
    }
    for v in &variables {
        queries.push((
            format!("variable ${}", v.variable),
            substitute_variables(&v.selector, &own)?,
        ));
    }
    Ok(queries)
}

/// Sample names in a Prometheus text exposition (histograms appear as
/// their `_bucket`, `_sum` and `_count` series) and the declared types.
fn exposition_names(
    text: &str,
    names: &mut BTreeSet<String>,
    types: &mut BTreeMap<String, String>,
) {
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name.to_string(), kind.to_string());
            }
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line
                .find(|c: char| c == '{' || c.is_whitespace())
                .unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
}

// ---------------------------------------------------------------- tests

#[test]
fn promtool_accepts_the_deploy_config_rules_and_rule_tests() {
    let out = promtool(&[
        "check",
        "config",
        deploy("prometheus/prometheus.yml").to_str().unwrap(),
    ]);
    assert!(out.contains("SUCCESS: 1 rule files found"), "{out}");
    let out = promtool(&[
        "check",
        "rules",
        deploy("prometheus/rules.yml").to_str().unwrap(),
    ]);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool(&[
        "test",
        "rules",
        deploy("prometheus/rules_test.yml").to_str().unwrap(),
    ]);
    assert!(out.contains("SUCCESS"), "{out}");

    // The file_sd variant, with the example target file in place of
    // /etc/prometheus/stratus-workers: promtool checks that file too.
    let dir = TempDir::new("prometheus-file-sd");
    let origin = "deploy/prometheus/prometheus-file-sd.yml";
    let mut config = read(&deploy("prometheus/prometheus-file-sd.yml"));
    let targets = dir.path().join("workers");
    std::fs::create_dir(&targets).unwrap();
    std::fs::copy(
        deploy("prometheus/stratus-workers.example.json"),
        targets.join("example.json"),
    )
    .unwrap();
    config = substitute(
        &config,
        origin,
        "/etc/prometheus/stratus-workers/",
        &format!("{}/", targets.display()),
        1,
    );
    config = substitute(
        &config,
        origin,
        "- rules.yml",
        &format!("- {}", deploy("prometheus/rules.yml").display()),
        1,
    );
    let file = dir.path().join("prometheus.yml");
    write(&file, &config);
    promtool(&["check", "config", file.to_str().unwrap()]);

    // And the config the live tests generate from prometheus.yml.
    write(&file, &test_config("127.0.0.1:8787"));
    promtool(&["check", "config", file.to_str().unwrap()]);
}

#[test]
fn a_real_prometheus_finds_the_workers_and_a_run_metric() {
    let (local, prometheus) = cluster_and_prometheus();
    // The client logs `len.seconds` (and `len.rows`) to the run.
    let client = local.client(&["--run", RUN, "len", &fixture()]);
    if let Ok(out) = &client {
        assert_eq!(out.trim(), FIXTURE_ROWS.to_string());
    }

    let run_query = format!("stratus_run_metric{{run=\"{RUN}\"}}");
    let mut seen = BTreeMap::new();
    let found = poll(SCRAPE_WAIT, || {
        seen.clear();
        let workers = prometheus.query("stratus_workers");
        let up = prometheus.query("up{job=\"stratus-worker\"}");
        let run = prometheus.query(&run_query);
        let workers_ok = matches!(&workers, Ok(r) if r.len() == 1 && value_of(&r[0]) == Some(2.0));
        let up_ok = matches!(&up, Ok(r) if {
            let mut names: Vec<_> = r
                .iter()
                .filter(|s| value_of(s) == Some(1.0))
                .filter_map(|s| label(s, "worker"))
                .collect();
            names.sort();
            names == ["local-0", "local-1"]
        });
        let run_ok = matches!(&run, Ok(r) if !r.is_empty());
        for (what, ok, result) in [
            ("stratus_workers == 2", workers_ok, workers),
            (
                "up{job=\"stratus-worker\"} == 1 for local-0 and local-1",
                up_ok,
                up,
            ),
            (run_query.as_str(), run_ok, run),
        ] {
            let found = result.map_or_else(|e| e, |r| samples(&r));
            seen.insert(
                what.to_string(),
                format!("{} {found}", if ok { "ok:" } else { "MISSING, found:" }),
            );
        }
        match workers_ok && up_ok && run_ok {
            true => Ok(()),
            false => Err(String::new()),
        }
    });
    if found.is_err() {
        let report: Vec<String> = seen.iter().map(|(k, v)| format!("  {k}: {v}")).collect();
        panic!(
            "Prometheus did not find the cluster within {SCRAPE_WAIT:?}:\n{}\nclient: {}\n{}\n{}",
            report.join("\n"),
            client.map_or_else(|e| e, |_| format!("`stratus --run {RUN} len` ok")),
            sd_answer(&local),
            prometheus.targets(),
        );
    }

    // The run's metrics: the client's own step metric among them.
    let run = prometheus.query(&run_query).unwrap();
    let metrics: BTreeSet<&str> = run.iter().filter_map(|s| label(s, "metric")).collect();
    assert!(
        metrics.contains("len.seconds"),
        "run {RUN} has no len.seconds metric in Prometheus: {}",
        samples(&run)
    );
    let seconds = run
        .iter()
        .find(|s| label(s, "metric") == Some("len.seconds"))
        .and_then(value_of)
        .unwrap();
    assert!(seconds > 0.0, "len.seconds = {seconds}");
}

#[test]
fn the_deploy_rules_evaluate_on_a_live_cluster_and_alert_when_a_worker_dies() {
    let (local, prometheus) = cluster_and_prometheus();

    // Every rule evaluated at least once, without error.
    let rules = poll(SCRAPE_WAIT, || {
        let data = prometheus.api("/api/v1/rules")?;
        let rules: Vec<Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let unevaluated = rules.iter().filter(|r| r["health"] == "unknown").count();
        match (rules.len(), unevaluated) {
            (0, _) => Err("Prometheus loaded no rules".to_string()),
            (_, 0) => Ok(rules),
            (n, u) => Err(format!("{u} of {n} rules not evaluated yet")),
        }
    })
    .unwrap_or_else(|e| panic!("{e}\n{}", prometheus.log()));
    let broken: Vec<String> = rules
        .iter()
        .filter(|r| r["health"] != "ok")
        .map(|r| {
            format!(
                "  {}: {}",
                r["name"].as_str().unwrap_or("?"),
                r["lastError"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert!(
        broken.is_empty(),
        "rules fail on live data:\n{}",
        broken.join("\n")
    );

    // The recording rules see both workers once the scrapes are in.
    let recorded = poll(SCRAPE_WAIT, || {
        let per_worker = prometheus.query("worker:stratus_memory_used:ratio")?;
        let cluster = prometheus.query("cluster:stratus_memory_used:ratio")?;
        let up = prometheus.query("up{job=\"stratus-worker\"} == 1")?;
        match (per_worker.len(), cluster.len(), up.len()) {
            (2, 1, 2) => Ok((per_worker, cluster)),
            _ => Err(format!(
                "worker:stratus_memory_used:ratio: {}; cluster:stratus_memory_used:ratio: {}; \
                 workers up: {}",
                samples(&per_worker),
                samples(&cluster),
                samples(&up)
            )),
        }
    });
    let (per_worker, cluster) =
        recorded.unwrap_or_else(|e| panic!("{e}\n{}\n{}", sd_answer(&local), prometheus.targets()));
    for s in per_worker.iter().chain(&cluster) {
        let v = value_of(s).unwrap_or(f64::NAN);
        assert!(
            (0.0..=1.0).contains(&v),
            "memory ratio out of [0, 1]: {}",
            sample(s)
        );
    }

    // A healthy cluster raises no alert. One missed scrape (a loaded CI
    // machine, a 1 s scrape timeout) makes a scrape alert pending, which its
    // `for:` is there to absorb: those are allowed while pending, nothing else.
    let alerts = || -> Vec<Value> {
        prometheus
            .api("/api/v1/alerts")
            .map(|d| d["alerts"].as_array().cloned().unwrap_or_default())
            .unwrap_or_else(|e| panic!("/api/v1/alerts: {e}"))
    };
    let describe = |alerts: &[Value]| -> String {
        let lines: Vec<String> = alerts
            .iter()
            .map(|a| format!("  {} {}", a["state"].as_str().unwrap_or("?"), a["labels"]))
            .collect();
        match lines.is_empty() {
            true => "  (none)".to_string(),
            false => lines.join("\n"),
        }
    };
    let missed_scrape = |a: &Value| {
        a["state"] == "pending"
            && (a["labels"]["alertname"] == "StratusSchedulerDown"
                || a["labels"]["reason"] == "scrape_failed")
    };
    let calm_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < calm_until {
        let active = alerts();
        assert!(
            active.iter().all(missed_scrape),
            "alerts on a healthy cluster:\n{}",
            describe(&active)
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Kill worker local-1: the scheduler drops it, StratusWorkerDown names it.
    let cluster_json = local.cluster_json();
    let victim = cluster_json["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|w| w["name"] == "local-1")
        .and_then(|w| w["pid"].as_u64())
        .unwrap_or_else(|| panic!("no pid for local-1 in /api/cluster: {cluster_json}"));
    kill9(victim as u32);
    let mut reasons = BTreeSet::new();
    let mut last = Vec::new();
    let left = poll(Duration::from_secs(60), || {
        last = alerts();
        for a in &last {
            let worker = a["labels"]["worker"].as_str();
            let name = a["labels"]["alertname"].as_str();
            let healthy = worker == Some("local-0") || name == Some("StratusSchedulerDown");
            assert!(
                !healthy || missed_scrape(a),
                "an alert for what is still healthy:\n{}",
                describe(&last)
            );
            if name == Some("StratusWorkerDown") && worker == Some("local-1") {
                reasons.insert(a["labels"]["reason"].as_str().unwrap_or("?").to_string());
                let summary = a["annotations"]["summary"].as_str().unwrap_or("");
                assert!(
                    summary.contains("local-1"),
                    "summary without the worker: {a}"
                );
            }
        }
        match reasons.contains("left_cluster") {
            true => Ok(()),
            false => Err(String::new()),
        }
    });
    if left.is_err() {
        let limits = prometheus.query("stratus_cluster_worker_memory_limit_bytes");
        let kept =
            matches!(&limits, Ok(r) if r.iter().any(|s| label(s, "worker") == Some("local-1")));
        panic!(
            "no StratusWorkerDown{{worker=\"local-1\", reason=\"left_cluster\"}} within 60 s of \
             killing local-1 (reasons seen: {reasons:?}); active alerts:\n{}\n\
             stratus_workers: {}\nstratus_cluster_worker_memory_limit_bytes: {}{}",
            describe(&last),
            prometheus
                .query("stratus_workers")
                .map_or_else(|e| e, |r| samples(&r)),
            limits.map_or_else(|e| e, |r| samples(&r)),
            match kept {
                true =>
                    "\nthe scheduler still exports local-1's series: it must drop a \
                         worker's series when the worker leaves",
                false => "",
            }
        );
    }
}

#[test]
fn every_grafana_query_names_an_exported_metric_and_shows_data_in_prometheus() {
    let dashboard = dashboard();
    let queries = dashboard_queries(&dashboard).unwrap_or_else(|e| panic!("{e}"));
    let variables = dashboard_variables(&dashboard).unwrap();
    let (local, prometheus) = cluster_and_prometheus();

    // Activity: tasks on the workers, a client request, a run metric.
    let mut problems = Vec::new();
    if let Err(e) = local.client(&["--run", RUN, "len", &fixture()]) {
        problems.push(e);
        if let Err(e) = local.client(&["len", &fixture()]) {
            problems.push(e);
        }
    }

    // The names the cluster exports: the scheduler's and every worker's.
    let mut exported = BTreeSet::new();
    let mut types = BTreeMap::new();
    let scheduler = format!("{}/metrics", local.dashboard_url());
    match get_ok(&scheduler) {
        Ok(text) => exposition_names(&text, &mut exported, &mut types),
        Err(e) => problems.push(e),
    }
    let cluster = local.cluster_json();
    let workers = cluster["workers"].as_array().cloned().unwrap_or_default();
    assert_eq!(workers.len(), 2, "/api/cluster: {cluster}");
    for worker in &workers {
        let name = worker["name"].as_str().unwrap_or("?");
        match worker["metrics_url"].as_str() {
            Some(url) => match get_ok(url) {
                Ok(text) => exposition_names(&text, &mut exported, &mut types),
                Err(e) => problems.push(format!("worker {name}: {e}")),
            },
            None => problems.push(format!("worker {name} has no metrics_url in /api/cluster")),
        }
    }

    for (place, query) in &queries {
        let names = match metric_names(query) {
            Ok(names) if names.is_empty() => {
                problems.push(format!("{place}: `{query}` names no metric"));
                continue;
            }
            Ok(names) => names,
            Err(e) => {
                problems.push(format!("{place}: {e}"));
                continue;
            }
        };
        for name in names.iter().filter(|n| !exported.contains(*n)) {
            let hint = match types.get(name.as_str()).map(String::as_str) {
                Some("histogram") => " (a histogram: select its _bucket, _sum or _count series)",
                _ => "",
            };
            problems.push(format!(
                "{place}: `{name}` is exported by neither the scheduler nor a worker{hint}"
            ));
        }
    }

    // Prometheus runs every query once it has scraped the cluster (and,
    // for the variables, finds values for them).
    let _ = poll(SCRAPE_WAIT, || match prometheus.query("count(up == 1)") {
        Ok(r) if r.first().and_then(value_of) == Some(3.0) => Ok(()),
        Ok(r) => Err(samples(&r)),
        Err(e) => Err(e),
    });
    // Every query succeeds, and shows data once a few scrapes are in (rates
    // need two samples): each panel has something to draw on a live cluster.
    let deadline = Instant::now() + SCRAPE_WAIT;
    for (place, query) in &queries {
        let shown = poll(
            deadline.saturating_duration_since(Instant::now()),
            || match prometheus.query(query) {
                Ok(result) if result.is_empty() => Err("no data".to_string()),
                Ok(_) => Ok(Ok(())),
                Err(e) => Ok(Err(e)),
            },
        );
        match shown {
            Ok(Ok(())) => {}
            Ok(Err(e)) => problems.push(format!("{place}: {e}")),
            Err(_) => problems.push(format!(
                "{place}: `{query}` returns no data on a live cluster"
            )),
        }
    }
    for v in &variables {
        let found = poll(SCRAPE_WAIT / 3, || {
            let result = prometheus.query(&v.selector)?;
            match result.iter().any(|s| label(s, &v.label).is_some()) {
                true => Ok(()),
                false => Err(format!("`{}`: {}", v.selector, samples(&result))),
            }
        });
        if let Err(e) = found {
            problems.push(format!(
                "variable ${} (label_values({}, {})) has no values: {e}",
                v.variable, v.selector, v.label
            ));
        }
    }

    assert!(
        problems.is_empty(),
        "{} problem(s) with deploy/grafana/stratus-dashboard.json ({} queries) against the \
         cluster:\n  {}\nexported: {}\n{}",
        problems.len(),
        queries.len(),
        problems.join("\n  "),
        exported.iter().cloned().collect::<Vec<_>>().join(" "),
        prometheus.targets()
    );
}

#[test]
fn the_grafana_dashboard_is_well_formed_and_its_promql_parses() {
    let dashboard = dashboard();
    assert!(
        dashboard["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
        "schemaVersion: {}",
        dashboard["schemaVersion"]
    );
    let list = dashboard["templating"]["list"].as_array().unwrap();
    assert!(
        list.iter().any(|v| v["name"] == "datasource"
            && v["type"] == "datasource"
            && v["query"] == "prometheus"),
        "no ${{datasource}} variable of Prometheus data sources"
    );

    let panels = dashboard["panels"].as_array().unwrap();
    let rows: Vec<&str> = panels
        .iter()
        .filter(|p| p["type"] == "row")
        .filter_map(|p| p["title"].as_str())
        .collect();
    for wanted in ["Cluster overview", "Workers", "Tasks", "Network", "Runs"] {
        assert!(rows.contains(&wanted), "no row {wanted:?} in {rows:?}");
    }

    // Unique ids, inside the 24-column grid, no two panels overlapping,
    // every query on the ${datasource} data source.
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(&str, [u64; 4])> = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap_or("?");
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id in {title}"
        );
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| g[k].as_u64().unwrap());
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: gridPos {g}");
        for (other, [ox, oy, ow, oh]) in &boxes {
            let overlap = x < ox + ow && *ox < x + w && y < oy + oh && *oy < y + h;
            assert!(!overlap, "panels {title:?} and {other:?} overlap");
        }
        boxes.push((title, [x, y, w, h]));
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        let refs: BTreeSet<&str> = targets.iter().filter_map(|t| t["refId"].as_str()).collect();
        assert_eq!(
            refs.len(),
            targets.len(),
            "{title}: missing or repeated refId"
        );
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
        }
    }

    // promtool parses every query as a recording rule.
    let queries = dashboard_queries(&dashboard).unwrap_or_else(|e| panic!("{e}"));
    let mut rules = String::from("groups:\n  - name: grafana\n    rules:\n");
    for (i, (_, query)) in queries.iter().enumerate() {
        let quoted = serde_json::to_string(query).unwrap();
        rules.push_str(&format!(
            "      - record: grafana_query_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = TempDir::new("grafana-rules");
    let file = dir.path().join("queries.yml");
    write(&file, &rules);
    let o = Command::new(program("promtool"))
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .expect("run promtool");
    let places: Vec<String> = queries
        .iter()
        .enumerate()
        .map(|(i, (place, q))| format!("  grafana_query_{i}: {place}: {q}"))
        .collect();
    assert!(
        o.status.success(),
        "dashboard queries that do not parse:\n{}\nqueries:\n{}",
        output_text(&o),
        places.join("\n")
    );
    for (place, query) in &queries {
        let names = metric_names(query).unwrap_or_else(|e| panic!("{place}: {e}"));
        assert!(
            !names.is_empty() && names.iter().all(|n| n.starts_with("stratus_")),
            "{place}: `{query}` selects {names:?}"
        );
    }
}

#[test]
fn metric_names_finds_selected_metrics_and_nothing_else() {
    let cases: &[(&str, &[&str])] = &[
        ("stratus_workers", &["stratus_workers"]),
        (
            "sum by (kind, le) (rate(x_bucket{worker=~\"a{1}|b\", kind!='}'}[5m]))",
            &["x_bucket"],
        ),
        (
            "histogram_quantile(0.95, sum(rate(h_bucket[1m])) by (le))",
            &["h_bucket"],
        ),
        (
            "a / on (worker) group_left (version) b > bool 0.9",
            &["a", "b"],
        ),
        ("count(up{job=\"x\"} == 1) > 2e3", &["up"]),
        (
            "max_over_time(m[15m:1m]) unless ignoring(instance) n offset 5m",
            &["m", "n"],
        ),
        (
            "label_replace(d, \"dst\", \"$1\", \"src\", \"(.*)\") or -e @ start()",
            &["d", "e"],
        ),
        ("topk(5, f) and on() g", &["f", "g"]),
        (
            "sum without(peer)(level:recorded:rate5m)",
            &["level:recorded:rate5m"],
        ),
        ("SUM BY (kind) (k) OR Inf", &["k"]),
    ];
    for (promql, expected) in cases {
        let names = metric_names(promql).unwrap_or_else(|e| panic!("{promql}: {e}"));
        let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
        assert_eq!(names, expected, "{promql}");
    }
    assert!(metric_names("rate(x[$__rate_interval])").is_err());
    assert!(metric_names("x{a=\"b}").is_err());

    let own: BTreeSet<String> = ["worker".to_string()].into();
    assert_eq!(
        substitute_variables(
            "rate(x{worker=~\"$worker\"}[$__rate_interval]) + ${worker:regex}",
            &own
        )
        .unwrap(),
        "rate(x{worker=~\".*\"}[1m]) + .*"
    );
    assert!(substitute_variables("x{run=~\"$run\"}", &own).is_err());
}
