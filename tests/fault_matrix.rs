//! The fault matrix: every step of the workflow, on 3 workers of a real
//! `stratus local` cluster, once without a fault and once per fault injected
//! at a random moment of the step; the answer must equal the answer without
//! a fault, with no hang. Faults: SIGKILL of a worker (the nanny starts a new
//! one; its partitions are rebuilt from lineage), and SIGSTOP of a worker
//! for longer than the heartbeat timeout, then SIGCONT (it was removed, its
//! work ran elsewhere; woken, it drops its stale state and joins again), and
//! 5% packet loss on one worker's link from that moment to the end of the
//! step (an nftables table of our own dropping a random 5% of the UDP
//! datagrams to and from the worker's QUIC ports on loopback; QUIC
//! retransmits: the step completes, slower). The loss case needs root and
//! `nft` (CI has both); without them it is skipped, saying so.
//!
//! Moments and victims are drawn from a seed, printed with every case, so a
//! failure can be replayed: `STRATUS_FAULT_SEED=N cargo test --test
//! fault_matrix` (`STRATUS_FAULTS=loss` runs one kind of fault only). A
//! step that runs past 180 s fails as hung, with the cluster's log.

mod common;

use std::time::{Duration, Instant};

use common::*;

/// The scheduler's heartbeat timeout in these tests (a stopped worker is
/// removed after it).
const HEARTBEAT_TIMEOUT: &str = "2";
/// How long a stopped worker stays stopped: well past the heartbeat timeout.
const STOPPED: Duration = Duration::from_secs(4);

/// xorshift64*: enough randomness for moments and victims, from a seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    Kill,
    Stop,
    Loss,
}

/// Percent of the victim's datagrams dropped in the [`Fault::Loss`] case.
const LOSS_PERCENT: u32 = 5;

