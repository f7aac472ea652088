//! Memory benchmark (issue 12): the workflow's peak RSS per step, on a frame
//! that fits in the workers' memory and on one twice their memory limit, in
//! the same run.
//!
//! Two local clusters of 2 workers x 1 thread, one after the other, on the
//! same sample (`target/bench-data/isd-<rows>[-<order>]`, generated once):
//! first with a memory limit the frame fits in (nothing spills), then with a
//! per-worker `--memory-limit` of a quarter of the frame the first run
//! persisted, so the frame is 2x the cluster's total limit (`--limit BYTES`
//! sets it). Each step of the workflow is one `stratus` command (the real
//! CLI, as a user types it). Around each step the bench resets the peak RSS
//! of the scheduler and both workers (`echo 5 > /proc/PID/clear_refs`), reads
//! their `VmHWM` after it, and samples their `VmRSS` and `RssAnon` every 20 ms
//! while it runs; it reads the persisted bytes from the scheduler's
//! `/api/cluster` and the spill counters
//! (`stratus_worker_spill_bytes_{written,read}_total`, the spilled-bytes
//! gauge) from each worker's `/metrics`. `dd` times the disk's sequential
//! write (`conv=fdatasync`) and read (`iflag=direct`, past the page cache) in
//! the spill directory in the same run. The two runs' answers are compared.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench --bench memory`
//! (`-- --rows N` (12 M; `STRATUS_BENCH_ROWS`), `--order time|station|random`,
//! `--limit BYTES` (per worker, the 2x run), `--fits-limit BYTES` (per worker,
//! the fits run; default: `stratus local`'s, 60% of the machine's memory
//! divided among the workers), `--skip KEY,...` (steps left out, by their
//! JSON keys, e.g. `sort_temperature`), `--settle SECONDS` (idle before
//! each step; 0, back to back), `--dd-mib N` (1024)). The tables and the raw
//! numbers go to stdout, `target/bench-memory.md` and `target/bench-memory.json`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::answer::{same_answer, without_sizes};
use common::http::{get_json, http_get};
use common::{
    bench_command, dataset, peak_rss, proc_status, reset_peaks, secs, status_bytes, utc_now,
    write_report,
};
use stratus::local::{sibling_binary, LocalCluster, LocalOptions};
use stratus_engine::datagen::RowOrder;
use stratus_protocol::units::format_bytes;

/// The command line (`cargo bench --bench memory -- ...`).
struct Args {
    rows: u64,
    order: RowOrder,
    /// Per-worker memory limit of the 2x run (default: a quarter of the frame).
    limit: Option<u64>,
    /// Per-worker memory limit of the fits run (default: `stratus local`'s).
    fits_limit: Option<u64>,
    dd_mib: u64,
    /// Steps left out (their keys), with the checks and cleanups after them.
    skip: Vec<String>,
    /// Seconds of idle before each measured step (0: back to back, as a
    /// script runs them; a notebook user pauses between steps, and the
    /// workers give freed memory back to the OS within about a second).
    settle: f64,
}

fn args() -> Args {
    let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse().ok());
    let mut args = Args {
        rows: env("STRATUS_BENCH_ROWS").unwrap_or(12_000_000),
        order: RowOrder::Time,
        limit: None,
        fits_limit: None,
        dd_mib: 1024,
        skip: Vec::new(),
        settle: 0.0,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        // `cargo bench` adds --bench; anything unknown is ignored.
        let value = argv.get(i + 1);
        let taken = match (argv[i].as_str(), value) {
            ("--rows", Some(v)) => {
                args.rows = v.parse().expect("--rows N");
                true
            }
            ("--order", Some(v)) => {
                args.order = v.parse().expect("--order time|station|random");
                true
            }
            ("--limit", Some(v)) => {
                args.limit = Some(v.parse().expect("--limit BYTES"));
                true
            }
            ("--fits-limit", Some(v)) => {
                args.fits_limit = Some(v.parse().expect("--fits-limit BYTES"));
                true
            }
            ("--skip", Some(v)) => {
                args.skip = v.split(',').map(|k| k.trim().to_string()).collect();
                true
            }
            ("--settle", Some(v)) => {
                args.settle = v.parse().expect("--settle SECONDS");
                true
            }
            ("--dd-mib", Some(v)) => {
                args.dd_mib = v.parse().expect("--dd-mib N");
                true
            }
            _ => false,
        };
        i += if taken { 2 } else { 1 };
    }
    args
}

