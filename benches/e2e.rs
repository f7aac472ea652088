//! End-to-end benchmark: a local cluster of 2 workers x 1 thread over 12 M
//! ISD-like rows. Times `len` from Parquet footers, `persist`, and `len` of the
//! persisted frame, each through the real `stratus` CLI (process start, QUIC
//! handshake and all) and through the Rust client, and reports rows/s and the
//! workers' peak RSS. With Python's `duckdb` installed, DuckDB runs the same
//! steps on the same files in the same run as the baseline.
//!
//! Run: `cargo build --release --workspace --bins && cargo bench --bench e2e`
//! (`STRATUS_BENCH_ROWS`, `STRATUS_BENCH_DATA` override the defaults).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use stratus::local::{sibling_binary, LocalCluster, LocalOptions};
use stratus::Client;
use stratus_protocol::units::format_bytes;

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(|a, b| a.partial_cmp(b).expect("no NaN"));
    xs[xs.len() / 2]
}

/// Time a CLI command (whole process) `runs` times; returns (first, median).
fn time_cli(stratus: &Path, file: &Path, args: &[&str], runs: usize) -> (f64, f64, String) {
    let mut times = Vec::new();
    let mut out = String::new();
    for _ in 0..runs {
        let start = Instant::now();
        let o = Command::new(stratus)
            .arg("--scheduler-file")
            .arg(file)
            .args(args)
            .output()
            .expect("run stratus");
        times.push(secs(start.elapsed()));
        assert!(
            o.status.success(),
            "stratus {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        out = String::from_utf8_lossy(&o.stdout).trim().to_string();
    }
    (times[0], median(times), out)
}

fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// CPU seconds (user + system) used so far by these processes.
fn cpu_seconds(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let rest = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .collect::<Vec<_>>();
            let ticks: u64 =
                rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
            Some(ticks as f64 / 100.0)
        })
        .sum()
}

