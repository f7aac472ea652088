//! Times the group-by kernels on synthetic ISD-like data held in memory:
//! daily means of 12 float columns and counts per (year, month) over 12 M rows
//! (144 month partitions, sorted by time within each, as Stratus persists ISD),
//! with partials computed on 2 threads, then one merge and finalize.
//!
//! `cargo run --release -p stratus-engine --example groupby_time [rows]`

use std::sync::Arc;
use std::time::Instant;

use arrow_array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, RecordBatch, TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use stratus_engine::groupby::{finalize, merge, partial, GroupBy};
use stratus_plan::AggFunc;

const NCOLS: usize = 12;
const DAY_US: i64 = 86_400_000_000;

fn main() {
    let rows: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(12_000_000);
    let parts = 144;
    let mut fields = vec![
        Field::new("day", DataType::Date32, false),
        Field::new(
            "dayts",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
        Field::new("year", DataType::Int32, false),
        Field::new("month", DataType::Int32, false),
    ];
    for c in 0..NCOLS {
        fields.push(Field::new(format!("x{c}"), DataType::Float64, true));
    }
    let schema = Arc::new(Schema::new(fields));
    let mut rng = SmallRng::seed_from_u64(1);
    let null_p = [
        0.0, 0.0, 0.0, 0.2, 0.17, 0.02, 0.65, 0.9, 0.96, 0.8, 0.8, 0.99,
    ];
    let t = Instant::now();
    let per_part = rows / parts;
    let mut partitions: Vec<Vec<RecordBatch>> = Vec::new();
    for p in 0..parts {
        let first_day = 13_879 + (p as i64 * 4_383 / parts as i64) as i32;
        let ndays = 30;
        let mut batches = Vec::new();
        let mut done = 0;
        while done < per_part {
            let n = (per_part - done).min(65_536);
            let days: Vec<i32> = (done..done + n)
                .map(|i| first_day + (i * ndays / per_part) as i32)
                .collect();
            let mut cols: Vec<ArrayRef> = vec![
                Arc::new(Date32Array::from(days.clone())),
                Arc::new(TimestampMicrosecondArray::from_iter_values(
                    days.iter().map(|&d| d as i64 * DAY_US),
                )),
                Arc::new(Int32Array::from(vec![2008 + (p / 12) as i32; n])),
                Arc::new(Int32Array::from(vec![1 + (p % 12) as i32; n])),
            ];
            for &np in null_p.iter().take(NCOLS) {
                cols.push(Arc::new(Float64Array::from_iter((0..n).map(|_| {
                    (!rng.random_bool(np)).then(|| 1000.0 + rng.random::<f64>() * 30.0)
                }))));
            }
            batches.push(RecordBatch::try_new(schema.clone(), cols).unwrap());
            done += n;
        }
        partitions.push(batches);
    }
    eprintln!("generated {} rows in {:?}", per_part * parts, t.elapsed());

    let only = std::env::args().nth(2).unwrap_or_default();
    let run = |what: &str, spec: &GroupBy, parts: &[Vec<RecordBatch>]| {
        if !what.contains(&only) {
            return;
        }
        let mut best = (std::time::Duration::MAX, std::time::Duration::MAX, 0);
        for _ in 0..7 {
            let t = Instant::now();
            let partials: Vec<RecordBatch> = std::thread::scope(|s| {
                let half = parts.len() / 2;
                let hs: Vec<_> = [&parts[..half], &parts[half..]]
                    .into_iter()
                    .map(|chunk| {
                        s.spawn(move || {
                            chunk
                                .iter()
                                .map(|b| partial(b, spec).unwrap())
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
            });
            let tp = t.elapsed();
            let out = finalize(&merge(&partials, spec).unwrap(), spec).unwrap();
            best = best.min((t.elapsed(), tp, out.num_rows()));
        }
        eprintln!(
            "{what}: {} groups, best of 7: total {:?} (partials {:?})",
            best.2, best.0, best.1
        );
    };
    let aggs_of = |key: &str| {
        let mut g = GroupBy::all_numeric(&schema, vec![key.into()], AggFunc::Mean).unwrap();
        g.aggs.retain(|a| a.column.starts_with('x'));
        g
    };
    // Floor: read every value once (plain sums on 2 threads).
    for _ in 0..3 {
        let t = Instant::now();
        let total: f64 = std::thread::scope(|s| {
            let half = partitions.len() / 2;
            let hs: Vec<_> = [&partitions[..half], &partitions[half..]]
                .into_iter()
                .map(|chunk| {
                    s.spawn(move || {
                        let mut acc = [0.0f64; 8];
                        for b in chunk.iter().flatten() {
                            for c in &b.columns()[4..] {
                                let v = c.as_any().downcast_ref::<Float64Array>().unwrap();
                                for ch in v.values().chunks_exact(8) {
                                    for j in 0..8 {
                                        acc[j] += ch[j];
                                    }
                                }
                            }
                        }
                        acc.iter().sum::<f64>()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        eprintln!(
            "floor: read all values once: {:?} ({total:.0})",
            t.elapsed()
        );
    }
    run("daily means (Date32 key)", &aggs_of("day"), &partitions);
    run(
        "daily means (Timestamp key)",
        &aggs_of("dayts"),
        &partitions,
    );
    let mut std = aggs_of("day");
    for a in &mut std.aggs {
        a.func = AggFunc::Std;
    }
    run("daily std (Date32 key)", &std, &partitions);
    let counts = GroupBy {
        keys: vec!["year".into(), "month".into()],
        aggs: vec![stratus_engine::groupby::AggSpec::new("x3", AggFunc::Count)],
    };
    run("counts per (year, month)", &counts, &partitions);

    // Worst case: rows in random key order (no runs).
    let mut shuffled = partitions.clone();
    for batches in &mut shuffled {
        for b in batches.iter_mut() {
            let n = b.num_rows();
            let days =
                Date32Array::from_iter_values((0..n).map(|_| 13_879 + rng.random_range(0..4_383)));
            let mut cols = b.columns().to_vec();
            cols[0] = Arc::new(days);
            *b = RecordBatch::try_new(b.schema(), cols).unwrap();
        }
    }
    run("daily means, random key order", &aggs_of("day"), &shuffled);
}
