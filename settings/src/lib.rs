//! Settings of the `stratus-scheduler`, `stratus-worker` and `stratus`
//! (client) binaries, loaded one way: defaults, then a TOML file, then
//! `STRATUS_<PART>__<KEY>` environment variables, then flags (a flag may
//! itself come from one of the flat variables clap reads, such as
//! `STRATUS_TLS_CA`). [`Layers`] loads them into the binary's settings
//! struct, refuses a key the struct does not have (naming the file or the
//! variable it came from) and a value of the wrong type (naming the key and
//! where it came from), and records where every value came from, for
//! `stratus config show` ([`Loaded::render`], secrets masked).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use config::builder::DefaultState;
use config::{ConfigBuilder, Environment, File, ValueKind};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    /// An environment variable (its name).
    Env(String),
    /// A command-line flag (its name, `--port`).
    Flag(String),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

/// One setting as `config show` prints it.
#[derive(Debug, Clone, PartialEq)]
pub struct Shown {
    pub key: String,
    /// The value as TOML writes it (secrets masked); `None`: not set.
    pub value: Option<String>,
    pub source: Source,
}

/// Settings of type `T`, and where each came from.
#[derive(Debug)]
pub struct Loaded<T> {
    pub settings: T,
    pub part: &'static str,
    pub file: Option<PathBuf>,
    pub shown: Vec<Shown>,
}

/// The layers of one binary's settings (see the module doc).
pub struct Layers {
    part: &'static str,
    prefix: String,
    builder: ConfigBuilder<DefaultState>,
    file: Option<PathBuf>,
    list_keys: Vec<&'static str>,
    flags: BTreeMap<String, Source>,
    secrets: BTreeSet<&'static str>,
    error: Option<String>,
}

impl Layers {
    /// The settings of `part` (`scheduler`, `worker`, `client`), read from
    /// `STRATUS_<PART>__<KEY>` variables.
    pub fn new(part: &'static str) -> Self {
        Layers {
            part,
            prefix: format!("STRATUS_{}", part.to_ascii_uppercase()),
            builder: config::Config::builder(),
            file: None,
            list_keys: Vec::new(),
            flags: BTreeMap::new(),
            secrets: BTreeSet::new(),
            error: None,
        }
    }

    fn note<E: std::fmt::Display>(
        mut self,
        result: Result<ConfigBuilder<DefaultState>, E>,
    ) -> Self {
        match result {
            Ok(builder) => self.builder = builder,
            Err(e) => {
                self.error.get_or_insert(e.to_string());
                self.builder = config::Config::builder();
            }
        }
        self
    }

    /// The value `key` has unless something sets it.
    pub fn default(self, key: &str, value: impl Into<ValueKind>) -> Self {
        let builder = self.builder.clone();
        self.note(builder.set_default(key, value))
    }