/// DuckDB on the same files: count, load, then on the loaded table exact
/// describe, daily means, year/month counts, sort by day, Parquet write.
fn duckdb_baseline(source: &str, dest: &str) -> Option<Vec<f64>> {
    let script = format!(
        r#"
import time, duckdb, shutil
con = duckdb.connect()
con.execute("SET threads TO 2")
con.execute("SET enable_progress_bar = false")
src = "{source}/year=*/month=*/*.parquet"
def t(sql):
    s = time.perf_counter(); con.execute(sql).fetchall(); return time.perf_counter() - s
out = []
out.append(t(f"SELECT count(*) FROM read_parquet('{{src}}', hive_partitioning=true)"))
out.append(t(f"CREATE TABLE isd AS SELECT *, date_trunc('day', datetime) AS date FROM read_parquet('{{src}}', hive_partitioning=true)"))
cols = [c for (c, ty) in con.execute("SELECT column_name, data_type FROM information_schema.columns WHERE table_name = 'isd'").fetchall() if ty in ('DOUBLE', 'INTEGER', 'BIGINT')]
parts = []
for c in cols:
    f = f"FILTER (WHERE {{c}} IS NOT NULL AND NOT isnan({{c}}::DOUBLE))"
    parts += [f"count({{c}}) {{f}}", f"avg({{c}}) {{f}}", f"stddev_samp({{c}}) {{f}}", f"min({{c}}) {{f}}", f"quantile_cont({{c}}, [0.25, 0.5, 0.75]) {{f}}", f"max({{c}}) {{f}}"]
out.append(t("SELECT " + ", ".join(parts) + " FROM isd"))
means = ", ".join(f"avg({{c}})" for c in cols)
out.append(t(f"SELECT date, {{means}} FROM isd GROUP BY date ORDER BY date"))
out.append(t("SELECT year, month, count(*) FROM isd GROUP BY year, month ORDER BY year, month"))
out.append(t("CREATE TABLE sorted AS SELECT * FROM isd ORDER BY date"))
shutil.rmtree("{dest}", ignore_errors=True)
out.append(t("COPY isd TO '{dest}' (FORMAT parquet, PARTITION_BY (year, month))"))
print(" ".join(str(x) for x in out))
"#
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .ok()?;
    if !out.status.success() {
        eprintln!(
            "DuckDB baseline failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .last()?
        .split_whitespace()
        .map(|x| x.parse::<f64>().ok())
        .collect()
}

/// Bytes each column costs in RAM once read (all partitions, in this process).
fn column_costs(source: &str) -> Vec<(String, String, u64)> {
    use stratus_engine::scan;
    let files = scan::list_files(source).expect("list");
    let footers: Vec<_> = files
        .iter()
        .map(|f| scan::read_footer(f).expect("footer"))
        .collect();
    let schema = scan::check_schemas(&footers).expect("schema");
    let parts = scan::plan_partitions(&footers, 128 << 20, 1);
    let mut costs: Vec<(String, String, u64)> = schema
        .fields()
        .iter()
        .map(|f| (f.name().clone(), f.data_type().to_string(), 0))
        .collect();
    for p in &parts {
        let batches = scan::read_partition(p, None, None).expect("read");
        for (i, cost) in costs.iter_mut().enumerate() {
            let cols: Vec<_> = batches
                .iter()
                .map(|b| b.project(&[i]).expect("project"))
                .collect();
            cost.2 += stratus_engine::memory::batches_memory_bytes(&cols) as u64;
        }
    }
    costs
}

fn main() {
    // `cargo bench` passes --bench; nothing else to parse.
    let rows: u64 = std::env::var("STRATUS_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12_000_000);
    let data: PathBuf = std::env::var("STRATUS_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/bench-data")
                .join(format!("isd-{rows}"))
        });
    if !data.join("year=2019").exists() {
        let start = Instant::now();
        let s = stratus_engine::datagen::generate_isd(&stratus_engine::datagen::DatagenOptions {
            rows,
            out: data.clone(),
            seed: 42,
        })
        .expect("generate data");
        eprintln!(
            "generated {} rows, {} files, {} in {:.2} s",
            s.rows,
            s.files,
            format_bytes(s.bytes),
            secs(start.elapsed())
        );
    }
    let source = data.display().to_string();
    let stratus =
        sibling_binary("stratus").expect("build with cargo build --release --workspace --bins");

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let dir = std::env::temp_dir().join(format!("stratus-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let file = dir.join("scheduler.json");
        let cluster = LocalCluster::start(&LocalOptions {
            workers: 2,
            threads_per_worker: 1,
            dashboard_address: Some("127.0.0.1:0".into()),
            scheduler_file: Some(file.clone()),
            ..LocalOptions::default()
        })
        .await
        .expect("local cluster");
        let client = Client::connect(&cluster.target).await.expect("connect");

        println!("stratus e2e benchmark: {rows} rows, 2 workers x 1 thread");
        let (cold, len_med, n) = time_cli(&stratus, &file, &["len", &source], 5);
        assert_eq!(n, rows.to_string());
        let start = Instant::now();
        client.len(&source).await.expect("len");
        let len_client = secs(start.elapsed());

        let start = Instant::now();
        let summary = client
            .persist(&source, "isd", true, None, Vec::new(), &mut |_, _, _| {})
            .await
            .expect("persist");
        let persist = secs(start.elapsed());

        let (_, plen_med, n) = time_cli(&stratus, &file, &["len", "isd"], 10);
        assert_eq!(n, rows.to_string());
        let start = Instant::now();
        for _ in 0..100 {
            client.len("isd").await.expect("len");
        }
        let plen_client = secs(start.elapsed()) / 100.0;
                let rss: Vec<u64> = cluster.worker_pids().into_iter().map(peak_rss).collect();

        // The analysis steps on the persisted frame (with the day column).
        let pids = cluster.worker_pids();
        let isd = client
            .read_parquet(&source)
            .with_column("date", stratus::col("datetime").floor(stratus::TruncUnit::Day));
        let (isd, _) = isd.persist_with("isd_d", true).await.expect("persist with date");
        let mut steps: Vec<(&str, f64, f64)> = Vec::new();
        let mut timed = |name: &'static str, seconds: f64, cpu: f64| steps.push((name, seconds, cpu));
        let cpu0 = cpu_seconds(&pids);
        let start = Instant::now();
        isd.describe().await.expect("describe");
        let cpu1 = cpu_seconds(&pids);
        timed("describe (exact, 16 columns)", secs(start.elapsed()), cpu1 - cpu0);
        let start = Instant::now();
        let daily = isd.groupby(&["date"]).mean().await.expect("daily means");
        let cpu2 = cpu_seconds(&pids);
        timed("groupby(date).mean()", secs(start.elapsed()), cpu2 - cpu1);
        let start = Instant::now();
        isd.groupby(&["year", "month"]).count().await.expect("counts");
        let cpu3 = cpu_seconds(&pids);
        timed("groupby([year, month]).count()", secs(start.elapsed()), cpu3 - cpu2);
        let start = Instant::now();
        isd.sort_by("date", "isd_by_date").await.expect("sort by date");
        let cpu4 = cpu_seconds(&pids);
        timed("sort by date (ranged: no data moved)", secs(start.elapsed()), cpu4 - cpu3);
        let start = Instant::now();
        isd.memory_usage().await.expect("memory usage");
        let cpu5 = cpu_seconds(&pids);
        timed("memory_usage()", secs(start.elapsed()), cpu5 - cpu4);
        let dest = dir.join("written");
        let start = Instant::now();
        isd.to_parquet(&dest.display().to_string(), &["year", "month"], true)
            .await
            .expect("write");
        let cpu6 = cpu_seconds(&pids);
        timed("write Parquet (year/month)", secs(start.elapsed()), cpu6 - cpu5);
        client.unpersist("isd_by_date").await.expect("unpersist");
        let start = Instant::now();
        let (_, shuffled) = isd.sort_by("temperature", "isd_by_temp").await.expect("shuffle sort");
        let shuffle = secs(start.elapsed());
        let cpu7 = cpu_seconds(&pids);
        timed("sort by temperature (shuffle)", shuffle, cpu7 - cpu6);
        // With 2 workers and ranges spread evenly, about half the bytes cross.
        let moved = shuffled.bytes as f64 / 2.0;


        let r = rows as f64;
        println!("| step | CLI end to end (s) | client (s) | rows/s (client) |");
        println!("|---|---|---|---|");
        println!(
            "| len from Parquet (cold, then median of 5) | {cold:.4} / {len_med:.4} | {len_client:.4} | {:.3e} |",
            r / len_client
        );
        println!(
            "| persist | | {persist:.3} | {:.3e} |",
            r / persist
        );
        println!(
            "| len of persisted frame (median of 10) | {plen_med:.4} | {plen_client:.6} | |"
        );
        println!(
            "persisted: {} partitions, {} of Arrow buffers; worker peak RSS: {}",
            summary.partitions,
            format_bytes(summary.bytes),
            rss.iter()
                .map(|b| format_bytes(*b))
                .collect::<Vec<_>>()
                .join(", ")
        );
                println!(
            "total peak RSS of workers: {}",
            format_bytes(rss.iter().sum())
        );
        println!("\n| analysis step on {rows} persisted rows | seconds | worker CPU-s | rows/s per core |");
        println!("|---|---|---|---|");
        for (name, seconds, cpu) in &steps {
            println!("| {name} | {seconds:.3} | {cpu:.2} | {:.3e} |", r / seconds / 2.0);
        }
        println!(
            "daily means: {} days; shuffle moved ~{} ({:.2} GB/s, {:.2} CPU-s per GiB moved, both ends and the sort)",
            daily.num_rows(),
            format_bytes(moved as u64),
            moved / shuffle / 1e9,
            (cpu7 - cpu6) / (moved / (1u64 << 30) as f64)
        );
                client.close().await;
        drop(cluster);


                match duckdb_baseline(&source, &dir.join("duck-written").display().to_string()) {
            Some(d) => {
                println!(
                    "DuckDB (2 threads, same files, same run): count {:.4} s, load into a table {:.3} s -> Stratus/DuckDB: len {:.2}x, persist {:.2}x",
                    d[0], d[1], len_client / d[0], persist / d[1]
                );
                let names = ["exact describe", "daily means", "year/month counts", "sort by day", "write Parquet"];
                let ours = [steps[0].1, steps[1].1, steps[2].1, steps[3].1, steps[5].1];
                for (i, name) in names.iter().enumerate() {
                    println!(
                        "  {name}: DuckDB {:.3} s, Stratus {:.3} s -> Stratus/DuckDB {:.2}x",
                        d[i + 2],
                        ours[i],
                        ours[i] / d[i + 2]
                    );
                }
            }
            None => println!("DuckDB baseline skipped (pip install duckdb to run it)"),
        }
        let _ = std::fs::remove_dir_all(&dir);
    });

    println!("\nRAM per column once persisted (Arrow buffers):");
    let costs = column_costs(&source);
    let total: u64 = costs.iter().map(|c| c.2).sum();
    for (name, ty, bytes) in &costs {
        println!(
            "  {name:<24} {ty:<40} {:>10}  {:>5.1} B/row",
            format_bytes(*bytes),
            *bytes as f64 / rows as f64
        );
    }
    println!("  total {:>70}", format_bytes(total));
}
