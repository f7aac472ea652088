//! Object-storage emulators for the tests, and an independent client for
//! them: [`Azurite`] (Azure Blob, npm's `azurite` 3.35.0, installed by
//! scripts/test under `.ci/node/`) and [`Moto`] (S3, PyPI's `moto[server]`).
//! Each runs on a free loopback port in its own process group, killed with
//! its children on drop. Seeding and reading back go through
//! `scripts/objstore_tool.py` (Python's `azure-storage-blob`, `boto3` and
//! `pyarrow`), never through Stratus' own object-store code.

use super::TempDir;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Azurite's well-known development account.
pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
/// Azurite's well-known development key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Dummy S3 credentials and region moto accepts.
pub const MOTO_ACCESS_KEY: &str = "testing";
pub const MOTO_SECRET_KEY: &str = "testing";
pub const MOTO_REGION: &str = "us-east-1";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A port free right now on 127.0.0.1 (bound, then released).
fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local address").port()
}

/// An emulator process, leader of its own process group.
struct Emulator {
    name: &'static str,
    child: Option<Child>,
    port: u16,
    log: PathBuf,
}

impl Emulator {
    /// Start `command(port, dir)` on a free port and wait until the port
    /// answers; a start that dies (a port taken meanwhile) is retried on
    /// another port.
    fn start(name: &'static str, dir: &Path, command: impl Fn(u16) -> Command) -> Emulator {
        let mut last = String::new();
        for attempt in 0..5 {
            let port = free_port();
            let log = dir.join(format!("{name}-{attempt}.log"));
            let log_file = std::fs::File::create(&log).expect("create the emulator log");
            let mut cmd = command(port);
            let child = cmd
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("clone the log file"))
                .stderr(log_file)
                // Its own group: node (npx) and Python start children, and
                // killing the group kills them all.
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
            let mut emulator = Emulator {
                name,
                child: Some(child),
                port,
                log,
            };
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                let exited = emulator
                    .child
                    .as_mut()
                    .and_then(|c| c.try_wait().ok().flatten());
                if let Some(status) = exited {
                    last = format!("{name} exited ({status}): {}", emulator.log_tail());
                    emulator.child = None;
                    break;
                }
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return emulator;
                }
                if Instant::now() > deadline {
                    panic!(
                        "{name} did not answer on 127.0.0.1:{port} within 60 s: {}",
                        emulator.log_tail()
                    );
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        panic!("{name} did not start in 5 attempts; last: {last}");
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// SIGKILL the whole process group and reap the leader; returns once
    /// the port no longer answers.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on the process group we created (pgid = pid).
            unsafe {
                libc::kill(-(child.id() as libc::pid_t), libc::SIGKILL);
            }
            let _ = child.kill();
            let _ = child.wait();
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline && TcpStream::connect(("127.0.0.1", self.port)).is_ok()
            {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Run `python3 scripts/objstore_tool.py ARGS`; its stdout, or a panic with
/// its stderr.
fn tool(args: &[&str]) -> String {
    let script = repo().join("scripts/objstore_tool.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .expect("run python3 scripts/objstore_tool.py");
    assert!(
        out.status.success(),
        "objstore_tool.py {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// An object as the independent client lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub name: String,
    pub size: u64,
    /// Last-modified time as the store reports it (ISO 8601; compare
    /// through [`Object::modified_key`]).
    pub modified: String,
}

impl Object {
    /// The last-modified time as sortable text (UTC ISO 8601 from both tools).
    pub fn modified_key(&self) -> &str {
        &self.modified
    }
}

fn objects(json: &str) -> Vec<Object> {
    let list: Vec<serde_json::Value> =
        serde_json::from_str(json).unwrap_or_else(|e| panic!("listing is not JSON ({e}): {json}"));
    list.iter()
        .map(|o| Object {
            name: o["name"].as_str().expect("name").to_string(),
            size: o["size"].as_u64().expect("size"),
            modified: o["modified"].as_str().unwrap_or_default().to_string(),
        })
        .collect()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

/// Azurite's blob service on a free loopback port, killed on drop.
pub struct Azurite {
    pub port: u16,
    emulator: Emulator,
    dir: TempDir,
}

impl Azurite {
    /// `azurite-blob` from `.ci/node/` (scripts/test installs it there), else
    /// `npx --no-install azurite-blob` from PATH.
    pub fn start() -> Azurite {
        let dir = TempDir::new("azurite");
        let local = repo().join(".ci/node/node_modules/.bin/azurite-blob");
        let storage = dir.path().join("storage");
        std::fs::create_dir_all(&storage).unwrap();
        let emulator = Emulator::start("azurite", dir.path(), |port| {
            let mut cmd = if local.exists() {
                Command::new(&local)
            } else {
                let mut npx = Command::new("npx");
                npx.args(["--no-install", "azurite-blob"]);
                npx
            };
            cmd.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                .arg("--location")
                .arg(&storage)
                .args(["--disableTelemetry", "--skipApiVersionCheck", "--loose"]);
            cmd
        });
        Azurite {
            port: emulator.port,
            emulator,
            dir,
        }
    }

    /// `http://127.0.0.1:PORT/devstoreaccount1`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", self.port)
    }

    pub fn account(&self) -> &'static str {
        AZURITE_ACCOUNT
    }

    pub fn key(&self) -> &'static str {
        AZURITE_KEY
    }

    /// What the scheduler and workers get: account, key, endpoint, plain HTTP.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        vec![
            ("AZURE_STORAGE_ACCOUNT_NAME".into(), AZURITE_ACCOUNT.into()),
            ("AZURE_STORAGE_ACCOUNT_KEY".into(), AZURITE_KEY.into()),
            ("AZURE_STORAGE_ENDPOINT".into(), self.endpoint()),
            ("AZURE_ALLOW_HTTP".into(), "true".into()),
        ]
    }

    /// Kill it now (its data directory stays until drop).
    pub fn stop(&mut self) {
        self.emulator.stop();
    }

    /// The emulator's log (for failure messages).
    pub fn log_tail(&self) -> String {
        self.emulator.log_tail()
    }

    fn tool(&self, args: &[&str]) -> String {
        let endpoint = self.endpoint();
        let mut all = vec![
            "--endpoint",
            endpoint.as_str(),
            "--account",
            AZURITE_ACCOUNT,
            "--key",
            AZURITE_KEY,
        ];
        all.extend_from_slice(args);
        tool(&all)
    }

    pub fn create_container(&self, container: &str) {
        self.tool(&["azure-create-container", container]);
    }

    /// Every file below `dir` as blob `prefix/relative-path`.
    pub fn upload_dir(&self, dir: &Path, container: &str, prefix: &str) {
        self.tool(&["azure-upload", path_str(dir), container, prefix]);
    }

    /// Every blob below `prefix/` into `dir/relative-path`.
    pub fn download(&self, container: &str, prefix: &str, dir: &Path) {
        self.tool(&["azure-download", container, prefix, path_str(dir)]);
    }

    /// Blobs below `prefix/` (full names), in name order.
    pub fn list(&self, container: &str, prefix: &str) -> Vec<Object> {
        objects(&self.tool(&["azure-list", container, prefix]))
    }

    /// One blob from a file.
    pub fn put(&self, container: &str, key: &str, file: &Path) {
        self.tool(&["azure-put", container, key, path_str(file)]);
    }

    /// Where its data lives (a temp dir removed on drop).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// moto's S3 server on a free loopback port, killed on drop.
pub struct Moto {
    pub port: u16,
    emulator: Emulator,
    _dir: TempDir,
}

impl Moto {
    /// `python3 -m moto.server` (the Python scripts/test installs into).
    pub fn start() -> Moto {
        let dir = TempDir::new("moto");
        let emulator = Emulator::start("moto", dir.path(), |port| {
            let mut cmd = Command::new("python3");
            cmd.args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ]);
            cmd
        });
        Moto {
            port: emulator.port,
            emulator,
            _dir: dir,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// What the scheduler and workers get: endpoint, plain HTTP, dummy keys, region.
    pub fn worker_env(&self) -> Vec<(String, String)> {
        vec![
            ("AWS_ENDPOINT_URL".into(), self.endpoint()),
            ("AWS_ALLOW_HTTP".into(), "true".into()),
            ("AWS_ACCESS_KEY_ID".into(), MOTO_ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY".into(), MOTO_SECRET_KEY.into()),
            ("AWS_REGION".into(), MOTO_REGION.into()),
        ]
    }

    pub fn stop(&mut self) {
        self.emulator.stop();
    }

    pub fn log_tail(&self) -> String {
        self.emulator.log_tail()
    }

    fn tool(&self, args: &[&str]) -> String {
        let endpoint = self.endpoint();
        let mut all = vec![
            "--endpoint",
            endpoint.as_str(),
            "--access-key",
            MOTO_ACCESS_KEY,
            "--secret-key",
            MOTO_SECRET_KEY,
            "--region",
            MOTO_REGION,
        ];
        all.extend_from_slice(args);
        tool(&all)
    }

    pub fn create_bucket(&self, bucket: &str) {
        self.tool(&["s3-create-bucket", bucket]);
    }

    pub fn upload_dir(&self, dir: &Path, bucket: &str, prefix: &str) {
        self.tool(&["s3-upload", path_str(dir), bucket, prefix]);
    }

    pub fn download(&self, bucket: &str, prefix: &str, dir: &Path) {
        self.tool(&["s3-download", bucket, prefix, path_str(dir)]);
    }

    pub fn list(&self, bucket: &str, prefix: &str) -> Vec<Object> {
        objects(&self.tool(&["s3-list", bucket, prefix]))
    }

    pub fn put(&self, bucket: &str, key: &str, file: &Path) {
        self.tool(&["s3-put", bucket, key, path_str(file)]);
    }

    /// pyarrow's S3FileSystem and dataset (hive partitioning) over
    /// `s3://bucket/prefix`: (row count, column names).
    pub fn pyarrow_count(&self, bucket: &str, prefix: &str) -> (u64, Vec<String>) {
        let endpoint = self.endpoint();
        let out = self.tool(&["pyarrow-s3-count", &endpoint, bucket, prefix]);
        let v: serde_json::Value = serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("pyarrow-s3-count printed no JSON ({e}): {out}"));
        let rows = v["rows"].as_u64().expect("rows");
        let columns = v["columns"]
            .as_array()
            .expect("columns")
            .iter()
            .map(|c| c.as_str().expect("a column name").to_string())
            .collect();
        (rows, columns)
    }
}

/// Environment pairs as `start_local_env` takes them.
pub fn env_refs(env: &[(String, String)]) -> Vec<(&str, &str)> {
    env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()
}

/// A TCP proxy on a free loopback port in front of `127.0.0.1:upstream`
/// that slows what comes back (8 KiB every 10 ms per connection), so a
/// request over it is reliably still running when a test breaks the
/// emulator. [`ThrottledProxy::stop`] closes its listener and every open
/// connection: with the emulator stopped too, clients see a server that is
/// gone (refused connections), as when the real service dies.
pub struct ThrottledProxy {
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<TcpStream>>>,
    accept: Option<std::thread::JoinHandle<()>>,
}

impl ThrottledProxy {
    pub fn start(upstream: u16) -> ThrottledProxy {
        use std::io::{Read, Write};
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::sync::{Arc, Mutex};
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking listener");
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (stop2, open2) = (stop.clone(), open.clone());
        let accept = std::thread::spawn(move || {
            while !stop2.load(Ordering::SeqCst) {
                let client = match listener.accept() {
                    Ok((client, _)) => client,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(10));
                        continue;
                    }
                };
                let _ = client.set_nonblocking(false);
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
                    continue; // dropping `client` closes it
                };
                {
                    let mut open = open2.lock().unwrap();
                    open.push(client.try_clone().unwrap());
                    open.push(server.try_clone().unwrap());
                }
                let (mut c_in, mut s_out) =
                    (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut c_in, &mut s_out);
                    let _ = s_out.shutdown(std::net::Shutdown::Write);
                });
                let (mut s_in, mut c_out) = (server, client);
                std::thread::spawn(move || {
                    let mut buf = [0u8; 8192];
                    loop {
                        match s_in.read(&mut buf) {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if c_out.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let _ = c_out.shutdown(std::net::Shutdown::Both);
                });
            }
            // The listener drops here: the port refuses from now on.
        });
        ThrottledProxy {
            port,
            stop,
            open,
            accept: Some(accept),
        }
    }

    /// Stop accepting (the port then refuses) and cut every open connection.
    pub fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(accept) = self.accept.take() {
            let _ = accept.join();
        }
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(std::net::Shutdown::Both);
        }
    }
}

impl Drop for ThrottledProxy {
    fn drop(&mut self) {
        self.stop();
    }
}
