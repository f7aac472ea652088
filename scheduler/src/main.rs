//! `stratus-scheduler`: start the scheduler (QUIC on `--port`, HTTP on
//! `--dashboard-address`), optionally writing a scheduler file once ready.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use actix::Actor;
use anyhow::{anyhow, Context};
use clap::Parser;
use tracing::info;

use stratus_protocol::scheduler_file::SchedulerFile;
use stratus_scheduler::http::HttpConfig;
use stratus_scheduler::metrics::Metrics;
use stratus_scheduler::runs::{RunLimits, RunStore};
use stratus_scheduler::server::{accept_loop, Identity, SchedulerActor, Shared};
use stratus_scheduler::settings::{split_host_port, Cli, Settings};
use stratus_scheduler_core::{Config, SchedulerState};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    if let Err(e) = run(cli) {
        eprintln!("stratus-scheduler: error: {e:#}");
        std::process::exit(1);
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

/// The host others should use to reach us when listening on a wildcard.
fn contact_host(bind_host: &str) -> String {
    match bind_host.parse::<IpAddr>() {
        Ok(ip) if ip.is_unspecified() => {
            // Resolve our own host name; fall back to loopback.
            let name = host_name();
            std::net::ToSocketAddrs::to_socket_addrs(&(name.as_str(), 0))
                .ok()
                .and_then(|mut addrs| addrs.find(|a| a.is_ipv4() && !a.ip().is_loopback()))
                .map(|a| a.ip().to_string())
                .unwrap_or_else(|| "127.0.0.1".into())
        }
        _ => bind_host.to_string(),
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let settings = Settings::load(&cli).context("reading settings")?;
    let bind: SocketAddr = format!("{}:{}", settings.host, settings.port)
        .parse()
        .map_err(|e| {
            anyhow!(
                "invalid --host/--port '{}:{}': {e}",
                settings.host,
                settings.port
            )
        })?;
    let (dash_host, dash_port) =
        split_host_port(&settings.dashboard_address, &settings.host).map_err(|e| anyhow!(e))?;
    let dash_host = if dash_host.contains(':') {
        format!("[{dash_host}]")
    } else {
        dash_host
    };
    let dash_bind: SocketAddr = format!("{dash_host}:{dash_port}").parse().map_err(|e| {
        anyhow!(
            "invalid --dashboard-address '{}': {e}",
            settings.dashboard_address
        )
    })?;
    let contact = contact_host(&settings.host);
    let head_node = host_name();
    let pair = stratus_protocol::tls::self_signed(&[contact.clone(), head_node.clone()])?;

    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    };
    let system = actix_rt::System::with_tokio_rt(runtime);
    system.block_on(async move {
        let endpoint = stratus_protocol::transport::server_endpoint(bind, &pair)?;
        let port = endpoint.local_addr()?.port();
        let listener = tokio::net::TcpListener::bind(dash_bind)
            .await
            .with_context(|| format!("cannot bind dashboard address {dash_bind}"))?;
        let dash_port = listener.local_addr()?.port();
        let address = match &settings.contact_address {
            Some(a) => a.clone(),
            None => format!("quic://{contact}:{port}"),
        };
        let dash_host_public = if dash_bind.ip().is_unspecified() {
            contact.clone()
        } else {
            dash_bind.ip().to_string()
        };
        let dashboard = format!("http://{dash_host_public}:{dash_port}/");
        let metrics = Arc::new(Metrics::new());
        let limits = RunLimits {
            max_runs: settings.max_runs,
            retention: settings.run_retention,
            max_artifacts_per_run: settings.max_artifacts_per_run,
            max_artifact_bytes: settings.max_artifact_bytes as usize,
            ..RunLimits::default()
        };
        let runs = RunStore::open_with(Some(&settings.data_dir), metrics.registry(), limits)
            .with_context(|| {
                format!("opening the data directory {}", settings.data_dir.display())
            })?;
        info!("runs kept in {}", settings.data_dir.display());
        let shared = Arc::new(Shared {
            metrics: metrics.clone(),
            runs: Arc::new(runs),
            changes: tokio::sync::watch::channel(0).0,
        });
        let state = SchedulerState::new(Config {
            heartbeat_timeout: Duration::from_secs_f64(settings.heartbeat_timeout.max(0.5)),
            address: address.clone(),
            dashboard: dashboard.clone(),
            ..Config::default()
        });
        let identity = Identity {
            address: address.clone(),
            dashboard: dashboard.clone(),
            head_node: head_node.clone(),
        };
        let actor = SchedulerActor::new(state, shared.clone(), identity).start();
        tokio::spawn(accept_loop(endpoint, actor.clone(), shared.clone()));
        let app = stratus_scheduler::http::router(actor, shared, settings.dashboard_token.clone());
        let http = HttpConfig {
            token: settings.dashboard_token.clone(),
            header_timeout: Duration::from_secs_f64(settings.dashboard_header_timeout),
            max_connections: settings.dashboard_max_connections,
        };
        tokio::spawn(stratus_scheduler::http::serve(listener, app, http));
        if dash_bind.ip().is_unspecified() && settings.dashboard_token.is_none() {
            tracing::warn!(
                "the dashboard listens on every interface ({dash_bind}) without a token: anyone who can reach it sees the cluster and its runs; set STRATUS_DASHBOARD_TOKEN (or --dashboard-token)"
            );
        }
        info!("scheduler at {address}");
        info!("dashboard at {dashboard}");
        if let Some(path) = &settings.scheduler_file {
            SchedulerFile {
                address: address.clone(),
                dashboard: dashboard.clone(),
                tls_ca: pair.cert_pem.clone(),
                head_node,
                version: stratus_protocol::STRATUS_VERSION.to_string(),
                pid: std::process::id(),
                dashboard_token: settings.dashboard_token.clone(),
            }
            .write(path)?;
            if settings.dashboard_token.is_some() {
                // The file now holds a secret: only its owner may read it.
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("making {} private", path.display()))?;
            }
            info!("scheduler file written to {}", path.display());
        }
        wait_for_shutdown().await;
        info!("scheduler stopping");
        anyhow::Ok(())
    })
}

async fn wait_for_shutdown() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
