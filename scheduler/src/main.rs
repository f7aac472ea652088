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
use stratus_scheduler::security::ServerTls;
use stratus_scheduler::server::{accept_loop, Identity, SchedulerActor, ServerLimits, Shared};
use stratus_scheduler::settings::{split_host_port, Cli, Settings};
use stratus_scheduler_core::{Config, SchedulerState};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let cli = Cli::parse();
    if cli.show_config {
        // `stratus config show --scheduler`: the settings in force, and why.
        match Settings::load_shown(&cli) {
            Ok(loaded) => print!("{}", loaded.render()),
            Err(e) => {
                eprintln!("stratus-scheduler: error: {e}");
                std::process::exit(2);
            }
        }
        return;
    }
    stratus_protocol::logging::init(cli.verbose, cli.log_format);
    abort_on_panic();
    if let Err(e) = run(cli) {
        eprintln!("stratus-scheduler: error: {e:#}");
        std::process::exit(1);
    }
}

/// The last line of defence: a panic anywhere (the actor that owns the
/// state machine included) is logged and aborts the process, so its
/// supervisor restarts it; never a live process with a dead actor.
fn abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        tracing::error!("stratus-scheduler: panic ({info}); aborting");
        std::process::abort();
    }));
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
    let settings = Settings::load(&cli).map_err(anyhow::Error::msg)?;
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
    let mut names = vec![contact.clone(), head_node.clone(), settings.host.clone()];
    if let Some(address) = &settings.contact_address {
        if let Ok((host, _)) = stratus_protocol::transport::parse_address(address) {
            names.push(host);
        }
    }
    let tls = ServerTls::load(&settings, &names)?;
    info!("{}", tls.describe());

    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    };
    let system = actix_rt::System::with_tokio_rt(runtime);
    stratus_protocol::limits::set_max_streams_per_connection(settings.max_streams_per_connection);
    let limits = ServerLimits {
        connections: stratus_protocol::limits::ConnectionLimits {
            max_total: settings.max_connections.max(1),
            max_per_ip: settings.max_connections_per_ip.max(1),
        },
        workers: stratus_scheduler_core::outputs::WorkerCeilings {
            max_threads: settings.max_worker_threads,
            max_memory: settings.max_worker_memory,
        },
    };
    system.block_on(async move {
        let endpoint = stratus_protocol::transport::server_endpoint(bind, tls.server_config()?)?;
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
            // The host clients are told to dial (--contact-address) reaches
            // the dashboard too; our own host name may resolve to loopback.
            match &settings.contact_address {
                Some(a) => match stratus_protocol::transport::parse_address(a) {
                    Ok((host, _)) if host.contains(':') => format!("[{host}]"),
                    Ok((host, _)) => host,
                    Err(_) => contact.clone(),
                },
                None => contact.clone(),
            }
        } else {
            dash_bind.ip().to_string()
        };
        let dashboard = format!("http://{dash_host_public}:{dash_port}/");
        let metrics = Arc::new(Metrics::new());
        let run_limits = RunLimits {
            max_runs: settings.max_runs,
            retention: settings.run_retention,
            max_artifacts_per_run: settings.max_artifacts_per_run,
            max_artifact_bytes: settings.max_artifact_bytes as usize,
            ..RunLimits::default()
        };
        let runs = RunStore::open_with(Some(&settings.data_dir), metrics.registry(), run_limits)
            .with_context(|| {
                format!("opening the data directory {}", settings.data_dir.display())
            })?;
        info!("runs kept in {}", settings.data_dir.display());
        // The catalog of persisted frames: this start's number is on disk
        // before any id of it is handed out, and its frames come back.
        let catalog_file = stratus_scheduler::catalog::CatalogFile::in_dir(&settings.data_dir);
        let mut catalog = catalog_file.load()?;
        catalog.starts += 1;
        if !settings.restore && !catalog.frames.is_empty() {
            info!(
                "not restoring the {} frame(s) of the catalog (restore = false)",
                catalog.frames.len()
            );
            catalog.frames.clear();
            catalog.sort_lineages.clear();
        }
        catalog_file.save(&catalog)?;
        let incarnation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_millis() as u64);
        let shared = Arc::new(Shared {
            metrics: metrics.clone(),
            runs: Arc::new(runs),
            changes: tokio::sync::watch::channel(0).0,
            idle: stratus_scheduler::server::IdleClock::new(
                settings
                    .idle_timeout()
                    .expect("checked when the settings loaded"),
            ),
            catalog: Some(catalog_file.clone()),
            incarnation,
        });
        let mut state = SchedulerState::new(Config {
            heartbeat_timeout: Duration::from_secs_f64(settings.heartbeat_timeout.max(0.5)),
            no_workers_timeout: settings
                .no_workers_timeout()
                .expect("checked when the settings loaded"),
            adaptive: stratus_scheduler_core::adaptive::Bounds {
                minimum: settings.minimum_workers,
                maximum: settings.maximum_workers,
            },
            address: address.clone(),
            dashboard: dashboard.clone(),
            restore_grace: settings
                .restore_grace()
                .expect("checked when the settings loaded"),
            ..Config::default()
        });
        let (restored, warnings) = state.start_from(std::time::Instant::now(), &catalog);
        for warning in warnings {
            tracing::warn!("catalog {}: {warning}", catalog_file.path().display());
        }
        info!(
            "start {} on {} (incarnation {incarnation}){}",
            catalog.starts,
            settings.data_dir.display(),
            if restored > 0 {
                format!(
                    "; {restored} frame(s) restored from the catalog, waiting up to {} for \
                     their workers to re-register their partitions",
                    settings.restore_grace
                )
            } else {
                String::new()
            }
        );
        let identity = Identity {
            address: address.clone(),
            dashboard: dashboard.clone(),
            head_node: head_node.clone(),
        };
        let actor = SchedulerActor::new(state, shared.clone(), identity).start();
        tokio::spawn(accept_loop(
            endpoint.clone(),
            actor.clone(),
            shared.clone(),
            limits,
        ));
        let app =
            stratus_scheduler::http::router(actor, shared.clone(), settings.dashboard_token.clone());
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
                tls_ca: tls.credentials.ca_pem.clone(),
                tls_cert: tls.file_client.as_ref().map(|p| p.cert_pem.clone()),
                tls_key: tls.file_client.as_ref().map(|p| p.key_pem.clone()),
                worker_tls_cert: tls.file_worker.as_ref().map(|p| p.cert_pem.clone()),
                worker_tls_key: tls.file_worker.as_ref().map(|p| p.key_pem.clone()),
                head_node,
                version: stratus_protocol::STRATUS_VERSION.to_string(),
                pid: std::process::id(),
                dashboard_token: settings.dashboard_token.clone(),
            }
            .write(path)?;
            info!("scheduler file written to {}", path.display());
        }
        tokio::spawn(reload_on_sighup(cli, tls, endpoint.clone()));
        // systemd (Type=notify): QUIC and HTTP listen, the file is written.
        stratus_protocol::sd_notify::notify_or_log("READY=1");
        wait_for_shutdown(&shared).await;
        stratus_protocol::sd_notify::notify_or_log("STOPPING=1");
        // Peers hear why (clients name it in the error of a request in flight).
        endpoint.close(0u32.into(), b"the scheduler is stopping");
        info!("scheduler stopping");
        // A clean exit takes its address down with it, so nobody dials a
        // stopped scheduler; the next start writes it again.
        if let Some(path) = &settings.scheduler_file {
            if SchedulerFile::remove_own(path, std::process::id()) {
                info!("scheduler file {} removed", path.display());
            }
        }
        anyhow::Ok(())
    })
}

/// SIGHUP: re-read the certificate files and the deny-list; new connections
/// get them, existing ones carry on. A failed reload keeps the old ones.
async fn reload_on_sighup(cli: Cli, mut tls: ServerTls, endpoint: quinn::Endpoint) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP: certificates are not reloadable");
        return;
    };
    while hup.recv().await.is_some() {
        let reloaded = Settings::load(&cli)
            .map_err(anyhow::Error::msg)
            .and_then(|settings| tls.reload(&settings))
            .and_then(|()| tls.server_config());
        match reloaded {
            Ok(config) => {
                endpoint.set_server_config(Some(config));
                info!("SIGHUP: reloaded; {}", tls.describe());
            }
            Err(e) => {
                tracing::error!("SIGHUP: reload failed, keeping the current certificates: {e:#}")
            }
        }
    }
}

/// Until Ctrl-C, SIGTERM, or the idle timeout.
async fn wait_for_shutdown(shared: &Shared) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = shared.idle.stopped() => {}
    }
}
