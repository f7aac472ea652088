//! In-process benchmark of two engine kernels on ISD-like data, as workers hold it:
//!
//! - **write**: [`write_partition`] of every month partition, hive-partitioned by
//!   `year`/`month` (the write step of the end-to-end benchmark, one task per partition);
//! - **shuffle**: the general sort's [`split_by_ranges`] on two "workers" (each half of
//!   the partitions, split by `temperature` into 144 ranges, as the scheduler asks for 12 M
//!   rows), then the receiving side's [`sort_batches`] of every range (its pieces from
//!   both halves), and [`sort_batches_legacy`] of the same, alternating;
//! - **describe**: a worker's share of `describe()` (moments and the exact-quantile rounds
//!   of every numeric column over all loaded partitions), with the rounds each column took;
//! - **groupby**: the partials of `groupby(date).mean()` of every numeric column, one per
//!   month partition, on the same rows stored in three orders (time; station, then time;
//!   random: [`RowOrder`]) at each size of `--groupby-rows`, by the default kernels and by
//!   the row-by-row path they replaced ([`Paths::LEGACY`]), alternating, in the same run;
//!   it checks both give the same partials (up to rounding) and prints the ratio new/old;
//! - **sort**: the ranged `sort_by(date)`: [`sort_batches`] of every month partition by
//!   `date` on its own (a day never crosses months, so no row moves between partitions), on
//!   the same three orders at each size of `--sort-rows`, by the default row mover and by
//!   the one it replaced ([`sort_batches_legacy`]), alternating, in the same run (with
//!   `--sort-paths both`, also one plain `concat` of each partition: the floor of any row
//!   mover); it checks the first run's outputs against a reference stable sort (`concat` +
//!   `take`) and prints the ratio new/old;
//! - **read**: what `persist` spends in the engine: listing, footers and planning once,
//!   then [`read_partition`] of every month partition up to each size of `--read-rows`,
//!   and the `date` derivation on its own; then `--small-files` files of 100 rows
//!   (written once into the temporary directory), listed, their footers read, planned and
//!   read, one partition per file (as before issue 13) and grouped.
//!
//! Data: `stratus_engine::datagen` writes 12 M ISD-like rows once (cached in the temporary
//! directory, so every month file holds ~83 k rows in row groups of 64 Ki rows, as in the
//! end-to-end benchmark; the station and random orders beside it, `-station`/`-random`); the benchmark reads the first month files up to `--rows` rows
//! (as `persist` does: strings stay dictionaries, one batch per row group, `month` from the
//! path) and adds `date = date_trunc('day', datetime)` as the end-to-end benchmark does.
//!
//! ```text
//! cargo bench -p stratus-engine --bench kernels -- [--rows N] [--runs K]
//!     [--only write|shuffle|describe|groupby|sort|read] [--data DIR] [--gen-rows N] [--keep DIR]
//!     [--groupby-rows N,N...] [--groupby-paths both|new|legacy]
//!     [--groupby-orders time,station,random]
//!     [--sort-rows N,N...] [--sort-paths both|new|legacy] [--sort-orders time,station,random]
//!     [--sort-key date|datetime]
//!     [--read-rows N,N...] [--small-files N]
//! ```
//!
//! Prints the median (and min/max) wall time of `--runs` runs per kernel, rows/s and
//! ns/row, and the median CPU time of the benchmark thread (user + system: page faults of
//! fresh allocations count there). `--keep DIR` leaves the last run's dataset committed in
//! `DIR` (to look at with DuckDB's `parquet_metadata`, say). The machine is shared and
//! noisy: for counts that do not depend on its load, count instructions of one kernel with
//! callgrind, e.g.
//!
//! ```text
//! valgrind --tool=callgrind --toggle-collect='stratus_engine::write::write_partition*' \
//!     target/release/deps/kernels-HASH --only write --runs 1
//! ```
//!
//! (`stratus_engine::sort::split_by_ranges*` and `stratus_engine::sort::sort_batches*` with
//! `--only shuffle` for the other two; `--only sort --sort-paths new` for the ranged sort).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use arrow_array::{Array, ArrayRef, RecordBatch};
use stratus_engine::datagen::{generate_isd_ordered, DatagenOptions, RowOrder};
use stratus_engine::describe::{describable_columns, MAX_DISTINCT};
use stratus_engine::expr::apply_steps;
use stratus_engine::groupby::{partial_with_paths, GroupBy, Paths};
use stratus_engine::scan::{list_files, plan_partitions, read_footer, read_partition};
use stratus_engine::sort::{
    choose_boundaries, sample_keys, sort_batches, sort_batches_legacy, split_by_ranges,
};
use stratus_engine::write::{write_partition, WriteOptions};
use stratus_plan::{col, AggFunc, Step, TruncUnit};

