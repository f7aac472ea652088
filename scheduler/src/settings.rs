//! Scheduler settings: defaults, then a TOML file (`--config`), then
//! `STRATUS_SCHEDULER__<KEY>` environment variables, then command-line flags.

use clap::Parser;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// Command line of `stratus-scheduler` (Dask's shapes).
#[derive(Parser, Debug, Default)]
#[command(name = "stratus-scheduler", version, about = "Stratus scheduler")]
pub struct Cli {
    /// Interface to listen on.
    #[arg(long)]
    pub host: Option<String>,
    /// QUIC port (0 picks a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// HTTP address of the dashboard, /metrics and /api: `HOST:PORT`, `:PORT`
    /// (every interface) or `PORT` (the --host interface). Default
    /// 127.0.0.1:8787: this host only.
    #[arg(long)]
    pub dashboard_address: Option<String>,
    /// Bearer token the dashboard, /api and /metrics require (off unless
    /// set; prefer the variable, which `ps` does not show).
    #[arg(long, env = "STRATUS_DASHBOARD_TOKEN", hide_env_values = true)]
    pub dashboard_token: Option<String>,
    /// Write the address, dashboard URL and TLS certificate here once ready.
    #[arg(long)]
    pub scheduler_file: Option<PathBuf>,
    /// Seconds of silence after which a worker is removed.
    #[arg(long)]
    pub heartbeat_timeout: Option<f64>,
    /// How long a request waits when the cluster has no worker before it
    /// fails (`30s`, `10m`; default 3m).
    #[arg(long)]
    pub no_workers_timeout: Option<String>,
    /// Stop after this long with no client connected and no job running
    /// (`30m`, `1h`; default: never), as Dask's `--idle-timeout`.
    #[arg(long)]
    pub idle_timeout: Option<String>,
    /// After a restart, how long persisted partitions wait for their
    /// workers to reconnect before they are rebuilt from lineage (default
    /// 30s).
    #[arg(long)]
    pub restore_grace: Option<String>,
    /// Start without the frames of the catalog in --data-dir (a cluster
    /// whose workers are all new, as `stratus local` starts them, could
    /// only rebuild them all from Parquet). Setting: `restore = false`.
    #[arg(long)]
    pub no_restore: bool,
    /// Fewest workers the adaptive target asks for (default 0).
    #[arg(long)]
    pub minimum_workers: Option<u32>,
    /// Most workers the adaptive target asks for (default 100).
    #[arg(long)]
    pub maximum_workers: Option<u32>,
    /// Address workers and clients should use (default: derived from --host).
    #[arg(long)]
    pub contact_address: Option<String>,
    /// Where runs (logged metrics and artifacts), the catalog of persisted
    /// frames and the cluster's TLS identity are kept across restarts.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// The cluster CA certificate (PEM). With --tls-cert and --tls-key: use
    /// issued certificates. Without all three, the scheduler makes (once) and
    /// reuses a cluster CA in `<data-dir>/tls`.
    #[arg(long, env = "STRATUS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
    /// This scheduler's certificate (role scheduler), issued by the CA.
    #[arg(long, env = "STRATUS_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert.
    #[arg(long, env = "STRATUS_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// Extra host name or IP clients dial, for the certificate a scheduler
    /// without --tls-cert issues itself (repeatable).
    #[arg(long = "tls-host")]
    pub tls_hosts: Vec<String>,
    /// TOML settings file.
    #[arg(long, env = "STRATUS_CONFIG")]
    pub config: Option<PathBuf>,
    /// Print the settings in force, each with where it came from (default,
    /// file, env, flag; secrets masked), and exit.
    #[arg(long)]
    pub show_config: bool,
    /// More logging (-v, -vv).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Log lines as `text`, or `json` (one object per line, for log shippers).
    #[arg(long, env = "STRATUS_LOG_FORMAT", default_value = "text")]
    pub log_format: stratus_protocol::logging::LogFormat,
}

