//! Spilling to disk, with real processes: a frame twice the cluster's memory
//! limit persists on a 2-worker `stratus local` cluster (each worker keeps
//! what fits under its target in RAM and writes the rest to its spill
//! directory as Arrow IPC files), and every step of the workflow on it, a
//! shuffle sort included (its deliveries spill too), gives the answer a
//! cluster without a limit gives. Unpersisting deletes the spill files; a
//! spill directory that fills up fails the request clearly.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;

/// `stratus ARGS`, required to succeed.
fn run(local: &Local, args: &[&str]) -> String {
    local
        .client(args)
        .unwrap_or_else(|e| panic!("{e}\n{}", local.log_tail()))
}

/// The workflow's answers on `local`, persisting `source` (writing to `out`).
fn workflow(local: &Local, source: &str, out: &Path) -> Vec<(String, String)> {
    let out = out.display().to_string();
    let steps: Vec<Vec<&str>> = vec![
        vec![
            "persist",
            source,
            "--as",
            "isd",
            "--with-column",
            "date=date_trunc('day', datetime)",
        ],
        vec!["len", "isd"],
        vec!["describe", "isd", "--json"],
        vec!["groupby", "isd", "--by", "date", "--agg", "mean", "--json"],
        vec![
            "groupby",
            "isd",
            "--by",
            "year,month",
            "--agg",
            "count",
            "--json",
        ],
        vec!["sort", "isd", "--by", "date", "--as", "by_date"],
        vec![
            "head",
            "by_date",
            "-n",
            "5",
            "--columns",
            "date,temperature",
        ],
        vec!["describe", "by_date", "--json"],
        // A shuffle: every worker receives its ranges, more than its limit.
        vec!["sort", "isd", "--by", "temperature", "--as", "by_temp"],
        vec!["head", "by_temp", "-n", "5", "--columns", "temperature"],
        vec!["describe", "by_temp", "--json"],
        vec!["write", "isd", &out, "--partition-by", "year,month"],
    ];
    steps
        .iter()
        .map(|args| {
            let answer = run(local, args);
            // The write's answer names its own output directory; sizes
            // depend on where buffers came from (see `without_sizes`).
            let answer = without_sizes(&answer.replace(out.as_str(), "OUT"));
            (args.join(" "), answer)
        })
        .collect()
}

/// The total of `stratus memory NAME --json` (bytes over every column).
fn memory_usage(local: &Local, name: &str) -> f64 {
    let table: serde_json::Value =
        serde_json::from_str(&run(local, &["memory", name, "--json"])).expect("JSON");
    let total: f64 = table["data"]
        .as_array()
        .expect("rows")
        .iter()
        .flat_map(|row| row.as_array().cloned().unwrap_or_default())
        .filter_map(|v| v.as_f64())
        .sum();
    assert!(total > 0.0, "{table}");
    total
}

/// The value of an unlabelled metric in a Prometheus exposition (0 if absent).
fn metric_value(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// 400,000 sample rows (about 68 MB of Arrow buffers) in `dir`/isd.
fn sample(dir: &TempDir) -> String {
    let out = dir.path().join("isd");
    stratus_engine::datagen::generate_isd(&stratus_engine::datagen::DatagenOptions {
        rows: 400_000,
        out: out.clone(),
        seed: 17,
    })
    .unwrap();
    out.display().to_string()
}

/// The spill files under `dir` (recursively).
fn spill_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return found;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            found.extend(spill_files(&path));
        } else if path.extension().is_some_and(|e| e == "arrows") {
            found.push(path);
        }
    }
    found
}

