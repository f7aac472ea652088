//! `stratus local`: a scheduler and workers as direct child processes on
//! loopback.
//!
//! The binaries `stratus-scheduler` and `stratus-worker` are looked up next to
//! the running executable. Children get `PR_SET_PDEATHSIG`, so they stop even
//! if this process is killed hard; [`LocalCluster::stop`] (and `Drop`) sends
//! them SIGTERM and waits. The user's scheduler file is written only once
//! every worker has registered, so its existence means "ready".
//!
//! [`LocalCluster::nanny`] (what `stratus local` runs until Ctrl-C) replaces
//! a worker that dies, as Dask's nanny does: it reaps the dead child, waits
//! a back-off, and starts a new `stratus-worker` with the same settings as a
//! direct child again. A worker that exits with status 0 was asked to stop
//! and is not replaced; a slot that dies too often is given up.
//!
//! With `--adaptive` ([`Adaptive`]), the nanny also polls the scheduler's
//! adaptive target (`GET /api/adaptive`) and acts on it as Dask's
//! `Adaptive` does: it starts workers up to the target at once, and retires
//! surplus ones (`Client::retire`: their partitions move to the others, then
//! they exit 0) only after the target said so for [`Adaptive::wait_count`]
//! polls in a row.
//!
//! Stopping the cluster sends SIGINT to the workers (a worker drains only on
//! SIGTERM, and a cluster that stops has nowhere to move data to) and
//! SIGTERM to the scheduler; children also get SIGINT/SIGTERM if this
//! process dies (`PR_SET_PDEATHSIG`).

use std::collections::VecDeque;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use stratus_protocol::scheduler_file::{SchedulerFile, Target};

use crate::client::Client;

/// How to start a local cluster.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub workers: u32,
    pub threads_per_worker: u32,
    /// Per-worker memory limit; `None` = [`stratus_protocol::units::auto_memory_limit`].
    pub memory_limit: Option<u64>,
    /// QUIC port of the scheduler (0 = any free port).
    pub port: u16,
    /// Dashboard address; `None` = 127.0.0.1:8787 if free, else any free port.
    pub dashboard_address: Option<String>,
    /// Where to write the scheduler file once ready.
    pub scheduler_file: Option<PathBuf>,
    /// Send the children's logs to our stderr (else to files in the run dir).
    pub inherit_logs: bool,
    /// The scheduler's data directory (runs); `None` = inside the cluster's
    /// temporary directory, gone when it stops.
    pub data_dir: Option<PathBuf>,
    /// The directories the workers may read and write (`--data-root`);
    /// `None` = [`default_data_roots`].
    pub data_roots: Option<Vec<PathBuf>>,
    /// Scale on the scheduler's adaptive target (`--adaptive`).
    /// Where workers spill (default `<data-dir>/spill`; `none`: no
    /// spilling, a partition past the memory limit is refused).
    pub spill_dir: Option<String>,
    pub adaptive: Option<Adaptive>,
}

/// `stratus local --adaptive`: follow the scheduler's adaptive target.
#[derive(Debug, Clone)]
pub struct Adaptive {
    /// Bounds of the target (the scheduler's `--minimum-workers`,
    /// `--maximum-workers`).
    pub minimum: u32,
    pub maximum: u32,
    /// How often the target is read.
    pub interval: Duration,
    /// Scale down only after this many polls in a row asked for fewer
    /// workers (Dask's `wait_count`).
    pub wait_count: u32,
}

impl Default for Adaptive {
    fn default() -> Self {
        Adaptive {
            minimum: 1,
            maximum: 8,
            interval: Duration::from_secs(1),
            wait_count: 3,
        }
    }
}

/// Where the adaptive loop stands.
#[derive(Debug, Default)]
struct AdaptiveState {
    next_poll: Option<Instant>,
    /// Polls in a row whose target was below the workers running.
    below: u32,
    /// A retire in flight.
    retiring: Option<std::thread::JoinHandle<()>>,
}