/// Resolved settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub dashboard_address: String,
    pub scheduler_file: Option<PathBuf>,
    pub heartbeat_timeout: f64,
    /// A request with no worker to run on fails after this long (a
    /// duration: `30s`, `10m`, `1h`, or seconds).
    pub no_workers_timeout: String,
    /// Stop when idle this long (a duration; unset: never).
    #[serde(default)]
    pub idle_timeout: Option<String>,
    /// After a restart, how long restored partitions wait for their workers.
    pub restore_grace: String,
    /// Take back the frames of the catalog at start.
    pub restore: bool,
    /// Bounds of the adaptive target (`/api/adaptive`).
    pub minimum_workers: u32,
    pub maximum_workers: u32,
    pub contact_address: Option<String>,
    pub data_dir: PathBuf,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Extra names for a self-issued scheduler certificate.
    #[serde(default)]
    pub tls_hosts: Vec<String>,
    /// Serials of certificates to refuse although the CA signed them
    /// (re-read on SIGHUP).
    #[serde(default)]
    pub tls_deny_serials: Vec<String>,
    /// Most compute threads a worker may claim at registration.
    pub max_worker_threads: u32,
    /// Largest memory limit (bytes) a worker may claim at registration.
    pub max_worker_memory: u64,
    /// QUIC connections served at once, in total and per peer IP address.
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    /// Concurrent streams a peer may open on one connection.
    pub max_streams_per_connection: u32,
    /// Bearer token for the dashboard, /api and /metrics (None: open).
    #[serde(default)]
    pub dashboard_token: Option<String>,
    /// Seconds a client has to send a request's headers; also how long an
    /// idle keep-alive connection is kept.
    pub dashboard_header_timeout: f64,
    /// Most HTTP connections served at once; more are closed at accept.
    pub dashboard_max_connections: usize,
    /// Most runs kept (a new run past it is refused).
    pub max_runs: usize,
    /// Keep only this many runs: the least recently updated are deleted
    /// (0: keep every run, up to `max_runs`).
    pub run_retention: usize,
    /// Most artifacts one run keeps.
    pub max_artifacts_per_run: usize,
    /// Largest artifact accepted, in bytes.
    pub max_artifact_bytes: u64,
}

impl Settings {
    /// Merge defaults, file, environment and flags.
    pub fn load(cli: &Cli) -> Result<Settings, String> {
        Self::load_shown(cli).map(|loaded| loaded.settings)
    }