#[path = "../tests/describe_rounds/mod.rs"]
mod describe_rounds;
use describe_rounds::describe_rounds;

// Workers run on mimalloc (without transparent huge pages): measure with the same allocator.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Ranges of the shuffle: the scheduler asks for one per partition (144 for ISD).
const RANGES: usize = 144;
/// Sample size the scheduler asks every worker for.
const SAMPLE: usize = 4096;
const KEY: &str = "temperature";

struct Args {
    rows: usize,
    runs: usize,
    only: Option<String>,
    data: Option<PathBuf>,
    gen_rows: u64,
    keep: Option<PathBuf>,
    groupby_rows: Vec<usize>,
    /// `--groupby-paths new|legacy|both` (both: the ratio; one: to profile it alone).
    groupby_paths: String,
    groupby_orders: Vec<RowOrder>,
    sort_rows: Vec<usize>,
    /// `--sort-paths new|legacy|both` (both: the ratio; one: to profile it alone).
    sort_paths: String,
    sort_orders: Vec<RowOrder>,
    /// `--sort-key date|datetime`: a microsecond timestamp column (`datetime`: the
    /// timestamps themselves, too many distinct ones for the few-keys path).
    sort_key: String,
    read_rows: Vec<usize>,
    small_files: usize,
}

fn parse_args() -> Args {
    let mut a = Args {
        rows: 2_000_000,
        runs: 5,
        only: None,
        data: None,
        gen_rows: 12_000_000,
        keep: None,
        groupby_rows: vec![1_000_000, 4_000_000],
        groupby_paths: "both".into(),
        groupby_orders: RowOrder::ALL.to_vec(),
        sort_rows: vec![2_000_000, 12_000_000],
        sort_paths: "both".into(),
        sort_orders: RowOrder::ALL.to_vec(),
        sort_key: "date".into(),
        read_rows: vec![3_000_000, 12_000_000],
        small_files: 10_000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().unwrap_or_else(|| panic!("{name} needs a value"));
        match arg.as_str() {
            "--rows" => a.rows = value("--rows").parse().expect("--rows N"),
            "--runs" => a.runs = value("--runs").parse().expect("--runs K"),
            "--only" => a.only = Some(value("--only")),
            "--data" => a.data = Some(PathBuf::from(value("--data"))),
            "--gen-rows" => a.gen_rows = value("--gen-rows").parse().expect("--gen-rows N"),
            "--keep" => a.keep = Some(PathBuf::from(value("--keep"))),
            "--groupby-paths" => a.groupby_paths = value("--groupby-paths"),
            "--groupby-orders" => {
                a.groupby_orders = value("--groupby-orders")
                    .split(',')
                    .map(|o| {
                        o.trim()
                            .parse()
                            .expect("--groupby-orders time,station,random")
                    })
                    .collect()
            }
            "--sort-paths" => a.sort_paths = value("--sort-paths"),
            "--sort-key" => a.sort_key = value("--sort-key"),
            "--sort-orders" => {
                a.sort_orders = value("--sort-orders")
                    .split(',')
                    .map(|o| o.trim().parse().expect("--sort-orders time,station,random"))
                    .collect()
            }
            "--sort-rows" => {
                a.sort_rows = value("--sort-rows")
                    .split(',')
                    .map(|n| n.trim().parse().expect("--sort-rows N,N..."))
                    .collect()
            }
            "--read-rows" => {
                a.read_rows = value("--read-rows")
                    .split(',')
                    .map(|n| n.trim().parse().expect("--read-rows N,N..."))
                    .collect()
            }
            "--small-files" => {
                a.small_files = value("--small-files").parse().expect("--small-files N")
            }
            "--groupby-rows" => {
                a.groupby_rows = value("--groupby-rows")
                    .split(',')
                    .map(|n| n.trim().parse().expect("--groupby-rows N,N..."))
                    .collect()
            }
            // `cargo bench` passes `--bench`; ignore it and anything else unknown.
            _ => {}
        }
    }
    a.runs = a.runs.max(1);
    a
}

/// CPU time of the calling thread (user + system), from `/proc/thread-self/schedstat`.
fn thread_cpu() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(Duration::ZERO, Duration::from_nanos)
}

