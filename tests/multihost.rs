//! Several hosts on one machine: a scheduler and two workers, each in its own
//! network namespace with its own address on a private bridge
//! (10.213.0.0/24), run the workflow. This is where the bind addresses, the
//! scheduler's certificate names, the addresses workers advertise to their
//! peers and to Prometheus meet addresses that are not 127.0.0.1.
//!
//! Safety: every process that sends anything (the scheduler, the workers,
//! the `stratus` client and the HTTP client) runs inside the namespaces,
//! which have no default route; nothing is sent to a namespace address from
//! the host's own namespace (its default route would carry such packets off
//! the machine). The data set is generated and checked (DuckDB) in the host
//! namespace: file I/O only. The namespaces are named after this process'
//! id and deleted on drop, panics included, after the processes in them are
//! killed.
//!
//! Needs root and `ip netns`; without them it prints why it is skipped
//! (with `STRATUS_TEST_REQUIRE_NETNS` set, a missing `ip netns` fails it).

mod common;

use common::duckdb::python;
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SCHEDULER_IP: &str = "10.213.0.1";
const WORKER_IPS: [&str; 2] = ["10.213.0.2", "10.213.0.3"];
const TOKEN: &str = "multihost-test-token-0123456789abcdef";
const ROWS: u64 = 200_000;

/// `ip ARGS`, its error output on failure.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The namespaces of one test run: a "switch" holding the bridge, and one
/// per host, each joined to the bridge by a veth pair. Drop kills what runs
/// in them and deletes them.
struct Hosts {
    switch: String,
    /// (namespace, address) of `sch`, `w1`, `w2`.
    hosts: Vec<(String, String)>,
}

impl Hosts {
    fn ns(&self, i: usize) -> &str {
        &self.hosts[i].0
    }

    /// Make the namespaces; Err (nothing left behind) if `ip netns` can not.
    fn create() -> Result<Hosts, String> {
        let pid = std::process::id();
        let switch = format!("stx-sw-{pid}");
        // Left by a killed earlier run that had our process id.
        for name in ["sw", "sch", "w1", "w2"] {
            let _ = ip(&["netns", "del", &format!("stx-{name}-{pid}")]);
        }
        ip(&["netns", "add", &switch])?;
        let mut hosts = Hosts {
            switch: switch.clone(),
            hosts: Vec::new(),
        };
        ip(&["-n", &switch, "link", "set", "lo", "up"])?;
        ip(&["-n", &switch, "link", "add", "br0", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "br0", "up"])?;
        let addresses = [SCHEDULER_IP, WORKER_IPS[0], WORKER_IPS[1]];
        for (host, address) in ["sch", "w1", "w2"].iter().zip(addresses) {
            let ns = format!("stx-{host}-{pid}");
            ip(&["netns", "add", &ns])?;
            hosts.hosts.push((ns.clone(), address.to_string()));
            let port = format!("p-{host}");
            // Both ends are made inside the namespaces: the host's own
            // namespace never gets an interface.
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "eth0",
                "netns", &ns,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "br0"])?;
            ip(&["-n", &switch, "link", "set", &port, "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        }
        Ok(hosts)
    }

    /// `ip netns exec NS program args`, with no proxy settings and no
    /// cluster settings from our environment.
    fn command(&self, ns: &str, program: &Path) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", ns]).arg(program);
        for var in [
            "http_proxy",
            "https_proxy",
            "all_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "STRATUS_SCHEDULER",
            "STRATUS_SCHEDULER_FILE",
            "STRATUS_TLS_CA",
            "STRATUS_TLS_CERT",
            "STRATUS_TLS_KEY",
            "STRATUS_RUN",
            "STRATUS_CONFIG",
            "STRATUS_DATA_ROOTS",
        ] {
            command.env_remove(var);
        }
        command
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        for ns in self.hosts.iter().map(|(ns, _)| ns).chain([&self.switch]) {
            // Whatever still runs in it (a panic before its guard dropped).
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    if let Ok(pid) = pid.parse::<u32>() {
                        kill9(pid);
                    }
                }
            }
            if let Err(e) = ip(&["netns", "del", ns]) {
                eprintln!("multihost: cleanup: {e}");
            }
        }
    }
}

/// A long-running process in a namespace, its output in `log`; killed on drop.
struct Proc {
    child: Child,
    log: PathBuf,
}