/// The data roots of `stratus local`'s workers unless told otherwise:
/// `STRATUS_DATA_ROOTS` when set, else the current directory and the system
/// temporary directory (`std::env::temp_dir()`, so `TMPDIR` counts).
pub fn default_data_roots() -> Vec<PathBuf> {
    if let Some(list) = std::env::var_os("STRATUS_DATA_ROOTS").filter(|l| !l.is_empty()) {
        let roots: Vec<PathBuf> = std::env::split_paths(&list)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !roots.is_empty() {
            return roots;
        }
    }
    let mut roots = Vec::new();
    if let Ok(cwd) = std::env::current_dir() {
        roots.push(cwd);
    }
    roots.push(std::env::temp_dir());
    roots
}

impl Default for LocalOptions {
    fn default() -> Self {
        LocalOptions {
            workers: 2,
            threads_per_worker: 1,
            memory_limit: None,
            port: 0,
            dashboard_address: None,
            scheduler_file: None,
            inherit_logs: false,
            data_dir: None,
            data_roots: None,
            spill_dir: None,
            adaptive: None,
        }
    }
}

/// How [`LocalCluster::nanny`] replaces dead workers.
#[derive(Debug, Clone)]
pub struct RestartPolicy {
    /// Wait before replacing a worker that died; doubled for each further
    /// death of the same slot within `window`, up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// A slot whose worker dies more than this many times within `window` is
    /// given up on (logged, not replaced again).
    pub max_restarts: u32,
    pub window: Duration,
    /// How often children are checked (and dead ones reaped).
    pub poll: Duration,
    /// Replace workers that die (false: `stratus local --no-nanny`, dead
    /// workers are only reaped).
    pub replace: bool,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(30),
            max_restarts: 5,
            window: Duration::from_secs(300),
            poll: Duration::from_millis(200),
            replace: true,
        }
    }
}

/// How every worker of the cluster is started.
struct WorkerSpec {
    binary: PathBuf,
    scheduler_file: PathBuf,
    threads: u32,
    memory_limit: u64,
    inherit_logs: bool,
    /// The cluster CA (made by the scheduler in its data directory): each
    /// worker gets a worker certificate of its own name, issued into
    /// `cert_dir`. `None` only before the scheduler is ready.
    ca: Option<stratus_protocol::pki::CertificateAuthority>,
    cert_dir: PathBuf,
    /// Where the workers spill (`<data-dir>/spill` unless given; each takes
    /// its own locked directory inside; `none`: no spilling).
    spill_dir: std::ffi::OsString,
    /// Absolute: the workers' current directory is ours, but say it plainly.
    data_roots: Vec<PathBuf>,
}

/// One of the `--workers` places: its current process, and its deaths.
struct WorkerSlot {
    index: u32,
    /// The name of the current (or last) worker: `local-{index}` first, then
    /// `local-{index}-r{restarts}`.
    name: String,
    child: Option<Child>,
    restarts: u32,
    /// When the slot's workers died, within the policy's window.
    deaths: VecDeque<Instant>,
    /// A replacement is due at this time.
    restart_at: Option<Instant>,
    /// No more replacements: the worker exited with 0, or died too often.
    retired: bool,
}

impl WorkerSlot {
    /// Slot `index` whose first worker, `name`, was just started.
    fn started(index: u32, name: String, child: Child) -> WorkerSlot {
        WorkerSlot {
            index,
            name,
            child: Some(child),
            restarts: 0,
            deaths: VecDeque::new(),
            restart_at: None,
            retired: false,
        }
    }
}

/// A running local cluster.
pub struct LocalCluster {
    scheduler: Child,
    workers: Vec<WorkerSlot>,
    spec: WorkerSpec,
    run_dir: PathBuf,
    adaptive: Option<Adaptive>,
    adaptive_state: AdaptiveState,
    /// The scheduler file written for the user, if any.
    pub scheduler_file: Option<PathBuf>,
    /// Address and certificate of the scheduler.
    pub target: Target,
    /// Dashboard URL.
    pub dashboard: String,
}

/// Find a sibling binary of the running executable.
pub fn sibling_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    let mut dirs = vec![];
    if let Some(dir) = exe.parent() {
        dirs.push(dir.to_path_buf());
        // Test and bench executables live in target/<profile>/deps.
        if let Some(up) = dir.parent() {
            dirs.push(up.to_path_buf());
        }
    }
    for dir in &dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find {name} next to {} (build every binary: cargo build --workspace --bins)",
        exe.display()
    )
}

