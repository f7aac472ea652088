//! The `stratus` command line against a real local cluster: `stratus local`
//! as a process, real QUIC on loopback, the pyarrow-written fixture.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Rows in the Parquet files under `dir`, counted from their footers here.
fn rows_in(dir: &str) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            total += rows_in(&path.display().to_string());
        } else if path.extension().is_some_and(|e| e == "parquet") {
            let file = std::fs::File::open(&path).unwrap();
            let reader = parquet::file::reader::SerializedFileReader::new(file).unwrap();
            total += parquet::file::reader::FileReader::metadata(&reader)
                .file_metadata()
                .num_rows() as u64;
        }
    }
    total
}

fn cluster_json(file: &std::path::Path) -> serde_json::Value {
    let sf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
    let url = format!("{}api/cluster", sf["dashboard"].as_str().unwrap());
    serde_json::from_str(&http_get(&url)).unwrap()
}

#[test]
fn cli_commands_print_only_their_result_and_say_what_they_refuse() {
    let local = start_local(2, &[]);
    let f = local.file.as_path();

    // The scheduler file is written only once every worker has registered.
    let info = ok(f, &["info"]);
    assert!(
        info.starts_with("<Client: quic://127.0.0.1:")
            && info.contains(" workers=2 threads=2 memory="),
        "{info}"
    );

    // stdout carries the result alone.
    assert_eq!(ok(f, &["len", &fixture()]), format!("{FIXTURE_ROWS}\n"));
    let glob = format!("{}/year=*/month=*/*.parquet", fixture());
    assert_eq!(ok(f, &["len", &glob]), format!("{FIXTURE_ROWS}\n"));
    let one_year = format!("{}/year=2019", fixture());
    let year_rows = rows_in(&one_year);
    assert_eq!(ok(f, &["len", &one_year]), format!("{year_rows}\n"));

    let out = ok(f, &["persist", &fixture(), "--as", "isd"]);
    assert!(out.starts_with("isd: 60000 rows, 144 partitions"), "{out}");
    assert_eq!(ok(f, &["len", "isd"]), format!("{FIXTURE_ROWS}\n"));

    let err = fails(f, &["persist", &fixture(), "--as", "isd"]);
    assert!(
        err.contains("already persisted") && err.contains("--replace"),
        "{err}"
    );
    let out = ok(f, &["persist", &one_year, "--as", "isd", "--replace"]);
    assert!(out.starts_with(&format!("isd: {year_rows} rows")), "{out}");
    assert_eq!(ok(f, &["len", "isd"]), format!("{year_rows}\n"));

    let list = ok(f, &["list"]);
    let line = list
        .lines()
        .find(|l| l.starts_with("isd "))
        .expect("isd listed");
    assert!(
        line.contains(&format!(" {year_rows} ")) && line.contains("year=2019"),
        "{list}"
    );

    // Persisted partitions are spread over both workers.
    let cluster = cluster_json(f);
    let held: Vec<u64> = cluster["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["persisted_partitions"].as_u64().unwrap())
        .collect();
    assert_eq!(held.len(), 2);
    assert!(held.iter().all(|&n| n > 0), "unbalanced: {held:?}");

    // Prometheus text on the dashboard port.
    let sf: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
    let metrics = http_get(&format!("{}metrics", sf["dashboard"].as_str().unwrap()));
    for needle in [
        "stratus_workers 2",
        "stratus_threads 2",
        "stratus_cluster_worker_memory_limit_bytes{worker=\"local-0\"}",
        "stratus_cluster_worker_persisted_partitions{worker=\"local-1\"} ",
        "stratus_tasks{state=\"queued\"} 0",
        "stratus_persisted_partitions ",
        "stratus_client_requests_total{kind=\"persist\",outcome=\"ok\"} 2",
        "stratus_client_requests_total{kind=\"persist\",outcome=\"error\"} 1",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in\n{metrics}");
    }

    // head: INT96 timestamps from pyarrow, hive columns from the path.
    let head = ok(
        f,
        &[
            "head",
            "isd",
            "-n",
            "3",
            "--columns",
            "usaf,datetime,year,month",
        ],
    );
    assert_eq!(
        head.lines().filter(|l| l.contains("| 2019 |")).count(),
        3,
        "{head}"
    );
    assert!(head.contains("2019-01-"), "{head}");
    let head_parquet = ok(f, &["head", &fixture(), "-n", "2"]);
    assert!(
        head_parquet.contains("temperature") && head_parquet.contains("2008"),
        "{head_parquet}"
    );

    ok(f, &["unpersist", "isd"]);
    assert!(!ok(f, &["list"]).contains("isd "));
    let err = fails(f, &["unpersist", "isd"]);
    assert!(err.contains("no persisted frame named 'isd'"), "{err}");
}

#[test]
fn local_stops_every_child_on_sigterm() {
    let mut local = start_local(2, &[]);
    let sf: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&local.file).unwrap()).unwrap();
    let mut pids: Vec<u32> = cluster_json(&local.file)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["pid"].as_u64().unwrap() as u32)
        .collect();
    pids.push(sf["pid"].as_u64().unwrap() as u32);
    assert_eq!(pids.len(), 3);
    // The children are direct children of `stratus local`.
    for pid in &pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let ppid: u32 = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(ppid, local.child.id(), "pid {pid} is not a direct child");
    }
    // SAFETY: plain kill(2) on our child.
    unsafe {
        libc::kill(local.child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = local.child.wait().unwrap();
    assert!(status.success(), "stratus local exited with {status}");
    for pid in pids {
        eventually(Duration::from_secs(10), "children to exit", || {
            (!alive(pid)).then_some(())
        });
    }
    assert!(!local.file.exists(), "scheduler file left behind");
}

#[test]
fn clients_wait_for_workers_then_give_up_clearly() {
    let dir = TempDir::new("noworkers");
    let file = dir.path().join("s.json");
    let scheduler = std::path::Path::new(env!("CARGO_BIN_EXE_stratus"))
        .parent()
        .unwrap()
        .join("stratus-scheduler");
    let mut child = Command::new(scheduler)
        .args([
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--dashboard-address",
            "127.0.0.1:0",
            "--no-workers-timeout",
            "2s",
        ])
        .arg("--scheduler-file")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stderr(Stdio::null())
        .spawn()
        .expect("start stratus-scheduler (build with cargo build --workspace --bins)");
    eventually(Duration::from_secs(30), "scheduler file", || {
        file.exists().then_some(())
    });
    let err = fails(&file, &["--wait-for-workers", "1", "len", &fixture()]);
    assert!(err.contains("no worker registered"), "{err}");
    assert!(err.contains("within 1s"), "{err}");
    // Without --wait-for-workers, as long as the scheduler lets a request
    // wait (its --no-workers-timeout).
    let err = fails(&file, &["len", &fixture()]);
    assert!(err.contains("within 2s"), "{err}");
    let info = ok(&file, &["info"]);
    assert!(info.contains("workers=0"), "{info}");

    // A clean stop (SIGTERM, what systemd sends) takes the scheduler file
    // with it: nobody is pointed at a stopped scheduler.
    // SAFETY: plain kill(2) on our child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let status = eventually(Duration::from_secs(20), "the scheduler to stop", || {
        child.try_wait().ok().flatten()
    });
    assert!(status.success(), "{status}");
    assert!(
        !file.exists(),
        "scheduler file left behind after a clean stop"
    );
}