/// The UDP ports a process has sockets bound to (its QUIC endpoints), from
/// its descriptors and the kernel's socket tables.
fn udp_ports(pid: u32) -> Vec<u16> {
    let inodes: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .filter_map(|fd| {
            let target = std::fs::read_link(fd.ok()?.path()).ok()?;
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    let mut ports = Vec::new();
    for table in ["/proc/net/udp", "/proc/net/udp6"] {
        for line in std::fs::read_to_string(table)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(inode)) = (fields.get(1), fields.get(9)) else {
                continue;
            };
            if !inodes.iter().any(|i| i == inode) {
                continue;
            }
            let port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            ports.extend(port);
        }
    }
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// Whether this run can inject packet loss (root, and `nft` works).
fn can_drop_packets() -> bool {
    // SAFETY: geteuid(2) has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A random [`LOSS_PERCENT`] of the UDP datagrams to and from `ports` are
/// dropped on loopback while this lives (its own nftables table).
struct PacketLoss {
    table: String,
}

impl PacketLoss {
    fn start(pid: u32) -> PacketLoss {
        let ports = udp_ports(pid);
        assert!(!ports.is_empty(), "worker {pid} has no UDP socket");
        let set = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let table = format!("stratus_loss_{pid}");
        let rules = format!(
            "table inet {table} {{\n  chain input {{\n    type filter hook input priority 0; policy accept;\n    udp dport {{ {set} }} numgen random mod 100 < {LOSS_PERCENT} counter drop\n    udp sport {{ {set} }} numgen random mod 100 < {LOSS_PERCENT} counter drop\n  }}\n}}\n"
        );
        let mut nft = std::process::Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .expect("run nft");
        use std::io::Write;
        nft.stdin
            .take()
            .expect("nft stdin")
            .write_all(rules.as_bytes())
            .expect("write the rules");
        assert!(nft.wait().expect("nft").success(), "nft refused:\n{rules}");
        PacketLoss { table }
    }
}

impl PacketLoss {
    /// Datagrams dropped so far (the rules' counters).
    fn dropped(&self) -> u64 {
        let listed = std::process::Command::new("nft")
            .args(["list", "table", "inet", &self.table])
            .output()
            .expect("nft list");
        nft_counted_packets(&listed.stdout)
    }
}

impl Drop for PacketLoss {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

/// One step of the workflow: what prepares it (unpersisting the names it
/// creates), the command, and how its answer is read back (when it has no
/// reads, the command's output is the answer; a persist's or sort's output
/// also says how many bytes it holds, which depends on how batches were
/// cut, so it is not compared).
struct Step {
    name: &'static str,
    prepare: Vec<Vec<String>>,
    run: Vec<String>,
    answer: Vec<Vec<String>>,
}

fn args(text: &[&str]) -> Vec<String> {
    text.iter().map(|s| s.to_string()).collect()
}

fn steps(source: &str, out: &str) -> Vec<Step> {
    vec![
        Step {
            name: "persist with a derived column",
            prepare: vec![],
            run: args(&[
                "persist",
                source,
                "--as",
                "isd",
                "--replace",
                "--with-column",
                "date=date_trunc('day', datetime)",
            ]),
            answer: vec![args(&["len", "isd"]), args(&["describe", "isd", "--json"])],
        },
        Step {
            name: "describe",
            prepare: vec![],
            run: args(&["describe", "isd", "--json"]),
            answer: vec![],
        },
        Step {
            name: "groupby(date).mean",
            prepare: vec![],
            run: args(&["groupby", "isd", "--by", "date", "--agg", "mean", "--json"]),
            answer: vec![],
        },
        Step {
            name: "groupby([year, month]).count",
            prepare: vec![],
            run: args(&[
                "groupby",
                "isd",
                "--by",
                "year,month",
                "--agg",
                "count",
                "--json",
            ]),
            answer: vec![],
        },
        Step {
            name: "sort ranged (by date)",
            prepare: vec![args(&["unpersist", "by_date"])],
            run: args(&["sort", "isd", "--by", "date", "--as", "by_date"]),
            answer: vec![
                args(&["len", "by_date"]),
                args(&["describe", "by_date", "--json"]),
                args(&["head", "by_date", "-n", "20", "--columns", "date"]),
            ],
        },
        Step {
            // In place: each old partition is freed once its sorted one is
            // held (a fault mid-way rebuilds from lineage).
            name: "sort ranged in place",
            prepare: vec![args(&["persist", "isd", "--as", "in_place", "--replace"])],
            run: args(&["sort", "in_place", "--by", "date"]),
            answer: vec![
                args(&["len", "in_place"]),
                args(&["describe", "in_place", "--json"]),
                args(&["head", "in_place", "-n", "20", "--columns", "date"]),
            ],
        },
        Step {
            name: "sort with a shuffle (by temperature)",
            prepare: vec![args(&["unpersist", "by_temp"])],
            run: args(&["sort", "isd", "--by", "temperature", "--as", "by_temp"]),
            answer: vec![
                args(&["len", "by_temp"]),
                args(&["describe", "by_temp", "--json"]),
                args(&["head", "by_temp", "-n", "20", "--columns", "temperature"]),
            ],
        },
        Step {
            name: "persist a derived frame of a sorted frame",
            prepare: vec![],
            run: args(&[
                "persist",
                "by_temp",
                "--as",
                "fahrenheit",
                "--replace",
                "--with-column",
                "temperature=temperature * 9 / 5 + 32",
                "--fillna",
                "0",
            ]),
            answer: vec![
                args(&["len", "fahrenheit"]),
                args(&["describe", "fahrenheit", "--json"]),
            ],
        },
        Step {
            name: "write year/month",
            prepare: vec![],
            run: args(&[
                "write",
                "isd",
                out,
                "--partition-by",
                "year,month",
                "--overwrite",
            ]),
            answer: vec![args(&["len", out])],
        },
    ]
}

/// Every worker of the cluster: (name, pid).
fn workers(local: &Local) -> Vec<(String, u32)> {
    local.json("api/cluster")["workers"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|w| {
            (
                w["name"].as_str().unwrap_or_default().to_string(),
                w["pid"].as_u64().unwrap_or_default() as u32,
            )
        })
        .collect()
}

/// Three workers, every frame whole, nothing running.
fn settled(local: &Local) {
    eventually(Duration::from_secs(120), "the cluster settled", || {
        let cluster = local.json("api/cluster");
        // Three workers, each a live process: a worker just killed is still
        // listed until the heartbeat timeout removes it.
        let three = cluster["workers"].as_array().map(Vec::len) == Some(3)
            && workers(local).iter().all(|(_, pid)| alive(*pid));
        let whole = cluster["frames"]
            .as_array()
            .into_iter()
            .flatten()
            .all(|f| f["partitions_held"] == f["partitions"]);
        let idle = cluster["jobs_in_progress"] == 0;
        (three && whole && idle).then_some(())
    });
}

/// Whether process `pid` runs (exists and is not a zombie).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X')
    })
}

