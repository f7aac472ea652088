//! Spill and unspill throughput against the disk's own, in one run.
//!
//! Generates the ISD-like sample (`--rows`, 4 M by default; `--order
//! time|station|random`), reads each monthly file into Arrow batches (one
//! partition each, as a persist keeps them), then:
//!
//! - **spill**: writes every partition with `SpillDir::write` (Arrow IPC,
//!   not synced), as a worker past its memory target does, then `sync` (the
//!   time to have it all on disk is shown too);
//! - **unspill, warm**: reads every file back with `spill::read` (a mapping)
//!   and touches one byte per 4 KiB page of every buffer, as a task would;
//! - **unspill, cold**: the same after dropping the page cache (root only;
//!   skipped otherwise);
//! - **baseline**: `dd` writing and reading the same number of bytes in the
//!   same directory (`conv=fdatasync`; the read after dropping the cache).
//!
//! Run: `cargo bench -p stratus-worker --bench spill -- --rows 4000000`
//! (`--dir DIR` spills there instead of the system's temporary directory).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use arrow_array::RecordBatch;
use stratus_engine::datagen::{generate_isd_ordered, DatagenOptions, RowOrder};
use stratus_worker::spill::{read, SpillDir};

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
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

/// Touch one byte per page of every buffer (what a scan of them costs at least).
fn touch(batches: &[RecordBatch]) -> u64 {
    let mut sum = 0u64;
    for batch in batches {
        for column in batch.columns() {
            let data = column.to_data();
            for buffer in data.buffers() {
                sum += buffer
                    .as_slice()
                    .iter()
                    .step_by(4096)
                    .map(|&b| b as u64)
                    .sum::<u64>();
            }
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

fn main() {
    let rows: u64 = arg("--rows")
        .and_then(|r| r.parse().ok())
        .unwrap_or(4_000_000);
    let order: RowOrder = arg("--order")
        .map(|o| o.parse().expect("--order time|station|random"))
        .unwrap_or(RowOrder::Time);
    let base: PathBuf = arg("--dir")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("stratus-bench-spill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    let data = base.join("isd");
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
    let arrow_bytes: u64 = parts
        .iter()
        .map(|p| stratus_engine::memory::batches_memory_bytes(p) as u64)
        .sum();

    let dir = SpillDir::open(&base.join("spill"), "bench", 0).expect("spill dir");
    let start = Instant::now();
    let files: Vec<_> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            dir.write(&format!("p{i}"), "a partition", p)
                .expect("spill")
        })
        .collect();
    let spill_s = start.elapsed().as_secs_f64();
    let _ = Command::new("sync").status();
    let synced_s = start.elapsed().as_secs_f64();
    let disk_bytes: u64 = files.iter().map(|f| f.disk_bytes).sum();
    drop(parts);

    let unspill = |files: &[stratus_worker::spill::SpillFile]| {
        let start = Instant::now();
        let mut sink = 0;
        for f in files {
            sink += touch(&read(f).expect("read back"));
        }
        std::hint::black_box(sink);
        start.elapsed().as_secs_f64()
    };
    let warm_s = unspill(&files);
    let cold_s = drop_caches().then(|| unspill(&files));

    let mb = disk_bytes.div_ceil(1 << 20);
    let dd_file = base.join("dd.bin");
    let dd_write_s = dd(&[
        "if=/dev/zero".into(),
        format!("of={}", dd_file.display()),
        "bs=1M".into(),
        format!("count={mb}"),
        "conv=fdatasync".into(),
    ]);
    let dd_read_s = drop_caches().then(|| {
        dd(&[
            format!("if={}", dd_file.display()),
            "of=/dev/null".into(),
            "bs=1M".into(),
        ])
    });
    let dd_bytes = mb << 20;

    println!(
        "spill bench: {rows} rows ({order:?} order), {} partitions, {:.1} MB of Arrow buffers, {:.1} MB of spill files, in {}",
        files.len(),
        arrow_bytes as f64 / 1e6,
        disk_bytes as f64 / 1e6,
        base.display()
    );
    println!("| step | seconds | GB/s | vs dd |");
    println!("|---|---|---|---|");
    let dd_w = gbps(dd_bytes, dd_write_s);
    println!(
        "| spill (write) | {spill_s:.3} | {:.2} | {:.2}x |",
        gbps(disk_bytes, spill_s),
        gbps(disk_bytes, spill_s) / dd_w
    );
    println!(
        "| spill (write, then sync) | {synced_s:.3} | {:.2} | {:.2}x |",
        gbps(disk_bytes, synced_s),
        gbps(disk_bytes, synced_s) / dd_w
    );
    println!("| dd write (fdatasync) | {dd_write_s:.3} | {dd_w:.2} | 1.00x |");
    let dd_r = dd_read_s.map(|s| gbps(dd_bytes, s));
    let vs = |g: f64| dd_r.map_or("-".to_string(), |r| format!("{:.2}x", g / r));
    println!(
        "| unspill, warm (map + touch) | {warm_s:.3} | {:.2} | {} |",
        gbps(disk_bytes, warm_s),
        vs(gbps(disk_bytes, warm_s))
    );
    match cold_s {
        Some(s) => println!(
            "| unspill, cold | {s:.3} | {:.2} | {} |",
            gbps(disk_bytes, s),
            vs(gbps(disk_bytes, s))
        ),
        None => println!("| unspill, cold | - | - | (not root: cannot drop the page cache) |"),
    }
    if let (Some(s), Some(r)) = (dd_read_s, dd_r) {
        println!("| dd read, cold | {s:.3} | {r:.2} | 1.00x |");
    }
    drop(files);
    drop(dir);
    let _ = std::fs::remove_dir_all(&base);
}
