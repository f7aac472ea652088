//! `stratus-worker quic://HOST:PORT --nthreads N --memory-limit 8GiB --name NAME`:
//! register with a scheduler and run its tasks until it goes away, serving
//! Prometheus metrics on `--metrics-address`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::anyhow;
use clap::Parser;
use serde::{Deserialize, Serialize};

use stratus_protocol::pki::{PeerCertificate, Role, FILE_WORKER_NAME};
use stratus_protocol::scheduler_file::{Holder, Locator, Target};
use stratus_protocol::tls::DenyList;
use stratus_protocol::units::{auto_memory_limit, parse_bytes};
use stratus_worker::metrics::{self, WorkerMetrics};
use stratus_worker::node::{run, WorkerConfig};
use stratus_worker::peer::{TlsConfig, TlsConfigHandle};
use stratus_worker::store::SpillPolicy;

/// mimalloc, counting what each compute thread allocates (a task's working
/// memory, see `stratus_worker::working`).
#[global_allocator]
static GLOBAL: stratus_worker::working::Counting<mimalloc::MiMalloc> =
    stratus_worker::working::Counting(mimalloc::MiMalloc);

/// Command line of `stratus-worker` (Dask's shapes).
#[derive(Parser, Debug, Clone)]
#[command(name = "stratus-worker", version, about = "Stratus worker")]
struct Cli {
    /// Scheduler address, `quic://HOST:PORT`.
    #[arg(env = "STRATUS_SCHEDULER")]
    scheduler: Option<String>,
    /// Scheduler file written by the scheduler (address and certificate).
    #[arg(long, env = "STRATUS_SCHEDULER_FILE")]
    scheduler_file: Option<PathBuf>,
    /// The cluster CA certificate (PEM) to trust.
    #[arg(long, env = "STRATUS_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// This worker's certificate (role worker), issued by the cluster CA;
    /// without it, the worker credential of the scheduler file.
    #[arg(long, env = "STRATUS_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert.
    #[arg(long, env = "STRATUS_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Compute threads (default: all cores).
    #[arg(long)]
    nthreads: Option<u32>,
    /// Memory for persisted data: `8GiB`, `auto` (60% of the machine's
    /// memory or its cgroup's limit, whichever is lower), `0` (no limit).
    #[arg(long)]
    memory_limit: Option<String>,
    /// Worker name (default: its certificate's name; host-pid with the
    /// scheduler file's shared credential).
    #[arg(long)]
    name: Option<String>,
    /// Where to serve Prometheus metrics (`HOST:PORT`; default
    /// 127.0.0.1:0, a free port, so workers on one host never collide).
    #[arg(long)]
    metrics_address: Option<String>,
    /// A directory tasks may read and write below (repeatable; default
    /// none: no file is read or written until one is given). Also
    /// `STRATUS_DATA_ROOTS=DIR1:DIR2` or `data_roots` in the settings.
    #[arg(long = "data-root", value_name = "DIR")]
    data_roots: Vec<PathBuf>,
    /// An object-store URL prefix tasks may read and write below
    /// (repeatable, any URL form: az://, abfss://, https://, s3://; default
    /// none: every object-store URL is allowed). Also `url_allow` in the
    /// settings. Local paths are governed by --data-root.
    #[arg(long = "url-allow", value_name = "PREFIX")]
    url_allow: Vec<String>,
    /// How long to keep reconnecting to a lost scheduler (keeping the
    /// partitions held) before exiting: `30s`, `10m` (default 5m).
    #[arg(long)]
    reconnect_timeout: Option<String>,
    /// Where persisted partitions spill when memory runs short (this worker
    /// takes a locked directory of its own inside; default: systemd's
    /// $CACHE_DIRECTORY, else the system's temporary directory; `none`:
    /// no spilling, a partition past the memory limit is refused).
    #[arg(long)]
    spill_dir: Option<String>,
    /// Most bytes of spill files on disk (`50GiB`; default 0: no cap other
    /// than the disk's).
    #[arg(long)]
    spill_limit: Option<String>,
    /// Free space spilling leaves on the spill directory's filesystem, for
    /// the host: `auto` (default: 5% of it, at most 2 GiB), `10%`, a size
    /// (`20GiB`), or `0`.
    #[arg(long)]
    spill_disk_reserve: Option<String>,
    /// How spill files are written: `none` (default: Arrow IPC read back
    /// by mapping, zero copy), `lz4` or `zstd` (2.5-4x / 4-6.6x smaller
    /// files on ISD-like data, decompressed into RAM when read back). On a
    /// fast local disk `none` spilled and read back faster at every step;
    /// compress when disk space or a slow disk is the limit
    /// (worker/src/spill.rs, benches/README.md).
    #[arg(long)]
    spill_compression: Option<String>,
    /// TOML settings file.
    #[arg(long, env = "STRATUS_CONFIG")]
    config: Option<PathBuf>,
    /// More logging (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    /// Log lines as `text`, or `json` (one object per line, for log shippers).
    #[arg(long, env = "STRATUS_LOG_FORMAT", default_value = "text")]
    log_format: stratus_protocol::logging::LogFormat,
    /// Print the settings in force, each with where it came from (default,
    /// file, env, flag), and exit.
    #[arg(long)]
    show_config: bool,
}