    /// Read this TOML file (it must exist).
    pub fn file(mut self, path: Option<&Path>) -> Self {
        if let Some(path) = path {
            self.file = Some(path.to_path_buf());
            self.builder = self.builder.add_source(
                File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        self
    }

    /// `key` is a list: in a variable, comma-separated.
    pub fn list(mut self, key: &'static str) -> Self {
        self.list_keys.push(key);
        self
    }

    /// `key`'s value is a secret: shown masked.
    pub fn secret(mut self, key: &'static str) -> Self {
        self.secrets.insert(key);
        self
    }

    /// A flag's value for `key`, if given; `source` says where clap took it
    /// from (the flag, or a variable it reads).
    pub fn flag(self, key: &str, value: Option<impl Into<ValueKind>>, source: Source) -> Self {
        let Some(value) = value else {
            return self;
        };
        let builder = self.builder.clone();
        let mut this = self.note(builder.set_override(key, value));
        this.flags.insert(key.to_string(), source);
        this
    }

    /// Merge the layers into `T`. Unknown keys and values of the wrong type
    /// are refused, naming the key and where it came from.
    pub fn load<T: DeserializeOwned + Serialize>(self) -> Result<Loaded<T>, String> {
        let what = format!("{} settings", self.part);
        if let Some(e) = self.error {
            return Err(format!("{what}: {e}"));
        }
        let mut env = Environment::with_prefix(&self.prefix)
            .prefix_separator("__")
            .try_parsing(true);
        if !self.list_keys.is_empty() {
            env = env.list_separator(",");
            for key in &self.list_keys {
                env = env.with_list_parse_key(key);
            }
        }
        let built = self
            .builder
            .add_source(env)
            .build()
            .map_err(|e| format!("{what}: {e}"))?;
        let merged = config::Source::collect(&built).map_err(|e| format!("{what}: {e}"))?;
        let origin = |key: &str| -> Source {
            // A flag for the key, or for an entry of it (`key.entry`).
            let entry = format!("{key}.");
            if let Some((_, source)) = self
                .flags
                .iter()
                .find(|(k, _)| *k == key || k.starts_with(&entry))
            {
                return source.clone();
            }
            match merged.get(key).and_then(|v| v.origin()) {
                Some("the environment") => {
                    Source::Env(format!("{}__{}", self.prefix, key.to_ascii_uppercase()))
                }
                // config names the file relative to the working directory.
                Some(path) => Source::File(self.file.clone().unwrap_or_else(|| path.into())),
                None => Source::Default,
            }
        };
        // config names the file relative to the working directory: name it
        // whole as well.
        let in_file = match &self.file {
            Some(path) => format!(" (settings file {})", path.display()),
            None => String::new(),
        };
        let settings: T = built
            .try_deserialize()
            .map_err(|e| format!("{what}: {e}{in_file}"))?;
        let typed = serde_json::to_value(&settings).map_err(|e| format!("{what}: {e}"))?;
        let known = typed
            .as_object()
            .ok_or_else(|| format!("{what}: not a table of keys"))?;
        let mut unknown: Vec<&String> = merged.keys().filter(|k| !known.contains_key(*k)).collect();
        unknown.sort();
        if let Some(key) = unknown.first() {
            let mut names: Vec<&str> = known.keys().map(String::as_str).collect();
            names.sort_unstable();
            return Err(format!(
                "{what}: unknown setting '{key}' ({}); known settings: {}",
                origin(key),
                names.join(", ")
            ));
        }
        let mut shown: Vec<Shown> = known
            .iter()
            .map(|(key, value)| Shown {
                key: key.clone(),
                value: match value {
                    serde_json::Value::Null => None,
                    _ if self.secrets.contains(key.as_str()) => Some(toml_value(&masked(value))),
                    other => Some(toml_value(other)),
                },
                source: origin(key),
            })
            .collect();
        shown.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Loaded {
            settings,
            part: self.part,
            file: self.file,
            shown,
        })
    }
}

/// A secret with its leaves masked (a table keeps its keys).
fn masked(value: &serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| (k.clone(), masked(v)))
            .collect::<serde_json::Map<_, _>>()
            .into(),
        _ => serde_json::Value::String("********".into()),
    }
}

/// A value as TOML writes it (strings quoted, lists in brackets, tables
/// inline).
fn toml_value(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Null => "\"\"".into(),
        serde_json::Value::Array(items) => {
            let items: Vec<String> = items.iter().map(toml_value).collect();
            format!("[{}]", items.join(", "))
        }
        serde_json::Value::Object(map) => {
            let items: Vec<String> = map
                .iter()
                .map(|(k, v)| format!("{k} = {}", toml_value(v)))
                .collect();
            format!("{{ {} }}", items.join(", "))
        }
        other => other.to_string(),
    }
}

impl<T> Loaded<T> {
    /// The settings in force as TOML, each with where it came from: what
    /// `stratus config show` prints (secrets masked, unset ones commented).
    pub fn render(&self) -> String {
        let mut out = format!("# stratus {} settings", self.part);
        match &self.file {
            Some(path) => out.push_str(&format!(" (file {})\n", path.display())),
            None => out.push_str(" (no settings file)\n"),
        }
        // Sources line up, except after the odd long value.
        let width = self
            .shown
            .iter()
            .map(|s| s.key.len() + s.value.as_ref().map_or(9, String::len) + 5)
            .filter(|w| *w <= 48)
            .max()
            .unwrap_or(0);
        for s in &self.shown {
            let line = match &s.value {
                Some(v) => format!("{} = {v}", s.key),
                None => format!("# {} (not set)", s.key),
            };
            out.push_str(&format!("{line:<width$} # {}\n", s.source));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, Serialize, PartialEq)]
    struct Demo {
        port: u16,
        host: String,
        token: Option<String>,
        #[serde(default)]
        roots: Vec<String>,
        name: Option<String>,
    }