/// A child process; `death_signal` is what it gets if we die.
fn child_command(
    binary: &Path,
    log: Option<&Path>,
    death_signal: libc::c_int,
) -> anyhow::Result<Command> {
    let mut cmd = Command::new(binary);
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    match log {
        Some(path) => {
            let file = std::fs::File::create(path)
                .with_context(|| format!("cannot create log file {}", path.display()))?;
            cmd.stderr(file);
        }
        None => {
            cmd.stderr(Stdio::inherit());
        }
    }
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to send
    // `death_signal` to the child when its parent thread dies.
    unsafe {
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, death_signal);
            Ok(())
        });
    }
    Ok(cmd)
}

/// GET `path` of the dashboard at `base` (`http://IP:PORT/`): the body of
/// a 200 answer.
async fn http_get(base: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let authority = base
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("dashboard '{base}' is not an http:// URL"))?
        .trim_end_matches('/')
        .replace("localhost", "127.0.0.1");
    let mut stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(&authority),
    )
    .await
    .map_err(|_| anyhow!("connecting to {authority} timed out"))??;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        (&mut stream).take(1 << 20).read_to_end(&mut answer),
    )
    .await
    .map_err(|_| anyhow!("GET {path} timed out"))??;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("GET {path}: no HTTP answer"))?;
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        bail!("GET {path} answered '{status}'");
    }
    Ok(body.to_string())
}

fn default_dashboard() -> String {
    if std::net::TcpListener::bind("127.0.0.1:8787").is_ok() {
        "127.0.0.1:8787".into()
    } else {
        "127.0.0.1:0".into()
    }
}

impl LocalCluster {
    /// Start the scheduler, then the workers, and wait for all to register.
    pub async fn start(options: &LocalOptions) -> anyhow::Result<LocalCluster> {
        let scheduler_bin = sibling_binary("stratus-scheduler")?;
        let worker_bin = sibling_binary("stratus-worker")?;
        // Unique per cluster, also for several clusters in one process.
        static STARTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let run_dir = std::env::temp_dir().join(format!(
            "stratus-local-{}-{}-{}",
            std::process::id(),
            STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.subsec_nanos())
        ));
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;
        let internal_file = run_dir.join("scheduler.json");
        let log = |name: &str| (!options.inherit_logs).then(|| run_dir.join(format!("{name}.log")));

        let dashboard = options
            .dashboard_address
            .clone()
            .unwrap_or_else(default_dashboard);
        let data_dir = options
            .data_dir
            .clone()
            .unwrap_or_else(|| run_dir.join("data"));
        let mut cmd = child_command(&scheduler_bin, log("scheduler").as_deref(), libc::SIGTERM)?;
        cmd.args(["--host", "127.0.0.1", "--port", &options.port.to_string()])
            .args(["--dashboard-address", &dashboard])
            .arg("--scheduler-file")
            .arg(&internal_file)
            .arg("--data-dir")
            .arg(&data_dir)
            // Its workers are all new: frames of an earlier cluster on this
            // data directory could only be rebuilt from Parquet.
            .arg("--no-restore");
        if let Some(adaptive) = &options.adaptive {
            cmd.args(["--minimum-workers", &adaptive.minimum.to_string()])
                .args(["--maximum-workers", &adaptive.maximum.to_string()]);
        }
        // The scheduler makes (or reuses) its own cluster CA in the data
        // directory: the user's certificate variables are not for it.
        for var in ["STRATUS_TLS_CA", "STRATUS_TLS_CERT", "STRATUS_TLS_KEY"] {
            cmd.env_remove(var);
        }
        let scheduler = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", scheduler_bin.display()))?;
        let mut cluster = LocalCluster {
            scheduler,
            workers: Vec::new(),
            spec: WorkerSpec {
                binary: worker_bin,
                scheduler_file: internal_file.clone(),
                threads: options.threads_per_worker,
                memory_limit: 0,
                inherit_logs: options.inherit_logs,
                ca: None,
                cert_dir: run_dir.join("tls"),
                spill_dir: match &options.spill_dir {
                    Some(dir) if dir.eq_ignore_ascii_case("none") => "none".into(),
                    Some(dir) => std::path::absolute(dir)
                        .unwrap_or_else(|_| PathBuf::from(dir))
                        .into(),
                    None => std::path::absolute(data_dir.join("spill"))
                        .unwrap_or_else(|_| data_dir.join("spill"))
                        .into(),
                },
                data_roots: options
                    .data_roots
                    .clone()
                    .unwrap_or_else(default_data_roots)
                    .into_iter()
                    .map(|root| std::path::absolute(&root).unwrap_or(root))
                    .collect(),
            },
            run_dir: run_dir.clone(),
            adaptive: options.adaptive.clone(),
            adaptive_state: AdaptiveState::default(),
            scheduler_file: None,
            target: Target {
                address: String::new(),
                ca_pem: String::new(),
                cert_pem: String::new(),
                key_pem: String::new(),
                dashboard: None,
            },
            dashboard: String::new(),
        };