/// Settings: defaults, then the TOML file's `[worker]`-less keys, then
/// `STRATUS_WORKER__<KEY>` environment variables, then flags.
#[derive(Debug, Clone, Deserialize, Serialize)]
struct Settings {
    /// Certificate files (flags and STRATUS_TLS_* variables win).
    tls_ca: Option<PathBuf>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    nthreads: Option<u32>,
    memory_limit: String,
    name: Option<String>,
    metrics_address: String,
    /// Serials of certificates to refuse although the CA signed them
    /// (re-read on SIGHUP).
    #[serde(default)]
    tls_deny_serials: Vec<String>,
    /// Connections the peer endpoint serves, in total and per peer address.
    max_connections: usize,
    max_connections_per_ip: usize,
    /// Concurrent streams a peer may open on one connection.
    max_streams_per_connection: u32,
    /// Largest result (head rows, group-by answer, file list) a task sends.
    max_result_bytes: String,
    /// Input a shuffle splits and sends at a time.
    shuffle_chunk_bytes: String,
    /// How long a worker that lost its scheduler tries to reconnect.
    reconnect_timeout: String,
    /// Directories tasks may read and write (flags and STRATUS_DATA_ROOTS
    /// take precedence).
    #[serde(default)]
    data_roots: Vec<PathBuf>,
    /// Object-store URL prefixes tasks may use (flags add to them); empty
    /// allows all.
    #[serde(default)]
    url_allow: Vec<String>,
    /// Let stores without configured credentials use the cloud's instance
    /// metadata service (managed identity, EC2 role) instead of anonymous
    /// access.
    storage_instance_credentials: bool,
    /// Object-store requests in flight on this worker.
    storage_max_requests: usize,
    /// Retries of a failed object-store request (5xx, timeouts, connection
    /// errors), and the time after which retrying stops.
    storage_retries: usize,
    storage_retry_timeout_seconds: u64,
    /// Time for one object-store request.
    storage_request_timeout_seconds: u64,
    /// Spill directory ("" = the default, "none" = no spilling).
    spill_dir: String,
    /// Most bytes of spill files (0 = no cap).
    spill_limit: String,
    /// Free space spilling leaves on the filesystem (`auto`, `10%`, bytes).
    spill_disk_reserve: String,
    /// Spill file compression (`none`, `lz4`, `zstd`).
    spill_compression: String,
    /// Fraction of the memory limit above which partitions spill (Dask's
    /// `target`).
    memory_target_fraction: f64,
    /// Fraction of the memory limit above which tasks that add data wait
    /// for spills (Dask's `pause`).
    memory_pause_fraction: f64,
}

fn settings(cli: &Cli) -> Result<Settings, String> {
    settings_shown(cli).map(|loaded| loaded.settings)
}

