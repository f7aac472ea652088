//! Spill and unspill throughput, uncompressed and compressed, against the
//! disk's own, in one run.
//!
//! For each size (`--rows`, a comma-separated list; default `1000000,4000000`)
//! and row order (`--orders`, default `time,station`) it generates the
//! ISD-like sample (`stratus_engine::datagen`), reads each monthly file into
//! Arrow batches (one partition each, as a persist keeps them), then for
//! each compression (`--codecs`, default `none,lz4,zstd`; zstd at
//! `--zstd-level`, default the worker's):
//!
//! - **write**: every partition with `SpillDir::write`, as a worker past its
//!   memory target does (not synced: the kernel writes back later); then
//!   **+sync**: the time until it is all on disk (`sync`);
//! - **read, warm**: every file back with `spill::read` (a mapping; a
//!   compressed file is decompressed), touching one byte per 4 KiB page of
//!   every buffer and summing `temperature` (a mapping is lazy: this is
//!   what a task pays at least);
//! - **read, cold**: the same after dropping the page cache (root only);
//!
//! All throughputs are GB/s of Arrow data (the partitions' buffers, what a
//! task gets), so codecs compare by what they deliver. Once per run, `dd`
//! writes and reads 1 GiB (`--dd-mib`) with O_DIRECT in the same directory:
//! the disk's sequential throughput.
//!
//! Run: `cargo bench -p stratus-worker --bench spill` (`--dir DIR` spills
//! there instead of the system's temporary directory).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use arrow_array::{Array, Float64Array, RecordBatch};
use stratus_engine::datagen::{generate_isd_ordered, DatagenOptions, RowOrder};
use stratus_worker::spill::{read, SpillCompression, SpillDir, SpillFile, ZSTD_LEVEL};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn list(name: &str, default: &str) -> Vec<String> {
    arg(name)
        .unwrap_or_else(|| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Every Parquet file under `dir`, each read as one partition's batches.
fn partitions(dir: &Path) -> Vec<Vec<RecordBatch>> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .iter()
        .map(|f| {
            let file = std::fs::File::open(f).expect("open parquet");
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
                .expect("parquet footer")
                .build()
                .expect("reader")
                .collect::<Result<Vec<_>, _>>()
                .expect("decode")
        })
        .collect()
}

/// Touch one byte per page of every buffer and sum `temperature`.
fn touch(batches: &[RecordBatch]) -> f64 {
    let mut sum = 0.0;
    for batch in batches {
        for column in batch.columns() {
            let data = column.to_data();
            for buffer in data.buffers() {
                sum += buffer
                    .as_slice()
                    .iter()
                    .step_by(4096)
                    .map(|&b| b as f64)
                    .sum::<f64>();
            }
        }
        if let Some(t) = batch
            .column_by_name("temperature")
            .and_then(|c| c.as_any().downcast_ref::<Float64Array>())
        {
            sum += t.iter().flatten().sum::<f64>();
        }
    }
    sum
}

fn drop_caches() -> bool {
    let _ = Command::new("sync").status();
    std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok()
}

/// Seconds `dd` takes with these arguments.
fn dd(args: &[String]) -> f64 {
    let start = Instant::now();
    let status = Command::new("dd")
        .args(args)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run dd");
    assert!(status.success(), "dd {args:?}: {status}");
    start.elapsed().as_secs_f64()
}

fn gbps(bytes: u64, seconds: f64) -> f64 {
    bytes as f64 / seconds / 1e9
}

/// Spill every partition with `compression`, sync, read back warm and cold;
/// one table row.
fn run_codec(
    base: &Path,
    parts: &[Vec<RecordBatch>],
    arrow_bytes: u64,
    compression: SpillCompression,
    zstd_level: i32,
) -> String {
    let dir = SpillDir::open(&base.join("spill"), compression.name(), 0)
        .expect("spill dir")
        .with_compression(compression)
        .with_zstd_level(zstd_level);
    let _ = Command::new("sync").status();
    let start = Instant::now();
    let files: Vec<SpillFile> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            dir.write(&format!("p{i}"), "a partition", p)
                .expect("spill")
        })
        .collect();
    let write_s = start.elapsed().as_secs_f64();
    let _ = Command::new("sync").status();
    let synced_s = start.elapsed().as_secs_f64();
    let disk_bytes: u64 = files.iter().map(|f| f.disk_bytes).sum();

    let unspill = |files: &[SpillFile]| {
        let start = Instant::now();
        let mut sink = 0.0;
        for f in files {
            sink += touch(&read(f).expect("read back"));
        }
        std::hint::black_box(sink);
        start.elapsed().as_secs_f64()
    };
    let warm_s = unspill(&files);
    let cold_s = drop_caches().then(|| unspill(&files));
    let name = match compression {
        SpillCompression::Zstd => format!("zstd({zstd_level})"),
        c => c.name().to_string(),
    };
    let row = format!(
        "| {name} | {:.1} | {:.2}x | {:.2} | {:.2} | {:.2} | {} |",
        disk_bytes as f64 / 1e6,
        arrow_bytes as f64 / disk_bytes as f64,
        gbps(arrow_bytes, write_s),
        gbps(arrow_bytes, synced_s),
        gbps(arrow_bytes, warm_s),
        cold_s.map_or("-".to_string(), |s| format!("{:.2}", gbps(arrow_bytes, s))),
    );
    drop(files);
    drop(dir);
    row
}