/// Generate the data once (cached by row count) and return its directory.
fn dataset(args: &Args) -> PathBuf {
    dataset_ordered(args, RowOrder::Time)
}

/// [`dataset`] with the rows of each file in `order` (a directory beside the time order's).
fn dataset_ordered(args: &Args, order: RowOrder) -> PathBuf {
    let base = args.data.clone().unwrap_or_else(|| {
        std::env::temp_dir().join(format!("stratus-bench-isd-{}", args.gen_rows))
    });
    let dir = match order {
        RowOrder::Time => base,
        other => PathBuf::from(format!("{}-{other}", base.display())),
    };
    let done = dir.join("_generated");
    if !done.is_file() {
        let t = Instant::now();
        let s = generate_isd_ordered(
            &DatagenOptions {
                rows: args.gen_rows,
                out: dir.clone(),
                seed: 42,
            },
            order,
        )
        .expect("datagen");
        std::fs::write(&done, b"").expect("marker");
        eprintln!(
            "generated {} rows ({} files, {} MB) into {} in {:.1} s",
            s.rows,
            s.files,
            s.bytes / 1_000_000,
            dir.display(),
            t.elapsed().as_secs_f64()
        );
    }
    dir
}

/// The first month partitions up to `rows` rows, read as `persist` reads them, with the
/// `date` column added.
fn load(dir: &Path, rows: usize) -> Vec<Vec<RecordBatch>> {
    let files = list_files(&dir.display().to_string()).expect("list");
    let footers: Vec<_> = files
        .iter()
        .map(|f| read_footer(f).expect("footer"))
        .collect();
    let specs = plan_partitions(&footers, 128 << 20, 1);
    let step = Step::WithColumn {
        name: "date".into(),
        expr: col("datetime").floor(TruncUnit::Day),
    };
    let mut parts = Vec::new();
    let mut total = 0;
    for spec in &specs {
        if total >= rows {
            break;
        }
        let batches = read_partition(spec, None, None).expect("read");
        let batches = apply_steps(batches, std::slice::from_ref(&step)).expect("date");
        total += batches.iter().map(|b| b.num_rows()).sum::<usize>();
        parts.push(batches);
    }
    parts
}

