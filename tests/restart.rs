//! A scheduler restart loses no persisted data. Real processes on
//! loopback: a scheduler and two workers (found through the scheduler
//! file), a persisted frame with a derived column and a frame sorted by a
//! shuffle; then `kill -9` of the scheduler and a new one started with the
//! same settings (its data directory holds the catalog and the cluster's
//! TLS identity; it listens on a new port, which the workers read from the
//! rewritten scheduler file). The workers keep their partitions, reconnect
//! and re-register them: `len`, `describe` and the sorted frame answer as
//! before, and the workers' metrics show that no Parquet was read again.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use common::exposition::{parse_exposition, value};
use common::*;

fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_stratus"))
        .parent()
        .unwrap()
        .join(name)
}

/// Child processes killed on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_scheduler(dir: &Path, log: &str, extra: &[&str]) -> Child {
    Command::new(bin("stratus-scheduler"))
        .args(extra)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--dashboard-address", "127.0.0.1:0"])
        .arg("--scheduler-file")
        .arg(dir.join("scheduler.json"))
        .arg("--data-dir")
        .arg(dir.join("state"))
        // Long enough that nothing is rebuilt while workers reconnect.
        .args(["--restore-grace", "2m"])
        .env_remove("STRATUS_CONFIG")
        .stderr(std::fs::File::create(dir.join(log)).unwrap())
        .spawn()
        .expect("start stratus-scheduler (cargo build --workspace --bins)")
}

fn scheduler_file(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&read_text(&dir.join("scheduler.json"))).unwrap()
}

fn cluster_json(dir: &Path) -> serde_json::Value {
    let dashboard = scheduler_file(dir)["dashboard"]
        .as_str()
        .unwrap()
        .to_string();
    get_json(&format!("{dashboard}api/cluster"))
}

