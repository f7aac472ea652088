//! `stratus`: the command line. Results go to stdout and nothing else; logs,
//! progress and timings go to stderr.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};

use stratus::local::{LocalCluster, LocalOptions};
use stratus::settings::{ClientFlags, ClientSettings};
use stratus::{Client, Locator};
use stratus_plan::Step;
use stratus_protocol::units::{format_bytes, parse_bytes};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    name = "stratus",
    version,
    about = "Stratus: a distributed dataframe runtime"
)]
struct Cli {
    /// Scheduler file written by the scheduler or `stratus local`.
    #[arg(long, global = true, env = "STRATUS_SCHEDULER_FILE")]
    scheduler_file: Option<PathBuf>,
    /// Scheduler address `quic://HOST:PORT` (needs --tls-ca, --tls-cert,
    /// --tls-key). Without a value, in `config show --scheduler`: show the
    /// scheduler's settings.
    #[arg(
        long,
        global = true,
        env = "STRATUS_SCHEDULER",
        num_args = 0..=1,
        default_missing_value = ""
    )]
    scheduler: Option<String>,
    /// The cluster CA certificate (PEM).
    #[arg(long, global = true, env = "STRATUS_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Our client certificate (role client), issued by the cluster CA.
    #[arg(long, global = true, env = "STRATUS_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert.
    #[arg(long, global = true, env = "STRATUS_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Seconds to wait for a first worker before giving up (default: the
    /// scheduler's --no-workers-timeout, 3 minutes unless set).
    #[arg(long, global = true)]
    wait_for_workers: Option<f64>,
    /// The client's TOML settings file (default: client.toml in
    /// $XDG_CONFIG_HOME/stratus or ~/.config/stratus, if there is one).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// The run this command's work is logged to (default: none, nothing is logged).
    #[arg(long, global = true, env = "STRATUS_RUN")]
    run: Option<String>,
    /// An object-store option, KEY=VALUE (repeatable), as Dask's
    /// storage_options: account_name, account_key, sas_token, endpoint,
    /// aws_access_key_id, region, allow_http, ... (the names of the
    /// object_store crate); stratus_allow_incomplete=true reads a dataset
    /// whose Stratus write did not complete. Sent encrypted, never logged.
    #[arg(long = "storage-option", global = true, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    storage_options: Vec<(String, String)>,
    /// More output on stderr.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// One-line cluster summary.
    Info,
    /// Row count of a persisted frame or a Parquet path/glob.
    Len { source: String },
    /// First rows of a persisted frame or a Parquet path/glob.
    Head {
        source: String,
        #[arg(short, default_value_t = 5)]
        n: u64,
        /// Comma-separated columns.
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
    },
    /// Read a source into the workers' RAM under a name.
    Persist {
        source: String,
        #[arg(long = "as")]
        name: String,
        /// Replace a frame of that name.
        #[arg(long)]
        replace: bool,
        /// Comma-separated columns to read from Parquet.
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
        /// Add or replace a column: NAME=SQL_EXPRESSION (repeatable).
        #[arg(long = "with-column", value_name = "NAME=EXPR")]
        with_columns: Vec<String>,
        /// Keep rows where this SQL expression is true.
        #[arg(long)]
        filter: Option<String>,
        /// Replace nulls and NaN in numeric columns by this value.
        #[arg(long)]
        fillna: Option<f64>,
        /// Comma-separated columns to drop.
        #[arg(long, value_delimiter = ',')]
        drop: Option<Vec<String>>,
        /// Comma-separated columns to keep, in this order.
        #[arg(long, value_delimiter = ',')]
        select: Option<Vec<String>>,
    },
    /// count, mean, std, min, quartiles (exact), max of numeric columns.
    Describe {
        name: String,
        /// Comma-separated columns (default: every numeric column).
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
        /// pandas' to_json(orient="split") instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Group a persisted frame by keys and aggregate, pandas-style.
    Groupby {
        name: String,
        /// Comma-separated key columns.
        #[arg(long, value_delimiter = ',', required = true)]
        by: Vec<String>,
        /// mean, sum, count, min, max, std or var of every numeric column (count:
        /// every column), or of --columns; or COLUMN:FUNC pairs, comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "mean")]
        agg: Vec<String>,
        /// Comma-separated columns to aggregate with a single --agg function.
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
        #[arg(long)]
        json: bool,
    },
    /// Sort a persisted frame by a column (set_index), in place or --as NEW.
    Sort {
        name: String,
        #[arg(long)]
        by: String,
        /// Keep the original and name the sorted frame.
        #[arg(long = "as")]
        into: Option<String>,
    },
    /// Write a persisted frame as a hive-partitioned Parquet dataset.
    Write {
        name: String,
        dest: String,
        /// Comma-separated columns that become `key=value` directories.
        #[arg(long, value_delimiter = ',')]
        partition_by: Vec<String>,
        /// Replace an existing dataset at DEST.
        #[arg(long)]
        overwrite: bool,
    },
    /// Bytes of Arrow buffers held per column.
    Memory {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Plot a daily aggregate of every numeric column over time (one PNG per
    /// column) and station positions by year; --log stores them with the run.
    Plot {
        name: String,
        /// The date column to group by.
        #[arg(long, default_value = "date")]
        by: String,
        /// mean, sum, count, min, max, std or var.
        #[arg(long, default_value = "mean")]
        agg: String,
        /// Comma-separated columns (default: every numeric column).
        #[arg(long, value_delimiter = ',')]
        columns: Option<Vec<String>>,
        /// Directory for the PNGs.
        #[arg(long, default_value = "stratus-plots")]
        out: PathBuf,
        /// Log the PNGs to the run (see /api/runs on the dashboard).
        #[arg(long)]
        log: bool,
        /// Skip the scatter of station positions.
        #[arg(long)]
        no_stations: bool,
    },
    /// Release a persisted frame.
    Unpersist { name: String },
    /// Retire workers by name: their persisted partitions move to the other
    /// workers (nothing is read again), their tasks end, and they exit with
    /// status 0. Refused when the others lack the room, unless --force.
    Retire {
        #[arg(required = true, value_name = "WORKER")]
        workers: Vec<String>,
        /// Retire even without room elsewhere: partitions that do not fit
        /// are dropped and rebuilt from their Parquet sources later.
        #[arg(long)]
        force: bool,
    },
    /// Persisted frames.
    List,
    /// Start a scheduler and workers on this machine until Ctrl-C.
    Local {
        #[arg(long, default_value_t = 2)]
        workers: u32,
        #[arg(long, default_value_t = 1)]
        threads_per_worker: u32,
        /// Per worker (default: 60% of the machine's memory, or of its cgroup's
        /// limit, divided among the workers).
        #[arg(long)]
        memory_limit: Option<String>,
        #[arg(long, default_value_t = 0)]
        port: u16,
        #[arg(long)]
        dashboard_address: Option<String>,
        /// Where the scheduler keeps runs (logged metrics and plots).
        #[arg(long, default_value = "stratus-data")]
        data_dir: PathBuf,
        /// Where workers spill partitions past 60% of their memory limit
        /// (default: DATA_DIR/spill; `none`: no spilling, a partition past
        /// the limit is refused).
        #[arg(long)]
        spill_dir: Option<String>,
        /// Do not replace workers that die (Dask's `--no-nanny`): a lost
        /// worker stays lost, its partitions rebuilt on the others.
        #[arg(long)]
        no_nanny: bool,
        /// A directory the workers may read and write below (repeatable;
        /// default: STRATUS_DATA_ROOTS, else the current directory and the
        /// system temporary directory).
        #[arg(long = "data-root", value_name = "DIR")]
        data_roots: Vec<PathBuf>,
        /// Follow the scheduler's adaptive target (/api/adaptive): start
        /// workers up to it, retire surplus ones (their data moves) after
        /// it asked for fewer 3 polls in a row. --workers is the start.
        #[arg(long)]
        adaptive: bool,
        /// With --adaptive: fewest workers.
        #[arg(long, default_value_t = 1, requires = "adaptive")]
        minimum_workers: u32,
        /// With --adaptive: most workers.
        #[arg(long, default_value_t = 8, requires = "adaptive")]
        maximum_workers: u32,
    },
    /// The settings in force for the client, the scheduler or a worker.
    Config {
        #[command(subcommand)]
        action: ConfigCmd,
    },
    /// The cluster's certificate authority and the certificates it issues.
    Certs {
        #[command(subcommand)]
        action: CertsCmd,
    },
    /// GET an HTTP URL on this host (`http://127.0.0.1:8787/ready`; default
    /// STRATUS_PROBE_URL) and exit 0 on a 2xx answer, 1 otherwise: a health
    /// check for images with no curl (the scheduler's and workers' /health
    /// and /ready probes).
    Probe {
        #[arg(env = "STRATUS_PROBE_URL")]
        url: String,
        /// Seconds to wait for the answer.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Generate sample data.
    Datagen {
        #[command(subcommand)]
        kind: DatagenKind,
    },
    /// The main job: a local cluster, sample data, the workflow, with timings.
    Demo {
        /// Rows of sample data to generate if --data has none.
        #[arg(long, default_value_t = 2_000_000)]
        rows: u64,
        /// Dataset directory (generated there if empty), or an object-store
        /// URL (az://, abfss://, https://ACCOUNT.blob.core.windows.net/...,
        /// s3://) read as it is, with the workers' credentials and
        /// --storage-option.
        #[arg(long, default_value = "stratus-sample-data")]
        data: String,
        /// Where the prepared dataset is written (a directory or an
        /// object-store URL; default: DATA-prepared next to a local dataset,
        /// ./stratus-prepared for a URL).
        #[arg(long)]
        out: Option<String>,
        #[arg(long, default_value_t = 2)]
        workers: u32,
        #[arg(long, default_value_t = 1)]
        threads_per_worker: u32,
        /// Where the scheduler keeps runs (logged metrics and plots).
        #[arg(long, default_value = "stratus-data")]
        data_dir: PathBuf,
        /// Where the plots are written.
        #[arg(long, default_value = "stratus-plots")]
        plots: PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ConfigCmd {
    /// Print the settings in force as TOML, each with where it came from
    /// (default, file, env, flag), secrets masked: the client's (default),
    /// or the scheduler's or a worker's as `stratus-scheduler` or
    /// `stratus-worker` would load them here, with the flags after `--`
    /// (e.g. `-- --config /etc/stratus/worker.toml`).
    Show {
        // `--scheduler` (without a value) is the global flag's: see `Cli`.
        /// A worker's (`stratus-worker --show-config`).
        #[arg(long, conflicts_with = "client")]
        worker: bool,
        /// The client's (the default).
        #[arg(long)]
        client: bool,
        /// Flags of the scheduler or worker whose settings are shown.
        #[arg(last = true)]
        args: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum CertsCmd {
    /// Make a cluster CA: DIR/ca.pem and DIR/ca.key (mode 0600).
    Init { dir: PathBuf },
    /// Issue DIR/NAME.pem and DIR/NAME.key (mode 0600), signed by the CA in DIR.
    Issue {
        dir: PathBuf,
        /// scheduler, worker or client.
        #[arg(long)]
        role: stratus_protocol::pki::Role,
        /// The certificate's name (checked as a DNS name).
        #[arg(long)]
        name: String,
        /// DNS names or IP addresses clients dial (for a scheduler), comma-separated.
        #[arg(long, value_delimiter = ',')]
        host: Vec<String>,
        /// Days the certificate is valid.
        #[arg(long, default_value_t = stratus_protocol::pki::DEFAULT_DAYS)]
        days: u32,
    },
}

#[derive(Subcommand, Debug)]
enum DatagenKind {
    /// Synthetic ISD-like weather data, hive-partitioned by year and month.
    Isd {
        #[arg(long)]
        rows: u64,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value_t = 42)]
        seed: u64,
        /// Order of the rows within each monthly file: time, station (grouped by
        /// station, then time, as real copies written by pyarrow come) or random
        /// (a seeded shuffle). The same rows for every order.
        #[arg(long, default_value_t = stratus_engine::datagen::RowOrder::Time)]
        order: stratus_engine::datagen::RowOrder,
    },
}

fn main() {
    // Like other Unix tools, end quietly when stdout's reader goes away
    // (`stratus groupby ... | head`).
    // SAFETY: setting a signal disposition before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let mut cli = Cli::parse();
    // Settings files and variables fill in what the flags left out.
    if let Err(e) = apply_client_settings(&mut cli) {
        eprintln!("stratus: error: {e}");
        std::process::exit(2);
    }
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("STRATUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    // One thread: children of `stratus local` are spawned from the main thread,
    // so their parent-death signal is tied to this process's life.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    // For `stratus local` a signal is the normal way to stop (exit 0); for
    // any other command it interrupts a request (exit 130).
    let signal_ends_normally = matches!(cli.command, Cmd::Local { .. });
    let code = runtime.block_on(async {
        tokio::select! {
            result = run(cli) => match result {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("stratus: error: {e:#}");
                    1
                }
            },
            _ = shutdown_signal() => {
                stratus::client::close_all().await;
                if signal_ends_normally {
                    0
                } else {
                    eprintln!("stratus: interrupted");
                    130
                }
            }
        }
    });
    // Dropping the runtime drops any client: its connection closes, and the
    // scheduler cancels what it was doing for us.
    drop(runtime);
    std::process::exit(code);
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// The client's flags as [`ClientFlags`].
fn client_flags(cli: &Cli) -> ClientFlags {
    ClientFlags {
        scheduler_file: cli.scheduler_file.clone(),
        // `--scheduler` without a value names no address.
        scheduler: cli.scheduler.clone().filter(|s| !s.is_empty()),
        tls_ca: cli.tls_ca.clone(),
        tls_cert: cli.tls_cert.clone(),
        tls_key: cli.tls_key.clone(),
        run: cli.run.clone(),
        wait_for_workers: cli.wait_for_workers,
        storage_options: cli.storage_options.clone(),
    }
}

/// Fill the flags the user left out from the client's settings (file and
/// variables), so that every later step reads one answer.
fn apply_client_settings(cli: &mut Cli) -> Result<(), String> {
    if matches!(cli.command, Cmd::Config { .. }) {
        return Ok(()); // `config show` loads (and reports) them itself.
    }
    let s = ClientSettings::load(cli.config.as_deref(), &client_flags(cli))?;
    cli.storage_options = s.storage_options();
    cli.scheduler_file = s.scheduler_file;
    cli.scheduler = s.scheduler;
    cli.tls_ca = s.tls_ca;
    cli.tls_cert = s.tls_cert;
    cli.tls_key = s.tls_key;
    cli.run = s.run;
    cli.wait_for_workers = s.wait_for_workers;
    Ok(())
}

fn locator(cli: &Cli) -> Locator {
    Locator {
        scheduler_file: cli.scheduler_file.clone(),
        scheduler: cli.scheduler.clone(),
        tls_ca: cli.tls_ca.clone(),
        tls_cert: cli.tls_cert.clone(),
        tls_key: cli.tls_key.clone(),
    }
}

/// `stratus probe URL`: one HTTP/1.0 GET of `http://IP:PORT/PATH` (an
/// address, not a name: images have no resolver), its status line if 2xx,
/// else an error. Blocking, with `timeout` on every step.
fn probe(url: &str, timeout: Duration) -> anyhow::Result<String> {
    use std::io::{Read, Write};
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow::anyhow!("probe: '{url}' is not an http:// URL"))?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let authority = authority.replace("localhost", "127.0.0.1");
    let address: std::net::SocketAddr = authority.parse().map_err(|e| {
        anyhow::anyhow!("probe: '{url}': expected http://IP:PORT/PATH with an IP address: {e}")
    })?;
    let path = if path.is_empty() { "/" } else { path };
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("probe: cannot connect to {address}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // One write: a server may answer and close as soon as it has the headers.
    let request = format!("GET {path} HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .with_context(|| format!("probe: sending the request to {address}"))?;
    let mut answer = Vec::new();
    stream
        .take(64 * 1024)
        .read_to_end(&mut answer)
        .with_context(|| format!("probe: reading the answer of {url}"))?;
    let text = String::from_utf8_lossy(&answer);
    let status_line = text.lines().next().unwrap_or_default().to_string();
    match status_line.split_whitespace().nth(1).map(str::parse::<u16>) {
        Some(Ok(code)) if (200..300).contains(&code) => Ok(status_line),
        _ => anyhow::bail!("probe: {url} answered '{status_line}'"),
    }
}

/// `stratus certs init|issue`.
fn certs(action: &CertsCmd) -> anyhow::Result<()> {
    use stratus_protocol::pki::{self, CertificateAuthority, IssueSpec};
    match action {
        CertsCmd::Init { dir } => {
            CertificateAuthority::init(dir)?;
            println!(
                "cluster CA written: {} and {} (keep the key secret: it can issue any credential)",
                dir.join(pki::CA_CERT_FILE).display(),
                dir.join(pki::CA_KEY_FILE).display()
            );
        }
        CertsCmd::Issue {
            dir,
            role,
            name,
            host,
            days,
        } => {
            let ca = CertificateAuthority::load(dir)?;
            let pair = ca.issue(&IssueSpec {
                role: *role,
                name: name.clone(),
                hosts: host.clone(),
                days: *days,
            })?;
            let (cert, key) = pki::write_credential(dir, name, &pair)?;
            let serial = pki::inspect(&pki::first_cert_der(&pair.cert_pem)?)?.serial;
            println!(
                "{role} certificate '{name}' written: {} and {} (serial {serial}, valid {days} days)",
                cert.display(),
                key.display()
            );
        }
    }
    Ok(())
}

/// The run the command names (`--run` or `STRATUS_RUN`; blank is none).
fn run_of(cli: &Cli) -> Option<String> {
    stratus::client::run_name(cli.run.clone())
}

/// Connect, logging to the run the command names (if any), without waiting
/// for workers.
async fn connect_now(cli: &Cli) -> anyhow::Result<Client> {
    let target = locator(cli).resolve()?;
    let mut client = Client::connect_with(&target, run_of(cli).as_deref()).await?;
    client.set_progress(stratus::progress::Reporter::new(cli.verbose > 0));
    client.set_storage_options(cli.storage_options.clone());
    Ok(client)
}

/// `KEY=VALUE` of `--storage-option`.
fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.trim().is_empty() => {
            Ok((key.trim().to_string(), value.to_string()))
        }
        _ => Err("expected KEY=VALUE (for example account_name=myaccount)".into()),
    }
}

/// Connect as [`connect_now`], then wait for a first worker.
async fn connect(cli: &Cli) -> anyhow::Result<Client> {
    let client = connect_now(cli).await?;
    // By default, as long as the scheduler would let a request wait.
    let wait = match cli.wait_for_workers {
        Some(seconds) => seconds,
        None => client.info().await?.no_workers_timeout_seconds,
    };
    client
        .wait_for_workers(1, Duration::from_secs_f64(wait.max(0.0)))
        .await?;
    Ok(client)
}

fn elapsed(start: Instant) -> String {
    format!("{:.3} s", start.elapsed().as_secs_f64())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match &cli.command {
        Cmd::Info => {
            let client = connect_now(&cli).await?;
            let info = client.info().await?;
            println!(
                "<Client: {} workers={} threads={} memory={}>",
                info.address,
                info.workers,
                info.threads,
                format_bytes(info.memory_limit)
            );
            client.close().await;
        }
        Cmd::Len { source } => {
            let client = connect(&cli).await?;
            let start = Instant::now();
            let n = client.len(source).await?;
            println!("{n}");
            if cli.verbose > 0 {
                eprintln!("len: {}", elapsed(start));
            }
            client.close().await;
        }
        Cmd::Head { source, n, columns } => {
            let client = connect(&cli).await?;
            let batches = client.head(source, *n, columns.clone()).await?;
            println!("{}", arrow_cast::pretty::pretty_format_batches(&batches)?);
            client.close().await;
        }
        Cmd::Persist {
            source,
            name,
            replace,
            columns,
            with_columns,
            filter,
            fillna,
            drop,
            select,
        } => {
            // Steps apply in this order: with-column (as given), filter, fillna, drop, select.
            let mut steps = Vec::new();
            for text in with_columns {
                let (name, expr) =
                    stratus::sql::parse_assignment(text).map_err(anyhow::Error::msg)?;
                steps.push(Step::WithColumn { name, expr });
            }
            if let Some(text) = filter {
                steps.push(Step::Filter(
                    stratus::sql::parse_expr(text).map_err(anyhow::Error::msg)?,
                ));
            }
            if let Some(value) = fillna {
                steps.push(Step::FillNa(*value));
            }
            if let Some(cols) = drop {
                steps.push(Step::Drop(cols.clone()));
            }
            if let Some(cols) = select {
                steps.push(Step::Select(cols.clone()));
            }
            let client = connect(&cli).await?;
            let start = Instant::now();
            let verbose = cli.verbose > 0;
            let summary = client
                .persist(
                    source,
                    name,
                    *replace,
                    columns.clone(),
                    steps,
                    &mut |_, _, _| {},
                )
                .await?;
            println!(
                "{}: {} rows, {} partitions, {}",
                summary.name,
                summary.rows,
                summary.partitions,
                format_bytes(summary.bytes)
            );
            if verbose {
                eprintln!("persist: {}", elapsed(start));
            }
            client.close().await;
        }
        Cmd::Describe {
            name,
            columns,
            json,
        } => {
            let client = connect(&cli).await?;
            let start = Instant::now();
            let table = client.describe(name, columns.clone()).await?;
            print_table(&table, *json);
            if cli.verbose > 0 {
                eprintln!("describe: {}", elapsed(start));
            }
            client.close().await;
        }
        Cmd::Groupby {
            name,
            by,
            agg,
            columns,
            json,
        } => {
            let (aggs, all) = parse_aggs(agg, columns.as_deref())?;
            let client = connect(&cli).await?;
            let start = Instant::now();
            let table = client.groupby(name, by.clone(), aggs, all).await?;
            if *json {
                println!("{}", stratus::display::split_json(&table, by.len()));
            } else {
                print!("{}", stratus::display::pandas_table(&table, by.len()));
            }
            if cli.verbose > 0 {
                eprintln!("groupby: {} groups in {}", table.num_rows(), elapsed(start));
            }
            client.close().await;
        }
        Cmd::Sort { name, by, into } => {
            let client = connect(&cli).await?;
            let start = Instant::now();
            let summary = client.sort(name, by, into.as_deref()).await?;
            println!(
                "{}: {} rows, {} partitions, {}, sorted by {by}",
                summary.name,
                summary.rows,
                summary.partitions,
                format_bytes(summary.bytes)
            );
            if cli.verbose > 0 {
                eprintln!("sort: {}", elapsed(start));
            }
            client.close().await;
        }
        Cmd::Write {
            name,
            dest,
            partition_by,
            overwrite,
        } => {
            let client = connect(&cli).await?;
            let start = Instant::now();
            let (rows, files) = client
                .write_parquet(name, dest, partition_by.clone(), *overwrite)
                .await?;
            println!("{dest}: {rows} rows in {files} files");
            if cli.verbose > 0 {
                eprintln!("write: {}", elapsed(start));
            }
            client.close().await;
        }
        Cmd::Memory { name, json } => {
            let client = connect(&cli).await?;
            let table = client.memory_usage(name).await?;
            print_table(&table, *json);
            client.close().await;
        }
        Cmd::Plot {
            name,
            by,
            agg,
            columns,
            out,
            log,
            no_stations,
        } => {
            if *log && run_of(&cli).is_none() {
                bail!("--log stores the plots with a run, and this command names none: pass --run NAME or set STRATUS_RUN");
            }
            let client = connect(&cli).await?;
            let start = Instant::now();
            let mut files = stratus::plots::plot_daily(
                &client,
                name,
                by,
                agg_func(agg)?,
                columns.clone(),
                out,
                *log,
            )
            .await?;
            if !no_stations {
                files.push(stratus::plots::plot_stations(&client, name, out, *log).await?);
            }
            for f in &files {
                println!("{}", f.path.display());
            }
            if *log {
                let run_id = client
                    .log_metrics(&[("plot.seconds", start.elapsed().as_secs_f64())])
                    .await?;
                let dashboard = client.info().await?.dashboard;
                eprintln!(
                    "logged {} plots to run '{}': {}api/runs/{run_id}",
                    files.len(),
                    client.run().unwrap_or_default(),
                    dashboard
                );
            }
            client.close().await;
        }
        Cmd::Unpersist { name } => {
            let client = connect_now(&cli).await?;
            client.unpersist(name).await?;
            client.close().await;
        }
        Cmd::Retire { workers, force } => {
            let client = connect_now(&cli).await?;
            let retired = client.retire(workers, *force).await?;
            client.close().await;
            for w in retired {
                let mut parts: Vec<String> = w
                    .moved
                    .iter()
                    .map(|(to, n, bytes)| {
                        format!("{n} partitions ({}) to {to}", format_bytes(*bytes))
                    })
                    .collect();
                if w.dropped_partitions > 0 {
                    parts.push(format!(
                        "{} partitions ({}) dropped, rebuilt from lineage",
                        w.dropped_partitions,
                        format_bytes(w.dropped_bytes)
                    ));
                }
                if parts.is_empty() {
                    parts.push("held nothing".into());
                }
                println!("retired {}: {}", w.name, parts.join(", "));
            }
        }
        Cmd::List => {
            let client = connect_now(&cli).await?;
            let frames = client.list().await?;
            print_frames(&frames);
            client.close().await;
        }
        Cmd::Local {
            workers,
            threads_per_worker,
            memory_limit,
            port,
            dashboard_address,
            data_dir,
            spill_dir,
            no_nanny,
            data_roots,
            adaptive,
            minimum_workers,
            maximum_workers,
        } => {
            if *adaptive && minimum_workers > maximum_workers {
                bail!("--minimum-workers {minimum_workers} exceeds --maximum-workers {maximum_workers}");
            }
            let options = LocalOptions {
                workers: *workers,
                threads_per_worker: *threads_per_worker,
                memory_limit: memory_limit
                    .as_deref()
                    .map(parse_bytes)
                    .transpose()
                    .map_err(anyhow::Error::msg)?,
                port: *port,
                dashboard_address: dashboard_address.clone(),
                scheduler_file: cli.scheduler_file.clone(),
                inherit_logs: true,
                data_dir: Some(data_dir.clone()),
                spill_dir: spill_dir.clone(),
                data_roots: (!data_roots.is_empty()).then(|| data_roots.clone()),
                adaptive: adaptive.then(|| stratus::local::Adaptive {
                    minimum: *minimum_workers,
                    maximum: *maximum_workers,
                    ..Default::default()
                }),
            };
            let mut cluster = LocalCluster::start(&options).await?;
            println!("scheduler {}", cluster.target.address);
            println!("dashboard {}", cluster.dashboard);
            if let Some(path) = &cluster.scheduler_file {
                println!("scheduler-file {}", path.display());
            }
            // Replace dead workers until Ctrl-C / SIGTERM; the nanny is
            // dropped (no more restarts) before the children are stopped.
            let policy = stratus::local::RestartPolicy {
                replace: !*no_nanny,
                ..Default::default()
            };
            tokio::select! {
                result = cluster.nanny(&policy) => result?,
                _ = shutdown_signal() => {}
            }
            eprintln!("stratus local: stopping");
            drop(cluster);
        }
        Cmd::Config {
            action:
                ConfigCmd::Show {
                    worker,
                    client,
                    args,
                },
        } => {
            let scheduler = cli.scheduler.as_deref() == Some("");
            if scheduler && (*worker || *client) {
                bail!("config show: choose one of --scheduler, --worker, --client");
            }
            if scheduler || *worker {
                let name = if scheduler {
                    "stratus-scheduler"
                } else {
                    "stratus-worker"
                };
                let status = std::process::Command::new(stratus::local::sibling_binary(name)?)
                    .arg("--show-config")
                    .args(args)
                    .status()
                    .with_context(|| format!("running {name} --show-config"))?;
                if !status.success() {
                    bail!("{name} refused its settings (above)");
                }
            } else {
                if !args.is_empty() {
                    bail!("flags after `--` are for --scheduler or --worker");
                }
                let loaded = ClientSettings::load_shown(cli.config.as_deref(), &client_flags(&cli))
                    .map_err(anyhow::Error::msg)?;
                print!("{}", loaded.render());
            }
        }
        Cmd::Certs { action } => certs(action)?,
        Cmd::Probe { url, timeout } => {
            let status = probe(url, Duration::from_secs_f64(timeout.clamp(0.1, 3600.0)))?;
            println!("{status}");
        }
        Cmd::Datagen {
            kind:
                DatagenKind::Isd {
                    rows,
                    out,
                    seed,
                    order,
                },
        } => {
            let start = Instant::now();
            let summary = stratus_engine::datagen::generate_isd_ordered(
                &stratus_engine::datagen::DatagenOptions {
                    rows: *rows,
                    out: out.clone(),
                    seed: *seed,
                },
                *order,
            )?;
            eprintln!(
                "wrote {} rows ({order} order) in {} files ({}) to {} in {}",
                summary.rows,
                summary.files,
                format_bytes(summary.bytes),
                out.display(),
                elapsed(start)
            );
        }
        Cmd::Demo {
            rows,
            data,
            out,
            workers,
            threads_per_worker,
            data_dir,
            plots,
        } => {
            let options = DemoOptions {
                rows: *rows,
                data: data.clone(),
                out: out.clone(),
                storage_options: cli.storage_options.clone(),
                workers: *workers,
                threads_per_worker: *threads_per_worker,
                data_dir: data_dir.clone(),
                plots: plots.clone(),
                run: run_of(&cli),
            };
            demo(&options).await?
        }
    }
    Ok(())
}

fn agg_func(name: &str) -> anyhow::Result<stratus::Agg> {
    use stratus::Agg;
    Ok(match name.trim().to_lowercase().as_str() {
        "mean" => Agg::Mean,
        "sum" => Agg::Sum,
        "count" => Agg::Count,
        "min" => Agg::Min,
        "max" => Agg::Max,
        "std" => Agg::Std,
        "var" => Agg::Var,
        other => bail!("unknown aggregation '{other}' (mean, sum, count, min, max, std, var)"),
    })
}

/// Aggregations of a group-by: (column, function) pairs, and a function for
/// every numeric column.
type Aggregations = (Vec<(String, stratus::Agg)>, Option<stratus::Agg>);

/// `--agg mean` (all numeric, or --columns) or `--agg temperature:mean,windSpeed:max`.
fn parse_aggs(agg: &[String], columns: Option<&[String]>) -> anyhow::Result<Aggregations> {
    if agg.len() == 1 && !agg[0].contains(':') {
        let f = agg_func(&agg[0])?;
        return Ok(match columns {
            Some(cols) => (cols.iter().map(|c| (c.clone(), f)).collect(), None),
            None => (Vec::new(), Some(f)),
        });
    }
    let mut out = Vec::new();
    for a in agg {
        let (column, f) = a
            .split_once(':')
            .ok_or_else(|| anyhow::anyhow!("--agg '{a}': expected COLUMN:FUNC"))?;
        out.push((column.to_string(), agg_func(f)?));
    }
    Ok((out, None))
}

/// Print a result table (first column = index) like pandas, or as JSON.
fn print_table(table: &arrow_array::RecordBatch, json: bool) {
    if json {
        println!("{}", stratus::display::split_json(table, 1));
    } else {
        print!("{}", stratus::display::pandas_table(table, 1));
    }
}

fn print_frames(frames: &[stratus_protocol::messages::FrameSummary]) {
    println!(
        "{:<20} {:>14} {:>12} {:>10}  source",
        "name", "rows", "bytes", "partitions"
    );
    for f in frames {
        println!(
            "{:<20} {:>14} {:>12} {:>10}  {}",
            f.name,
            f.rows,
            format_bytes(f.bytes),
            f.partitions,
            f.source
        );
    }
}

fn has_parquet(dir: &std::path::Path) -> bool {
    stratus_engine::scan::list_files(&dir.display().to_string()).is_ok_and(|f| !f.is_empty())
}

/// The README's main job, on the embedded default.
/// What `stratus demo` runs on.
struct DemoOptions {
    rows: u64,
    /// A directory or an object-store URL.
    data: String,
    out: Option<String>,
    storage_options: Vec<(String, String)>,
    workers: u32,
    threads_per_worker: u32,
    data_dir: PathBuf,
    plots: PathBuf,
    run: Option<String>,
}

/// Log a workflow step's duration (and numbers) to the run.
async fn log_step(
    client: &Client,
    step: &str,
    start: Instant,
    numbers: &[(&str, f64)],
) -> anyhow::Result<String> {
    let seconds = format!("workflow.{step}.seconds");
    let mut metrics = vec![(seconds.as_str(), start.elapsed().as_secs_f64())];
    let named: Vec<(String, f64)> = numbers
        .iter()
        .map(|(n, v)| (format!("workflow.{step}.{n}"), *v))
        .collect();
    metrics.extend(named.iter().map(|(n, v)| (n.as_str(), *v)));
    Ok(client.log_metrics(&metrics).await?)
}

async fn demo(options: &DemoOptions) -> anyhow::Result<()> {
    let DemoOptions {
        rows,
        data,
        workers,
        threads_per_worker,
        ..
    } = options;
    let (rows, workers, threads_per_worker) = (*rows, *workers, *threads_per_worker);
    println!("== Stratus demo: the ISD workflow on a local cluster");
    let remote = stratus_storage::Location::parse(data).is_ok_and(|l| l.is_remote());
    let data = std::path::Path::new(data.as_str());
    if remote {
        println!("reading the dataset at {}", data.display());
    } else if !has_parquet(data) {
        let start = Instant::now();
        let summary =
            stratus_engine::datagen::generate_isd(&stratus_engine::datagen::DatagenOptions {
                rows,
                out: data.to_path_buf(),
                seed: 42,
            })?;
        println!(
            "generated sample ISD data: {} rows, {} files, {} in {}  [{}]",
            summary.rows,
            summary.files,
            format_bytes(summary.bytes),
            data.display(),
            elapsed(start)
        );
    } else {
        println!("using the dataset in {}", data.display());
    }
    let source = if remote {
        options.data.clone()
    } else {
        data.canonicalize()
            .with_context(|| format!("cannot resolve {}", data.display()))?
            .display()
            .to_string()
    };
    // The destination, absolute when local (workers may run elsewhere).
    let absolute = |place: &str| -> String {
        let local = !stratus_storage::Location::parse(place).is_ok_and(|l| l.is_remote());
        match std::env::current_dir() {
            Ok(cwd) if local && std::path::Path::new(place).is_relative() => {
                cwd.join(place).display().to_string()
            }
            _ => place.to_string(),
        }
    };
    let out = match &options.out {
        Some(out) => absolute(out),
        None if remote => absolute("stratus-prepared"),
        None => std::path::Path::new(&source)
            .with_file_name(format!(
                "{}-prepared",
                data.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("stratus-sample-data")
            ))
            .display()
            .to_string(),
    };

    let start = Instant::now();
    // The workers read the data and write next to it, wherever it is.
    let mut data_roots = stratus::local::default_data_roots();
    for place in [&source, &out] {
        let local = !stratus_storage::Location::parse(place).is_ok_and(|l| l.is_remote());
        let parent = std::path::Path::new(place).parent();
        if let Some(parent) = parent.filter(|p| local && !p.as_os_str().is_empty()) {
            data_roots.push(parent.to_path_buf());
        }
    }
    let cluster = LocalCluster::start(&LocalOptions {
        workers,
        threads_per_worker,
        data_dir: Some(options.data_dir.clone()),
        data_roots: Some(data_roots),
        ..LocalOptions::default()
    })
    .await?;
    println!(
        "local cluster: scheduler {}, {} workers x {} threads  [{}]",
        cluster.target.address,
        workers,
        threads_per_worker,
        elapsed(start)
    );
    println!("dashboard: {}", cluster.dashboard);

    // The demo always logs: to the run named, else to a new one it names.
    let run = options
        .run
        .clone()
        .unwrap_or_else(|| stratus::client::generated_run_name("demo"));
    let mut client = Client::connect_run(&cluster.target, &run).await?;
    client.set_progress(stratus::progress::Reporter::new(false));
    client.set_storage_options(options.storage_options.clone());
    println!("run: '{run}' (steps, timings and plots are logged to it)");
    let info = client.info().await?;
    println!(
        "<Client: {} workers={} threads={} memory={}>",
        info.address,
        info.workers,
        info.threads,
        format_bytes(info.memory_limit)
    );

    let df = client.read_parquet(&source);
    let start = Instant::now();
    let n = df.len().await?;
    println!(
        "1. len(df) from Parquet footers: {n} rows  [{}]",
        elapsed(start)
    );
    log_step(&client, "len", start, &[("rows", n as f64)]).await?;

    let start = Instant::now();
    let (isd, summary) = df
        .clone()
        .with_column(
            "date",
            stratus::col("datetime").floor(stratus::TruncUnit::Day),
        )
        .persist_with("isd", true)
        .await?;
    println!(
        "2. add date = datetime floored to the day, persist as 'isd': {} rows in {} partitions, {} of Arrow buffers in the workers' RAM  [{}]",
        summary.rows,
        summary.partitions,
        format_bytes(summary.bytes),
        elapsed(start)
    );
    let start = Instant::now();
    let n2 = isd.len().await?;
    println!(
        "   len(isd) once persisted: {n2} rows  [{}]",
        elapsed(start)
    );
    if n2 != n {
        bail!("persisted row count {n2} differs from the source's {n}");
    }
    log_step(
        &client,
        "persist",
        start,
        &[
            ("rows", summary.rows as f64),
            ("bytes", summary.bytes as f64),
        ],
    )
    .await?;

    let start = Instant::now();
    let described = isd.describe().await?;
    println!("3. describe() (exact quartiles)  [{}]", elapsed(start));
    print!("{}", stratus::display::pandas_table(&described, 1));
    log_step(&client, "describe", start, &[]).await?;

    let start = Instant::now();
    let daily = isd.groupby(&["date"]).mean().await?;
    println!(
        "4. groupby(date).mean(): {} days x {} columns  [{}]",
        daily.num_rows(),
        daily.num_columns() - 1,
        elapsed(start)
    );
    let preview = daily
        .project(&[0, 6, 7, 9])?
        .slice(0, daily.num_rows().min(5));
    print!("{}", stratus::display::pandas_table(&preview, 1));
    log_step(
        &client,
        "daily_means",
        start,
        &[("days", daily.num_rows() as f64)],
    )
    .await?;
    let start = Instant::now();
    let plots = stratus::plots::plot_table(
        &client,
        &daily,
        "date",
        stratus::Agg::Mean,
        &options.plots,
        true,
    )
    .await?;
    let stations = stratus::plots::plot_stations(&client, "isd", &options.plots, true).await?;
    let run_id = log_step(
        &client,
        "plots",
        start,
        &[("files", plots.len() as f64 + 1.0)],
    )
    .await?;
    println!(
        "   plotted {} daily means and the station map ({}) to {}, logged to run '{run}'  [{}]",
        plots.len(),
        stations.name,
        options.plots.display(),
        elapsed(start)
    );

    let start = Instant::now();
    let memory = isd.memory_usage().await?;
    let total = memory.num_rows() - 1;
    let bytes = memory
        .column(1)
        .as_any()
        .downcast_ref::<arrow_array::UInt64Array>()
        .map_or(0, |b| b.value(total));
    println!(
        "5. memory_usage(): {} in Arrow buffers  [{}]",
        format_bytes(bytes),
        elapsed(start)
    );
    log_step(&client, "memory_usage", start, &[("bytes", bytes as f64)]).await?;
    let start = Instant::now();
    let counts = isd.groupby(&["year", "month"]).count().await?;
    println!(
        "   groupby([year, month]).count(): {} groups  [{}]",
        counts.num_rows(),
        elapsed(start)
    );
    log_step(
        &client,
        "year_month_counts",
        start,
        &[("groups", counts.num_rows() as f64)],
    )
    .await?;

    let start = Instant::now();
    let (_, sorted) = isd.sort_by("date", "isd_by_date").await?;
    println!(
        "   set_index(date): {} rows in {} partitions, sorted  [{}]",
        sorted.rows,
        sorted.partitions,
        elapsed(start)
    );
    log_step(&client, "set_index", start, &[("rows", sorted.rows as f64)]).await?;

    let start = Instant::now();
    let prepared = isd
        .clone()
        .with_column(
            "temperature",
            stratus::col("temperature") * stratus::lit(9) / stratus::lit(5) + stratus::lit(32),
        )
        .fillna(0.0)
        .select(&[
            "date",
            "latitude",
            "longitude",
            "elevation",
            "windAngle",
            "windSpeed",
            "temperature",
            "seaLvlPressure",
            "precipDepth",
            "year",
            "month",
        ]);
    let (prepared, _) = prepared.persist_with("prepared", true).await?;
    let (rows, files) = prepared.to_parquet(&out, &["year", "month"], true).await?;
    println!(
        "6. temperature to Fahrenheit, fillna(0), numeric columns, written to {out}: {rows} rows in {files} files  [{}]",
        elapsed(start)
    );
    log_step(
        &client,
        "write",
        start,
        &[("rows", rows as f64), ("files", files as f64)],
    )
    .await?;
    println!("dashboard: {}", cluster.dashboard);
    println!(
        "run '{run}': {}api/runs/{run_id} (its images: {}api/runs/{run_id}/artifacts/<name>.png, e.g. temperature.png), kept in {}",
        cluster.dashboard,
        cluster.dashboard,
        options.data_dir.display()
    );
    println!("plots: {}", options.plots.display());
    println!(
        "(the cluster stops now; `stratus local --data-dir {}` serves this run again at its dashboard)",
        options.data_dir.display()
    );
    client.close().await;
    drop(cluster);
    Ok(())
}
