//! Retiring workers end to end (real processes, QUIC on loopback):
//! `stratus retire` and SIGTERM move a worker's persisted partitions to the
//! others over the peer links (no Parquet is read again: the survivors'
//! `stratus_worker_parquet_rows_read_total` stays put), the worker exits 0
//! (`stratus local` reports a normal exit), and the frame answers as before;
//! a retire with no room elsewhere is refused; `stratus local --adaptive`
//! starts a worker when the persisted data asks for one and retires it when
//! the data is gone.

mod common;

use std::time::Duration;

use common::*;

const ROWS: u64 = 200_000;

fn isd(tag: &str, rows: u64) -> (TempDir, String) {
    let data = TempDir::new(tag);
    stratus_engine::datagen::generate_isd(&stratus_engine::datagen::DatagenOptions {
        rows,
        out: data.path().to_path_buf(),
        seed: 11,
    })
    .unwrap();
    let src = data.path().display().to_string();
    (data, src)
}

/// Every registered worker: name -> (metrics URL, persisted partitions).
fn workers(local: &Local) -> Vec<(String, String, u64)> {
    let cluster = local.json("api/cluster");
    cluster["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            (
                w["name"].as_str().unwrap_or_default().to_string(),
                w["metrics_url"].as_str().unwrap_or_default().to_string(),
                w["persisted_partitions"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// `stratus_worker_parquet_rows_read_total` of a worker.
fn parquet_rows_read(metrics_url: &str) -> u64 {
    let text = http_get(metrics_url);
    text.lines()
        .find_map(|l| l.strip_prefix("stratus_worker_parquet_rows_read_total "))
        .unwrap_or_else(|| panic!("no parquet rows counter in {metrics_url}"))
        .trim()
        .parse::<f64>()
        .expect("a number") as u64
}

fn rows_read_by(local: &Local) -> Vec<(String, u64)> {
    workers(local)
        .into_iter()
        .map(|(name, url, _)| (name, parquet_rows_read(&url)))
        .collect()
}

fn local_log(local: &Local) -> String {
    std::fs::read_to_string(local.dir.path().join("local.log")).unwrap_or_default()
}

fn exited_normally(local: &Local, name: &str) {
    let line = format!("worker {name} (pid");
    eventually(
        Duration::from_secs(60),
        &format!("{name} to exit with status 0"),
        || {
            local_log(local)
                .lines()
                .any(|l| l.contains(&line) && l.contains("exited normally"))
                .then_some(())
        },
    );
}

fn sigterm(pid: u32) {
    // SAFETY: plain kill(2).
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

#[test]
fn retire_and_sigterm_move_partitions_and_nothing_is_read_again() {
    let (_data, src) = isd("retire-data", ROWS);
    let local = start_local(3, &["--memory-limit", "1GiB"]);
    let persisted = local.client(&["persist", &src, "--as", "isd"]).unwrap();
    assert!(persisted.contains("isd"), "{persisted}");
    let len = local.client(&["len", "isd"]).unwrap();
    let describe = local.client(&["describe", "isd"]).unwrap();
    let before = rows_read_by(&local);
    assert_eq!(before.iter().map(|w| w.1).sum::<u64>(), ROWS, "{before:?}");
    let holds = |name: &str| {
        workers(&local)
            .into_iter()
            .find(|w| w.0 == name)
            .map_or(0, |w| w.2)
    };
    assert!(holds("local-1") > 0 && holds("local-2") > 0);

    // `stratus retire`: local-1's partitions move, it exits 0.
    let out = local.client(&["retire", "local-1"]).unwrap();
    assert!(
        out.starts_with("retired local-1: ")
            && out.contains("partitions")
            && out.contains(" to local-"),
        "{out}"
    );
    exited_normally(&local, "local-1");
    eventually(Duration::from_secs(30), "two workers left", || {
        (workers(&local).len() == 2).then_some(())
    });
    let frames = local.client(&["list"]).unwrap();
    assert_eq!(local.client(&["len", "isd"]).unwrap(), len);
    assert_eq!(local.client(&["describe", "isd"]).unwrap(), describe);
    let after = rows_read_by(&local);
    for (name, rows) in &after {
        let was = before.iter().find(|w| &w.0 == name).map(|w| w.1);
        assert_eq!(Some(*rows), was, "{name} read no Parquet again ({frames})");
    }

    // SIGTERM to a connected worker drains it the same way.
    let pid = local.worker_pid("local-2");
    sigterm(pid);
    exited_normally(&local, "local-2");
    eventually(Duration::from_secs(30), "one worker left", || {
        (workers(&local).len() == 1).then_some(())
    });
    assert_eq!(local.client(&["len", "isd"]).unwrap(), len);
    assert_eq!(local.client(&["describe", "isd"]).unwrap(), describe);
    let last = rows_read_by(&local);
    assert_eq!(last.len(), 1);
    assert_eq!(
        Some(last[0].1),
        before.iter().find(|w| w.0 == last[0].0).map(|w| w.1),
        "the survivor read no Parquet again"
    );
    assert!(holds("local-0") > 0);
}

#[test]
fn a_retire_without_room_elsewhere_is_refused_naming_the_bytes() {
    let (_data, src) = isd("retire-full", 50_000);
    // No spilling, so that the workers fill up.
    let local = start_local(2, &["--memory-limit", "24MiB", "--spill-dir", "none"]);
    // Fill the workers until a persist no longer fits.
    let mut kept = 0;
    for i in 0..40 {
        match local.client(&["persist", &src, "--as", &format!("isd{i}")]) {
            Ok(_) => kept += 1,
            Err(e) => {
                assert!(e.contains("memory limit"), "{e}");
                break;
            }
        }
    }
    assert!(kept > 0, "nothing fitted at all");
    let error = local.client(&["retire", "local-1"]).unwrap_err();
    assert!(
        error.contains("cannot retire 'local-1'")
            && error.contains("bytes")
            && error.contains("--force"),
        "{error}"
    );
    // Still a worker of the cluster, taking work.
    assert_eq!(workers(&local).len(), 2);
    assert!(local.client(&["len", "isd0"]).is_ok());
}

#[test]
fn local_adaptive_starts_a_worker_for_persisted_data_and_retires_it_when_idle() {
    let (_data, src) = isd("retire-adaptive", 50_000);
    let local = start_local(
        1,
        &[
            "--adaptive",
            "--minimum-workers",
            "1",
            "--maximum-workers",
            "3",
            "--memory-limit",
            "64MiB",
        ],
    );
    // Persisted data over 80% of one worker's limit asks for another.
    let mut i = 0;
    eventually(Duration::from_secs(120), "a second worker", || {
        let target = local.json("api/adaptive")["target"].as_u64().unwrap_or(0);
        if target < 2 && i < 20 {
            let _ = local.client(&["persist", &src, "--as", &format!("isd{i}")]);
            i += 1;
        }
        (workers(&local).len() >= 2).then_some(())
    });
    assert!(
        local_log(&local).contains("adaptive: target"),
        "{}",
        local.log_tail()
    );
    // No data, no work: the target drops to the minimum, and after a few
    // polls the newest worker is retired (it exits 0).
    for j in 0..i {
        let _ = local.client(&["unpersist", &format!("isd{j}")]);
    }
    eventually(Duration::from_secs(60), "back to one worker", || {
        (workers(&local).len() == 1).then_some(())
    });
    assert!(
        local_log(&local).contains("adaptive: retired local-"),
        "{}",
        local.log_tail()
    );
    exited_normally(&local, "local-1");
}