        // Wait for the scheduler to write its file.
        let start = Instant::now();
        let file = loop {
            if let Ok(file) = SchedulerFile::read(&internal_file) {
                break file;
            }
            if let Some(status) = cluster.scheduler.try_wait()? {
                bail!(
                    "stratus-scheduler exited ({status}) before it was ready{}",
                    cluster.log_hint("scheduler")
                );
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "stratus-scheduler was not ready within 30 s{}",
                    cluster.log_hint("scheduler")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        cluster.target = stratus_protocol::scheduler_file::Locator {
            scheduler_file: Some(internal_file.clone()),
            ..Default::default()
        }
        .resolve()?;
        let tls_dir = data_dir.join("tls");
        cluster.spec.ca = Some(
            stratus_protocol::pki::CertificateAuthority::load(&tls_dir).with_context(|| {
                format!("the cluster CA the scheduler made in {}", tls_dir.display())
            })?,
        );
        stratus_protocol::pki::create_private_dir(&cluster.spec.cert_dir)?;
        cluster.dashboard = file.dashboard.clone();

        let memory_limit = match options.memory_limit {
            Some(limit) => limit,
            None => stratus_protocol::units::auto_memory_limit(options.workers)
                .ok_or_else(|| anyhow!("cannot read the machine's memory; pass --memory-limit"))?,
        };
        cluster.spec.memory_limit = memory_limit;
        for index in 0..options.workers {
            let name = format!("local-{index}");
            let child = cluster.spawn_worker(&name)?;
            cluster
                .workers
                .push(WorkerSlot::started(index, name, child));
        }

        // No run: waiting for workers logs nothing.
        let client = Client::connect_with(&cluster.target, None).await?;
        let wait = client.wait_for_workers(options.workers, Duration::from_secs(60));
        let result = wait.await;
        client.close().await;
        if let Err(e) = result {
            for i in 0..cluster.workers.len() {
                let Some(child) = cluster.workers[i].child.as_mut() else {
                    continue;
                };
                if let Some(status) = child.try_wait()? {
                    let name = &cluster.workers[i].name;
                    bail!("worker {name} exited ({status}){}", cluster.log_hint(name));
                }
            }
            return Err(e.into());
        }
        if let Some(path) = &options.scheduler_file {
            file.write(path)?;
            cluster.scheduler_file = Some(path.clone());
        }
        Ok(cluster)
    }

    /// Start a `stratus-worker` named `name` as a direct child.
    fn spawn_worker(&self, name: &str) -> anyhow::Result<Child> {
        let spec = &self.spec;
        let log = (!spec.inherit_logs).then(|| self.run_dir.join(format!("{name}.log")));
        // SIGINT: a worker stops at once (SIGTERM would drain it).
        let mut cmd = child_command(&spec.binary, log.as_deref(), libc::SIGINT)?;
        cmd.arg("--scheduler-file")
            .arg(&spec.scheduler_file)
            .args(["--nthreads", &spec.threads.to_string()])
            .args(["--memory-limit", &spec.memory_limit.to_string()])
            .args(["--name", name])
            .arg("--spill-dir")
            .arg(&spec.spill_dir);
        for root in &spec.data_roots {
            cmd.arg("--data-root").arg(root);
        }
        if let Some(ca) = &spec.ca {
            // A worker certificate of the worker's own name: peers check it.
            let pair = ca.issue(&stratus_protocol::pki::IssueSpec {
                role: stratus_protocol::pki::Role::Worker,
                name: name.to_string(),
                hosts: Vec::new(),
                days: stratus_protocol::pki::DEFAULT_DAYS,
            })?;
            let cert = spec.cert_dir.join(format!("{name}.pem"));
            let key = spec.cert_dir.join(format!("{name}.key"));
            let _ = std::fs::remove_file(&cert);
            let _ = std::fs::remove_file(&key);
            stratus_protocol::pki::write_credential(&spec.cert_dir, name, &pair)?;
            cmd.arg("--tls-cert").arg(&cert).arg("--tls-key").arg(&key);
        }
        // Our own STRATUS_SCHEDULER and certificate variables must not
        // override the file and the credential given here.
        for var in [
            "STRATUS_SCHEDULER",
            "STRATUS_TLS_CA",
            "STRATUS_TLS_CERT",
            "STRATUS_TLS_KEY",
        ] {
            cmd.env_remove(var);
        }
        cmd.spawn()
            .with_context(|| format!("cannot start {}", spec.binary.display()))
    }

    /// Watch the children until the scheduler exits (an error: the cluster is
    /// gone), replacing workers that die, as Dask's nanny does. Each check
    /// reaps dead children, so none stays a zombie. A worker that exits with
    /// status 0 was asked to stop and is not replaced; one that dies (a
    /// signal, a failure) is replaced after `policy.backoff`, doubled for
    /// each further death of its slot within `policy.window`; a slot that
    /// dies more than `policy.max_restarts` times within the window is given
    /// up. Every death and restart is logged to stderr.
    ///
    /// Nothing is restarted once this future is dropped: `stratus local`
    /// stops awaiting it when Ctrl-C or SIGTERM arrives, before it stops the
    /// children, and a worker killed by the terminal's Ctrl-C is still in its
    /// back-off (or exited with 0) when that happens.
    pub async fn nanny(&mut self, policy: &RestartPolicy) -> anyhow::Result<()> {
        loop {
            if let Some(status) = self.scheduler.try_wait()? {
                // Leave a stop signal (which ends the scheduler too) time to
                // win over this report.
                tokio::time::sleep(Duration::from_secs(1)).await;
                bail!(
                    "stratus-scheduler exited ({status}){}",
                    self.log_hint("scheduler")
                );
            }
            let now = Instant::now();
            for i in 0..self.workers.len() {
                let exited = match self.workers[i].child.as_mut() {
                    Some(child) => child.try_wait()?,
                    None => None,
                };
                if let Some(status) = exited {
                    let slot = &mut self.workers[i];
                    let pid = slot.child.take().map_or(0, |c| c.id());
                    if status.success() {
                        eprintln!(
                            "stratus local: worker {} (pid {pid}) exited normally; not restarting it",
                            slot.name
                        );
                        slot.retired = true;
                    } else if !policy.replace {
                        eprintln!(
                            "stratus local: worker {} (pid {pid}) died ({status}); not replacing it (--no-nanny)",
                            slot.name
                        );
                        slot.retired = true;
                    } else {
                        slot.died(&format!("(pid {pid}) died ({status});"), now, policy);
                    }
                }
                let slot = &self.workers[i];
                if slot.retired || slot.restart_at.is_none_or(|t| t > now) {
                    continue;
                }
                let name = format!("local-{}-r{}", slot.index, slot.restarts + 1);
                let spawned = self.spawn_worker(&name);
                let slot = &mut self.workers[i];
                slot.restart_at = None;
                slot.restarts += 1;
                match spawned {
                    Ok(child) => {
                        eprintln!(
                            "stratus local: restarted worker {} as {name} (pid {}, restart {} of slot {})",
                            slot.name,
                            child.id(),
                            slot.restarts,
                            slot.index
                        );
                        slot.name = name;
                        slot.child = Some(child);
                    }
                    Err(e) => {
                        slot.name = name;
                        slot.died(&format!("could not start: {e:#};"), now, policy);
                    }
                }
            }
            if self.adaptive.is_some() {
                self.adapt().await;
            }
            tokio::time::sleep(policy.poll).await;
        }
    }

    /// One step of `--adaptive`: read the target when a poll is due, start
    /// workers up to it at once, retire surplus ones after `wait_count`
    /// polls in a row asked for fewer (one retire at a time, in the
    /// background: the nanny keeps reaping meanwhile).
    async fn adapt(&mut self) {
        let Some(adaptive) = self.adaptive.clone() else {
            return;
        };
        let now = Instant::now();
        if self.adaptive_state.next_poll.is_some_and(|t| t > now) {
            return;
        }
        self.adaptive_state.next_poll = Some(now + adaptive.interval);
        if let Some(task) = &self.adaptive_state.retiring {
            if !task.is_finished() {
                return;
            }
            self.adaptive_state.retiring = None;
        }
        let target = match self.adaptive_target().await {
            Ok(target) => target,
            Err(e) => {
                eprintln!("stratus local: adaptive: cannot read the target: {e:#}");
                return;
            }
        };
        let active: Vec<usize> = (0..self.workers.len())
            .filter(|&i| self.workers[i].child.is_some() || self.workers[i].restart_at.is_some())
            .collect();
        let running = active.len() as u32;
        if target > running {
            self.adaptive_state.below = 0;
            eprintln!(
                "stratus local: adaptive: target {target} workers, {running} running: starting {}",
                target - running
            );
            for _ in running..target {
                let index = self.workers.len() as u32;
                let name = format!("local-{index}");
                match self.spawn_worker(&name) {
                    Ok(child) => self.workers.push(WorkerSlot::started(index, name, child)),
                    Err(e) => {
                        eprintln!("stratus local: adaptive: cannot start {name}: {e:#}");
                        break;
                    }
                }
            }
        } else if target < running {
            self.adaptive_state.below += 1;
            if self.adaptive_state.below < adaptive.wait_count {
                return;
            }
            self.adaptive_state.below = 0;
            // The newest workers go first.
            let names: Vec<String> = active
                .iter()
                .rev()
                .filter(|&&i| self.workers[i].child.is_some())
                .take((running - target) as usize)
                .map(|&i| self.workers[i].name.clone())
                .collect();
            if names.is_empty() {
                return;
            }
            eprintln!(
                "stratus local: adaptive: target {target} workers, {running} running: retiring {}",
                names.join(", ")
            );
            let target = self.target.clone();
            let retire = names;
            // A thread of its own (the client's futures stay on one thread):
            // the nanny keeps reaping while the data moves.
            let task = std::thread::spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                let result = match runtime {
                    Ok(runtime) => runtime.block_on(async {
                        let client = Client::connect_with(&target, None).await?;
                        let retired = client.retire(&retire, false).await;
                        client.close().await;
                        retired
                    }),
                    Err(e) => {
                        eprintln!("stratus local: adaptive: no runtime for a retire: {e}");
                        return;
                    }
                };
                match result {
                    Ok(retired) => {
                        for w in retired {
                            let moved: Vec<String> = w
                                .moved
                                .iter()
                                .map(|(to, n, bytes)| {
                                    format!(
                                        "{n} partitions ({}) to {to}",
                                        stratus_protocol::units::format_bytes(*bytes)
                                    )
                                })
                                .collect();
                            eprintln!(
                                "stratus local: adaptive: retired {}{}",
                                w.name,
                                if moved.is_empty() {
                                    String::new()
                                } else {
                                    format!(": moved {}", moved.join(", "))
                                }
                            );
                        }
                    }
                    Err(e) => eprintln!("stratus local: adaptive: retire refused: {e}"),
                }
            });
            self.adaptive_state.retiring = Some(task);
        } else {
            self.adaptive_state.below = 0;
        }
    }

    /// `target` of the scheduler's `GET /api/adaptive`.
    async fn adaptive_target(&self) -> anyhow::Result<u32> {
        let body = http_get(&self.dashboard, "/api/adaptive").await?;
        let value: serde_json::Value =
            serde_json::from_str(&body).context("/api/adaptive is not JSON")?;
        value["target"]
            .as_u64()
            .map(|t| t as u32)
            .ok_or_else(|| anyhow!("/api/adaptive has no target: {body}"))
    }

    fn log_hint(&self, name: &str) -> String {
        let path = self.run_dir.join(format!("{name}.log"));
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.is_empty() => {
                let tail: Vec<&str> = text.lines().rev().take(5).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(" (log {}):\n{}", path.display(), tail.join("\n"))
            }
            _ => String::new(),
        }
    }

    /// Process ids of the running workers, in slot order.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers
            .iter()
            .filter_map(|w| w.child.as_ref().map(Child::id))
            .collect()
    }

    /// Process id of the scheduler.
    pub fn scheduler_pid(&self) -> u32 {
        self.scheduler.id()
    }

    /// Directory with the children's logs.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Stop every child (SIGINT to workers, SIGTERM to the scheduler, then
    /// SIGKILL after 5 s) and remove the scheduler file.
    pub fn stop(&mut self) {
        // A retire in flight ends with the cluster (its thread is left).
        self.adaptive_state.retiring = None;
        let mut children: Vec<(&mut Child, libc::c_int)> = self
            .workers
            .iter_mut()
            .filter_map(|w| w.child.as_mut())
            .map(|c| (c, libc::SIGINT))
            .collect();
        children.push((&mut self.scheduler, libc::SIGTERM));
        // Workers get SIGINT: they exit at once (SIGTERM would drain them).
        for (child, signal) in children.iter_mut() {
            if let Ok(None) = child.try_wait() {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, *signal);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for (child, _) in children.iter_mut() {
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Ok(None) => {
                        let _ = child.kill();
                        let _ = child.wait();
                        break;
                    }
                }
            }
        }
        if let Some(path) = self.scheduler_file.take() {
            let _ = std::fs::remove_file(path);
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }
}

