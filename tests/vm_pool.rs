//! The VM pool walkthrough of deploy/README.md, checked without VMs: the
//! cloud-init user-data (deploy/cloud-init/) against cloud-init's own schema
//! and the repository's files (scripts/check-cloud-init), rendered with
//! certificates `stratus certs` issued, and run on this host as the VMs
//! would (a worker with the pool's environment and shared certificate joins
//! a scheduler by its address); the autoscaler hook
//! (deploy/autoscale/stratus-autoscale) against a real scheduler's
//! `/api/adaptive`; the alert-rule alternative
//! (deploy/prometheus/autoscale-rules.yml) with promtool.

mod common;

use common::prometheus::{program, promtool};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_stratus"))
        .parent()
        .unwrap()
        .join(name)
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn output_text(o: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn run(command: &mut Command) -> Output {
    command
        .output()
        .unwrap_or_else(|e| panic!("cannot run {command:?}: {e}"))
}

fn succeeds(command: &mut Command) -> String {
    let o = run(command);
    assert!(
        o.status.success(),
        "{command:?} failed:\n{}",
        output_text(&o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A free TCP port on loopback (bound once, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A process of ours, SIGTERMed (then killed) on drop.
struct Process(Child);

impl Process {
    fn stop(&mut self) {
        // SAFETY: a signal to our own child.
        unsafe {
            libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM);
        }
        for _ in 0..100 {
            if self.0.try_wait().unwrap().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            self.stop();
        }
    }
}

/// Start a scheduler on loopback with `args` and `env`, and wait for its
/// scheduler file (written once it serves).
fn scheduler(dir: &Path, tag: &str, args: &[&str], env: &[(&str, &str)]) -> Process {
    let file = dir.join(format!("{tag}.json"));
    let child = Command::new(bin("stratus-scheduler"))
        .args(["--host", "127.0.0.1"])
        .arg("--scheduler-file")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.join(format!("{tag}-data")))
        .args(args)
        .env_remove("STRATUS_DASHBOARD_TOKEN")
        .envs(env.iter().copied())
        .stderr(std::fs::File::create(dir.join(format!("{tag}.log"))).unwrap())
        .spawn()
        .expect("start stratus-scheduler");
    let mut process = Process(child);
    eventually(Duration::from_secs(60), "the scheduler file", || {
        if let Ok(Some(status)) = process.0.try_wait() {
            panic!(
                "stratus-scheduler exited: {status}\n{}",
                read_text(&dir.join(format!("{tag}.log")))
            );
        }
        file.exists().then_some(())
    });
    process
}

// ------------------------------------------------------------ cloud-init

#[test]
fn cloud_init_templates_pass_cloud_inits_schema_and_install_shipped_files() {
    let bin_dir = bin("stratus");
    let out = succeeds(
        Command::new(repo("scripts/check-cloud-init"))
            .arg("--bin-dir")
            .arg(bin_dir.parent().unwrap())
            .arg(repo("deploy/cloud-init/head.yaml"))
            .arg(repo("deploy/cloud-init/worker.yaml")),
    );
    assert_eq!(out.matches(": ok (cloud-init schema").count(), 2, "{out}");

    // The checker fails what cloud-init would not run as meant.
    let dir = TempDir::new("cloud-init-bad");
    let worker = read_text(&repo("deploy/cloud-init/worker.yaml"));
    for (what, from, to, expect) in [
        (
            "header",
            "#cloud-config\n",
            "# cloud-config\n",
            "#cloud-config",
        ),
        (
            "key",
            "runcmd:",
            "runcmds:",
            "`runcmds` is no cloud-config key",
        ),
        (
            "type",
            "permissions: \"0600\"",
            "permissions: 0600",
            "is not of type 'string'",
        ),
        (
            "unit",
            "systemd/worker.toml",
            "systemd/wroker.toml",
            "no deploy/systemd/wroker.toml",
        ),
        (
            "tls path",
            "tls/worker.key",
            "tls/node.key",
            "tls_key = '/etc/stratus/tls/worker.key'",
        ),
    ] {
        assert!(worker.contains(from), "{what}: {from}");
        let file = dir.path().join(format!("{}.yaml", what.replace(' ', "-")));
        write_text(&file, &worker.replacen(from, to, 1));
        let o = run(Command::new(repo("scripts/check-cloud-init")).arg(&file));
        assert!(!o.status.success(), "{what}: accepted\n{}", output_text(&o));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(expect),
            "{what}: expected `{expect}`:\n{}",
            output_text(&o)
        );
    }
}

/// `stratus certs` as the walkthrough runs it, in `dir/ca`.
fn issue_certificates(dir: &Path, head_host: &str) -> PathBuf {
    let ca = dir.join("ca");
    let stratus = |args: &[&str]| {
        succeeds(
            Command::new(env!("CARGO_BIN_EXE_stratus"))
                .current_dir(dir)
                .args(args),
        )
    };
    stratus(&["certs", "init", "ca"]);
    let out = stratus(&[
        "certs",
        "issue",
        "ca",
        "--role",
        "scheduler",
        "--name",
        "head",
        "--host",
        &format!("stratus-head,{head_host}"),
    ]);
    assert!(out.contains("(serial "), "{out}");
    stratus(&[
        "certs", "issue", "ca", "--role", "worker", "--name", "worker",
    ]);
    stratus(&[
        "certs", "issue", "ca", "--role", "client", "--name", "alice",
    ]);
    ca
}

fn render(role: &str, ca: &Path, name: &str, head_host: &str, url: &str) -> Output {
    run(Command::new(repo("deploy/cloud-init/render"))
        .arg(role)
        .arg(ca)
        .args([name, head_host, url]))
}

/// The content of the file `path` that rendered user-data writes.
fn written_file(user_data: &Path, path: &str) -> String {
    succeeds(
        Command::new("python3")
            .arg("-c")
            .arg(
                "import sys, yaml\n\
                 files = yaml.safe_load(open(sys.argv[1]))['write_files']\n\
                 print(next(f['content'] for f in files if f['path'] == sys.argv[2]), end='')",
            )
            .arg(user_data)
            .arg(path),
    )
}

#[test]
fn rendered_user_data_carries_the_certificates_and_its_worker_joins_by_address() {
    let dir = TempDir::new("cloud-init-render");
    let ca = issue_certificates(dir.path(), "127.0.0.1");
    // A SAS-like URL: `&` and `%` must come through as they are.
    let url =
        "https://account.blob.core.windows.net/stratus/bundle.tar.gz?sv=2022-11-02&sig=a%2Bb%3D";
    let mut rendered = Vec::new();
    for (role, name) in [("head", "head"), ("worker", "worker")] {
        let o = render(role, &ca, name, "127.0.0.1", url);
        assert!(o.status.success(), "render {role}:\n{}", output_text(&o));
        let text = String::from_utf8(o.stdout).unwrap();
        assert!(
            text.contains(&format!("\"{url}\"]")),
            "{role}: the URL\n{text}"
        );
        let b64 = |file: &str| succeeds(Command::new("base64").arg("-w0").arg(ca.join(file)));
        for file in [
            "ca.pem".to_string(),
            format!("{name}.pem"),
            format!("{name}.key"),
        ] {
            assert!(
                text.contains(&format!("content: {}\n", b64(&file))),
                "{role}: {file} is not in the user-data"
            );
        }
        // The CA's key stays on the admin host.
        assert!(!text.contains(&b64("ca.key")), "{role}: the CA key");
        let file = dir.path().join(format!("{role}-user-data.yaml"));
        write_text(&file, &text);
        rendered.push(file);
    }
    let out = succeeds(
        Command::new(repo("scripts/check-cloud-init"))
            .arg("--rendered")
            .args(&rendered),
    );
    assert_eq!(out.matches(": ok").count(), 2, "{out}");

    // What render refuses.
    for (args, expect) in [
        (("worker", "nobody", "127.0.0.1", url), "no "),
        (
            ("worker", "worker", "127.0.0.1", "ftp://x/b.tgz"),
            "http(s) URL",
        ),
        (("worker", "worker", "head\"", url), "quotes"),
        (("nanny", "worker", "127.0.0.1", url), "ROLE must be"),
    ] {
        let o = render(args.0, &ca, args.1, args.2, args.3);
        assert!(!o.status.success(), "{args:?} rendered");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(expect),
            "{args:?}: {}",
            output_text(&o)
        );
    }

    // The worker VMs' environment, as its drop-in sets it: the head's
    // address, no scheduler file; each named after its host, all with the
    // pool's one worker certificate.
    let drop_in = written_file(
        &rendered[1],
        "/etc/systemd/system/stratus-worker.service.d/pool.conf",
    );
    assert!(
        drop_in.contains("UnsetEnvironment=STRATUS_SCHEDULER_FILE\n"),
        "{drop_in}"
    );
    let address = drop_in
        .lines()
        .find_map(|l| l.strip_prefix("Environment=STRATUS_SCHEDULER="))
        .unwrap_or_else(|| panic!("no STRATUS_SCHEDULER in the drop-in:\n{drop_in}"));
    assert_eq!(address, "quic://127.0.0.1:8786");
    // Here on a free port rather than 8786.
    let port = free_port().to_string();
    let address = address.replace(":8786", &format!(":{port}"));
    let tls = |name: &str| ca.join(name).display().to_string();
    let _scheduler = scheduler(
        dir.path(),
        "head",
        &[
            "--port",
            &port,
            "--dashboard-address",
            "127.0.0.1:0",
            "--tls-ca",
            &tls("ca.pem"),
            "--tls-cert",
            &tls("head.pem"),
            "--tls-key",
            &tls("head.key"),
        ],
        &[],
    );
    let data = dir.path().join("data");
    succeeds(
        Command::new(env!("CARGO_BIN_EXE_stratus"))
            .args(["datagen", "isd", "--rows", "20000", "--out"])
            .arg(data.join("isd")),
    );
    let mut workers = Vec::new();
    for vm in ["pool-vm-1", "pool-vm-2"] {
        let child = Command::new(bin("stratus-worker"))
            .args(["--nthreads", "1", "--memory-limit", "1GiB"])
            .arg("--data-root")
            .arg(&data)
            .args(["--tls-ca", &tls("ca.pem")])
            .args(["--tls-cert", &tls("worker.pem")])
            .args(["--tls-key", &tls("worker.key")])
            .env_remove("STRATUS_SCHEDULER_FILE")
            .env("STRATUS_SCHEDULER", &address)
            .env("STRATUS_WORKER__NAME", vm)
            .stderr(std::fs::File::create(dir.path().join(format!("{vm}.log"))).unwrap())
            .spawn()
            .expect("start stratus-worker");
        workers.push(Process(child));
    }
    let sf: serde_json::Value =
        serde_json::from_str(&read_text(&dir.path().join("head.json"))).unwrap();
    let cluster = format!("{}api/cluster", sf["dashboard"].as_str().unwrap());
    eventually(Duration::from_secs(60), "both workers registered", || {
        let names: Vec<String> = get_json(&cluster)["workers"]
            .as_array()?
            .iter()
            .filter_map(|w| w["name"].as_str().map(String::from))
            .collect();
        (names.len() == 2 && names.iter().all(|n| n.starts_with("pool-vm-"))).then_some(())
    });
    // A client with its own certificate, by address, as deploy/README.md
    // shows; a group-by over partitions on both workers sends partials
    // worker to worker, between two holders of the one worker certificate.
    let client = |args: &[&str]| {
        succeeds(
            Command::new(env!("CARGO_BIN_EXE_stratus"))
                .args(["--scheduler", &address])
                .args(["--tls-ca", &tls("ca.pem")])
                .args(["--tls-cert", &tls("alice.pem")])
                .args(["--tls-key", &tls("alice.key")])
                .env_remove("STRATUS_SCHEDULER_FILE")
                .args(args),
        )
    };
    let info = client(&["info"]);
    assert!(info.contains("workers=2 "), "{info}");
    client(&["persist", data.join("isd").to_str().unwrap(), "--as", "isd"]);
    let holders = get_json(&cluster)["workers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|w| w["persisted_partitions"].as_u64().unwrap_or(0) > 0)
        .count();
    assert_eq!(holders, 2, "{}", get_json(&cluster));
    let counts = client(&[
        "groupby",
        "isd",
        "--by",
        "year,month",
        "--agg",
        "count",
        "--json",
    ]);
    let counts: serde_json::Value = serde_json::from_str(&counts).unwrap();
    let total: u64 = counts["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            row.as_array()
                .unwrap()
                .iter()
                .filter_map(|v| v.as_u64())
                .max()
                .unwrap_or(0)
        })
        .sum();
    assert_eq!(total, 20_000, "{counts}");
    drop(workers);
}

// ------------------------------------------------------------ autoscaling

#[test]
fn autoscale_scripts_are_valid_bash_and_shellcheck_clean() {
    for script in [
        "deploy/autoscale/stratus-autoscale",
        "deploy/cloud-init/render",
    ] {
        succeeds(Command::new("bash").arg("-n").arg(repo(script)));
        let o = run(Command::new(program("shellcheck")).arg(repo(script)));
        assert!(
            o.status.success(),
            "shellcheck {script}:\n{}",
            output_text(&o)
        );
    }
}

#[test]
fn autoscale_rules_pass_promtool_and_their_unit_tests() {
    let out = promtool(&[
        "check",
        "rules",
        repo("deploy/prometheus/autoscale-rules.yml")
            .to_str()
            .unwrap(),
    ]);
    assert!(out.contains("SUCCESS: 2 rules found"), "{out}");
    let out = promtool(&[
        "test",
        "rules",
        repo("deploy/prometheus/autoscale-rules_test.yml")
            .to_str()
            .unwrap(),
    ]);
    assert!(out.contains("SUCCESS"), "{out}");
}

const TOKEN: &str = "vm-pool-test-token-0123456789";

/// A script that appends its arguments to `log`, one call a line.
fn recorder(dir: &Path) -> (PathBuf, PathBuf) {
    let log = dir.join("calls.log");
    let script = dir.join("resize");
    write_text(
        &script,
        &format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()),
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    (script, log)
}

fn calls(log: &Path) -> Vec<String> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[test]
fn autoscale_script_resizes_the_pool_to_the_schedulers_target() {
    let dir = TempDir::new("autoscale");
    let (resize, log) = recorder(dir.path());
    let port = free_port().to_string();
    let dashboard = format!("127.0.0.1:{port}");
    let url = format!("http://{dashboard}/");
    let bounds = |minimum: &'static str| -> Vec<String> {
        ["--port", "0", "--dashboard-address", dashboard.as_str()]
            .iter()
            .map(|s| s.to_string())
            .chain(["--minimum-workers".into(), minimum.into()])
            .chain(["--maximum-workers".into(), "5".into()])
            .collect()
    };
    let args = bounds("3");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut first = scheduler(
        dir.path(),
        "first",
        &args,
        &[("STRATUS_DASHBOARD_TOKEN", TOKEN)],
    );
    let autoscale = || {
        let mut c = Command::new(repo("deploy/autoscale/stratus-autoscale"));
        c.env_remove("STRATUS_DASHBOARD_TOKEN")
            .env_remove("STRATUS_DASHBOARD_TOKEN_FILE");
        c
    };

    // One poll: no worker, minimum 3, so the target is 3, appended to the command.
    let o = run(autoscale()
        .env("STRATUS_DASHBOARD_TOKEN", TOKEN)
        .args(["--once", &url, "--"])
        .arg(&resize)
        .args(["--new-capacity"]));
    assert!(o.status.success(), "{}", output_text(&o));
    assert_eq!(calls(&log), ["--new-capacity 3"]);

    // Without the token the scheduler answers 401: nothing is resized.
    let o = run(autoscale().args(["--once", &url, "--"]).arg(&resize));
    assert!(!o.status.success(), "{}", output_text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("the pool stays as it is"),
        "{}",
        output_text(&o)
    );
    assert_eq!(calls(&log).len(), 1);

    // Polling, with the token from a file: it sets 3 at once; while the
    // scheduler is down it changes nothing; a scheduler that wants 1 (on the
    // same address) shrinks the pool only after 3 polls below.
    std::fs::remove_file(&log).unwrap();
    let token_file = dir.path().join("token");
    write_text(&token_file, &format!("{TOKEN}\n"));
    let poller_log = dir.path().join("autoscale.log");
    let mut poller = Process(
        autoscale()
            .env("STRATUS_DASHBOARD_TOKEN_FILE", &token_file)
            .args(["--interval", "0.2", "--down-after", "3", &url, "--"])
            .arg(&resize)
            .stderr(std::fs::File::create(&poller_log).unwrap())
            .stdout(Stdio::null())
            .spawn()
            .expect("start stratus-autoscale"),
    );
    eventually(Duration::from_secs(30), "the resize to 3", || {
        (calls(&log) == ["3"]).then_some(())
    });
    first.stop();
    eventually(
        Duration::from_secs(30),
        "a poll of the stopped scheduler",
        || {
            read_text(&poller_log)
                .contains("no answer from")
                .then_some(())
        },
    );
    assert_eq!(calls(&log), ["3"], "resized while the scheduler was down");
    let args = bounds("1");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let _second = scheduler(
        dir.path(),
        "second",
        &args,
        &[("STRATUS_DASHBOARD_TOKEN", TOKEN)],
    );
    eventually(Duration::from_secs(30), "the resize to 1", || {
        (calls(&log) == ["3", "1"]).then_some(())
    });
    poller.stop();
    let text = read_text(&poller_log);
    let waited = text
        .find("target 1 below the pool's 3 (3/3 polls)")
        .unwrap_or_else(|| panic!("no third poll below before shrinking:\n{text}"));
    let resized = text.find("resizing to 1").unwrap();
    assert!(waited < resized, "{text}");
    assert!(!text.contains("(4/3 polls)"), "{text}");
}