fn rows_of(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

struct Timing {
    wall: Duration,
    cpu: Duration,
}

fn report(name: &str, rows: usize, mut t: Vec<Timing>) {
    t.sort_by_key(|t| t.wall);
    let med = &t[t.len() / 2];
    let secs = med.wall.as_secs_f64();
    println!(
        "{name:<28} {rows:>9} rows  median {:>8.1} ms (min {:.1}, max {:.1}; {} runs)  \
         {:>6.2} M rows/s  {:>6.1} ns/row  cpu {:>8.1} ms",
        secs * 1e3,
        t[0].wall.as_secs_f64() * 1e3,
        t[t.len() - 1].wall.as_secs_f64() * 1e3,
        t.len(),
        rows as f64 / secs / 1e6,
        secs * 1e9 / rows as f64,
        med.cpu.as_secs_f64() * 1e3,
    );
}

fn timed<T>(f: impl FnOnce() -> T) -> (T, Timing) {
    let (c0, w0) = (thread_cpu(), Instant::now());
    let out = f();
    let wall = w0.elapsed();
    let cpu = thread_cpu().saturating_sub(c0);
    (out, Timing { wall, cpu })
}

fn bench_write(parts: &[Vec<RecordBatch>], runs: usize, keep: Option<&Path>) {
    let rows: usize = parts.iter().map(|p| rows_of(p)).sum();
    let root = std::env::temp_dir().join(format!("stratus-bench-write-{}", std::process::id()));
    let mut times = Vec::new();
    let mut bytes = 0u64;
    let mut files = 0usize;
    for run in 0..runs {
        let dest = match keep {
            Some(k) if run + 1 == runs => {
                let _ = std::fs::remove_dir_all(k);
                k.to_path_buf()
            }
            _ => root.join(format!("run{run}")),
        };
        let opts = WriteOptions {
            dest: dest.clone(),
            partition_by: vec!["year".into(), "month".into()],
            job_id: "bench".into(),
            overwrite: false,
        };
        let (staged, t) = timed(|| {
            let mut staged = Vec::new();
            for (i, p) in parts.iter().enumerate() {
                staged.extend(write_partition(p, &opts, &format!("{i:05}")).expect("write"));
            }
            staged
        });
        assert_eq!(staged.iter().map(|s| s.rows).sum::<u64>(), rows as u64);
        bytes = staged.iter().map(|s| s.bytes).sum();
        files = staged.len();
        times.push(t);
        if keep.is_some() && run + 1 == runs {
            // The last run's files, committed, for a look with DuckDB or pyarrow.
            stratus_engine::write::commit(&opts, &staged).expect("commit");
        } else {
            std::fs::remove_dir_all(&dest).expect("clean up");
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    report("write_partition", rows, times);
    println!(
        "  {files} files, {:.1} MB ({:.2} B/row)",
        bytes as f64 / 1e6,
        bytes as f64 / rows as f64
    );
}

/// A worker's share of `describe()`: every describable column of all loaded partitions
/// (one worker holding them), count/mean/std/min/max and exact quartiles, by the same
/// rounds the scheduler drives. Prints how many rounds each column took.
fn bench_describe(parts: &[Vec<RecordBatch>], runs: usize) {
    let rows: usize = parts.iter().map(|p| rows_of(p)).sum();
    let worker: Vec<RecordBatch> = parts.iter().flatten().cloned().collect();
    let schema = worker[0].schema();
    let columns = describable_columns(&schema);
    let mut times = Vec::new();
    let mut rounds = Vec::new();
    for _ in 0..runs {
        let (r, t) = timed(|| {
            columns
                .iter()
                .map(|c| {
                    let dt = schema.field_with_name(c).expect("column").data_type();
                    let d = describe_rounds(
                        std::slice::from_ref(&worker),
                        c,
                        dt,
                        &[0.25, 0.5, 0.75],
                        MAX_DISTINCT,
                    )
                    .expect("describe");
                    assert!(d.moments.count as usize <= rows && d.quantiles.len() == 3);
                    d.rounds
                })
                .collect::<Vec<_>>()
        });
        rounds = r;
        times.push(t);
    }
    report(
        &format!("describe ({} columns)", columns.len()),
        rows,
        times,
    );
    let per_column: Vec<String> = columns
        .iter()
        .zip(&rounds)
        .map(|(c, r)| format!("{c} {r}"))
        .collect();
    println!("  histogram rounds per column: {}", per_column.join(", "));
}

fn bench_shuffle(parts: &[Vec<RecordBatch>], runs: usize) {
    let rows: usize = parts.iter().map(|p| rows_of(p)).sum();
    let per_partition = SAMPLE.div_ceil(parts.len()).max(1);
    let samples: Vec<ArrayRef> = parts
        .iter()
        .map(|p| sample_keys(p, KEY, per_partition).expect("sample"))
        .collect();
    let boundaries = choose_boundaries(&samples, RANGES).expect("boundaries");
    // Two holders, as on 2 workers: each splits everything it holds at once.
    let half = parts.len().div_ceil(2);
    let holders: Vec<Vec<RecordBatch>> = parts.chunks(half).map(|c| c.concat()).collect();

    let mut split_t = Vec::new();
    let mut sort_t = Vec::new();
    let mut legacy_t = Vec::new();
    for run in 0..runs {
        let (split, t) = timed(|| {
            holders
                .iter()
                .map(|h| split_by_ranges(h, KEY, &boundaries).expect("split"))
                .collect::<Vec<_>>()
        });
        split_t.push(t);
        let nranges = boundaries.len() + 1;
        let received: Vec<Vec<RecordBatch>> = (0..nranges)
            .map(|r| split.iter().flat_map(|s| s[r].iter().cloned()).collect())
            .collect();
        drop(split);
        assert_eq!(received.iter().map(|r| rows_of(r)).sum::<usize>(), rows);
        let sort_all = |f: fn(&[RecordBatch], &str) -> stratus_engine::Result<Vec<RecordBatch>>| {
            received
                .iter()
                .map(|r| f(r, KEY).expect("sort"))
                .collect::<Vec<_>>()
        };
        // The legacy sort too, alternating, for the ratio (its output dropped first).
        if run % 2 == 1 {
            legacy_t.push(timed(|| sort_all(sort_batches_legacy)).1);
        }
        let (sorted, t) = timed(|| sort_all(sort_batches));
        sort_t.push(t);
        if run % 2 == 0 {
            legacy_t.push(timed(|| sort_all(sort_batches_legacy)).1);
        }
        if run == 0 {
            check_sorted(&sorted, rows);
            println!(
                "  {} ranges, {:.0} rows per range on average",
                nranges,
                rows as f64 / nranges as f64
            );
        }
    }
    report("split_by_ranges (2 holders)", rows, split_t);
    report("sort_batches (every range)", rows, sort_t);
    report("sort_batches_legacy (same)", rows, legacy_t);
}

/// Every row kept, and keys ascending within and across ranges (nulls last in each).
fn check_sorted(sorted: &[Vec<RecordBatch>], rows: usize) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float64Type;
    assert_eq!(sorted.iter().map(|r| rows_of(r)).sum::<usize>(), rows);
    let mut last = f64::NEG_INFINITY;
    for range in sorted {
        let mut nulls = false;
        for b in range {
            let c = b
                .column_by_name(KEY)
                .expect("key")
                .as_primitive::<Float64Type>();
            for i in 0..c.len() {
                if c.is_null(i) {
                    nulls = true;
                    continue;
                }
                assert!(!nulls, "a key after a null");
                let v = c.value(i);
                assert!(v >= last, "keys out of order: {v} after {last}");
                last = v;
            }
        }
    }
}

/// Partials equal but for rounding: the same groups in the same order, the same counts,
/// sums and means within 1e-12 (the new kernels add a group's values in another order).
fn same_partials(a: &[RecordBatch], b: &[RecordBatch], what: &str) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float64Type;
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.schema(), y.schema(), "{what}");
        for (i, (c, d)) in x.columns().iter().zip(y.columns()).enumerate() {
            match (
                c.as_primitive_opt::<Float64Type>(),
                d.as_primitive_opt::<Float64Type>(),
            ) {
                (Some(c), Some(d)) => {
                    for (p, q) in c.values().iter().zip(d.values().iter()) {
                        let tol = 1e-12 * p.abs().max(q.abs());
                        assert!((p - q).abs() <= tol, "{what}: column {i}: {p} vs {q}");
                    }
                }
                _ => assert_eq!(c, d, "{what}: column {i}"),
            }
        }
    }
}

