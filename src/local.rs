//! `stratus local`: a scheduler and workers as direct child processes on
//! loopback.
//!
//! The binaries `stratus-scheduler` and `stratus-worker` are looked up next to
//! the running executable. Children get `PR_SET_PDEATHSIG`, so they stop even
//! if this process is killed hard; [`LocalCluster::stop`] (and `Drop`) sends
//! them SIGTERM and waits. The user's scheduler file is written only once
//! every worker has registered, so its existence means "ready".

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
    /// Per-worker memory limit; `None` = available memory / workers.
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
        }
    }
}

/// A running local cluster.
pub struct LocalCluster {
    scheduler: Child,
    workers: Vec<Child>,
    run_dir: PathBuf,
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

fn child_command(binary: &Path, log: Option<&Path>) -> anyhow::Result<Command> {
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
    // SIGTERM to the child when its parent thread dies.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    Ok(cmd)
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
        let run_dir = std::env::temp_dir().join(format!(
            "stratus-local-{}-{}",
            std::process::id(),
            Instant::now().elapsed().as_nanos()
        ));
        std::fs::create_dir_all(&run_dir)
            .with_context(|| format!("cannot create {}", run_dir.display()))?;
        let internal_file = run_dir.join("scheduler.json");
        let log = |name: &str| (!options.inherit_logs).then(|| run_dir.join(format!("{name}.log")));

        let dashboard = options
            .dashboard_address
            .clone()
            .unwrap_or_else(default_dashboard);
        let mut cmd = child_command(&scheduler_bin, log("scheduler").as_deref())?;
        cmd.args(["--host", "127.0.0.1", "--port", &options.port.to_string()])
            .args(["--dashboard-address", &dashboard])
            .arg("--scheduler-file")
            .arg(&internal_file)
            .arg("--data-dir")
            .arg(
                options
                    .data_dir
                    .clone()
                    .unwrap_or_else(|| run_dir.join("data")),
            );
        let scheduler = cmd
            .spawn()
            .with_context(|| format!("cannot start {}", scheduler_bin.display()))?;
        let mut cluster = LocalCluster {
            scheduler,
            workers: Vec::new(),
            run_dir: run_dir.clone(),
            scheduler_file: None,
            target: Target {
                address: String::new(),
                ca_pem: String::new(),
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
        cluster.target = Target {
            address: file.address.clone(),
            ca_pem: file.tls_ca.clone(),
            dashboard: Some(file.dashboard.clone()),
        };
        cluster.dashboard = file.dashboard.clone();

        let memory_limit = match options.memory_limit {
            Some(limit) => limit,
            None => {
                stratus_protocol::units::available_memory()
                    .ok_or_else(|| anyhow!("cannot read available memory; pass --memory-limit"))?
                    / options.workers.max(1) as u64
            }
        };
        for i in 0..options.workers {
            let name = format!("local-{i}");
            let mut cmd = child_command(&worker_bin, log(&name).as_deref())?;
            cmd.arg("--scheduler-file")
                .arg(&internal_file)
                .args(["--nthreads", &options.threads_per_worker.to_string()])
                .args(["--memory-limit", &memory_limit.to_string()])
                .args(["--name", &name]);
            // Our own STRATUS_SCHEDULER must not override the file.
            cmd.env_remove("STRATUS_SCHEDULER");
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start {}", worker_bin.display()))?;
            cluster.workers.push(child);
        }

        let client = Client::connect(&cluster.target).await?;
        let wait = client.wait_for_workers(options.workers, Duration::from_secs(60));
        let result = wait.await;
        client.close().await;
        if let Err(e) = result {
            for (i, w) in cluster.workers.iter_mut().enumerate() {
                if let Some(status) = w.try_wait()? {
                    bail!(
                        "worker local-{i} exited ({status}){}",
                        cluster.log_hint(&format!("local-{i}"))
                    );
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

    /// Process ids of the workers, in start order.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.workers.iter().map(|w| w.id()).collect()
    }

    /// Process id of the scheduler.
    pub fn scheduler_pid(&self) -> u32 {
        self.scheduler.id()
    }

    /// Directory with the children's logs.
    pub fn run_dir(&self) -> &Path {
        &self.run_dir
    }

    /// Stop every child (SIGTERM, then SIGKILL after 5 s) and remove the
    /// scheduler file.
    pub fn stop(&mut self) {
        let mut children: Vec<&mut Child> = self.workers.iter_mut().collect();
        children.push(&mut self.scheduler);
        for child in children.iter_mut() {
            if let Ok(None) = child.try_wait() {
                // SAFETY: plain kill(2) on our own child's pid.
                unsafe {
                    libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        for child in children.iter_mut() {
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

impl Drop for LocalCluster {
    fn drop(&mut self) {
        self.stop();
    }
}