#[test]
fn a_frame_twice_the_memory_limit_persists_spilled_and_answers_every_step_as_without_a_limit() {
    let data = TempDir::new("spill-data");
    let source = sample(&data);

    // Without a limit: the answers to match.
    let (expected, memory_in_ram) = {
        let local = start_local(2, &["--memory-limit", "0"]);
        eventually(Duration::from_secs(60), "two workers", || {
            (local.json("api/cluster")["workers"].as_array()?.len() == 2).then_some(())
        });
        let answers = workflow(&local, &source, &data.path().join("out-unlimited"));
        (answers, memory_usage(&local, "isd"))
    };

    // 400,000 rows hold about 68 MB of Arrow buffers: 2 x 17 MB is half.
    // A shuffle sends 4 MiB of its input at a time (several chunks each).
    let limit: u64 = 17 << 20;
    let local = start_local_env(
        2,
        &["--memory-limit", &limit.to_string()],
        &[("STRATUS_WORKER__SHUFFLE_CHUNK_BYTES", "4MiB")],
    );
    eventually(Duration::from_secs(60), "two workers", || {
        (local.json("api/cluster")["workers"].as_array()?.len() == 2).then_some(())
    });
    let got = workflow(&local, &source, &data.path().join("out-limited"));
    for ((step, want), (_, have)) in expected.iter().zip(&got) {
        if let Err(diff) = same_answer(want, have) {
            panic!("`stratus {step}` answered differently when spilling:\n{diff}");
        }
    }
    // memory_usage of the frame, mostly on disk, is what its columns hold
    // (each column its own slices of the spill files' mappings): near what
    // the same frame holds in RAM without a limit, not a file per column.
    let memory_spilled = memory_usage(&local, "isd");
    assert!(
        memory_spilled > memory_in_ram * 0.7 && memory_spilled < memory_in_ram * 1.3,
        "memory_usage: {memory_spilled} bytes spilled, {memory_in_ram} in RAM"
    );

    // The workers spilled, and what stays in RAM is near the target.
    let cluster = local.json("api/cluster");
    let workers = cluster["workers"].as_array().unwrap().clone();
    let spilled: u64 = workers
        .iter()
        .map(|w| w["spilled_bytes"].as_u64().unwrap())
        .sum();
    let persisted: u64 = workers
        .iter()
        .map(|w| w["persisted_bytes"].as_u64().unwrap())
        .sum();
    assert!(
        persisted > 3 * 2 * limit * 9 / 10,
        "the three frames hold about six times the cluster's limit: {persisted}"
    );
    assert!(
        spilled > persisted / 2,
        "more than half of it is on disk: {spilled} of {persisted}\n{cluster:#}"
    );
    // Once idle (a heartbeat after the last task: running tasks count the
    // working memory they reserve), what each holds in RAM is under its limit.
    eventually(
        Duration::from_secs(10),
        "RAM under the limit once idle",
        || {
            local.json("api/cluster")["workers"]
                .as_array()?
                .iter()
                .all(|w| w["memory_used"].as_u64().is_some_and(|used| used <= limit))
                .then_some(())
        },
    );
    for w in &workers {
        let metrics = http_get(w["metrics_url"].as_str().unwrap());
        assert!(
            metric_value(&metrics, "stratus_worker_spill_bytes_written_total") > 0.0
                && metric_value(&metrics, "stratus_worker_spill_bytes_read_total") > 0.0,
            "spill and unspill counters move:\n{metrics}"
        );
        // The worker measured what its loads allocated (the counting
        // allocator is installed): at least their partitions' bytes.
        let loads = metric_value(
            &metrics,
            "stratus_worker_task_peak_working_bytes_count{kind=\"load\"}",
        );
        let load_bytes = metric_value(
            &metrics,
            "stratus_worker_task_peak_working_bytes_sum{kind=\"load\"}",
        );
        assert!(
            loads > 0.0 && load_bytes / loads > 100_000.0,
            "loads measured: {loads} tasks, {load_bytes} bytes\n{metrics}"
        );
    }
    let spill_dir = local.dir.path().join("data").join("spill");
    assert!(!spill_files(&spill_dir).is_empty());

    // Dropping the frames deletes their files.
    run(&local, &["unpersist", "by_date"]);
    run(&local, &["unpersist", "by_temp"]);
    run(&local, &["unpersist", "isd"]);
    eventually(Duration::from_secs(30), "the spill files deleted", || {
        spill_files(&spill_dir).is_empty().then_some(())
    });
}

/// Wait until the cluster holds no frame and no partition (a failed
/// persist released what it loaded).
fn nothing_persisted(local: &Local) {
    eventually(Duration::from_secs(30), "the failed frame released", || {
        let cluster = local.json("api/cluster");
        let frames = cluster["frames"].as_array()?.len();
        let held: u64 = cluster["workers"]
            .as_array()?
            .iter()
            .map(|w| w["persisted_partitions"].as_u64().unwrap_or(1))
            .sum();
        (frames == 0 && held == 0).then_some(())
    });
}

/// A tmpfs (or a read-only view) mounted for the test, unmounted when
/// dropped.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    /// `dir` turns read-only: a read-only bind mount of it over itself
    /// (files already open stay as they were: a worker's lock is held on).
    fn read_only(dir: &Path) -> Result<Tmpfs, String> {
        let mount = |args: &[&str]| -> Result<(), String> {
            let status = std::process::Command::new("mount")
                .args(args)
                .arg(dir)
                .arg(dir)
                .status()
                .map_err(|e| e.to_string())?;
            status
                .success()
                .then_some(())
                .ok_or_else(|| format!("mount {args:?} failed: {status}"))
        };
        mount(&["--bind"])?;
        let guard = Tmpfs(dir.to_path_buf());
        mount(&["-o", "remount,bind,ro"])?;
        Ok(guard)
    }

    fn mount(at: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(at).map_err(|e| e.to_string())?;
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .map_err(|e| e.to_string())?;
        status
            .success()
            .then(|| Tmpfs(at.to_path_buf()))
            .ok_or_else(|| format!("mount failed: {status}"))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn a_spill_directory_that_fills_up_fails_the_persist_clearly_and_leaves_nothing_behind() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED spill ENOSPC: needs root to mount a tmpfs (CI runs it as root)");
        return;
    }
    // With the default disk reserve the spill stops short of the disk's end;
    // without one it runs into ENOSPC. Either way the error says why.
    fill_the_spill_disk(&[], "spill disk reserve reached");
    fill_the_spill_disk(
        &[("STRATUS_WORKER__SPILL_DISK_RESERVE", "0")],
        "No space left on device",
    );
}