/// The spill directory this worker takes, and when to spill; None with
/// `spill_dir = "none"`.
fn open_spill(
    s: &Settings,
    name: &str,
) -> anyhow::Result<Option<(Arc<stratus_worker::spill::SpillDir>, SpillPolicy)>> {
    if s.spill_dir.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let (target, pause) = (s.memory_target_fraction, s.memory_pause_fraction);
    if !(0.0 < target && target <= pause && pause <= 1.0) {
        return Err(anyhow!(
            "memory_target_fraction ({target}) and memory_pause_fraction ({pause}) must satisfy 0 < target <= pause <= 1"
        ));
    }
    let root = if s.spill_dir.is_empty() {
        std::env::var_os("CACHE_DIRECTORY")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("stratus-spill"))
    } else {
        PathBuf::from(&s.spill_dir)
    };
    let limit = parse_bytes(&s.spill_limit).map_err(|e| anyhow!("--spill-limit: {e}"))?;
    let reserve = stratus_worker::spill::DiskReserve::parse(&s.spill_disk_reserve)
        .map_err(|e| anyhow!("--spill-disk-reserve: {e}"))?;
    let compression = spill_compression(s)?;
    let dir = match stratus_worker::spill::SpillDir::open(&root, name, limit) {
        Ok(dir) => dir.with_disk_reserve(reserve).with_compression(compression),
        // A directory given is required; the default may be missing (a
        // scratch container has no /tmp): no spilling, said loudly.
        Err(e) if s.spill_dir.is_empty() => {
            tracing::warn!(
                "no spilling: {e} (give --spill-dir; a partition past the memory limit is refused)"
            );
            return Ok(None);
        }
        Err(e) => return Err(anyhow!("--spill-dir: {e}")),
    };
    tracing::info!(
        "spill directory {} (spilling past {:.0}% of the memory limit, pausing past {:.0}%; compression {})",
        dir.path().display(),
        target * 100.0,
        pause * 100.0,
        compression.name()
    );
    Ok(Some((Arc::new(dir), SpillPolicy { target, pause })))
}

/// The spill files' compression (`spill_compression`, `--spill-compression`).
fn spill_compression(s: &Settings) -> anyhow::Result<stratus_worker::spill::SpillCompression> {
    stratus_worker::spill::SpillCompression::parse(&s.spill_compression)
        .map_err(|e| anyhow!("spill_compression (--spill-compression): {e}"))
}

