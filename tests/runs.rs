//! Run logging against a real local cluster: commands with `--run` log their
//! steps, `stratus plot --log` stores PNGs with the run, the scheduler serves
//! them over `/api/runs` and exports them to Prometheus, refuses bad names and
//! sizes, and keeps everything across a restart on the same `--data-dir`.

mod common;

use common::*;

const PNG_SIGNATURE: &[u8] = b"\x89PNG\r\n\x1a\n";

fn client_for(local: &Local, run: &str) -> (tokio::runtime::Runtime, stratus::Client) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let target = stratus::Locator {
        scheduler_file: Some(local.file.clone()),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let client = runtime
        .block_on(stratus::Client::connect_run(&target, run))
        .unwrap();
    (runtime, client)
}

#[test]
fn runs_log_steps_and_plots_and_survive_a_restart() {
    let data = TempDir::new("runs-data");
    let data_dir = data.path().display().to_string();
    let plots = TempDir::new("runs-plots");
    let local = start_local(2, &["--data-dir", &data_dir]);
    let f = local.file.as_path();

    ok(
        f,
        &[
            "--run",
            "nightly",
            "persist",
            &fixture(),
            "--as",
            "isd",
            "--with-column",
            "date=date_trunc('day', datetime)",
        ],
    );
    let out = ok(
        f,
        &[
            "--run",
            "nightly",
            "plot",
            "isd",
            "--columns",
            "temperature",
            "--out",
            &plots.path().display().to_string(),
            "--log",
        ],
    );
    let written: Vec<&str> = out.lines().collect();
    assert_eq!(written.len(), 2, "{out}");
    assert!(written[0].ends_with("temperature.png") && written[1].ends_with("stations.png"));
    // Another run, by environment variable this time.
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_stratus"))
        .arg("--scheduler-file")
        .arg(f)
        .args(["len", "isd"])
        .env("STRATUS_RUN", "adhoc")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));

    // The list, newest first.
    let runs = local.json("api/runs");
    let names: Vec<&str> = runs
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["adhoc", "nightly"], "{runs}");
    let nightly = &runs[1];
    let id = nightly["id"].as_str().unwrap().to_string();
    assert_eq!(nightly["artifacts"], 2);
    assert!(nightly["started"].as_str().unwrap().starts_with("20"));

    // Its metrics: every step's time, and the rows it persisted.
    let detail = local.json(&format!("api/runs/{id}"));
    let latest = &detail["latest"];
    assert_eq!(latest["persist.rows"], 60000.0, "{detail}");
    for step in ["persist.seconds", "groupby.seconds", "plot.seconds"] {
        assert!(latest[step].as_f64().unwrap() > 0.0, "{step} in {detail}");
    }
    let artifacts: Vec<&str> = detail["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(artifacts, ["temperature.png", "stations.png"]);

    // The files, byte for byte what the client wrote.
    let on_disk = std::fs::read(plots.path().join("temperature.png")).unwrap();
    let url = format!(
        "{}api/runs/{id}/artifacts/temperature.png",
        local.dashboard()
    );
    let png = http_get_raw(&url);
    assert_eq!(png.status, 200);
    assert_eq!(png.content_type, "image/png");
    assert!(png.body.starts_with(PNG_SIGNATURE));
    assert_eq!(png.body, on_disk);

    // Bad names and missing files are 404s, not reads outside the run.
    for bad in [
        "api/runs/1/artifacts/..%2F..%2Frun.json",
        "api/runs/1/artifacts/nothing.png",
        "api/runs/99",
    ] {
        let status = http_get_raw(&format!("{}{bad}", local.dashboard())).status;
        assert_eq!(status, 404, "{bad}");
    }

    // Run metrics in Prometheus, labelled by run.
    let metrics = http_get(&format!("{}metrics", local.dashboard()));
    assert!(
        metrics.contains("stratus_run_metric{metric=\"persist.rows\",run=\"nightly\"} 60000"),
        "{metrics}"
    );
    assert!(metrics.contains("stratus_run_artifacts{run=\"nightly\"} 2"));
    assert!(metrics.contains("stratus_runs 2"));

    // The client API refuses bad artifacts with clear errors, and logs numbers.
    let (runtime, client) = client_for(&local, "nightly");
    for (name, data, expect) in [
        ("../escape.png", vec![1u8], "not allowed"),
        ("a/b.png", vec![1u8], "not allowed"),
        ("huge.png", vec![0u8; 33 << 20], "limit"),
    ] {
        let e = runtime
            .block_on(client.log_artifact(name, "image/png", data))
            .unwrap_err()
            .to_string();
        assert!(e.contains(expect), "{name}: {e}");
    }
    let logged = runtime
        .block_on(client.log_metrics(&[("accuracy", 0.93)]))
        .unwrap();
    assert_eq!(logged, id);
    runtime.block_on(client.close());
    drop(runtime);

    // Restart on the same data directory: the run is still there, whole.
    drop(local);
    let local = start_local(1, &["--data-dir", &data_dir]);
    let again = local.json(&format!("api/runs/{id}"));
    assert_eq!(again["name"], "nightly");
    assert_eq!(again["latest"]["accuracy"], 0.93);
    assert_eq!(
        again["metrics"],
        detail["metrics"]
            .as_array()
            .map(|m| {
                let mut m = m.clone();
                m.push(again["metrics"].as_array().unwrap().last().unwrap().clone());
                serde_json::Value::Array(m)
            })
            .unwrap()
    );
    let png = http_get_raw(&format!(
        "{}api/runs/{id}/artifacts/temperature.png",
        local.dashboard()
    ));
    assert_eq!(png.body, on_disk);
    let metrics = http_get(&format!("{}metrics", local.dashboard()));
    assert!(metrics.contains("stratus_run_metric{metric=\"accuracy\",run=\"nightly\"} 0.93"));
}