/// The partials of `groupby(date).mean()` of every numeric column, one per partition, by
/// the default kernels and the legacy row-by-row path, on each order and size.
fn bench_groupby(args: &Args) {
    for &rows in &args.groupby_rows {
        for &order in &args.groupby_orders {
            let parts = load(&dataset_ordered(args, order), rows);
            let n: usize = parts.iter().map(|p| rows_of(p)).sum();
            let schema = parts[0][0].schema();
            let spec =
                GroupBy::all_numeric(&schema, vec!["date".into()], AggFunc::Mean).expect("spec");
            let run = |paths: Paths| {
                parts
                    .iter()
                    .map(|p| partial_with_paths(&schema, p, &spec, paths).expect("partial"))
                    .collect::<Vec<_>>()
            };
            let (mut old_t, mut new_t) = (Vec::new(), Vec::new());
            if args.groupby_paths != "both" {
                let paths = match args.groupby_paths.as_str() {
                    "legacy" => Paths::LEGACY,
                    _ => Paths::default(),
                };
                for _ in 0..args.runs {
                    new_t.push(timed(|| run(paths)).1);
                }
                let name = format!("groupby {order} {}", args.groupby_paths);
                report(&name, n, new_t);
                continue;
            }
            for r in 0..args.runs {
                // Alternate which goes first: the machine's load drifts.
                let (new, t_new, old, t_old) = if r % 2 == 0 {
                    let (old, t_old) = timed(|| run(Paths::LEGACY));
                    let (new, t_new) = timed(|| run(Paths::default()));
                    (new, t_new, old, t_old)
                } else {
                    let (new, t_new) = timed(|| run(Paths::default()));
                    let (old, t_old) = timed(|| run(Paths::LEGACY));
                    (new, t_new, old, t_old)
                };
                if r == 0 {
                    same_partials(&new, &old, &format!("{order}"));
                }
                old_t.push(t_old);
                new_t.push(t_new);
            }
            // Medians of wall and CPU time: on a loaded machine the CPU time is steadier.
            let median = |t: &[Timing], cpu: bool| {
                let mut v: Vec<f64> = t
                    .iter()
                    .map(|t| if cpu { t.cpu } else { t.wall }.as_secs_f64())
                    .collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let (old_s, new_s) = (median(&old_t, false), median(&new_t, false));
            let (old_c, new_c) = (median(&old_t, true), median(&new_t, true));
            report(&format!("groupby {order} legacy"), n, old_t);
            report(&format!("groupby {order} new"), n, new_t);
            println!(
                "  groupby(date).mean partials, {order} order, {n} rows, {} columns: new/legacy \
                 wall {:.2}x ({:.1} -> {:.1} ns/row), cpu {:.2}x ({:.1} -> {:.1} ns/row)",
                spec.aggs.len(),
                new_s / old_s,
                old_s * 1e9 / n as f64,
                new_s * 1e9 / n as f64,
                new_c / old_c,
                old_c * 1e9 / n as f64,
                new_c * 1e9 / n as f64,
            );
        }
    }
}

/// The rows of one partition as one batch with its dictionaries decoded (Utf8), to
/// compare outputs whose dictionaries may differ.
fn decoded(batches: &[RecordBatch]) -> RecordBatch {
    use arrow_schema::{DataType, Field, Schema};
    let whole =
        arrow_select::concat::concat_batches(batches[0].schema_ref(), batches).expect("concat");
    let columns: Vec<ArrayRef> = whole
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            DataType::Dictionary(_, v) => arrow_cast::cast(c, v).expect("decode"),
            _ => c.clone(),
        })
        .collect();
    let fields: Vec<Field> = whole
        .schema()
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(std::sync::Arc::new(Schema::new(fields)), columns).expect("batch")
}