/// The settings, with where every value came from (`--show-config`).
fn settings_shown(cli: &Cli) -> Result<stratus_settings::Loaded<Settings>, String> {
    use stratus_settings::{Layers, Source};
    let flag = |name: &str| Source::Flag(name.to_string());
    // A flag clap may also take from a flat variable: say which.
    let flag_or_env = |name: &str, var: &str, value: &str| match std::env::var(var) {
        Ok(v) if v == value => Source::Env(var.to_string()),
        _ => Source::Flag(name.to_string()),
    };
    let mut layers = Layers::new("worker")
        .default("memory_limit", "auto")
        .default("metrics_address", "127.0.0.1:0")
        .default("max_result_bytes", "64MiB")
        .default("shuffle_chunk_bytes", "128MiB")
        .default("reconnect_timeout", "5m")
        .default("spill_dir", "")
        .default("spill_limit", "0")
        .default("spill_disk_reserve", "auto")
        .default("spill_compression", "none")
        .default("memory_target_fraction", 0.6)
        .default("memory_pause_fraction", 0.8)
        .default("storage_instance_credentials", false)
        .default("storage_max_requests", 32)
        .default("storage_retries", 5)
        .default("storage_retry_timeout_seconds", 60)
        .default("storage_request_timeout_seconds", 60)
        .default("max_connections", 4096)
        .default("max_connections_per_ip", 256)
        .default(
            "max_streams_per_connection",
            stratus_protocol::limits::DEFAULT_MAX_STREAMS_PER_CONNECTION,
        )
        .list("tls_deny_serials")
        .list("url_allow")
        .list("data_roots")
        .file(cli.config.as_deref())
        .flag("nthreads", cli.nthreads, flag("--nthreads"))
        .flag(
            "memory_limit",
            cli.memory_limit.clone(),
            flag("--memory-limit"),
        )
        .flag("name", cli.name.clone(), flag("--name"))
        .flag("spill_dir", cli.spill_dir.clone(), flag("--spill-dir"))
        .flag(
            "spill_limit",
            cli.spill_limit.clone(),
            flag("--spill-limit"),
        )
        .flag(
            "spill_disk_reserve",
            cli.spill_disk_reserve.clone(),
            flag("--spill-disk-reserve"),
        )
        .flag(
            "spill_compression",
            cli.spill_compression.clone(),
            flag("--spill-compression"),
        )
        .flag(
            "reconnect_timeout",
            cli.reconnect_timeout.clone(),
            flag("--reconnect-timeout"),
        )
        .flag(
            "metrics_address",
            cli.metrics_address.clone(),
            flag("--metrics-address"),
        );
    for (key, name, var, value) in [
        ("tls_ca", "--tls-ca", "STRATUS_TLS_CA", &cli.tls_ca),
        ("tls_cert", "--tls-cert", "STRATUS_TLS_CERT", &cli.tls_cert),
        ("tls_key", "--tls-key", "STRATUS_TLS_KEY", &cli.tls_key),
    ] {
        if let Some(v) = value {
            let v = v.display().to_string();
            let source = flag_or_env(name, var, &v);
            layers = layers.flag(key, Some(v), source);
        }
    }
    // The data roots: flags, else STRATUS_DATA_ROOTS, else the settings (as
    // `roots::configured` takes them).
    let display = |roots: &[PathBuf]| -> Vec<String> {
        roots.iter().map(|r| r.display().to_string()).collect()
    };
    if !cli.data_roots.is_empty() {
        layers = layers.flag(
            "data_roots",
            Some(display(&cli.data_roots)),
            flag("--data-root"),
        );
    } else if let Some(list) = std::env::var_os("STRATUS_DATA_ROOTS").filter(|l| !l.is_empty()) {
        let roots: Vec<PathBuf> = std::env::split_paths(&list).collect();
        layers = layers.flag(
            "data_roots",
            Some(display(&roots)),
            Source::Env("STRATUS_DATA_ROOTS".into()),
        );
    }
    layers.load::<Settings>()
}

fn main() {
    let cli = Cli::parse();
    if cli.show_config {
        // `stratus config show --worker`: the settings in force, and why.
        match settings_shown(&cli) {
            Ok(loaded) => print!("{}", loaded.render()),
            Err(e) => {
                eprintln!("stratus-worker: error: {e}");
                std::process::exit(2);
            }
        }
        return;
    }
    stratus_protocol::logging::init(cli.verbose, cli.log_format);
    stratus_worker::panics::abort_on_panic();
    if let Err(e) = start(cli) {
        eprintln!("stratus-worker: error: {e:#}");
        std::process::exit(1);
    }
}