fn as_str(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A step that takes longer than this has hung (they take seconds).
const HUNG: Duration = Duration::from_secs(180);

/// `stratus ARGS` against `local`, failing (not hanging) past [`HUNG`].
/// Its stdout and stderr are drained while it runs: an answer bigger than
/// a pipe's buffer (a group-by's JSON is about 1 MB) would otherwise block
/// the client on its write, which looks exactly like a hung cluster.
fn client(local: &Local, args: &[&str]) -> Result<String, String> {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_stratus"))
        .arg("--scheduler-file")
        .arg(&local.file)
        .args(args)
        .env_remove("STRATUS_SCHEDULER")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run stratus");
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = pipe.read_to_end(&mut text);
            String::from_utf8_lossy(&text).into_owned()
        })
    };
    let stdout = drain(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = drain(Box::new(child.stderr.take().expect("piped stderr")));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for stratus") {
            break status;
        }
        if start.elapsed() > HUNG {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("`stratus {}` hung for {HUNG:?}", args.join(" ")));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    if status.success() {
        Ok(stdout)
    } else {
        Err(format!(
            "`stratus {}` failed ({status}): {}",
            args.join(" "),
            stderr.trim()
        ))
    }
}

/// Run `step` (after its preparation); the answers it reads back.
fn run(local: &Local, step: &Step) -> Result<Vec<String>, String> {
    for prepare in &step.prepare {
        let _ = client(local, &as_str(prepare)); // gone already is fine
    }
    let output = client(local, &as_str(&step.run))?;
    if step.answer.is_empty() {
        return Ok(vec![output]);
    }
    step.answer
        .iter()
        .map(|read| client(local, &as_str(read)))
        .collect()
}