/// `stratus ARGS` against `local`, with `STRATUS_RUN` set to `run` or removed.
fn stratus_env(local: &Local, run: Option<&str>, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_stratus"));
    command
        .arg("--scheduler-file")
        .arg(&local.file)
        .args(args)
        .env_remove("STRATUS_SCHEDULER")
        .env_remove("STRATUS_TLS_CA");
    match run {
        Some(run) => command.env("STRATUS_RUN", run),
        None => command.env_remove("STRATUS_RUN"),
    };
    command.output().unwrap()
}

fn run_names(local: &Local) -> Vec<String> {
    local
        .json("api/runs")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect()
}

/// A CLI session touching every kind of command (and every one that logs).
fn session(fixture: &str, plots: &str) -> Vec<Vec<String>> {
    let session: Vec<Vec<&str>> = vec![
        vec!["info"],
        vec!["len", fixture],
        vec![
            "persist",
            fixture,
            "--as",
            "isd",
            "--with-column",
            "date=date_trunc('day', datetime)",
        ],
        vec!["len", "isd"],
        vec!["head", "isd", "-n", "2"],
        vec!["list"],
        vec!["describe", "isd", "--columns", "temperature"],
        vec!["groupby", "isd", "--by", "year", "--agg", "count"],
        vec!["plot", "isd", "--columns", "temperature", "--out", plots],
        vec!["unpersist", "isd"],
    ];
    session
        .into_iter()
        .map(|args| args.into_iter().map(str::to_string).collect())
        .collect()
}

fn strs(args: &[String]) -> Vec<&str> {
    args.iter().map(String::as_str).collect()
}

#[test]
fn commands_without_a_run_create_no_run_and_logging_asks_for_one() {
    let local = start_local(2, &[]);
    let plots = TempDir::new("no-run-plots");
    let plots = plots.path().display().to_string();
    let fixture = fixture();
    // No run named: every command works, and no run is created.
    for args in &session(&fixture, &plots) {
        let o = stratus_env(&local, None, &strs(args));
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(local.json("api/runs"), serde_json::json!([]));
    // A blank STRATUS_RUN names no run either.
    let o = stratus_env(&local, Some(" "), &["len", &fixture]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(local.json("api/runs"), serde_json::json!([]));

    // Logging needs a run: a clear error, from the CLI and from the scheduler.
    let o = stratus_env(
        &local,
        None,
        &[
            "plot",
            "isd",
            "--columns",
            "temperature",
            "--out",
            &plots,
            "--log",
        ],
    );
    assert!(!o.status.success() && o.stdout.is_empty());
    let e = stderr(&o);
    assert!(e.contains("--run NAME") && e.contains("STRATUS_RUN"), "{e}");
    let (runtime, client) = {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let target = stratus::Locator {
            scheduler_file: Some(local.file.clone()),
            ..Default::default()
        }
        .resolve()
        .unwrap();
        let client = runtime
            .block_on(stratus::Client::connect_with(&target, None))
            .unwrap();
        (runtime, client)
    };
    assert_eq!(client.run(), None);
    for e in [
        runtime
            .block_on(client.log_metrics(&[("accuracy", 0.9)]))
            .unwrap_err()
            .to_string(),
        runtime
            .block_on(client.log_artifact("a.png", "image/png", b"\x89PNG".to_vec()))
            .unwrap_err()
            .to_string(),
    ] {
        assert!(
            e.contains("no run") && e.contains("--run NAME") && e.contains("STRATUS_RUN"),
            "{e}"
        );
    }
    runtime.block_on(client.close());
    drop(runtime);
    assert_eq!(local.json("api/runs"), serde_json::json!([]));
}

#[test]
fn every_command_logs_to_the_run_named_by_flag_or_environment() {
    let local = start_local(2, &[]);
    let plots = TempDir::new("run-r-plots");
    let plots = plots.path().display().to_string();
    let fixture = fixture();
    // The same session with --run R: every command lands in R, unpersist too.
    for args in &session(&fixture, &plots) {
        let args: Vec<&str> = ["--run", "R"].into_iter().chain(strs(args)).collect();
        let o = stratus_env(&local, None, &args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    // And by STRATUS_RUN, for the commands that connected without it.
    for args in [
        vec!["info"],
        vec!["persist", &fixture, "--as", "isd2"],
        vec!["list"],
        vec!["unpersist", "isd2"],
    ] {
        let o = stratus_env(&local, Some("R"), &args);
        assert!(o.status.success(), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(run_names(&local), ["R"]);
    let detail = local.json("api/runs/R");
    let count = |name: &str| {
        detail["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["name"] == name)
            .count()
    };
    assert_eq!(count("unpersist.seconds"), 2, "{detail}");
    assert_eq!(count("persist.seconds"), 2, "{detail}");
    assert_eq!(count("len.seconds"), 2, "{detail}");
    assert_eq!(count("describe.seconds"), 1, "{detail}");
    assert_eq!(count("groupby.seconds"), 3, "{detail}"); // the plot's group-by too
    assert_eq!(detail["latest"]["persist.rows"], 60000.0, "{detail}");
}