/// What a command of the workflow is there for.
#[derive(Clone, Copy, PartialEq)]
enum Kind {
    /// A step of the workflow: measured, in the table, its answer compared.
    Step,
    /// Checks a step's result (its answer compared, not measured).
    Check,
    /// Drops a frame no later step needs (neither measured nor compared).
    Cleanup,
}

/// One `stratus` command of the workflow.
struct Call {
    kind: Kind,
    /// Key in the JSON (steps only).
    key: &'static str,
    /// Label in the table (steps only).
    label: &'static str,
    args: Vec<String>,
}

/// The workflow on `source`, writing to `out`: the steps of `benches/e2e.rs`
/// and `tests/spill.rs` as a user types them, without the steps in `skip`
/// and the checks and cleanups that follow them up to the next step.
fn workflow(source: &str, out: &str, skip: &[String]) -> Vec<Call> {
    let call = |kind, key, label, args: &[&str]| Call {
        kind,
        key,
        label,
        args: args.iter().map(|a| a.to_string()).collect(),
    };
    let step = |key, label, args: &[&str]| call(Kind::Step, key, label, args);
    let check = |args: &[&str]| call(Kind::Check, "", "", args);
    let cleanup = |args: &[&str]| call(Kind::Cleanup, "", "", args);
    let calls = vec![
        step("len_parquet", "len (Parquet footers)", &["len", source]),
        step(
            "persist",
            "persist with date",
            &[
                "persist",
                source,
                "--as",
                "isd",
                "--replace",
                "--with-column",
                "date=date_trunc('day', datetime)",
            ],
        ),
        step("len", "len (persisted)", &["len", "isd"]),
        step(
            "describe",
            "describe (exact)",
            &["describe", "isd", "--json"],
        ),
        step(
            "groupby_date_mean",
            "groupby(date).mean",
            &["groupby", "isd", "--by", "date", "--agg", "mean", "--json"],
        ),
        step(
            "groupby_year_month_count",
            "groupby([year, month]).count",
            &[
                "groupby",
                "isd",
                "--by",
                "year,month",
                "--agg",
                "count",
                "--json",
            ],
        ),
        step("memory_usage", "memory_usage", &["memory", "isd", "--json"]),
        step(
            "sort_date",
            "set_index(date) (ranged sort)",
            &["sort", "isd", "--by", "date", "--as", "by_date"],
        ),
        check(&[
            "head",
            "by_date",
            "-n",
            "5",
            "--columns",
            "date,temperature",
        ]),
        cleanup(&["unpersist", "by_date"]),
        step(
            "sort_temperature",
            "sort by temperature (shuffle)",
            &["sort", "isd", "--by", "temperature", "--as", "by_temp"],
        ),
        check(&["head", "by_temp", "-n", "5", "--columns", "temperature"]),
        cleanup(&["unpersist", "by_temp"]),
        // In place: each old partition is freed once its sorted one is held.
        step(
            "sort_date_in_place",
            "sort by date in place (ranged)",
            &["sort", "isd", "--by", "date"],
        ),
        check(&["head", "isd", "-n", "5", "--columns", "date,temperature"]),
        step(
            "prepare",
            "prepare (F, fillna, select)",
            &[
                "persist",
                "isd",
                "--as",
                "prepared",
                "--replace",
                "--with-column",
                "temperature=temperature * 9 / 5 + 32",
                "--fillna",
                "0",
                "--select",
                "date,temperature,windSpeed,year,month",
            ],
        ),
        step(
            "write",
            "write year/month",
            &[
                "write",
                "prepared",
                out,
                "--partition-by",
                "year,month",
                "--overwrite",
            ],
        ),
        check(&["len", out]),
        cleanup(&["unpersist", "prepared"]),
        cleanup(&["unpersist", "isd"]),
    ];
    let mut skipping = false;
    calls
        .into_iter()
        .filter(|c| {
            if c.kind == Kind::Step {
                skipping = skip.iter().any(|k| k == c.key);
            }
            // The cluster stops after the last step: its cleanups may go too.
            !skipping
        })
        .collect()
}