impl WorkerSlot {
    /// The slot's worker died (`what` says how): give the slot up or
    /// schedule its replacement, and say which on stderr.
    fn died(&mut self, what: &str, now: Instant, policy: &RestartPolicy) {
        self.deaths.push_back(now);
        while self
            .deaths
            .front()
            .is_some_and(|&t| now.duration_since(t) > policy.window)
        {
            self.deaths.pop_front();
        }
        let deaths = self.deaths.len() as u32;
        if deaths > policy.max_restarts {
            eprintln!(
                "stratus local: worker {} {what} giving up on slot {}: {deaths} deaths within {} s (the cluster runs one worker short)",
                self.name,
                self.index,
                policy.window.as_secs()
            );
            self.retired = true;
            return;
        }
        let backoff = policy
            .backoff
            .saturating_mul(1 << (deaths - 1).min(16))
            .min(policy.max_backoff);
        eprintln!(
            "stratus local: worker {} {what} restarting it in {:.1} s",
            self.name,
            backoff.as_secs_f64()
        );
        self.restart_at = Some(now + backoff);
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot() -> WorkerSlot {
        WorkerSlot {
            index: 0,
            name: "local-0".into(),
            child: None,
            restarts: 0,
            deaths: VecDeque::new(),
            restart_at: None,
            retired: false,
        }
    }

    #[test]
    fn back_off_doubles_and_a_slot_that_dies_too_often_is_given_up() {
        let policy = RestartPolicy {
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(5),
            max_restarts: 4,
            window: Duration::from_secs(60),
            poll: Duration::from_millis(200),
            replace: true,
        };
        let mut slot = slot();
        let t0 = Instant::now();
        let mut waits = Vec::new();
        for k in 0..4 {
            let now = t0 + Duration::from_secs(k);
            slot.died("(pid 1) died;", now, &policy);
            assert!(!slot.retired);
            waits.push(slot.restart_at.take().unwrap() - now);
        }
        let secs: Vec<u64> = waits.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [1, 2, 4, 5]);
        // A fifth death within the window: given up.
        slot.died("(pid 1) died;", t0 + Duration::from_secs(5), &policy);
        assert!(slot.retired && slot.restart_at.is_none());

        // Deaths spread wider than the window never give up, and the back-off
        // starts over.
        let mut slot = self::slot();
        for k in 0..10 {
            let now = t0 + Duration::from_secs(61 * k);
            slot.died("(pid 1) died;", now, &policy);
            assert!(!slot.retired);
            assert_eq!(slot.restart_at.take().unwrap() - now, policy.backoff);
        }
    }
}
