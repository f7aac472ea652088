//! The client's settings (the `stratus` command line and the Python
//! client): which cluster to reach and how, the run to log to, how long to
//! wait for workers, object-store options. Loaded as the scheduler's and
//! the worker's are ([`stratus_settings::Layers`]): defaults, then a TOML
//! file (`--config FILE`, else `client.toml` in the user's config
//! directory, if there is one), then `STRATUS_CLIENT__<KEY>` variables,
//! then the flat variables (`STRATUS_SCHEDULER_FILE`, `STRATUS_SCHEDULER`,
//! `STRATUS_TLS_CA`, `STRATUS_TLS_CERT`, `STRATUS_TLS_KEY`, `STRATUS_RUN`)
//! and flags (or a Python call's arguments).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stratus_protocol::scheduler_file::Locator;
use stratus_settings::{Layers, Loaded, Source};

/// The client's settings in force.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct ClientSettings {
    pub scheduler_file: Option<PathBuf>,
    pub scheduler: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The run work is logged to (none: nothing is logged).
    pub run: Option<String>,
    /// Seconds to wait for a first worker (the command line's); unset: as
    /// long as the scheduler lets a request wait (its
    /// `--no-workers-timeout`).
    #[serde(default)]
    pub wait_for_workers: Option<f64>,
    /// Dask's `storage_options`, sent with every request (secrets: shown
    /// masked).
    #[serde(default)]
    pub storage_options: BTreeMap<String, String>,
}

/// What the caller was given directly: flags, or a Python call's arguments
/// (clap may have filled a flag from its flat variable: it is labelled so).
#[derive(Debug, Clone, Default)]
pub struct ClientFlags {
    pub scheduler_file: Option<PathBuf>,
    pub scheduler: Option<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub run: Option<String>,
    pub wait_for_workers: Option<f64>,
    pub storage_options: Vec<(String, String)>,
}

/// `client.toml` in the user's config directory (`$XDG_CONFIG_HOME/stratus`,
/// else `~/.config/stratus`), whether or not it exists.
pub fn user_file() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("stratus").join("client.toml"))
}

impl ClientSettings {
    /// Load with `file` (else the user's file, if it exists) under `flags`.
    pub fn load(file: Option<&Path>, flags: &ClientFlags) -> Result<ClientSettings, String> {
        Self::load_shown(file, flags).map(|loaded| loaded.settings)
    }

    /// [`ClientSettings::load`], with where every value came from.
    pub fn load_shown(
        file: Option<&Path>,
        flags: &ClientFlags,
    ) -> Result<Loaded<ClientSettings>, String> {
        let user = user_file().filter(|f| f.is_file());
        let file = file.map(Path::to_path_buf).or(user);
        // A value given directly, else its flat variable; labelled by
        // where it came from.
        let pick = |name: &str, var: &str, given: Option<String>| -> Option<(String, Source)> {
            let from_env = std::env::var(var).ok().filter(|v| !v.is_empty());
            match given {
                Some(v) if from_env.as_deref() == Some(v.as_str()) => {
                    Some((v, Source::Env(var.into())))
                }
                Some(v) => Some((v, Source::Flag(name.into()))),
                None => from_env.map(|v| (v, Source::Env(var.into()))),
            }
        };
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let mut layers = Layers::new("client")
            .secret("storage_options")
            .file(file.as_deref());
        for (key, name, var, given) in [
            (
                "scheduler_file",
                "--scheduler-file",
                "STRATUS_SCHEDULER_FILE",
                path(&flags.scheduler_file),
            ),
            (
                "scheduler",
                "--scheduler",
                "STRATUS_SCHEDULER",
                flags.scheduler.clone(),
            ),
            ("tls_ca", "--tls-ca", "STRATUS_TLS_CA", path(&flags.tls_ca)),
            (
                "tls_cert",
                "--tls-cert",
                "STRATUS_TLS_CERT",
                path(&flags.tls_cert),
            ),
            (
                "tls_key",
                "--tls-key",
                "STRATUS_TLS_KEY",
                path(&flags.tls_key),
            ),
            ("run", "--run", "STRATUS_RUN", flags.run.clone()),
        ] {
            if let Some((value, source)) = pick(name, var, given) {
                layers = layers.flag(key, Some(value), source);
            }
        }
        layers = layers.flag(
            "wait_for_workers",
            flags.wait_for_workers,
            Source::Flag("--wait-for-workers".into()),
        );
        for (key, value) in &flags.storage_options {
            layers = layers.flag(
                &format!("storage_options.{key}"),
                Some(value.clone()),
                Source::Flag("--storage-option".into()),
            );
        }
        layers.load::<ClientSettings>()
    }

    /// Where the cluster is and how to reach it.
    pub fn locator(&self) -> Locator {
        Locator {
            scheduler_file: self.scheduler_file.clone(),
            scheduler: self.scheduler.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
        }
    }

    /// The object-store options, as the client sends them.
    pub fn storage_options(&self) -> Vec<(String, String)> {
        self.storage_options
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}