#[test]
fn ctrl_c_cancels_a_request_and_two_clients_run_at_once() {
    let data = TempDir::new("cancel-data");
    stratus_engine::datagen::generate_isd(&stratus_engine::datagen::DatagenOptions {
        rows: 1_500_000,
        out: data.path().to_path_buf(),
        seed: 7,
    })
    .unwrap();
    let local = start_local(2, &[]);
    let f = local.file.clone();
    let src = data.path().display().to_string();

    // Ctrl-C while persisting: the client exits 130 and the scheduler drops
    // the half-persisted frame.
    let mut child = Command::new(env!("CARGO_BIN_EXE_stratus"))
        .arg("--scheduler-file")
        .arg(&f)
        .args(["-v", "persist", &src, "--as", "big"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    loop {
        let line = lines.next().expect("progress before the end").unwrap();
        if line.starts_with("persist: ") {
            break;
        }
    }
    // SAFETY: plain kill(2) on our child.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{status}");
    eventually(Duration::from_secs(20), "the job to be cancelled", || {
        let c = cluster_json(&f);
        let idle = c["jobs_in_progress"] == 0
            && c["tasks"]["queued"] == 0
            && c["tasks"]["running"] == 0
            && c["frames"].as_array().unwrap().is_empty()
            && c["workers"]
                .as_array()
                .unwrap()
                .iter()
                .all(|w| w["persisted_partitions"] == 0);
        idle.then_some(())
    });

    // Two clients at once.
    let spawn = |name: &str| {
        Command::new(env!("CARGO_BIN_EXE_stratus"))
            .arg("--scheduler-file")
            .arg(&f)
            .args(["persist", &src, "--as", name])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let a = spawn("a");
    let b = spawn("b");
    for (name, child) in [("a", a), ("b", b)] {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert!(
            stdout(&out).starts_with(&format!("{name}: 1500000 rows")),
            "{}",
            stdout(&out)
        );
    }
    assert_eq!(ok(&f, &["len", "a"]), "1500000\n");
    assert_eq!(ok(&f, &["len", "b"]), "1500000\n");
}

#[test]
fn memory_limit_is_refused_clearly_and_nothing_half_persisted_remains() {
    // Without spilling (tests/spill.rs: with it, the frame persists).
    let local = start_local(2, &["--memory-limit", "2MB", "--spill-dir", "none"]);
    let f = local.file.as_path();
    let err = fails(f, &["persist", &fixture(), "--as", "isd"]);
    assert!(err.contains("memory limit exceeded"), "{err}");
    assert!(!ok(f, &["list"]).contains("isd "));
    eventually(Duration::from_secs(10), "partitions to be freed", || {
        let c = cluster_json(f);
        c["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["persisted_partitions"] == 0)
            .then_some(())
    });
    // The cluster keeps serving.
    assert_eq!(ok(f, &["len", &fixture()]), format!("{FIXTURE_ROWS}\n"));
}

#[test]
fn a_shuffle_that_would_exceed_the_memory_limit_fails_clearly_and_frees_its_data() {
    // 200 k rows take ~21 MB of RAM per worker, which fits in 30 MB even
    // when a busy machine lets one worker load a third more partitions than
    // the other; a sort by temperature moves every row, so each worker would
    // also hold ~20 MB of deliveries in its mailboxes: over the limit.
    let data = TempDir::new("shuffle-limit");
    stratus_engine::datagen::generate_isd(&stratus_engine::datagen::DatagenOptions {
        rows: 200_000,
        out: data.path().to_path_buf(),
        seed: 5,
    })
    .unwrap();
    // Without spilling (tests/spill.rs: with it, the shuffle completes).
    let local = start_local(2, &["--memory-limit", "30MB", "--spill-dir", "none"]);
    let f = local.file.as_path();
    let src = data.path().display().to_string();
    let day = "date=date_trunc('day', datetime)";
    ok(f, &["persist", &src, "--as", "isd", "--with-column", day]);
    let err = fails(f, &["sort", "isd", "--by", "temperature", "--as", "t"]);
    assert!(
        err.contains("memory limit exceeded") && err.contains("in flight"),
        "{err}"
    );
    // The deliveries are dropped with the job (late ones refused); the frame
    // is whole and the cluster keeps serving.
    eventually(Duration::from_secs(10), "mailboxes to be freed", || {
        let c = cluster_json(f);
        c["workers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| w["memory_used"] == w["persisted_bytes"])
            .then_some(())
    });
    assert!(!ok(f, &["list"]).contains("t "));
    assert_eq!(ok(f, &["len", "isd"]), "200000\n");
    let by_day = ok(f, &["groupby", "isd", "--by", "date", "--agg", "count"]);
    assert!(by_day.contains("2008-01-01"), "{by_day}");
}

/// The README's main job on the embedded default, as a new user runs it: in
/// an empty directory, relative default paths, sample data generated there,
/// the prepared dataset written next to it.
#[test]
fn the_demo_runs_the_workflow_on_generated_sample_data() {
    let dir = TempDir::new("demo-default");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratus"))
        .current_dir(dir.path())
        .args(["demo", "--rows", "60000"])
        .env_remove("STRATUS_SCHEDULER_FILE")
        .env_remove("STRATUS_RUN")
        .env_remove("STRATUS_DATA_ROOTS")
        .output()
        .expect("run stratus demo");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains("1. len(df) from Parquet footers: 60000 rows"),
        "{text}"
    );
    let prepared = dir.path().join("stratus-sample-data-prepared");
    assert!(
        text.contains(&format!("written to {}: 60000 rows", prepared.display())),
        "{text}"
    );
    assert!(prepared.join("_SUCCESS").exists());
    assert!(dir.path().join("stratus-plots").read_dir().unwrap().count() > 1);
}

/// `--idle-timeout`: a scheduler with no client and no job for that long
/// stops cleanly (status 0, scheduler file removed); a connected client
/// keeps it up, however long it stays.
#[test]
fn an_idle_scheduler_stops_after_its_idle_timeout_but_not_while_a_client_is_connected() {
    let dir = TempDir::new("idle");
    let file = dir.path().join("s.json");
    let scheduler = std::path::Path::new(env!("CARGO_BIN_EXE_stratus"))
        .parent()
        .unwrap()
        .join("stratus-scheduler");
    let log = std::fs::File::create(dir.path().join("scheduler.log")).unwrap();
    let mut child = Command::new(scheduler)
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--dashboard-address", "127.0.0.1:0", "--idle-timeout", "2s"])
        .args(["--log-format", "json"])
        .arg("--scheduler-file")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stderr(log)
        .spawn()
        .expect("start stratus-scheduler (build with cargo build --workspace --bins)");
    eventually(Duration::from_secs(30), "scheduler file", || {
        file.exists().then_some(())
    });

    // A client stays connected for three idle timeouts: the scheduler stays.
    let target = stratus::Locator {
        scheduler_file: Some(file.clone()),
        ..Default::default()
    }
    .resolve()
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let client = stratus::Client::connect(&target).await.unwrap();
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(500)).await;
            client
                .info()
                .await
                .expect("the scheduler serves while a client is connected");
        }
        client.close().await;
    });
    assert!(
        matches!(child.try_wait(), Ok(None)),
        "the scheduler stopped while a client was connected"
    );

    // Once it leaves, the idle timeout runs out and the scheduler stops cleanly.
    let status = eventually(
        Duration::from_secs(30),
        "the idle scheduler to stop",
        || child.try_wait().ok().flatten(),
    );
    assert!(status.success(), "{status}");
    assert!(!file.exists(), "scheduler file left behind");
    // --log-format json: one object per line, the message in `fields`.
    let log = std::fs::read_to_string(dir.path().join("scheduler.log")).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let idle = lines
        .iter()
        .find(|l| {
            l["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("--idle-timeout"))
        })
        .unwrap_or_else(|| panic!("no idle message in {log}"));
    assert_eq!(idle["level"], "INFO");
    assert!(idle["timestamp"].is_string(), "{idle}");
}

/// `stratus` with a clean environment but for `vars` (no STRATUS_* of the
/// test process), its user config directory in `home`.
fn stratus_env(
    home: &std::path::Path,
    vars: &[(&str, &str)],
    args: &[&str],
) -> std::process::Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stratus"));
    for (name, _) in std::env::vars() {
        if name.starts_with("STRATUS_") {
            command.env_remove(name);
        }
    }
    command
        .env("XDG_CONFIG_HOME", home)
        .envs(vars.iter().copied())
        .args(args)
        .output()
        .expect("run stratus")
}