    fn temp_file(name: &str, text: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("stratus-settings-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn layers(part: &'static str) -> Layers {
        Layers::new(part)
            .default("port", 8786)
            .default("host", "0.0.0.0")
            .list("roots")
            .secret("token")
    }

    #[test]
    fn each_value_says_where_it_came_from_and_secrets_are_masked() {
        let file = temp_file(
            "a.toml",
            "port = 9000\ntoken = \"s3cret\"\nroots = [\"/a\"]\n",
        );
        let loaded = layers("demoone")
            .file(Some(&file))
            .flag("host", Some("127.0.0.1"), Source::Flag("--host".into()))
            .load::<Demo>()
            .unwrap();
        assert_eq!(loaded.settings.port, 9000);
        assert_eq!(loaded.settings.token.as_deref(), Some("s3cret"));
        let by_key = |k: &str| loaded.shown.iter().find(|s| s.key == k).unwrap().clone();
        assert_eq!(by_key("port").source, Source::File(file.clone()));
        assert_eq!(by_key("host").source, Source::Flag("--host".into()));
        assert_eq!(by_key("host").value.as_deref(), Some("\"127.0.0.1\""));
        assert_eq!(by_key("token").value.as_deref(), Some("\"********\""));
        assert_eq!(by_key("roots").value.as_deref(), Some("[\"/a\"]"));
        assert_eq!(by_key("name").value, None);
        assert_eq!(by_key("name").source, Source::Default);
        let text = loaded.render();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("# name (not set)"), "{text}");
    }

    #[test]
    fn variables_override_the_file_and_name_themselves() {
        // A part no other test uses, so the variable touches only this test.
        std::env::set_var("STRATUS_DEMOTWO__PORT", "9100");
        std::env::set_var("STRATUS_DEMOTWO__ROOTS", "/x,/y");
        let file = temp_file("b.toml", "port = 9000\n");
        let loaded = layers("demotwo").file(Some(&file)).load::<Demo>().unwrap();
        assert_eq!(loaded.settings.port, 9100);
        assert_eq!(loaded.settings.roots, vec!["/x", "/y"]);
        let port = loaded.shown.iter().find(|s| s.key == "port").unwrap();
        assert_eq!(port.source, Source::Env("STRATUS_DEMOTWO__PORT".into()));
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused_naming_key_and_origin() {
        let file = temp_file("c.toml", "prot = 9000\n");
        let e = layers("demothree")
            .file(Some(&file))
            .load::<Demo>()
            .unwrap_err();
        assert!(e.contains("unknown setting 'prot'"), "{e}");
        assert!(e.contains(&file.display().to_string()), "{e}");
        assert!(
            e.contains("known settings: host, name, port, roots, token"),
            "{e}"
        );

        std::env::set_var("STRATUS_DEMOFOUR__COLOUR", "blue");
        let e = layers("demofour").load::<Demo>().unwrap_err();
        assert!(
            e.contains("unknown setting 'colour' (env STRATUS_DEMOFOUR__COLOUR)"),
            "{e}"
        );

        let file = temp_file("d.toml", "port = \"lots\"\n");
        let e = layers("demofive")
            .file(Some(&file))
            .load::<Demo>()
            .unwrap_err();
        assert!(e.contains("port"), "{e}");
        assert!(e.contains(&file.display().to_string()), "{e}");
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let e = layers("demosix")
            .file(Some(Path::new("/nonexistent/stratus.toml")))
            .load::<Demo>()
            .unwrap_err();
        assert!(e.contains("/nonexistent/stratus.toml"), "{e}");
    }
}