impl Proc {
    fn tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        format!(
            "{} (last lines):\n{}",
            self.log.display(),
            lines[lines.len().saturating_sub(15)..].join("\n")
        )
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        // `ip netns exec` execs the program: this is its pid.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(mut command: Command, log: PathBuf) -> Proc {
    let file = std::fs::File::create(&log).expect("create a log file");
    let child = command
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .expect("run ip netns exec");
    Proc { child, log }
}

fn bin(name: &str) -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_stratus"))
        .parent()
        .unwrap()
        .join(name)
}

/// What the test sees of the cluster: the namespaces, the scheduler file,
/// and a client in the scheduler's namespace.
struct Cluster<'a> {
    hosts: &'a Hosts,
    file: PathBuf,
}

impl Cluster<'_> {
    /// `stratus ARGS` run in the scheduler's namespace; stdout.
    fn stratus(&self, args: &[&str]) -> String {
        let start = Instant::now();
        let out = self
            .hosts
            .command(self.hosts.ns(0), &bin("stratus"))
            .arg("--scheduler-file")
            .arg(&self.file)
            .args(args)
            .output()
            .expect("run stratus");
        assert!(
            out.status.success(),
            "stratus {args:?} failed ({}): {}",
            out.status,
            stderr(&out)
        );
        eprintln!("multihost: stratus {args:?}: {:.2?}", start.elapsed());
        stdout(&out)
    }

    /// GET `url` from inside the scheduler's namespace (Python's urllib,
    /// no proxy), with the dashboard token; the body.
    fn get(&self, url: &str) -> Result<String, String> {
        let script = "import os, sys, urllib.request\n\
             opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n\
             request = urllib.request.Request(sys.argv[1], headers={'Authorization': 'Bearer ' + os.environ['TOKEN']})\n\
             sys.stdout.write(opener.open(request, timeout=10).read().decode())";
        let out = self
            .hosts
            .command(self.hosts.ns(0), Path::new("python3"))
            .args(["-c", script, url])
            .env("TOKEN", TOKEN)
            .output()
            .expect("run python3");
        if out.status.success() {
            Ok(stdout(&out))
        } else {
            Err(format!("GET {url}: {}", stderr(&out).trim()))
        }
    }

    fn json(&self, url: &str) -> serde_json::Value {
        let body = self.get(url).unwrap_or_else(|e| panic!("{e}"));
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{url}: {e}: {body}"))
    }
}

/// A random 5% of the UDP datagrams in and out of a namespace are dropped
/// while this lives (an nftables table inside that namespace only).
struct NamespaceLoss {
    ns: String,
}

impl NamespaceLoss {
    const TABLE: &'static str = "stratus_loss";