fn main() {
    let sizes: Vec<u64> = list("--rows", "1000000,4000000")
        .iter()
        .map(|r| r.parse().expect("--rows N[,N...]"))
        .collect();
    let orders: Vec<RowOrder> = list("--orders", "time,station")
        .iter()
        .map(|o| o.parse().expect("--orders time|station|random[,...]"))
        .collect();
    let codecs: Vec<SpillCompression> = list("--codecs", "none,lz4,zstd")
        .iter()
        .map(|c| SpillCompression::parse(c).expect("--codecs none|lz4|zstd[,...]"))
        .collect();
    let zstd_level: i32 = arg("--zstd-level")
        .map(|l| l.parse().expect("--zstd-level N"))
        .unwrap_or(ZSTD_LEVEL);
    let dd_mib: u64 = arg("--dd-mib")
        .map(|m| m.parse().expect("--dd-mib N"))
        .unwrap_or(1024);
    let base: PathBuf = arg("--dir")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("stratus-bench-spill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("bench dir");

    // The disk's own sequential throughput, bypassing the page cache.
    let dd_file = base.join("dd.bin");
    let dd_write_s = dd(&[
        "if=/dev/zero".into(),
        format!("of={}", dd_file.display()),
        "bs=1M".into(),
        format!("count={dd_mib}"),
        "oflag=direct".into(),
    ]);
    let dd_read_s = dd(&[
        format!("if={}", dd_file.display()),
        "of=/dev/null".into(),
        "bs=1M".into(),
        "iflag=direct".into(),
    ]);
    let _ = std::fs::remove_file(&dd_file);
    let dd_bytes = dd_mib << 20;
    println!(
        "spill bench in {}: dd {dd_mib} MiB O_DIRECT: write {:.2} GB/s, read {:.2} GB/s",
        base.display(),
        gbps(dd_bytes, dd_write_s),
        gbps(dd_bytes, dd_read_s)
    );
    if !drop_caches() {
        println!("(not root: cold reads are skipped)");
    }

    for &rows in &sizes {
        for &order in &orders {
            let data = base.join(format!("isd-{rows}-{}", order.name()));
            generate_isd_ordered(
                &DatagenOptions {
                    rows,
                    out: data.clone(),
                    seed: 7,
                },
                order,
            )
            .expect("datagen");
            let parts = partitions(&data);
            let _ = std::fs::remove_dir_all(&data);
            let arrow_bytes: u64 = parts
                .iter()
                .map(|p| stratus_engine::memory::batches_memory_bytes(p) as u64)
                .sum();
            println!();
            println!(
                "{rows} rows, {} order: {} partitions, {:.1} MB of Arrow buffers (GB/s below are of those)",
                order.name(),
                parts.len(),
                arrow_bytes as f64 / 1e6
            );
            println!("| codec | MB on disk | ratio | write GB/s | write+sync GB/s | read warm GB/s | read cold GB/s |");
            println!("|---|---|---|---|---|---|---|");
            for &compression in &codecs {
                println!(
                    "{}",
                    run_codec(&base, &parts, arrow_bytes, compression, zstd_level)
                );
            }
        }
    }
    let _ = std::fs::remove_dir_all(&base);
}