/// `got` holds the rows of `input` stably sorted by `key` (a microsecond timestamp column;
/// nulls last): the same values, column by column, as a reference stable sort of the rows
/// (`concat` + `take`).
fn check_stable_sort(input: &[RecordBatch], got: &[RecordBatch], key: &str, what: &str) {
    use arrow_array::cast::AsArray;
    use arrow_array::types::TimestampMicrosecondType;
    let whole = decoded(input);
    let date = whole
        .column_by_name(key)
        .expect("key")
        .as_primitive::<TimestampMicrosecondType>();
    let mut rows: Vec<u32> = (0..whole.num_rows() as u32).collect();
    // Stable; `None` sorts first in `Option`'s order, so key on (is null, value).
    rows.sort_by_key(|&r| {
        let v = date.is_valid(r as usize).then(|| date.value(r as usize));
        (v.is_none(), v)
    });
    let want = arrow_select::take::take_record_batch(&whole, &arrow_array::UInt32Array::from(rows))
        .expect("take");
    let got = decoded(got);
    assert_eq!(got.num_rows(), want.num_rows(), "{what}: rows");
    for (c, (g, w)) in got.columns().iter().zip(want.columns()).enumerate() {
        // Bits, not values: NaN is not equal to itself.
        assert!(g.to_data() == w.to_data(), "{what}: column {c} differs");
    }
}

/// One partition's rows copied once, in order, into one batch (`concat`): the floor a
/// sort's row mover can reach.
fn copy_batches(batches: &[RecordBatch], _key: &str) -> stratus_engine::Result<Vec<RecordBatch>> {
    Ok(vec![arrow_select::concat::concat_batches(
        batches[0].schema_ref(),
        batches,
    )
    .expect("concat")])
}

