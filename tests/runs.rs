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
        scheduler: None,
        tls_ca: None,
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