/// Each worker's metrics URL, by name.
fn worker_metrics(dir: &Path) -> Vec<(String, String)> {
    let cluster = cluster_json(dir);
    let mut urls: Vec<(String, String)> = cluster["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            (
                w["name"].as_str().unwrap().to_string(),
                w["metrics_url"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    urls.sort();
    urls
}

/// Loads from Parquet each worker has run (tasks of kind `load`).
fn loads(urls: &[(String, String)]) -> Vec<f64> {
    urls.iter()
        .map(|(_, url)| {
            let text = http_get(url);
            let samples = parse_exposition(&text);
            samples
                .iter()
                .filter(|s| {
                    s.name == "stratus_worker_tasks_completed_total"
                        && s.labels.get("kind").is_some_and(|k| k == "load")
                })
                .map(|s| s.value)
                .sum()
        })
        .collect()
}

fn scheduler_metric(dir: &Path, name: &str) -> f64 {
    let dashboard = scheduler_file(dir)["dashboard"]
        .as_str()
        .unwrap()
        .to_string();
    let text = http_get(&format!("{dashboard}metrics"));
    value(&parse_exposition(&text), name, &[], &text)
}

/// Two workers of the scheduler in `dir` (1 thread, 2 GiB each), registered.
fn start_workers(dir: &Path, procs: &mut Procs) {
    let sf = dir.join("scheduler.json");
    for i in 0..2 {
        let child = Command::new(bin("stratus-worker"))
            .arg("--scheduler-file")
            .arg(&sf)
            .args(["--name", &format!("w{i}"), "--nthreads", "1"])
            .args(["--memory-limit", "2GiB", "--reconnect-timeout", "2m"])
            .arg("--data-root")
            .arg(dir)
            .env_remove("STRATUS_CONFIG")
            .stderr(std::fs::File::create(dir.join(format!("w{i}.log"))).unwrap())
            .spawn()
            .expect("start stratus-worker");
        procs.0.push(child);
    }
    eventually(Duration::from_secs(30), "two workers", || {
        ok(&sf, &["info"]).contains("workers=2").then_some(())
    });
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: plain kill(2) on our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

#[test]
fn a_worker_the_scheduler_removed_drops_its_stale_state_and_joins_fresh() {
    let dir = TempDir::new("removed");
    let data = dir.path().join("isd");
    stratus_engine::datagen::generate_isd(&stratus_engine::datagen::DatagenOptions {
        rows: 100_000,
        out: data.clone(),
        seed: 5,
    })
    .unwrap();
    let sf = dir.path().join("scheduler.json");
    let mut procs = Procs(vec![start_scheduler(
        dir.path(),
        "scheduler.log",
        &["--heartbeat-timeout", "2"],
    )]);
    eventually(Duration::from_secs(30), "the scheduler file", || {
        sf.exists().then_some(())
    });
    start_workers(dir.path(), &mut procs);
    ok(
        &sf,
        &["persist", &data.display().to_string(), "--as", "isd"],
    );
    let len = ok(&sf, &["len", "isd"]);
    let head = ok(&sf, &["head", "isd", "-n", "50"]);

    // w0 goes silent (alive, stopped): the scheduler removes it and
    // rebuilds what it held on w1.
    let w0 = procs.0[1].id();
    signal(w0, libc::SIGSTOP);
    eventually(
        Duration::from_secs(60),
        "w0 removed, its partitions rebuilt",
        || {
            let cluster = cluster_json(dir.path());
            let one = cluster["workers"].as_array().unwrap().len() == 1;
            let frame = &cluster["frames"][0];
            let whole = frame["partitions_held"] == frame["partitions"];
            let rebuilt =
                scheduler_metric(dir.path(), "stratus_scheduler_partitions_rebuilt_total") > 0.0;
            (one && whole && rebuilt && cluster["jobs_in_progress"] == 0).then_some(())
        },
    );

    // It wakes up: told it was removed by the same start of the scheduler,
    // it drops what it held and registers again, empty.
    signal(w0, libc::SIGCONT);
    eventually(Duration::from_secs(60), "w0 back", || {
        ok(&sf, &["info"]).contains("workers=2").then_some(())
    });
    let log = read_text(&dir.path().join("w0.log"));
    assert!(
        log.contains("the scheduler had removed it, so it dropped what it held and joined fresh"),
        "{log}"
    );
    let urls = worker_metrics(dir.path());
    let w0_url = &urls.iter().find(|(name, _)| name == "w0").expect("w0").1;
    let text = http_get(w0_url);
    assert_eq!(
        value(
            &parse_exposition(&text),
            "stratus_worker_persisted_partitions",
            &[],
            &text
        ),
        0.0
    );
    assert_eq!(ok(&sf, &["len", "isd"]), len);
    assert_eq!(ok(&sf, &["head", "isd", "-n", "50"]), head);
}

#[test]
fn persisted_and_sorted_frames_survive_a_killed_scheduler_without_reading_parquet_again() {
    let dir = TempDir::new("restart");
    let data = dir.path().join("isd");
    stratus_engine::datagen::generate_isd(&stratus_engine::datagen::DatagenOptions {
        rows: 200_000,
        out: data.clone(),
        seed: 11,
    })
    .unwrap();
    let sf = dir.path().join("scheduler.json");
    let mut procs = Procs(vec![start_scheduler(dir.path(), "scheduler-1.log", &[])]);
    eventually(Duration::from_secs(30), "the scheduler file", || {
        sf.exists().then_some(())
    });
    let first_address = scheduler_file(dir.path())["address"].clone();
    start_workers(dir.path(), &mut procs);

    let source = data.display().to_string();
    ok(
        &sf,
        &[
            "persist",
            &source,
            "--as",
            "isd",
            "--with-column",
            "date=date_trunc('day', datetime)",
        ],
    );
    // A shuffle sort (temperature does not range the monthly files).
    ok(
        &sf,
        &["sort", "isd", "--by", "temperature", "--as", "by_temp"],
    );
    let len = ok(&sf, &["len", "isd"]);
    let describe = ok(&sf, &["describe", "isd"]);
    let sorted_head = ok(&sf, &["head", "by_temp", "-n", "30"]);
    let sorted_len = ok(&sf, &["len", "by_temp"]);
    let list = ok(&sf, &["list"]);
    let urls = worker_metrics(dir.path());
    assert_eq!(urls.len(), 2);
    let loads_before = loads(&urls);
    assert!(loads_before.iter().sum::<f64>() > 0.0, "{loads_before:?}");

    // kill -9 the scheduler; the workers stay up and keep their partitions.
    kill9(procs.0[0].id());
    let _ = procs.0[0].wait();
    std::thread::sleep(Duration::from_millis(500));
    for worker in &mut procs.0[1..] {
        assert!(
            worker.try_wait().unwrap().is_none(),
            "a worker exited when the scheduler died"
        );
    }

    // The same settings again: the scheduler file is rewritten with a new
    // port, the same CA.
    let ca_before = scheduler_file(dir.path())["tls_ca"].clone();
    std::fs::remove_file(&sf).unwrap();
    procs.0[0] = start_scheduler(dir.path(), "scheduler-2.log", &[]);
    eventually(Duration::from_secs(30), "the new scheduler file", || {
        sf.exists().then_some(())
    });
    assert_eq!(
        scheduler_file(dir.path())["tls_ca"],
        ca_before,
        "same cluster CA"
    );
    assert_ne!(scheduler_file(dir.path())["address"], first_address);

    // Every partition comes back from the workers that kept it.
    eventually(Duration::from_secs(60), "the workers re-registered", || {
        let cluster = cluster_json(dir.path());
        let frames = cluster["frames"].as_array().unwrap();
        let whole = frames.len() == 2
            && frames
                .iter()
                .all(|f| f["partitions_held"] == f["partitions"]);
        whole.then_some(())
    });
    assert_eq!(ok(&sf, &["list"]), list);
    assert_eq!(ok(&sf, &["len", "isd"]), len);
    assert_eq!(ok(&sf, &["describe", "isd"]), describe);
    assert_eq!(ok(&sf, &["len", "by_temp"]), sorted_len);
    assert_eq!(ok(&sf, &["head", "by_temp", "-n", "30"]), sorted_head);

    // Nothing was read from Parquet again: no worker ran a load since, the
    // scheduler took every partition back and rebuilt none.
    let urls_after = worker_metrics(dir.path());
    assert_eq!(
        urls_after.iter().map(|u| &u.0).collect::<Vec<_>>(),
        urls.iter().map(|u| &u.0).collect::<Vec<_>>()
    );
    assert_eq!(loads(&urls_after), loads_before);
    let frames: Vec<serde_json::Value> = cluster_json(dir.path())["frames"]
        .as_array()
        .unwrap()
        .clone();
    let partitions: f64 = frames
        .iter()
        .map(|f| f["partitions"].as_f64().unwrap())
        .sum();
    assert_eq!(
        scheduler_metric(dir.path(), "stratus_scheduler_partitions_restored_total"),
        partitions
    );
    assert_eq!(
        scheduler_metric(dir.path(), "stratus_scheduler_partitions_rebuilt_total"),
        0.0
    );
    for (_, url) in &urls_after {
        let text = http_get(url);
        assert_eq!(
            value(
                &parse_exposition(&text),
                "stratus_worker_reconnects_total",
                &[],
                &text
            ),
            1.0
        );
    }
    let log = read_text(&dir.path().join("scheduler-2.log"));
    assert!(
        log.contains("2 frame(s) restored from the catalog"),
        "{log}"
    );

    // New work runs on the restored frames.
    ok(&sf, &["groupby", "isd", "--by", "date", "--agg", "mean"]);

    // A start with --no-restore (what `stratus local` does: its workers are
    // all new) forgets the catalog's frames: the workers drop what they kept.
    kill9(procs.0[0].id());
    let _ = procs.0[0].wait();
    std::fs::remove_file(&sf).unwrap();
    procs.0[0] = start_scheduler(dir.path(), "scheduler-3.log", &["--no-restore"]);
    eventually(Duration::from_secs(30), "the third scheduler file", || {
        sf.exists().then_some(())
    });
    eventually(
        Duration::from_secs(60),
        "the workers back, holding nothing",
        || {
            let cluster = cluster_json(dir.path());
            let workers = cluster["workers"].as_array().unwrap();
            let empty = workers
                .iter()
                .all(|w| w["persisted_partitions"].as_u64() == Some(0));
            (workers.len() == 2 && empty).then_some(())
        },
    );
    assert!(!ok(&sf, &["list"]).contains("isd"));
}

#[test]
fn a_request_in_flight_when_the_scheduler_dies_fails_naming_the_restart() {
    let dir = TempDir::new("inflight");
    let sf = dir.path().join("scheduler.json");
    let mut procs = Procs(vec![start_scheduler(dir.path(), "scheduler.log", &[])]);
    eventually(Duration::from_secs(30), "the scheduler file", || {
        sf.exists().then_some(())
    });
    // No worker: the request waits (deterministically in flight).
    let source = dir.path().join("nothing-yet").display().to_string();
    let target = stratus::Locator {
        scheduler_file: Some(sf.clone()),
        ..Default::default()
    }
    .resolve()
    .expect("the scheduler file names a cluster");
    let client = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async move {
                let client = stratus::Client::connect(&target).await.unwrap();
                client.len(&source).await
            })
    });
    eventually(Duration::from_secs(30), "the request waiting", || {
        let dashboard = scheduler_file(dir.path())["dashboard"]
            .as_str()
            .unwrap()
            .to_string();
        let jobs = get_json(&format!("{dashboard}api/cluster"))["jobs_in_progress"].clone();
        (jobs == 1).then_some(())
    });
    kill9(procs.0[0].id());
    let error = client
        .join()
        .unwrap()
        .expect_err("the scheduler died")
        .to_string();
    assert!(
        error.contains("the connection was lost while 'len' ran")
            && error.contains("restarted")
            && error.contains("run it again"),
        "{error}"
    );
    let _ = procs.0[0].wait();
}