    /// [`Settings::load`], with where every value came from (`--show-config`).
    pub fn load_shown(cli: &Cli) -> Result<stratus_settings::Loaded<Settings>, String> {
        use stratus_settings::{Layers, Source};
        let flag = |name: &str| Source::Flag(name.to_string());
        // A flag clap may also take from a flat variable: say which.
        let flag_or_env = |name: &str, var: &str, value: &str| match std::env::var(var) {
            Ok(v) if v == value => Source::Env(var.to_string()),
            _ => Source::Flag(name.to_string()),
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let mut layers = Layers::new("scheduler")
            .default("host", "0.0.0.0")
            .default("port", 8786)
            .default("dashboard_address", DEFAULT_DASHBOARD_ADDRESS)
            .default("dashboard_header_timeout", 10.0)
            .default("dashboard_max_connections", 256)
            .default("max_runs", 10_000)
            .default("run_retention", 1_000)
            .default("max_artifacts_per_run", 500)
            .default("max_artifact_bytes", 32u64 << 20)
            .default("heartbeat_timeout", 5.0)
            .default("no_workers_timeout", "3m")
            .default("restore_grace", "30s")
            .default("restore", true)
            .default("minimum_workers", 0)
            .default("maximum_workers", 100)
            .default("data_dir", "stratus-data")
            .default("max_worker_threads", 1024)
            .default("max_worker_memory", 64u64 << 40)
            .default("max_connections", 4096)
            .default("max_connections_per_ip", 256)
            .default(
                "max_streams_per_connection",
                stratus_protocol::limits::DEFAULT_MAX_STREAMS_PER_CONNECTION,
            )
            .list("tls_hosts")
            .list("tls_deny_serials")
            .secret("dashboard_token")
            .file(cli.config.as_deref())
            .flag("host", cli.host.clone(), flag("--host"))
            .flag("port", cli.port, flag("--port"))
            .flag(
                "dashboard_address",
                cli.dashboard_address.clone(),
                flag("--dashboard-address"),
            )
            .flag(
                "scheduler_file",
                path(&cli.scheduler_file),
                flag("--scheduler-file"),
            )
            .flag(
                "heartbeat_timeout",
                cli.heartbeat_timeout,
                flag("--heartbeat-timeout"),
            )
            .flag(
                "no_workers_timeout",
                cli.no_workers_timeout.clone(),
                flag("--no-workers-timeout"),
            )
            .flag(
                "idle_timeout",
                cli.idle_timeout.clone(),
                flag("--idle-timeout"),
            )
            .flag(
                "restore_grace",
                cli.restore_grace.clone(),
                flag("--restore-grace"),
            )
            .flag(
                "restore",
                cli.no_restore.then_some(false),
                flag("--no-restore"),
            )
            .flag(
                "minimum_workers",
                cli.minimum_workers,
                flag("--minimum-workers"),
            )
            .flag(
                "maximum_workers",
                cli.maximum_workers,
                flag("--maximum-workers"),
            )
            .flag(
                "contact_address",
                cli.contact_address.clone(),
                flag("--contact-address"),
            )
            .flag("data_dir", path(&cli.data_dir), flag("--data-dir"));
        if let Some(token) = &cli.dashboard_token {
            let source = flag_or_env("--dashboard-token", "STRATUS_DASHBOARD_TOKEN", token);
            layers = layers.flag("dashboard_token", Some(token.clone()), source);
        }
        for (key, name, var, value) in [
            ("tls_ca", "--tls-ca", "STRATUS_TLS_CA", path(&cli.tls_ca)),
            (
                "tls_cert",
                "--tls-cert",
                "STRATUS_TLS_CERT",
                path(&cli.tls_cert),
            ),
            (
                "tls_key",
                "--tls-key",
                "STRATUS_TLS_KEY",
                path(&cli.tls_key),
            ),
        ] {
            if let Some(v) = value {
                let source = flag_or_env(name, var, &v);
                layers = layers.flag(key, Some(v), source);
            }
        }
        if !cli.tls_hosts.is_empty() {
            layers = layers.flag("tls_hosts", Some(cli.tls_hosts.clone()), flag("--tls-host"));
        }
        let mut loaded = layers.load::<Settings>()?;
        let settings = &mut loaded.settings;
        // An empty token (an empty variable) means no token, never "the
        // empty string is the password".
        if settings
            .dashboard_token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            settings.dashboard_token = None;
        }
        settings.check()?;
        Ok(loaded)
    }

    /// `no_workers_timeout` as a duration.
    pub fn no_workers_timeout(&self) -> Result<std::time::Duration, String> {
        stratus_protocol::units::parse_duration(&self.no_workers_timeout)
            .map_err(|e| format!("no_workers_timeout (--no-workers-timeout): {e}"))
    }

    /// `restore_grace` as a duration.
    pub fn restore_grace(&self) -> Result<std::time::Duration, String> {
        stratus_protocol::units::parse_duration(&self.restore_grace)
            .map_err(|e| format!("restore_grace (--restore-grace): {e}"))
    }

    /// `idle_timeout` as a duration (None: never; an empty value too).
    pub fn idle_timeout(&self) -> Result<Option<std::time::Duration>, String> {
        match self.idle_timeout.as_deref().map(str::trim) {
            None | Some("") => Ok(None),
            Some(text) => stratus_protocol::units::parse_duration(text)
                .map(Some)
                .map_err(|e| format!("idle_timeout (--idle-timeout): {e}")),
        }
    }