/// Persist a frame twice the memory limit with 4 MB to spill to, under
/// `env`: the persist fails with an error containing `why`, nothing of it
/// stays, and the cluster goes on.
fn fill_the_spill_disk(env: &[(&str, &str)], why: &str) {
    let data = TempDir::new("spill-full");
    let source = sample(&data);
    // The workers' spill directory: a 4 MB disk, far too small.
    let data_dir = data.path().join("cluster");
    let _full = Tmpfs::mount(&data_dir.join("spill"), "4m").expect("mount a tmpfs");
    let limit: u64 = 17 << 20;
    let local = start_local_env(
        2,
        &[
            "--memory-limit",
            &limit.to_string(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        env,
    );
    eventually(Duration::from_secs(60), "two workers", || {
        (local.json("api/cluster")["workers"].as_array()?.len() == 2).then_some(())
    });
    let error = local
        .client(&["persist", &source, "--as", "isd"])
        .expect_err("a frame twice the memory with 4 MB to spill to can not persist");
    eprintln!("the persist failed as it should: {error}");
    assert!(
        error.contains("memory limit exceeded") && error.contains(why),
        "the error says why ({why}): {error}"
    );
    // Nothing of it stays: no frame, no partition, no spill file.
    nothing_persisted(&local);
    eventually(Duration::from_secs(30), "the spill files deleted", || {
        spill_files(&data_dir.join("spill"))
            .is_empty()
            .then_some(())
    });
    // The cluster goes on: a frame that fits persists and answers.
    run(
        &local,
        &["persist", &source, "--as", "t", "--columns", "temperature"],
    );
    assert_eq!(run(&local, &["len", "t"]).trim(), "400000");
}

#[test]
fn a_spill_directory_that_turns_read_only_fails_the_persist_clearly_and_spilling_resumes_after() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED read-only spill directory: needs root to mount (CI runs it as root)");
        return;
    }
    let data = TempDir::new("spill-ro");
    let source = sample(&data);
    let data_dir = data.path().join("cluster");
    let limit: u64 = 17 << 20;
    // Spill files compressed (lz4) here: the same path, and a read back of
    // compressed files below (a sort: its shuffle sends 4 MiB of input at a
    // time, as in the first test, so a delivery fits under the limit).
    let local = start_local_env(
        2,
        &[
            "--memory-limit",
            &limit.to_string(),
            "--data-dir",
            data_dir.to_str().unwrap(),
        ],
        &[
            ("STRATUS_WORKER__SPILL_COMPRESSION", "lz4"),
            ("STRATUS_WORKER__SHUFFLE_CHUNK_BYTES", "4MiB"),
        ],
    );
    eventually(Duration::from_secs(60), "two workers", || {
        (local.json("api/cluster")["workers"].as_array()?.len() == 2).then_some(())
    });
    // Each worker's own directory turns read-only under it.
    let spill = data_dir.join("spill");
    let views: Vec<Tmpfs> = ["local-0", "local-1"]
        .iter()
        .map(|w| Tmpfs::read_only(&spill.join(w)).expect("a read-only bind mount"))
        .collect();
    let error = local
        .client(&["persist", &source, "--as", "isd"])
        .expect_err("a frame twice the memory with a read-only spill directory can not persist");
    eprintln!("the persist failed as it should: {error}");
    assert!(
        error.contains("memory limit exceeded") && error.contains("Read-only file system"),
        "the error says why: {error}"
    );
    nothing_persisted(&local);
    // Writable again: spilling is tried again a few heartbeats later, and the
    // same persist succeeds, spilled, with every row.
    drop(views);
    let mut attempts = 0;
    eventually(
        Duration::from_secs(60),
        "the persist once spilling resumed",
        || {
            attempts += 1;
            local.client(&["persist", &source, "--as", "isd"]).ok()
        },
    );
    eprintln!("persisted after {attempts} attempt(s)");
    assert_eq!(run(&local, &["len", "isd"]).trim(), "400000");
    // Part of it is on disk (as the next heartbeats tell).
    eventually(Duration::from_secs(30), "spilled bytes reported", || {
        let spilled: u64 = local.json("api/cluster")["workers"]
            .as_array()?
            .iter()
            .map(|w| w["spilled_bytes"].as_u64().unwrap_or(0))
            .sum();
        (spilled > 0).then_some(())
    });
    // The files are compressed Arrow IPC, and read back: a sort reads every
    // partition (decompressing the spilled ones) and sends its ranges to
    // the peers uncompressed (a peer would refuse compressed ones).
    let files = spill_files(&data_dir.join("spill"));
    let compressed = files.iter().any(|f| {
        std::fs::read(f)
            .ok()
            .and_then(|bytes| stratus_protocol::ipc::inflated_bytes(&bytes).ok())
            .is_some_and(|inflated| inflated > 0)
    });
    assert!(compressed, "lz4 spill files: {files:?}");
    run(&local, &["sort", "isd", "--by", "temperature", "--as", "s"]);
    assert_eq!(run(&local, &["len", "s"]).trim(), "400000");
}