/// The value of an unlabelled metric in a Prometheus exposition (0 if absent).
fn metric_value(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The workers' spill counters and gauges, summed over the workers.
#[derive(Clone, Copy, Default)]
struct Spill {
    written: u64,
    read: u64,
    /// Bytes of persisted partitions on disk only.
    spilled: u64,
    /// Bytes of persisted partitions (in RAM or on disk).
    persisted: u64,
}

fn spill_now(metrics_urls: &[String]) -> Spill {
    let mut s = Spill::default();
    for url in metrics_urls {
        let text = http_get(url);
        let v = |name| metric_value(&text, name) as u64;
        s.written += v("stratus_worker_spill_bytes_written_total");
        s.read += v("stratus_worker_spill_bytes_read_total");
        s.spilled += v("stratus_worker_spilled_bytes");
        s.persisted += v("stratus_worker_persisted_bytes");
    }
    s
}

/// What the 20 ms sampler saw: the largest sums over the processes.
#[derive(Clone, Copy, Default)]
struct Sampled {
    rss: u64,
    anon: u64,
    samples: u64,
}

/// Sample `VmRSS` and `RssAnon` of `pids` every 20 ms until `stop`.
fn sampler(pids: Vec<u32>, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Sampled> {
    std::thread::spawn(move || {
        let mut seen = Sampled::default();
        loop {
            let (mut rss, mut anon) = (0, 0);
            for &pid in &pids {
                let status = proc_status(pid);
                rss += status_bytes(&status, "VmRSS");
                anon += status_bytes(&status, "RssAnon");
            }
            seen.rss = seen.rss.max(rss);
            seen.anon = seen.anon.max(anon);
            seen.samples += 1;
            if stop.load(Ordering::Relaxed) {
                return seen;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
}

/// One step measured.
struct Measured {
    key: &'static str,
    label: &'static str,
    command: String,
    seconds: f64,
    /// Sum of VmRSS when the step began (what the peaks were reset to).
    rss_before: u64,
    /// Sum over the scheduler and the workers of VmHWM over the step.
    peak_sum: u64,
    /// The largest worker VmHWM.
    peak_worker: u64,
    peak_scheduler: u64,
    sampled: Sampled,
    /// Persisted bytes (all frames, from the workers) before and after.
    persisted_before: u64,
    persisted_after: u64,
    spill_before: Spill,
    spill_after: Spill,
    error: Option<String>,
}

impl Measured {
    /// The persisted bytes the step is held against: the most held before
    /// or after it.
    fn persisted(&self) -> u64 {
        self.persisted_before.max(self.persisted_after)
    }

    fn ratio(&self) -> Option<f64> {
        (self.persisted() > 0).then(|| self.peak_sum as f64 / self.persisted() as f64)
    }

    fn written(&self) -> u64 {
        self.spill_after.written - self.spill_before.written
    }

    fn read(&self) -> u64 {
        self.spill_after.read - self.spill_before.read
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "label": self.label, "command": self.command, "seconds": self.seconds,
            "rss_before_bytes": self.rss_before, "peak_rss_sum_bytes": self.peak_sum, "peak_rss_max_worker_bytes": self.peak_worker,
            "peak_rss_scheduler_bytes": self.peak_scheduler,
            "sampled_rss_sum_max_bytes": self.sampled.rss,
            "sampled_anon_sum_max_bytes": self.sampled.anon, "samples": self.sampled.samples,
            "persisted_before_bytes": self.persisted_before,
            "persisted_after_bytes": self.persisted_after,
            "peak_over_persisted": self.ratio(),
            "spilled_after_bytes": self.spill_after.spilled,
            "spill_written_bytes": self.written(), "spill_read_bytes": self.read(),
            "error": self.error,
        })
    }
}

/// One cluster's run of the workflow.
struct Run {
    name: &'static str,
    /// Per-worker memory limit (the workers' own, from /api/cluster).
    limit_per_worker: u64,
    workers: usize,
    /// Bytes of the `isd` frame once persisted.
    frame_bytes: u64,
    steps: Vec<Measured>,
    /// (command, answer without sizes) of every step and check.
    answers: Vec<(String, String)>,
}

impl Run {
    fn total_limit(&self) -> u64 {
        self.limit_per_worker * self.workers as u64
    }
}

/// Run `stratus ARGS` against the cluster's scheduler file.
fn stratus(bin: &Path, file: &Path, args: &[String]) -> Result<String, String> {
    let out = Command::new(bin)
        .arg("--scheduler-file")
        .arg(file)
        .args(args)
        .env_remove("STRATUS_SCHEDULER")
        .output()
        .map_err(|e| format!("run stratus: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(format!(
            "`stratus {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Start a cluster with this per-worker limit, run the workflow, stop it.
fn run_workflow(
    name: &'static str,
    limit: Option<u64>,
    source: &str,
    work: &Path,
    skip: &[String],
    settle: f64,
) -> Result<Run, String> {
    let bin = sibling_binary("stratus")
        .map_err(|e| format!("{e} (build with cargo build --release --workspace --bins)"))?;
    let dir = work.join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join("scheduler.json");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cluster = runtime
        .block_on(LocalCluster::start(&LocalOptions {
            workers: 2,
            threads_per_worker: 1,
            memory_limit: limit,
            dashboard_address: Some("127.0.0.1:0".into()),
            scheduler_file: Some(file.clone()),
            data_dir: Some(dir.join("data")),
            spill_dir: Some(dir.join("spill").display().to_string()),
            ..LocalOptions::default()
        }))
        .map_err(|e| format!("local cluster: {e:#}"))?;
    let api = format!("{}api/cluster", cluster.dashboard);
    let info = get_json(&api);
    let workers = info["workers"].as_array().cloned().unwrap_or_default();
    let metrics_urls: Vec<String> = workers
        .iter()
        .filter_map(|w| w["metrics_url"].as_str().map(String::from))
        .collect();
    let limit_per_worker = workers
        .iter()
        .filter_map(|w| w["memory_limit"].as_u64())
        .max()
        .unwrap_or(0);
    let mut pids = vec![cluster.scheduler_pid()];
    pids.extend(cluster.worker_pids());
    eprintln!(
        "{name}: 2 workers x 1 thread, memory limit {} per worker, pids {pids:?}",
        format_bytes(limit_per_worker)
    );
    let mut run = Run {
        name,
        limit_per_worker,
        workers: workers.len(),
        frame_bytes: 0,
        steps: Vec::new(),
        answers: Vec::new(),
    };
    let out = dir.join("written").display().to_string();
    for call in workflow(source, &out, skip) {
        if call.kind != Kind::Step {
            let answer = stratus(&bin, &file, &call.args);
            if call.kind == Kind::Check {
                let text = answer.unwrap_or_else(|e| e);
                run.answers.push((
                    call.args.join(" "),
                    without_sizes(&text.replace(&out, "OUT")),
                ));
            }
            continue;
        }
        std::thread::sleep(Duration::from_secs_f64(settle));
        let spill_before = spill_now(&metrics_urls);
        reset_peaks(&pids);
        let rss_before = pids
            .iter()
            .map(|&p| status_bytes(&proc_status(p), "VmRSS"))
            .sum();
        let stop = Arc::new(AtomicBool::new(false));
        let sampling = sampler(pids.clone(), stop.clone());
        let start = Instant::now();
        let answer = stratus(&bin, &file, &call.args);
        let seconds = secs(start.elapsed());
        let peaks: Vec<u64> = pids.iter().map(|&p| peak_rss(p)).collect();
        stop.store(true, Ordering::Relaxed);
        let sampled = sampling.join().expect("sampler");
        let spill_after = spill_now(&metrics_urls);
        if call.key == "persist" {
            let frames = get_json(&api)["frames"].as_array().cloned();
            run.frame_bytes = frames
                .into_iter()
                .flatten()
                .find(|f| f["name"] == "isd")
                .and_then(|f| f["bytes"].as_u64())
                .unwrap_or(0);
        }
        let m = Measured {
            key: call.key,
            label: call.label,
            command: format!("stratus {}", call.args.join(" ")),
            seconds,
            rss_before,
            peak_sum: peaks.iter().sum(),
            peak_worker: peaks[1..].iter().copied().max().unwrap_or(0),
            peak_scheduler: peaks[0],
            sampled,
            persisted_before: spill_before.persisted,
            persisted_after: spill_after.persisted,
            spill_before,
            spill_after,
            error: answer.as_ref().err().cloned(),
        };
        eprintln!(
            "{name}: {:<32} {:>8.3} s  peak RSS {:>10} (max worker {}), persisted {}, spilled {}{}",
            m.label,
            m.seconds,
            format_bytes(m.peak_sum),
            format_bytes(m.peak_worker),
            format_bytes(m.persisted()),
            format_bytes(m.spill_after.spilled),
            m.error
                .as_ref()
                .map_or(String::new(), |e| format!("  FAILED: {e}"))
        );
        let text = answer.unwrap_or_else(|e| e);
        run.answers.push((
            call.args.join(" "),
            without_sizes(&text.replace(&out, "OUT")),
        ));
        run.steps.push(m);
    }
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(run)
}

/// `dd`'s sequential write (`conv=fdatasync`) and read of `mib` MiB in `dir`:
/// (write GB/s, read GB/s, how the read avoided the page cache).
fn dd_throughput(dir: &Path, mib: u64) -> Option<(f64, f64, String)> {
    std::fs::create_dir_all(dir).ok()?;
    let file = dir.join("dd.bin");
    let bytes = (mib << 20) as f64;
    let dd = |args: &[String]| -> Option<f64> {
        let start = Instant::now();
        let out = Command::new("dd").args(args).output().ok()?;
        let elapsed = secs(start.elapsed());
        if !out.status.success() {
            eprintln!(
                "dd {args:?}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
            return None;
        }
        // `... bytes (...) copied, 1.234 s, 870 MB/s`: dd's own seconds.
        let text = String::from_utf8_lossy(&out.stderr);
        let own = text
            .lines()
            .last()
            .and_then(|l| l.split(", ").find_map(|p| p.strip_suffix(" s")))
            .and_then(|s| s.parse::<f64>().ok());
        Some(own.unwrap_or(elapsed))
    };
    let of = format!("of={}", file.display());
    let iff = format!("if={}", file.display());
    let write = dd(&[
        "if=/dev/zero".into(),
        of,
        "bs=1M".into(),
        format!("count={mib}"),
        "conv=fdatasync".into(),
    ])?;
    let direct = dd(&[
        iff.clone(),
        "of=/dev/null".into(),
        "bs=1M".into(),
        "iflag=direct".into(),
    ]);
    let (read, how) = match direct {
        Some(s) => (
            s,
            "iflag=direct (O_DIRECT, past the page cache)".to_string(),
        ),
        None => {
            // Drop the file's pages (posix_fadvise DONTNEED), then read.
            let _ = dd(&[iff.clone(), "iflag=nocache".into(), "count=0".into()]);
            let s = dd(&[iff, "of=/dev/null".into(), "bs=1M".into()])?;
            (
                s,
                "after iflag=nocache (posix_fadvise DONTNEED of the file)".to_string(),
            )
        }
    };
    let _ = std::fs::remove_file(&file);
    Some((bytes / write / 1e9, bytes / read / 1e9, how))
}

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

fn gbps(bytes: u64, seconds: f64) -> String {
    if bytes == 0 {
        "-".into()
    } else {
        format!("{:.2}", bytes as f64 / seconds / 1e9)
    }
}

/// GB/s, and against the disk's rate by `dd` when there is one.
fn gbps_vs(bytes: u64, seconds: f64, disk: Option<f64>) -> String {
    match disk {
        Some(d) if bytes > 0 => format!(
            "{} ({:.2}x dd)",
            gbps(bytes, seconds),
            bytes as f64 / seconds / 1e9 / d
        ),
        _ => gbps(bytes, seconds),
    }
}

fn ratio(x: Option<f64>) -> String {
    x.map_or("-".into(), |r| format!("{r:.2}x"))
}

/// The table of one run.
fn run_table(run: &Run, line: &mut dyn FnMut(String)) {
    line(format!(
        "#### {}: memory limit {} per worker ({} in all), frame {}\n",
        run.name,
        format_bytes(run.limit_per_worker),
        format_bytes(run.total_limit()),
        format_bytes(run.frame_bytes)
    ));
    line("| step | s | RSS before | peak RSS (sum of VmHWM) | sampled peak (VmRSS / RssAnon) | max worker | persisted | peak / persisted | peak / limit | spilled after | spill written | GB/s | unspill read | GB/s |".into());
    line("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|".into());
    for m in &run.steps {
        let label = match &m.error {
            Some(_) => format!("{} (FAILED)", m.label),
            None => m.label.to_string(),
        };
        line(format!(
            "| {label} | {:.3} | {} | {} | {} / {} | {} | {} | {} | {:.2}x | {} | {} | {} | {} | {} |",
            m.seconds,
            gib(m.rss_before),
            gib(m.peak_sum),
            gib(m.sampled.rss),
            gib(m.sampled.anon),
            gib(m.peak_worker),
            gib(m.persisted()),
            ratio(m.ratio()),
            m.peak_sum as f64 / run.total_limit().max(1) as f64,
            gib(m.spill_after.spilled),
            gib(m.written()),
            gbps(m.written(), m.seconds),
            gib(m.read()),
            gbps(m.read(), m.seconds),
        ));
    }
    line(String::new());
}

fn main() {
    let args = args();
    let data = dataset(args.rows, args.order);
    let source = data.display().to_string();
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let work: PathBuf = target.join("bench-memory-work");
    println!(
        "stratus memory benchmark: {} rows, {} order, 2 workers x 1 thread",
        args.rows, args.order
    );

    let fits = run_workflow(
        "fits",
        args.fits_limit,
        &source,
        &work,
        &args.skip,
        args.settle,
    )
    .expect("the fits run");
    if fits.frame_bytes == 0 {
        panic!("the fits run persisted nothing: {:?}", fits.steps[1].error);
    }
    // Twice the cluster's total limit: a quarter of the frame per worker.
    let limit = args.limit.unwrap_or(fits.frame_bytes / 4);
    let twice = run_workflow(
        "2x limit",
        Some(limit),
        &source,
        &work,
        &args.skip,
        args.settle,
    )
    .expect("the 2x run");
    let dd = dd_throughput(&work.join("dd"), args.dd_mib);
    let _ = std::fs::remove_dir_all(&work);

    // The answers of the 2x run against the fits run.
    let mut differences = Vec::new();
    for ((command, want), (_, have)) in fits.answers.iter().zip(&twice.answers) {
        if let Err(diff) = same_answer(want, have) {
            differences.push((command.clone(), diff));
        }
    }

    let date = utc_now();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let command = bench_command("memory");
    let skipped = if args.skip.is_empty() {
        String::new()
    } else {
        format!(" Steps left out: {}.", args.skip.join(", "))
    };
    let skipped = if args.settle > 0.0 {
        format!(
            "{skipped} Each step after {:.1} s idle (--settle).",
            args.settle
        )
    } else {
        skipped
    };
    let mut md = String::new();
    let mut line = |s: String| {
        println!("{s}");
        md.push_str(&s);
        md.push('\n');
    };
    line(format!(
        "### Peak RSS per step: {} rows, {} order ({date}, {cores} cores, `{command}`)\n",
        args.rows, args.order
    ));
    line(format!(
        "Stratus {}, 2 workers x 1 thread. The frame: {} of Arrow buffers; the 2x run's limit {} per worker, {} in all ({:.2}x smaller than the frame).{skipped}\n",
        env!("CARGO_PKG_VERSION"),
        format_bytes(fits.frame_bytes),
        format_bytes(twice.limit_per_worker),
        format_bytes(twice.total_limit()),
        fits.frame_bytes as f64 / twice.total_limit().max(1) as f64
    ));
    line("| step | fits (s) | 2x (s) | fits peak RSS | 2x peak RSS | fits peak / persisted | 2x peak / persisted | 2x peak / limit | 2x spill GB/s | 2x unspill GB/s |".into());
    line("|---|---|---|---|---|---|---|---|---|---|".into());
    for (f, t) in fits.steps.iter().zip(&twice.steps) {
        line(format!(
            "| {} | {:.3} | {:.3}{} | {} | {} | {} | {} | {:.2}x | {} | {} |",
            f.label,
            f.seconds,
            t.seconds,
            if t.error.is_some() { " (FAILED)" } else { "" },
            gib(f.peak_sum),
            gib(t.peak_sum),
            ratio(f.ratio()),
            ratio(t.ratio()),
            t.peak_sum as f64 / twice.total_limit().max(1) as f64,
            gbps_vs(t.written(), t.seconds, dd.as_ref().map(|d| d.0)),
            gbps_vs(t.read(), t.seconds, dd.as_ref().map(|d| d.1)),
        ));
    }
    line(String::new());
    run_table(&fits, &mut line);
    run_table(&twice, &mut line);
    line("Peak RSS: the sum over the scheduler and both workers of VmHWM, reset through /proc/PID/clear_refs before the step (to the RSS of that moment, so it includes what was held when the step began) and read after it; peaks that did not coincide are added, so it is an upper bound; the sampled peak is the largest sum of VmRSS (and RssAnon, without file pages: mapped spill files count in VmRSS) seen every 20 ms. The `stratus` client process is not counted. Persisted: the workers' persisted bytes (all frames, in RAM or spilled), the most of before and after the step. Spill and unspill GB/s: the workers' spill bytes written / read (deltas of their counters) over the step's wall time, so an average over the step, not the disk's rate while writing; spill files are not fsynced, and the unspilled files were written moments before, so most reads come from the page cache, not the disk.".into());
    match &dd {
        Some((w, r, how)) => line(format!(
            "\nDisk, same run, `dd` of {} MiB in the spill directory's filesystem: write {w:.2} GB/s (`conv=fdatasync`), read {r:.2} GB/s ({how}).",
            args.dd_mib
        )),
        None => line("\nDisk: dd failed (see stderr).".into()),
    }
    let mut worst = [(&fits, 0.0f64, ""), (&twice, 0.0, "")];
    for (run, most, which) in worst.iter_mut() {
        for m in &run.steps {
            if let Some(r) = m.ratio() {
                if r > *most {
                    *most = r;
                    *which = m.label;
                }
            }
        }
    }
    for (run, most, which) in &worst {
        line(format!(
            "- {}: the highest peak / persisted is {most:.2}x ({which}); target (issue 12: peak RSS at most 1.3x the persisted bytes on every step): {}",
            run.name,
            if *most <= 1.3 { "met" } else { "NOT met" }
        ));
    }
    let spilled_fits: u64 = fits.steps.iter().map(Measured::written).sum();
    if spilled_fits > 0 {
        line(format!(
            "- WARNING: the fits run spilled {} (its limit is too small for the frame)",
            format_bytes(spilled_fits)
        ));
    }
    let failed: Vec<String> = fits
        .steps
        .iter()
        .chain(&twice.steps)
        .filter_map(|m| m.error.clone())
        .collect();
    for e in &failed {
        line(format!("- FAILED: {e}"));
    }
    if differences.is_empty() {
        line(format!(
            "- Answers: the 2x run's {} answers equal the fits run's (JSON numbers within 1e-9, sizes left out).",
            twice.answers.len()
        ));
    } else {
        for (command, diff) in &differences {
            line(format!(
                "- ANSWERS DIFFER: `stratus {command}`:\n```\n{diff}\n```"
            ));
        }
    }

    let run_json = |run: &Run| {
        serde_json::json!({
            "limit_per_worker_bytes": run.limit_per_worker,
            "workers": run.workers,
            "frame_bytes": run.frame_bytes,
            "steps": run.steps.iter().map(|m| (m.key.to_string(), m.json())).collect::<serde_json::Map<_, _>>(),
        })
    };
    let json = serde_json::json!({
        "date": date, "rows": args.rows, "order": args.order.to_string(), "cores": cores,
        "command": command,
        "fits": run_json(&fits), "twice_limit": run_json(&twice),
        "dd": dd.as_ref().map(|(w, r, how)| serde_json::json!({
            "mib": args.dd_mib, "write_gb_per_s": w, "read_gb_per_s": r, "read_method": how,
        })),
        "answer_differences": differences.iter().map(|(c, d)| serde_json::json!({"command": c, "diff": d})).collect::<Vec<_>>(),
    });
    write_report("memory", &md, &json);
}