    /// Refuse settings that cannot work, naming the setting.
    fn check(&self) -> Result<(), String> {
        self.no_workers_timeout()?;
        self.restore_grace()?;
        self.idle_timeout()?;
        if self.minimum_workers > self.maximum_workers {
            return Err(format!(
                "minimum_workers ({}) is above maximum_workers ({}) (--minimum-workers, --maximum-workers)",
                self.minimum_workers, self.maximum_workers
            ));
        }
        if let Some(token) = &self.dashboard_token {
            // It travels in a header and a cookie: a safe alphabet (hex and
            // base64 fit).
            let safe = |c: char| c.is_ascii_alphanumeric() || "-._~+/=".contains(c);
            if token.len() < 16 || !token.chars().all(safe) {
                return Err("dashboard_token (--dashboard-token, STRATUS_DASHBOARD_TOKEN): use at least 16 letters, digits or -._~+/= (e.g. `openssl rand -hex 32`)".into());
            }
        }
        if !(self.dashboard_header_timeout.is_finite() && self.dashboard_header_timeout > 0.0) {
            return Err(format!(
                "dashboard_header_timeout must be a positive number of seconds, not {}",
                self.dashboard_header_timeout
            ));
        }
        if self.dashboard_max_connections == 0 {
            return Err("dashboard_max_connections must be at least 1".into());
        }
        if self.max_runs == 0 {
            return Err("max_runs must be at least 1".into());
        }
        if self.max_artifacts_per_run == 0 {
            return Err("max_artifacts_per_run must be at least 1".into());
        }
        // Artifacts travel in one control frame (at most 256 MiB).
        if self.max_artifact_bytes == 0 || self.max_artifact_bytes > 200 << 20 {
            return Err(format!(
                "max_artifact_bytes must be between 1 and {} bytes, not {}",
                200u64 << 20,
                self.max_artifact_bytes
            ));
        }
        Ok(())
    }
}

/// Where the dashboard listens unless told: this host only.
pub const DEFAULT_DASHBOARD_ADDRESS: &str = "127.0.0.1:8787";

/// Split a Dask-style address with a default host: `HOST:PORT`, `:PORT`
/// (every interface, `0.0.0.0`) or `PORT` (`default_host`). IPv6 hosts go in
/// brackets (`[::1]:8787`).
pub fn split_host_port(address: &str, default_host: &str) -> Result<(String, u16), String> {
    let (host, port) = match address.rsplit_once(':') {
        Some(("", p)) => ("0.0.0.0", p),
        Some((h, p)) => (h, p),
        None => (default_host, address),
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("invalid address '{address}': port is not a number"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_address_shapes() {
        assert_eq!(
            split_host_port(":8787", "127.0.0.1").unwrap(),
            ("0.0.0.0".into(), 8787)
        );
        assert_eq!(
            split_host_port("8787", "10.0.0.5").unwrap(),
            ("10.0.0.5".into(), 8787)
        );
        assert_eq!(
            split_host_port(DEFAULT_DASHBOARD_ADDRESS, "0.0.0.0").unwrap(),
            ("127.0.0.1".into(), 8787)
        );
        assert_eq!(
            split_host_port("127.0.0.1:0", "x").unwrap(),
            ("127.0.0.1".into(), 0)
        );
        assert!(split_host_port("a:b", "x").is_err());
    }

    #[test]
    fn flags_override_defaults() {
        let cli = Cli {
            port: Some(9000),
            ..Default::default()
        };
        let s = Settings::load(&cli).unwrap();
        assert_eq!(s.port, 9000);
        assert_eq!(s.dashboard_address, "127.0.0.1:8787");
        assert_eq!(s.dashboard_token, None);
    }

    #[test]
    fn a_short_token_is_refused_and_an_empty_one_is_none() {
        let cli = Cli {
            dashboard_token: Some("short".into()),
            ..Default::default()
        };
        let e = Settings::load(&cli).unwrap_err().to_string();
        assert!(e.contains("dashboard_token") && e.contains("16"), "{e}");
        let cli = Cli {
            dashboard_token: Some(" ".into()),
            ..Default::default()
        };
        assert_eq!(Settings::load(&cli).unwrap().dashboard_token, None);
    }
}
