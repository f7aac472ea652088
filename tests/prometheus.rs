//! Prometheus and Grafana against a real local cluster: `promtool` checks of
//! deploy/prometheus/, a real Prometheus server (Debian's package) scraping
//! `stratus local` with the deploy scrape config, the deploy rules evaluated
//! live (and alerting when a worker dies), and every query of the Grafana
//! dashboard checked against the metrics the cluster really exports.

mod common;

use common::exposition::exposition_names;
use common::grafana::{dashboard, dashboard_queries, dashboard_variables, substitute_variables};
use common::prometheus::*;
use common::promql::metric_names;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

/// The run the client logs to.
const RUN: &str = "prom-test";

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
    let mut config = read_text(&deploy("prometheus/prometheus-file-sd.yml"));
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
    write_text(&file, &config);
    promtool(&["check", "config", file.to_str().unwrap()]);

    // And the config the live tests generate from prometheus.yml.
    write_text(&file, &test_config("127.0.0.1:8787"));
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
    kill9(local.worker_pid("local-1"));
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
    let scheduler = format!("{}metrics", local.dashboard());
    match get_ok(&scheduler) {
        Ok(text) => exposition_names(&text, &mut exported, &mut types),
        Err(e) => problems.push(e),
    }
    let cluster = local.json("api/cluster");
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
    write_text(&file, &rules);
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