fn start(cli: Cli) -> anyhow::Result<()> {
    let s = settings(&cli).map_err(anyhow::Error::msg)?;
    // A wrong value fails before anything connects.
    spill_compression(&s)?;
    let credentials = load_credentials(&cli, &s)?;
    let target = credentials.target.clone();
    let own = credentials.own.clone();
    let nthreads = s
        .nthreads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let memory_limit = match s.memory_limit.as_str() {
        // The worker's share as if it were alone on its host (`stratus
        // local` divides among its workers itself).
        "auto" => auto_memory_limit(1)
            .ok_or_else(|| anyhow!("cannot read the machine's memory; pass --memory-limit"))?,
        text => parse_bytes(text).map_err(|e| anyhow!("--memory-limit: {e}"))?,
    };
    let name = s.name.clone().unwrap_or_else(|| {
        if own.name != FILE_WORKER_NAME {
            return own.name.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "worker".into());
        format!("{host}-{}", std::process::id())
    });
    let roots = stratus_worker::roots::configured(
        &cli.data_roots,
        std::env::var("STRATUS_DATA_ROOTS").ok().as_deref(),
        &s.data_roots,
    );
    let data_roots =
        stratus_worker::roots::DataRoots::new(&roots).map_err(|e| anyhow!("--data-root: {e}"))?;
    if data_roots.roots().is_empty() {
        tracing::warn!(
            "no data roots: this worker reads and writes no files (every file request fails); {}",
            stratus_worker::roots::HOW
        );
    } else {
        tracing::info!("data roots: {}", data_roots.describe());
    }
    let metrics_bind: SocketAddr = s.metrics_address.parse().map_err(|e| {
        anyhow!(
            "--metrics-address '{}': expected HOST:PORT with an IP address: {e}",
            s.metrics_address
        )
    })?;
    let metrics_listener = metrics::bind(metrics_bind).map_err(|e| anyhow!(e))?;
    let metrics_bound = metrics_listener.local_addr()?;
    let storage_stats = Arc::new(stratus_storage::StorageStats::default());
    let metrics = Arc::new(WorkerMetrics::new(
        &name,
        &target.address,
        nthreads,
        memory_limit,
        storage_stats.clone(),
    ));
    let tls = TlsConfigHandle::new(TlsConfig::new(
        target.credentials(),
        DenyList::new(&s.tls_deny_serials),
    ));
    let reconnect_timeout = stratus_protocol::units::parse_duration(&s.reconnect_timeout)
        .map_err(|e| anyhow!("reconnect_timeout (--reconnect-timeout): {e}"))?;
    // After a restart the scheduler may listen elsewhere: its file says.
    let relocate = {
        let (cli_for_relocate, settings_for_relocate) = (cli.clone(), s.clone());
        stratus_worker::node::Relocate(Arc::new(move || {
            load_credentials(&cli_for_relocate, &settings_for_relocate)
                .ok()
                .map(|loaded| loaded.target.address)
        }))
    };
    let spill = open_spill(&s, &name)?;
    let spill_dir = spill.as_ref().map(|(dir, _)| dir.clone());
    let config = WorkerConfig {
        name,
        nthreads,
        memory_limit,
        address: target.address.clone(),
        tls: tls.clone(),
        metrics: metrics.clone(),
        metrics_bound: Some(metrics_bound),
        peer_limits: stratus_worker::peer::PeerLimits {
            connections: stratus_protocol::limits::ConnectionLimits {
                max_total: s.max_connections.max(1),
                max_per_ip: s.max_connections_per_ip.max(1),
            },
            max_buffered: memory_limit,
        },
        data_roots: Arc::new(data_roots),
        storage_stats,
        reconnect_timeout,
        relocate,
        drain: Default::default(),
        spill,
        storage: stratus_storage::StoragePolicy {
            url_allow: s.url_allow.iter().chain(&cli.url_allow).cloned().collect(),
            instance_credentials: s.storage_instance_credentials,
            max_requests: s.storage_max_requests.max(1),
            retries: s.storage_retries,
            retry_timeout: std::time::Duration::from_secs(s.storage_retry_timeout_seconds),
            request_timeout: std::time::Duration::from_secs(
                s.storage_request_timeout_seconds.max(1),
            ),
        },
    };
    stratus_protocol::limits::set_max_streams_per_connection(s.max_streams_per_connection);
    stratus_worker::tasks::set_max_result_bytes(
        parse_bytes(&s.max_result_bytes).map_err(|e| anyhow!("max_result_bytes: {e}"))?,
    );
    stratus_worker::exec::set_shuffle_chunk_bytes(
        parse_bytes(&s.shuffle_chunk_bytes).map_err(|e| anyhow!("shuffle_chunk_bytes: {e}"))?,
    );
    stratus_worker::reclaim::configure_allocator();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_keep_alive(stratus_worker::reclaim::COMPUTE_THREAD_KEEP_ALIVE)
            .build()
            .expect("tokio runtime")
    };
    let result = actix_rt::System::with_tokio_rt(runtime).block_on(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        tokio::spawn(metrics::serve(metrics_listener, metrics));
        tokio::spawn(stratus_worker::reclaim::reclaim_loop());
        tokio::spawn(reload_on_sighup(cli, tls));
        let drain = config.drain.clone();
        let run = run(config);
        tokio::pin!(run);
        let result = tokio::select! {
            result = &mut run => result.map_err(anyhow::Error::from),
            _ = tokio::signal::ctrl_c() => Ok(()),
            // Connected: the scheduler retires us (partitions move to other
            // workers) and says when to exit. Not connected: exit now.
            _ = term.recv() => {
                if drain.request() {
                    tracing::info!(
                        "SIGTERM: retiring (partitions move to other workers, then exit); \
                         SIGTERM again or SIGINT to exit at once"
                    );
                    stratus_protocol::sd_notify::notify_or_log("STOPPING=1");
                    tokio::select! {
                        result = &mut run => {
                            if let Err(e) = result {
                                tracing::warn!("the scheduler went away while retiring: {e}");
                            }
                            Ok(())
                        }
                        _ = tokio::signal::ctrl_c() => Ok(()),
                        _ = term.recv() => Ok(()),
                    }
                } else {
                    Ok(())
                }
            }
        };
        // systemd (Type=notify): READY=1 is sent once registered (node.rs).
        stratus_protocol::sd_notify::notify_or_log("STOPPING=1");
        result
    });
    // Whatever still holds the directory, its spill files go with us.
    if let Some(dir) = spill_dir {
        dir.delete_all();
    }
    result
}