    fn nft(ns: &str, args: &[&str], stdin: Option<&str>) -> std::process::Output {
        let mut nft = Command::new("ip")
            .args(["netns", "exec", ns, "nft"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run nft");
        if let Some(text) = stdin {
            use std::io::Write;
            nft.stdin
                .take()
                .expect("nft stdin")
                .write_all(text.as_bytes())
                .expect("write the rules");
        }
        nft.wait_with_output().expect("nft")
    }

    fn start(ns: &str) -> NamespaceLoss {
        let table = Self::TABLE;
        let rules = format!(
            "table inet {table} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    meta l4proto udp numgen random mod 100 < 5 counter drop\n  }}\n  chain output {{\n    type filter hook output priority 0; policy accept;\n    meta l4proto udp numgen random mod 100 < 5 counter drop\n  }}\n}}\n"
        );
        let out = Self::nft(ns, &["-f", "-"], Some(&rules));
        assert!(
            out.status.success(),
            "nft in {ns} refused:\n{rules}\n{}",
            stderr(&out)
        );
        NamespaceLoss { ns: ns.to_string() }
    }

    /// Datagrams dropped so far (the rules' counters).
    fn dropped(&self) -> u64 {
        let out = Self::nft(&self.ns, &["list", "table", "inet", Self::TABLE], None);
        nft_counted_packets(&out.stdout)
    }
}

impl Drop for NamespaceLoss {
    fn drop(&mut self) {
        Self::nft(&self.ns, &["delete", "table", "inet", Self::TABLE], None);
    }
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || ((a - b) / b).abs() < 1e-9
}

fn f64_of(v: &serde_json::Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[test]
fn a_scheduler_and_two_workers_in_their_own_network_namespaces_run_the_workflow() {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED multihost: needs root for `ip netns` (CI runs it as root)");
        return;
    }
    let hosts = match Hosts::create() {
        Ok(hosts) => hosts,
        Err(e) => {
            // Whatever was made is deleted by the guard inside create().
            assert!(
                std::env::var_os("STRATUS_TEST_REQUIRE_NETNS").is_none(),
                "STRATUS_TEST_REQUIRE_NETNS is set but `ip netns` failed: {e}"
            );
            eprintln!("SKIPPED multihost: `ip netns` is unavailable here: {e}");
            return;
        }
    };
    let started = Instant::now();
    let dir = TempDir::new("multihost");
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let isd = data.join("isd");
    let file = dir.path().join("cluster.json");

    // Generated data: local file I/O only, in the host namespace.
    let out = Command::new(bin("stratus"))
        .args(["datagen", "isd", "--rows", &ROWS.to_string(), "--out"])
        .arg(&isd)
        .output()
        .expect("run stratus datagen");
    assert!(out.status.success(), "datagen: {}", stderr(&out));

    // The scheduler as on a VM pool (README, "Using a cluster"): every
    // interface, fixed ports (the namespace is ours alone), the dashboard
    // on every interface with a token, and the address others dial.
    let mut scheduler = hosts.command(hosts.ns(0), &bin("stratus-scheduler"));
    scheduler
        .args(["--host", "0.0.0.0", "--port", "8786"])
        .args(["--contact-address", &format!("quic://{SCHEDULER_IP}:8786")])
        .args(["--dashboard-address", ":8787"])
        .arg("--data-dir")
        .arg(dir.path().join("scheduler"))
        .arg("--scheduler-file")
        .arg(&file)
        .env("STRATUS_DASHBOARD_TOKEN", TOKEN);
    let scheduler = spawn(scheduler, dir.path().join("scheduler.log"));
    eventually(Duration::from_secs(30), "the scheduler file", || {
        file.exists().then_some(())
    });
    let sf: serde_json::Value = serde_json::from_str(&read_text(&file)).unwrap();
    assert_eq!(sf["address"], format!("quic://{SCHEDULER_IP}:8786"), "{sf}");
    assert_eq!(
        sf["dashboard"],
        format!("http://{SCHEDULER_IP}:8787/"),
        "the dashboard URL must name the contact address' host, not loopback"
    );
    let dashboard = format!("http://{SCHEDULER_IP}:8787/");

    // A worker per host, through the scheduler file (its CA, its worker
    // credential): the scheduler's certificate must be valid for the
    // address they dial. Metrics on every interface.
    let workers: Vec<Proc> = (1..=2)
        .map(|i| {
            let mut worker = hosts.command(hosts.ns(i), &bin("stratus-worker"));
            worker
                .arg("--scheduler-file")
                .arg(&file)
                .args(["--name", &format!("w{i}"), "--nthreads", "1"])
                .args(["--memory-limit", "1GiB"])
                .args(["--metrics-address", "0.0.0.0:9100"])
                .arg("--data-root")
                .arg(&data);
            spawn(worker, dir.path().join(format!("w{i}.log")))
        })
        .collect();
    let cluster = Cluster {
        hosts: &hosts,
        file: file.clone(),
    };
    let diagnose = || {
        format!(
            "{}\n{}\n{}",
            scheduler.tail(),
            workers[0].tail(),
            workers[1].tail()
        )
    };
    let registered = poll(Duration::from_secs(30), || {
        let c: serde_json::Value =
            serde_json::from_str(&cluster.get(&format!("{dashboard}api/cluster"))?)
                .map_err(|e| e.to_string())?;
        match c["workers"].as_array().map(Vec::len) {
            Some(2) => Ok(c),
            _ => Err(format!("workers so far: {c}")),
        }
    })
    .unwrap_or_else(|e| panic!("two workers did not register: {e}\n{}", diagnose()));

    // Each worker is known by its own address, and advertises it (not
    // 127.0.0.1 or 0.0.0.0) to its peers and to Prometheus.
    let mut peer_addresses = Vec::new();
    let mut targets = Vec::new();
    for (i, ip) in WORKER_IPS.iter().enumerate() {
        let name = format!("w{}", i + 1);
        let w = registered["workers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["name"] == name.as_str())
            .unwrap_or_else(|| panic!("no {name} in {registered}"));
        let address = w["address"].as_str().unwrap();
        assert!(address.starts_with(&format!("{ip}:")), "{name}: {w}");
        let peer = w["peer_address"].as_str().unwrap();
        assert!(
            peer.starts_with(&format!("{ip}:")),
            "{name}'s peer address: {w}"
        );
        assert_eq!(
            w["metrics_url"],
            format!("http://{ip}:9100/metrics"),
            "{name}'s metrics URL"
        );
        peer_addresses.push(peer.to_string());
        targets.push(format!("{ip}:9100"));
    }
    let sd = cluster.json(&format!("{dashboard}api/sd"));
    let mut listed: Vec<String> = sd
        .as_array()
        .unwrap_or_else(|| panic!("/api/sd is not a list: {sd}"))
        .iter()
        .flat_map(|group| group["targets"].as_array().cloned().unwrap_or_default())
        .map(|t| t.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, targets, "Prometheus' http_sd targets: {sd}");

    // The workflow, the client in the scheduler's namespace.
    let path = isd.display().to_string();
    assert_eq!(cluster.stratus(&["len", &path]).trim(), ROWS.to_string());
    let persisted = cluster.stratus(&[
        "persist",
        &path,
        "--with-column",
        "date=date_trunc('day', datetime)",
        "--as",
        "isd",
    ]);
    assert!(
        persisted.starts_with(&format!("isd: {ROWS} rows")),
        "{persisted}"
    );
    assert_eq!(cluster.stratus(&["len", "isd"]).trim(), ROWS.to_string());
    let glob = format!("{path}/year=*/month=*/*.parquet");

    // describe: exact against DuckDB (mean and std to 1e-9 relative).
    let describe: serde_json::Value =
        serde_json::from_str(&cluster.stratus(&["describe", "isd", "--json"])).unwrap();
    assert_eq!(
        describe["index"],
        serde_json::json!(["count", "mean", "std", "min", "25%", "50%", "75%", "max"]),
        "describe's rows"
    );
    let columns: Vec<&str> = describe["columns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    for name in ["temperature", "windSpeed", "seaLvlPressure", "elevation"] {
        let c = columns
            .iter()
            .position(|c| *c == name)
            .unwrap_or_else(|| panic!("no {name} in describe: {describe}"));
        let got: Vec<f64> = (0..8)
            .map(|row| f64_of(&describe["data"][row][c]))
            .collect();
        let valid = format!("{name} IS NOT NULL AND NOT isnan({name}::DOUBLE)");
        let from = format!("FROM read_parquet('{glob}') WHERE {valid}");
        let body = format!(
            "m = con.execute({moments:?}).fetchone()\nv = [r[0] for r in con.execute({sorted:?}).fetchall()]\nrow = [m[0], m[1], m[2], m[3]] + [pandas_quantile(v, q) for q in (0.25, 0.5, 0.75)] + [m[4]]\nprint(json.dumps([[clean(x) for x in row]], default=str))",
            moments = format!("SELECT count(*), avg({name}), stddev_samp({name}), min({name})::DOUBLE, max({name})::DOUBLE {from}"),
            sorted = format!("SELECT ({name})::DOUBLE AS x {from} ORDER BY x"),
        );
        let expect: Vec<f64> = python(&body)[0].iter().map(f64_of).collect();
        for (i, stat) in ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]
            .iter()
            .enumerate()
        {
            let ok = match *stat {
                "mean" | "std" => close(got[i], expect[i]),
                _ => got[i] == expect[i],
            };
            assert!(ok, "{name} {stat}: ours {} vs DuckDB {}", got[i], expect[i]);
        }
    }

    // Daily means: partial aggregates merged worker to worker.
    let daily: serde_json::Value = serde_json::from_str(
        &cluster.stratus(&["groupby", "isd", "--by", "date", "--agg", "mean", "--json"]),
    )
    .unwrap();
    let expect = python(&format!(
        "rows = con.execute(\"SELECT strftime(date_trunc('day', datetime), '%Y-%m-%d'), \
         avg(temperature) FILTER (WHERE temperature IS NOT NULL AND NOT isnan(temperature)) \
         FROM read_parquet('{glob}') GROUP BY 1 ORDER BY 1\").fetchall()\n\
         print(json.dumps([[clean(v) for v in r] for r in rows]))"
    ));
    let index = daily["index"].as_array().unwrap();
    assert_eq!(index.len(), expect.len(), "number of days");
    let t = daily["columns"]
        .as_array()
        .unwrap()
        .iter()
        .position(|c| c == "temperature")
        .unwrap();
    for (row, e) in expect.iter().enumerate() {
        assert_eq!(index[row], e[0], "day {row}");
        let (ours, theirs) = (f64_of(&daily["data"][row][t]), f64_of(&e[1]));
        assert!(
            close(ours, theirs),
            "{}: ours {ours} vs DuckDB {theirs}",
            e[0]
        );
    }

    // A sort is a shuffle across the namespaces; written out, DuckDB reads
    // every row back, the non-null keys in order.
    let sorted = cluster.stratus(&["sort", "isd", "--by", "temperature", "--as", "s"]);
    assert!(sorted.contains(&format!("{ROWS} rows")), "{sorted}");
    let out_dir = data.join("sorted");
    cluster.stratus(&["write", "s", &out_dir.display().to_string()]);
    let check = python(&format!(
        "src = [r[0] for r in con.execute(\"SELECT temperature FROM read_parquet('{glob}') \
         WHERE temperature IS NOT NULL AND NOT isnan(temperature) ORDER BY temperature\").fetchall()]\n\
         rows = con.execute(\"SELECT temperature FROM read_parquet('{out}/*.parquet', filename = true, file_row_number = true) \
         ORDER BY filename, file_row_number\").fetchall()\n\
         keys = [r[0] for r in rows if r[0] is not None and r[0] == r[0]]\n\
         print(json.dumps([[len(rows), keys == src, len(keys)]]))",
        out = out_dir.display()
    ));
    assert_eq!(check[0][0], ROWS, "rows written by the sorted frame");
    assert_eq!(
        check[0][1], true,
        "the written sorted frame's {} keys are not the source's in order",
        check[0][2]
    );

    // The data did cross namespaces over the peer links: the workers'
    // metrics, scraped from the scheduler's namespace, show bytes both ways
    // on worker links, and a link from one to the other's peer endpoint.
    let mut linked = false;
    for (i, ip) in WORKER_IPS.iter().enumerate() {
        let metrics = cluster
            .get(&format!("http://{ip}:9100/metrics"))
            .unwrap_or_else(|e| panic!("{e}"));
        let value = |prefix: &str| -> f64 {
            metrics
                .lines()
                .find(|l| l.starts_with(prefix))
                .and_then(|l| l.rsplit(' ').next())
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("no {prefix} in w{}'s metrics", i + 1))
        };
        for direction in ["sent", "received"] {
            let bytes = value(&format!(
                "stratus_network_{direction}_bytes_total{{peer_kind=\"worker\"}}"
            ));
            assert!(bytes > 0.0, "w{} {direction} no bytes to workers", i + 1);
        }
        linked |= metrics.contains(&format!(
            "stratus_quic_rtt_seconds{{peer=\"{}\",peer_kind=\"worker\"}}",
            peer_addresses[1 - i]
        ));
    }
    assert!(
        linked,
        "no worker shows a link to the other's peer endpoint {peer_addresses:?}"
    );

    // 5% packet loss on w2's link (an nftables table in w2's namespace
    // drops a random 5% of every UDP datagram in and out of it): the group-by
    // (worker to worker merge) and the shuffle sort complete, with the same
    // answers as without loss.
    let loss = NamespaceLoss::start(hosts.ns(2));
    let daily_lossy: serde_json::Value = serde_json::from_str(
        &cluster.stratus(&["groupby", "isd", "--by", "date", "--agg", "mean", "--json"]),
    )
    .unwrap();
    common::answer::same_answer(&daily.to_string(), &daily_lossy.to_string())
        .unwrap_or_else(|e| panic!("daily means under 5% loss on w2: {e}"));
    let sorted = cluster.stratus(&["sort", "isd", "--by", "temperature", "--as", "s2"]);
    assert!(sorted.contains(&format!("{ROWS} rows")), "{sorted}");
    let dropped = loss.dropped();
    drop(loss);
    assert_eq!(
        cluster.stratus(&["head", "s2", "-n", "50", "--columns", "temperature"]),
        cluster.stratus(&["head", "s", "-n", "50", "--columns", "temperature"]),
        "the sort under 5% loss on w2"
    );
    assert!(dropped > 0, "no datagram was dropped on w2's link");
    eprintln!("multihost: 5% loss on w2 dropped {dropped} datagrams; same answers");

    eprintln!("multihost: passed in {:.1?}", started.elapsed());
    drop(workers);
    drop(scheduler);
}