/// `stratus config show`: the settings in force for the client, the
/// scheduler and a worker, each with where it came from (default, file,
/// env, flag), secrets masked; bad settings refused naming key and origin.
#[test]
fn config_show_tells_where_every_setting_came_from() {
    let home = TempDir::new("config-home");
    std::fs::create_dir_all(home.path().join("stratus")).unwrap();
    let user_file = home.path().join("stratus/client.toml");
    write_text(
        &user_file,
        "wait_for_workers = 5\n[storage_options]\naccount_name = \"acct\"\naccount_key = \"SECRET-KEY\"\n",
    );
    let o = stratus_env(
        home.path(),
        &[
            ("STRATUS_CLIENT__RUN", "nightly"),
            ("STRATUS_SCHEDULER_FILE", "/srv/cluster.json"),
        ],
        &["config", "show", "--tls-ca", "/etc/ca.pem"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("{key} =")) || l.starts_with(&format!("# {key} ")))
            .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
            .to_string()
    };
    let file = user_file.display().to_string();
    assert!(
        line("wait_for_workers").ends_with(&format!("# file {file}")),
        "{text}"
    );
    assert!(
        line("run").contains("\"nightly\"") && line("run").ends_with("# env STRATUS_CLIENT__RUN"),
        "{text}"
    );
    assert!(
        line("scheduler_file").ends_with("# env STRATUS_SCHEDULER_FILE"),
        "{text}"
    );
    assert!(line("tls_ca").ends_with("# flag --tls-ca"), "{text}");
    assert!(
        line("scheduler").starts_with("# scheduler (not set)"),
        "{text}"
    );
    assert!(!text.contains("SECRET-KEY"), "a secret shown:\n{text}");
    assert!(
        line("storage_options").contains("account_key = \"********\""),
        "{text}"
    );

    // The scheduler's and a worker's, as their binaries would load them here.
    let conf = home.path().join("scheduler.toml");
    write_text(&conf, "port = 9999\nmaximum_workers = 7\n");
    let conf_arg = conf.display().to_string();
    let o = stratus_env(
        home.path(),
        &[
            ("STRATUS_SCHEDULER__MINIMUM_WORKERS", "2"),
            ("STRATUS_DASHBOARD_TOKEN", "0123456789abcdef0123"),
        ],
        &[
            "config",
            "show",
            "--scheduler",
            "--",
            "--config",
            &conf_arg,
            "--host",
            "127.0.0.1",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for (expected, source) in [
        ("port = 9999", format!("# file {conf_arg}")),
        ("maximum_workers = 7", format!("# file {conf_arg}")),
        (
            "minimum_workers = 2",
            "# env STRATUS_SCHEDULER__MINIMUM_WORKERS".to_string(),
        ),
        ("host = \"127.0.0.1\"", "# flag --host".to_string()),
        (
            "dashboard_token = \"********\"",
            "# env STRATUS_DASHBOARD_TOKEN".to_string(),
        ),
        ("heartbeat_timeout = 5.0", "# default".to_string()),
    ] {
        let l = text
            .lines()
            .find(|l| l.starts_with(expected))
            .unwrap_or_else(|| panic!("no `{expected}` in:\n{text}"));
        assert!(l.ends_with(&source), "{l}");
    }
    assert!(!text.contains("0123456789abcdef0123"), "{text}");
    let o = stratus_env(
        home.path(),
        &[("STRATUS_WORKER__NTHREADS", "3")],
        &["config", "show", "--worker"],
    );
    assert!(stdout(&o).lines().any(|l| l.starts_with("nthreads = 3") && l.ends_with("# env STRATUS_WORKER__NTHREADS")), "{}", stdout(&o));

    // Unknown keys and wrong types fail at start, naming the key and the file.
    write_text(&conf, "prot = 9999\n");
    let o = stratus_env(
        home.path(),
        &[],
        &["config", "show", "--scheduler", "--", "--config", &conf_arg],
    );
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("unknown setting 'prot'") && err.contains(&conf_arg),
        "{err}"
    );
    write_text(&conf, "port = \"many\"\n");
    let scheduler = std::path::Path::new(env!("CARGO_BIN_EXE_stratus"))
        .parent()
        .unwrap()
        .join("stratus-scheduler");
    let o = Command::new(scheduler)
        .args(["--config", &conf_arg])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("port") && err.contains("scheduler.toml"),
        "{err}"
    );
    write_text(&user_file, "wait_for_worker = 5\n");
    let o = stratus_env(home.path(), &[], &["list"]);
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.contains("unknown setting 'wait_for_worker'") && err.contains(&file),
        "{err}"
    );
}

/// The client's settings file is used for real: a cluster named only there
/// answers `stratus info` with no flag or variable.
#[test]
fn the_user_client_file_finds_the_cluster() {
    let local = start_local(1, &[]);
    let home = TempDir::new("client-home");
    std::fs::create_dir_all(home.path().join("stratus")).unwrap();
    write_text(
        &home.path().join("stratus/client.toml"),
        &format!("scheduler_file = \"{}\"\n", local.file.display()),
    );
    let o = stratus_env(home.path(), &[], &["info"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("workers=1"), "{}", stdout(&o));
}