/// The worker's TLS material, and what it was read from.
struct LoadedCredentials {
    target: Target,
    own: PeerCertificate,
}

/// Read the cluster location and this worker's credential (flags and
/// variables, else the scheduler file's worker credential); refuse a
/// certificate without the worker role before connecting anywhere.
fn load_credentials(cli: &Cli, s: &Settings) -> anyhow::Result<LoadedCredentials> {
    let target = Locator {
        scheduler_file: cli.scheduler_file.clone(),
        scheduler: cli.scheduler.clone(),
        tls_ca: cli.tls_ca.clone().or_else(|| s.tls_ca.clone()),
        tls_cert: cli.tls_cert.clone().or_else(|| s.tls_cert.clone()),
        tls_key: cli.tls_key.clone().or_else(|| s.tls_key.clone()),
    }
    .resolve_as(Holder::Worker)?;
    let own = target.credentials().require_role(Role::Worker)?;
    Ok(LoadedCredentials { target, own })
}

/// SIGHUP: re-read the certificate files and the deny-list; new peer
/// connections use them, existing ones carry on.
async fn reload_on_sighup(cli: Cli, tls: TlsConfigHandle) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: certificates are not reloadable");
        return;
    };
    while hup.recv().await.is_some() {
        let reloaded = settings(&cli)
            .map_err(anyhow::Error::msg)
            .and_then(|s| Ok((load_credentials(&cli, &s)?, s)));
        match reloaded {
            Ok((loaded, s)) => {
                let deny = DenyList::new(&s.tls_deny_serials);
                let denied = deny.len();
                match tls.reload(TlsConfig::new(loaded.target.credentials(), deny)) {
                    Ok(()) => tracing::info!(
                        "SIGHUP: reloaded certificate '{}' (serial {}); {denied} denied serial(s)",
                        loaded.own.name,
                        loaded.own.serial
                    ),
                    Err(e) => tracing::error!(
                        "SIGHUP: reload failed, keeping the current certificates: {e}"
                    ),
                }
            }
            Err(e) => {
                tracing::error!("SIGHUP: reload failed, keeping the current certificates: {e:#}")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_spill_compression_is_refused_naming_the_flag() {
        let cli = Cli::try_parse_from(["stratus-worker", "--spill-compression", "gzip"]).unwrap();
        let s = settings(&cli).unwrap();
        let error = spill_compression(&s).unwrap_err().to_string();
        assert!(
            error.contains("--spill-compression") && error.contains("'gzip'"),
            "{error}"
        );
        let cli = Cli::try_parse_from(["stratus-worker", "--spill-compression", "LZ4"]).unwrap();
        let s = settings(&cli).unwrap();
        assert_eq!(
            spill_compression(&s).unwrap(),
            stratus_worker::spill::SpillCompression::Lz4
        );
    }
}