fn signal(pid: u32, signal: libc::c_int) {
    // SAFETY: plain kill(2) on a worker of our own cluster.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// The seed of this run: `STRATUS_FAULT_SEED`, else the clock.
fn seed() -> u64 {
    std::env::var("STRATUS_FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
        | 1
}

/// A 3-worker cluster over 1 M sample rows, with every step's answer
/// without a fault and how long it took.
struct Bench {
    local: Local,
    steps: Vec<Step>,
    expected: Vec<(Vec<String>, Duration)>,
    /// When each worker slot (`local-N`) was killed.
    kills: std::cell::RefCell<Vec<(String, Instant)>>,
    _data: TempDir,
}

/// Kills of one worker slot within [`KILL_WINDOW`] the victims are kept
/// under: `stratus local`'s nanny gives a slot up after 5 deaths in 5
/// minutes (as Dask's does), which is not the fault under test.
const MAX_KILLS_PER_SLOT: usize = 4;
const KILL_WINDOW: Duration = Duration::from_secs(300);

/// The slot of a worker name (`local-2-r5` is slot `local-2`).
fn slot(name: &str) -> &str {
    name.rsplit_once("-r")
        .filter(|(_, n)| n.chars().all(|c| c.is_ascii_digit()))
        .map_or(name, |(slot, _)| slot)
}

impl Bench {
    fn start() -> Bench {
        let data = TempDir::new("matrix-data");
        stratus_engine::datagen::generate_isd(&stratus_engine::datagen::DatagenOptions {
            rows: 1_000_000,
            out: data.path().join("isd"),
            seed: 17,
        })
        .unwrap();
        let source = data.path().join("isd").display().to_string();
        let out = data.path().join("out").display().to_string();
        let local = start_local_env(
            3,
            &[],
            &[("STRATUS_SCHEDULER__HEARTBEAT_TIMEOUT", HEARTBEAT_TIMEOUT)],
        );
        eventually(Duration::from_secs(60), "three workers", || {
            (workers(&local).len() == 3).then_some(())
        });
        let steps = steps(&source, &out);
        let mut expected = Vec::new();
        for step in &steps {
            let start = Instant::now();
            let answers = run(&local, step)
                .unwrap_or_else(|e| panic!("{}: {e}\n{}", step.name, local.log_tail()));
            expected.push((answers, start.elapsed()));
        }
        Bench {
            local,
            steps,
            expected,
            kills: Default::default(),
            _data: data,
        }
    }

    /// Run step `index` with `fault` (None: no fault) injected into a
    /// random worker at a random moment; the line for the report, or why
    /// the answer differs.
    fn case(
        &self,
        index: usize,
        fault: Option<Fault>,
        rng: &mut Rng,
        seed: u64,
    ) -> Result<String, String> {
        let (local, step) = (&self.local, &self.steps[index]);
        let (answers, took) = &self.expected[index];
        settled(local);
        let mut victims = workers(local);
        let mut fault = fault;
        if fault == Some(Fault::Kill) {
            let kills = self.kills.borrow();
            let may_die = |name: &str| {
                kills
                    .iter()
                    .filter(|(s, at)| s == slot(name) && at.elapsed() < KILL_WINDOW)
                    .count()
                    < MAX_KILLS_PER_SLOT
            };
            if victims.iter().any(|(name, _)| may_die(name)) {
                victims.retain(|(name, _)| may_die(name));
            } else {
                fault = Some(Fault::Stop); // the soak, killing often: stop instead
            }
        }
        let (victim, pid) = victims[(rng.next() % victims.len() as u64) as usize].clone();
        if fault == Some(Fault::Kill) {
            self.kills
                .borrow_mut()
                .push((slot(&victim).to_string(), Instant::now()));
        }
        // A moment within the step as it ran without a fault (loss, which
        // lasts to the step's end, starts in its first third).
        let at = match fault {
            Some(Fault::Loss) => took.mul_f64(0.3 * rng.unit()),
            _ => took.mul_f64(0.1 + 0.7 * rng.unit()),
        };
        let label = fault.map_or("NoFault".to_string(), |f| format!("{f:?}"));
        let case = format!(
            "{label} of {victim} {:.0} ms into '{}' (seed {seed})",
            at.as_secs_f64() * 1000.0,
            step.name
        );
        eprintln!("fault matrix: {case}");
        let injector = std::thread::spawn(move || {
            std::thread::sleep(at);
            match fault {
                Some(Fault::Kill) => kill9(pid),
                Some(Fault::Stop) => {
                    signal(pid, libc::SIGSTOP);
                    std::thread::sleep(STOPPED);
                    signal(pid, libc::SIGCONT);
                }
                Some(Fault::Loss) => return Some(PacketLoss::start(pid)),
                None => {}
            }
            None
        });
        let start = Instant::now();
        let got = run(local, step);
        let took_now = start.elapsed();
        // The loss lasts to the end of the step.
        let loss = injector.join().unwrap();
        let dropped = loss.as_ref().map(PacketLoss::dropped);
        drop(loss);
        let got = got.map_err(|e| format!("{case}: {e}\n{}", local.log_tail()))?;
        for (want, have) in answers.iter().zip(&got) {
            same_answer(want, have).map_err(|diff| format!("{case}: another answer\n{diff}"))?;
        }
        let landed = if took_now > at { "during" } else { "after" };
        let dropped = dropped.map_or(String::new(), |n| format!(", {n} datagrams dropped"));
        Ok(format!(
            "{label} {:<42} {:>6.0} ms in ({landed} the step), {:.2} s vs {:.2} s{dropped}: same answer",
            step.name,
            at.as_secs_f64() * 1000.0,
            took_now.as_secs_f64(),
            took.as_secs_f64()
        ))
    }

    /// Resident set size of the cluster's processes (scheduler, nanny and
    /// workers: every descendant of `stratus local`), in bytes.
    fn rss(&self) -> u64 {
        let mut total = 0;
        let mut pending = vec![self.local.child.id()];
        while let Some(pid) = pending.pop() {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            total += status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0)
                * 1024;
            let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
                .unwrap_or_default();
            pending.extend(
                children
                    .split_whitespace()
                    .filter_map(|c| c.parse::<u32>().ok()),
            );
        }
        total
    }
}

/// The faults this run can inject (`STRATUS_FAULTS=kill,stop,loss` keeps
/// only those: a replay).
fn faults() -> Vec<Fault> {
    let mut faults = vec![Fault::Kill, Fault::Stop];
    if can_drop_packets() {
        faults.push(Fault::Loss);
    } else {
        eprintln!("SKIPPED packet loss: needs root and nft (CI has both)");
    }
    if let Ok(only) = std::env::var("STRATUS_FAULTS") {
        faults.retain(|f| {
            only.split(',')
                .any(|o| o.trim().eq_ignore_ascii_case(&format!("{f:?}")))
        });
    }
    faults
}

#[test]
fn every_step_gives_the_same_answer_under_every_fault() {
    let seed = seed();
    eprintln!("fault matrix: seed {seed} (replay with STRATUS_FAULT_SEED={seed})");
    let mut rng = Rng(seed);
    let bench = Bench::start();
    let mut report = Vec::new();
    for fault in faults() {
        for index in 0..bench.steps.len() {
            report.push(
                bench
                    .case(index, Some(fault), &mut rng, seed)
                    .unwrap_or_else(|e| panic!("{e}")),
            );
        }
    }
    eprintln!("fault matrix (seed {seed}):\n{}", report.join("\n"));
}

/// The soak (`scripts/soak`, not in CI): random steps, each with a random
/// fault or none, for `STRATUS_SOAK_MINUTES` (default 30) on one cluster;
/// it prints the cluster's RSS over time and fails on any other answer.
#[test]
#[ignore = "a long soak: scripts/soak runs it"]
fn soak() {
    let minutes: f64 = std::env::var("STRATUS_SOAK_MINUTES")
        .ok()
        .and_then(|m| m.parse().ok())
        .unwrap_or(30.0);
    let seed = seed();
    eprintln!("soak: {minutes} minutes, seed {seed} (replay with STRATUS_FAULT_SEED={seed})");
    let mut rng = Rng(seed);
    let bench = Bench::start();
    let faults = faults();
    let start = Instant::now();
    let (mut cases, mut peak) = (0u64, 0u64);
    let first_rss = bench.rss();
    while start.elapsed().as_secs_f64() < minutes * 60.0 {
        let index = (rng.next() % bench.steps.len() as u64) as usize;
        // One case in four runs without a fault.
        let pick = rng.next() % (faults.len() as u64 + faults.len().div_ceil(3) as u64);
        let fault = faults.get(pick as usize).copied();
        let line = bench
            .case(index, fault, &mut rng, seed)
            .unwrap_or_else(|e| panic!("soak case {cases}: {e}"));
        cases += 1;
        let rss = bench.rss();
        peak = peak.max(rss);
        eprintln!(
            "soak {:>7.1} s  case {cases:>4}  cluster RSS {:>7.1} MiB  {line}",
            start.elapsed().as_secs_f64(),
            rss as f64 / (1 << 20) as f64
        );
    }
    eprintln!(
        "soak done: {cases} cases in {:.1} min, every answer the same; cluster RSS {:.1} MiB at the start, {:.1} MiB at the end, {:.1} MiB at most (seed {seed})",
        start.elapsed().as_secs_f64() / 60.0,
        first_rss as f64 / (1 << 20) as f64,
        bench.rss() as f64 / (1 << 20) as f64,
        peak as f64 / (1 << 20) as f64
    );
}