/// The ranged sort: [`sort_batches`] of every month partition by `date`, by the default
/// row mover and the legacy one, on each order and size.
fn bench_sort(args: &Args) {
    type SortFn = fn(&[RecordBatch], &str) -> stratus_engine::Result<Vec<RecordBatch>>;
    for &rows in &args.sort_rows {
        for &order in &args.sort_orders {
            let parts = load(&dataset_ordered(args, order), rows);
            let n: usize = parts.iter().map(|p| rows_of(p)).sum();
            let run = |f: SortFn| {
                parts
                    .iter()
                    .map(|p| f(p, &args.sort_key).expect("sort"))
                    .collect::<Vec<_>>()
            };
            let mut paths: Vec<(&str, SortFn)> = match args.sort_paths.as_str() {
                "new" => vec![("new", sort_batches)],
                "legacy" => vec![("legacy", sort_batches_legacy)],
                _ => vec![("legacy", sort_batches_legacy), ("new", sort_batches)],
            };
            if args.sort_paths == "both" {
                // The floor: one sequential copy of every column (not a sort, not checked).
                paths.push(("copy", copy_batches));
            }
            let mut times: Vec<Vec<Timing>> = paths.iter().map(|_| Vec::new()).collect();
            for r in 0..args.runs {
                // Alternate which goes first: the machine's load drifts.
                for k in 0..paths.len() {
                    let i = if r % 2 == 0 { k } else { paths.len() - 1 - k };
                    let (name, f) = paths[i];
                    let (out, t) = timed(|| run(f));
                    times[i].push(t);
                    // The first run's output checked, then dropped (one output held at a
                    // time next to the input).
                    if r == 0 && name != "copy" {
                        for (p, (i, o)) in parts.iter().zip(&out).enumerate() {
                            let what = format!("{order} {name} partition {p}");
                            check_stable_sort(i, o, &args.sort_key, &what);
                        }
                    }
                }
            }
            // Medians of wall and CPU time: on a loaded machine the CPU time is steadier.
            let median = |t: &[Timing], cpu: bool| {
                let mut v: Vec<f64> = t
                    .iter()
                    .map(|t| if cpu { t.cpu } else { t.wall }.as_secs_f64())
                    .collect();
                v.sort_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let meds: Vec<(f64, f64)> = times
                .iter()
                .map(|t| (median(t, false), median(t, true)))
                .collect();
            for ((name, _), t) in paths.iter().zip(times) {
                report(&format!("sort({}) {order} {name}", args.sort_key), n, t);
            }
            if let [(old_s, old_c), (new_s, new_c), ..] = meds[..] {
                println!(
                    "  sort_batches by {}, {order} order, {n} rows, {} partitions: new/legacy \
                     wall {:.2}x ({:.1} -> {:.1} ns/row), cpu {:.2}x ({:.1} -> {:.1} ns/row)",
                    args.sort_key,
                    parts.len(),
                    new_s / old_s,
                    old_s * 1e9 / n as f64,
                    new_s * 1e9 / n as f64,
                    new_c / old_c,
                    old_c * 1e9 / n as f64,
                    new_c * 1e9 / n as f64,
                );
            }
        }
    }
}

fn main() {
    let args = parse_args();
    let only = args.only.as_deref();
    if only == Some("groupby") {
        bench_groupby(&args);
        return;
    }
    if only == Some("sort") {
        bench_sort(&args);
        return;
    }
    if only == Some("read") {
        bench_read(&args);
        return;
    }
    let dir = dataset(&args);
    let t = Instant::now();
    let parts = load(&dir, args.rows);
    let rows: usize = parts.iter().map(|p| rows_of(p)).sum();
    let batches: usize = parts.iter().map(|p| p.len()).sum();
    println!(
        "kernels: {rows} ISD-like rows in {} partitions ({batches} batches, {} columns), read in {:.2} s",
        parts.len(),
        parts[0][0].num_columns(),
        t.elapsed().as_secs_f64()
    );
    if only.is_none_or(|o| o == "write") {
        bench_write(&parts, args.runs, args.keep.as_deref());
    }
    if only.is_none_or(|o| o == "shuffle") {
        bench_shuffle(&parts, args.runs);
    }
    if only.is_none_or(|o| o == "describe") {
        bench_describe(&parts, args.runs);
    }
    if only.is_none() {
        drop(parts);
        bench_groupby(&args);
    }
}

/// The `date` column the end-to-end benchmark adds.
fn date_step() -> Step {
    Step::WithColumn {
        name: "date".into(),
        expr: col("datetime").floor(TruncUnit::Day),
    }
}

/// `--only read`: list, footers and plan once; then per size of `--read-rows`, every
/// month partition read (as persist does: all columns, no limit) and the `date` column
/// derived, timed apart; then the small-files case.
fn bench_read(args: &Args) {
    let dir = dataset(args);
    let source = dir.display().to_string();
    let (files, t_list) = timed(|| list_files(&source).expect("list"));
    let (footers, t_footers) = timed(|| {
        files
            .iter()
            .map(|f| read_footer(f).expect("footer"))
            .collect::<Vec<_>>()
    });
    let (specs, t_plan) = timed(|| plan_partitions(&footers, 128 << 20, 1));
    println!(
        "read: {} files, {} partitions; list {:.1} ms, footers {:.1} ms, plan {:.2} ms",
        files.len(),
        specs.len(),
        t_list.wall.as_secs_f64() * 1e3,
        t_footers.wall.as_secs_f64() * 1e3,
        t_plan.wall.as_secs_f64() * 1e3,
    );
    let step = date_step();
    for &want in &args.read_rows {
        let mut total = 0u64;
        let specs: Vec<_> = specs
            .iter()
            .take_while(|s| {
                let take = total < want as u64;
                total += s.rows;
                take
            })
            .cloned()
            .collect();
        let rows: usize = specs.iter().map(|s| s.rows as usize).sum();
        let (mut read_t, mut date_t) = (Vec::new(), Vec::new());
        for _ in 0..args.runs {
            let (parts, t) = timed(|| {
                specs
                    .iter()
                    .map(|s| read_partition(s, None, None).expect("read"))
                    .collect::<Vec<_>>()
            });
            assert_eq!(parts.iter().map(|p| rows_of(p)).sum::<usize>(), rows);
            read_t.push(t);
            let (dated, t) = timed(|| {
                parts
                    .into_iter()
                    .map(|p| apply_steps(p, std::slice::from_ref(&step)).expect("date"))
                    .collect::<Vec<_>>()
            });
            date_t.push(t);
            drop(dated);
        }
        report(
            &format!("read_partition ({} parts)", specs.len()),
            rows,
            read_t,
        );
        report("date derivation", rows, date_t);
    }
    bench_small_files(args);
}

/// `n` files of 100 rows (the rows of the first month file, in 100-row slices),
/// spread over `year=2008/month=1..12`, written once and cached.
fn small_files(args: &Args, n: usize) -> PathBuf {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::Compression;
    use parquet::file::properties::WriterProperties;
    let dir = std::env::temp_dir().join(format!("stratus-bench-small-{n}"));
    let done = dir.join("_generated");
    if done.is_file() {
        return dir;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let isd = dataset(args);
    let files = list_files(&isd.display().to_string()).expect("list");
    let footer = read_footer(&files[0]).expect("footer");
    let spec = plan_partitions(std::slice::from_ref(&footer), u64::MAX, 1).remove(0);
    // The file's own columns (not the hive-only `month`).
    let file_columns: Vec<String> = footer
        .schema
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .filter(|name| name != "month")
        .collect();
    let batches = read_partition(&spec, Some(&file_columns), None).expect("read");
    let all = arrow_select::concat::concat_batches(&batches[0].schema(), &batches).expect("concat");
    // Slices of 100 rows, from the start again when the file runs out.
    let slices = all.num_rows() / 100;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    for i in 0..n {
        let sub = dir.join(format!("year=2008/month={}", 1 + i % 12));
        std::fs::create_dir_all(&sub).expect("mkdir");
        let file = std::fs::File::create(sub.join(format!("part-{i:05}.parquet"))).expect("create");
        let mut w = ArrowWriter::try_new(file, all.schema(), Some(props.clone())).expect("writer");
        w.write(&all.slice((i % slices) * 100, 100)).expect("write");
        w.close().expect("close");
    }
    std::fs::write(&done, b"").expect("marker");
    dir
}

/// `--small-files` files of 100 rows: list + footers + plan + read, the read both of one
/// partition per file (the plan before issue 13; with a binary from before it, this is
/// also what `plan_partitions` gives) and of the partitions planned (grouped files).
fn bench_small_files(args: &Args) {
    let n = args.small_files;
    if n == 0 {
        return;
    }
    let dir = small_files(args, n);
    let source = dir.display().to_string();
    let (mut list_t, mut foot_t, mut plan_t) = (Vec::new(), Vec::new(), Vec::new());
    let (mut each_t, mut planned_t) = (Vec::new(), Vec::new());
    let mut parts = 0;
    for run in 0..args.runs {
        let (files, t) = timed(|| list_files(&source).expect("list"));
        list_t.push(t);
        let (footers, t) = timed(|| {
            files
                .iter()
                .map(|f| read_footer(f).expect("footer"))
                .collect::<Vec<_>>()
        });
        foot_t.push(t);
        let (specs, t) = timed(|| plan_partitions(&footers, 128 << 20, 2));
        plan_t.push(t);
        parts = specs.len();
        let each: Vec<_> = specs.iter().flat_map(|s| s.files()).collect();
        assert_eq!(each.len(), n);
        let read_all = |specs: &[stratus_plan::ParquetPartition]| {
            specs
                .iter()
                .map(|s| read_partition(s, None, None).expect("read"))
                .collect::<Vec<_>>()
        };
        // Alternate which goes first: the machine's load drifts.
        let ((a, ta), (b, tb)) = if run % 2 == 0 {
            let a = timed(|| read_all(&each));
            (a, timed(|| read_all(&specs)))
        } else {
            let b = timed(|| read_all(&specs));
            (timed(|| read_all(&each)), b)
        };
        assert_eq!(a.iter().map(|p| rows_of(p)).sum::<usize>(), n * 100);
        assert_eq!(b.iter().map(|p| rows_of(p)).sum::<usize>(), n * 100);
        each_t.push(ta);
        planned_t.push(tb);
    }
    let rows = n * 100;
    println!("small files: {n} files of 100 rows, {parts} partitions planned");
    report("  list_files", rows, list_t);
    report("  read_footer (each)", rows, foot_t);
    report("  plan_partitions", rows, plan_t);
    report("  read, a partition per file", rows, each_t);
    report(&format!("  read, {parts} partitions"), rows, planned_t);
}
