//! The analysis steps against an independent oracle: DuckDB (Python's
//! `duckdb`, installed by .ci/run) on the same Parquet files. Counts, min, max
//! and quantiles must match exactly; mean and std to 1e-9 relative.

mod common;

use common::*;
use std::process::Command;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, RecordBatch};
use stratus::local::{LocalCluster, LocalOptions};
use stratus::{col, lit, Step, TruncUnit};

/// Python prelude: DuckDB for the data, and pandas' (numpy's) linear
/// interpolation applied to DuckDB's sorted values for the quantiles. DuckDB's
/// own `quantile_cont` computes `lo + (hi - lo) * t`, which can differ from
/// numpy's two-sided formula in the last bit; pandas is the reference.
const PRELUDE: &str = r#"
import duckdb, json, math
con = duckdb.connect()
con.execute("SET enable_progress_bar = false")
def pandas_quantile(v, q):
    n = len(v)
    if n == 0:
        return None
    p = q * (n - 1)
    lo = math.floor(p)
    hi = min(lo + 1, n - 1)
    t = p - lo
    a, b = float(v[lo]), float(v[hi])
    d = b - a
    return a + d * t if t < 0.5 else b - d * (1 - t)
def clean(x):
    return None if (isinstance(x, float) and x != x) else x
"#;

/// Run a DuckDB query from Python; rows as JSON arrays.
fn duckdb(sql: &str) -> Vec<Vec<serde_json::Value>> {
    python(&format!(
        "rows = con.execute({sql:?}).fetchall()\nprint(json.dumps([[clean(v) for v in r] for r in rows], default=str))"
    ))
}

fn python(body: &str) -> Vec<Vec<serde_json::Value>> {
    let script = format!("{PRELUDE}\n{body}");
    let out = Command::new("python3")
        .args(["-c", &script])
        .output()
        .expect("python3 (with duckdb: pip install duckdb) runs");
    assert!(
        out.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn stat(table: &RecordBatch, column: &str, row: usize) -> f64 {
    table
        .column_by_name(column)
        .unwrap_or_else(|| panic!("no column {column} in describe"))
        .as_primitive::<Float64Type>()
        .value(row)
}

fn close(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a == b || ((a - b) / b).abs() < 1e-9
}

/// Compare our describe of `frame` with DuckDB over `parquet_glob` for the
/// numeric columns of `columns`; `transform` is the SQL of each column.
fn check_describe(table: &RecordBatch, parquet_glob: &str, columns: &[(&str, String)]) {
    for (name, sql) in columns {
        let v = format!("({sql})");
        let valid = format!("{v} IS NOT NULL AND NOT isnan({v}::DOUBLE)");
        let from = format!(
            "FROM read_parquet('{parquet_glob}', hive_partitioning = true, union_by_name = true) WHERE {valid}"
        );
        let body = format!(
            "m = con.execute({moments:?}).fetchone()\nv = [r[0] for r in con.execute({sorted:?}).fetchall()]\nrow = [m[0], m[1], m[2], m[3]] + [pandas_quantile(v, q) for q in (0.25, 0.5, 0.75)] + [m[4]]\nprint(json.dumps([[clean(x) for x in row]], default=str))",
            moments = format!("SELECT count(*), avg({v}), stddev_samp({v}), min({v})::DOUBLE, max({v})::DOUBLE {from}"),
            sorted = format!("SELECT ({v})::DOUBLE AS x {from} ORDER BY x"),
        );
        let row = &python(&body)[0];
        let expect: Vec<f64> = row.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect();
        let got: Vec<f64> = (0..8).map(|i| stat(table, name, i)).collect();
        for (i, stat_name) in ["count", "mean", "std", "min", "25%", "50%", "75%", "max"]
            .iter()
            .enumerate()
        {
            let exact = !matches!(*stat_name, "mean" | "std");
            let ok = if exact {
                got[i] == expect[i] || (got[i].is_nan() && expect[i].is_nan())
            } else {
                close(got[i], expect[i])
            };
            assert!(
                ok,
                "{name} {stat_name}: ours {} vs DuckDB {}",
                got[i], expect[i]
            );
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn describe_transforms_and_memory_match_duckdb() {
    let data = TempDir::new("analysis");
    stratus_engine::datagen::generate_isd(&stratus_engine::datagen::DatagenOptions {
        rows: 150_000,
        out: data.path().to_path_buf(),
        seed: 11,
    })
    .unwrap();
    let generated = format!("{}/year=*/month=*/*.parquet", data.path().display());
    let fixture_glob = format!("{}/year=*/month=*/*.parquet", fixture());
    let cluster = LocalCluster::start(&LocalOptions {
        workers: 2,
        threads_per_worker: 1,
        memory_limit: Some(2 << 30),
        dashboard_address: Some("127.0.0.1:0".into()),
        ..LocalOptions::default()
    })
    .await
    .unwrap();
    let pids = cluster.worker_pids();
    let client = stratus::Client::connect(&cluster.target).await.unwrap();

    let measurements = [
        "latitude",
        "longitude",
        "elevation",
        "windAngle",
        "windSpeed",
        "temperature",
        "seaLvlPressure",
        "presentWeatherIndicator",
        "pastWeatherIndicator",
        "precipTime",
        "precipDepth",
        "snowDepth",
        "year",
        "day",
    ];
    let plain: Vec<(&str, String)> = measurements.iter().map(|c| (*c, c.to_string())).collect();

    // Both datasets, every numeric column, exact quantiles.
    for (source, glob, name) in [
        (data.path().display().to_string(), generated.clone(), "gen"),
        (fixture(), fixture_glob.clone(), "fixture"),
    ] {
        let df = client
            .read_parquet(&source)
            .with_column("date", col("datetime").floor(TruncUnit::Day));
        let (isd, _) = df.persist(name).await.unwrap();
        let table = isd.describe().await.unwrap();
        check_describe(&table, &glob, &plain);
    }

    // Daily means (group-by on the day, partials merged worker to worker).
    let daily = client
        .frame("gen")
        .groupby(&["date"])
        .agg(&[
            ("temperature", stratus::Agg::Mean),
            ("seaLvlPressure", stratus::Agg::Mean),
            ("windSpeed", stratus::Agg::Std),
        ])
        .await
        .unwrap();
    let valid = |c: &str| format!("{c} IS NOT NULL AND NOT isnan({c})");
    let expect = duckdb(&format!(
        "SELECT avg(temperature) FILTER (WHERE {}), avg(seaLvlPressure) FILTER (WHERE {}), \
         stddev_samp(windSpeed) FILTER (WHERE {}) FROM read_parquet('{generated}') \
         GROUP BY date_trunc('day', datetime) ORDER BY date_trunc('day', datetime)",
        valid("temperature"),
        valid("seaLvlPressure"),
        valid("windSpeed")
    ));
    assert_eq!(daily.num_rows(), expect.len(), "number of days");
    for (c, name) in ["temperature", "seaLvlPressure", "windSpeed"]
        .iter()
        .enumerate()
    {
        let ours = daily
            .column_by_name(name)
            .unwrap()
            .as_primitive::<Float64Type>();
        for (row, e) in expect.iter().enumerate() {
            let e = e[c].as_f64().unwrap_or(f64::NAN);
            let o = if ours.is_null(row) {
                f64::NAN
            } else {
                ours.value(row)
            };
            assert!(close(o, e), "day {row} {name}: ours {o} vs DuckDB {e}");
        }
    }

    // Counts per (year, month): exact.
    let counts = client
        .frame("gen")
        .groupby(&["year", "month"])
        .count()
        .await
        .unwrap();
    let expect = duckdb(&format!(
        "SELECT year, month, count(windAngle), count(*) FROM read_parquet('{generated}', hive_partitioning = true) \
         GROUP BY year, month ORDER BY year, month"
    ));
    assert_eq!(counts.num_rows(), expect.len());
    let wind = counts
        .column_by_name("windAngle")
        .unwrap()
        .as_primitive::<arrow_array::types::Int64Type>();
    let usaf = counts
        .column_by_name("usaf")
        .unwrap()
        .as_primitive::<arrow_array::types::Int64Type>();
    for (row, e) in expect.iter().enumerate() {
        assert_eq!(
            wind.value(row) as u64,
            e[2].as_u64().unwrap(),
            "windAngle count, group {row}"
        );
        assert_eq!(
            usaf.value(row) as u64,
            e[3].as_u64().unwrap(),
            "row count, group {row}"
        );
    }
    let err = client
        .groupby(
            "gen",
            vec!["nope".into()],
            Vec::new(),
            Some(stratus::Agg::Mean),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");

    // A derived frame (Celsius to Fahrenheit, fillna, a filter) from the
    // persisted one: computed next to its parent partitions.
    let prepared = client
        .frame("gen")
        .filter(col("year").gt_eq(lit(2012)))
        .with_column(
            "temperature",
            col("temperature") * lit(9) / lit(5) + lit(32),
        )
        // Tens of thousands of distinct values: its quantiles take the
        // histogram rounds, not just the summary's distinct keys.
        .with_column(
            "heat",
            col("temperature") * col("seaLvlPressure") / lit(1000),
        )
        .fillna(0.0)
        .select(&[
            "date",
            "temperature",
            "windSpeed",
            "snowDepth",
            "year",
            "heat",
        ]);
    let (prep, summary) = prepared.persist("prep").await.unwrap();
    let expected_rows = duckdb(&format!(
        "SELECT count(*) FROM read_parquet('{generated}') WHERE year >= 2012"
    ))[0][0]
        .as_u64()
        .unwrap();
    assert_eq!(summary.rows, expected_rows);
    let table = prep.describe().await.unwrap();
    let filled = |c: &str| {
        format!("CASE WHEN year >= 2012 THEN coalesce(CASE WHEN isnan({c}) THEN NULL ELSE {c} END, 0) END")
    };
    check_describe(
        &table,
        &generated,
        &[
            ("temperature", filled("temperature * 9 / 5 + 32")),
            ("windSpeed", filled("windSpeed")),
            ("snowDepth", filled("snowDepth")),
            (
                "heat",
                filled("(temperature * 9 / 5 + 32) * seaLvlPressure / 1000"),
            ),
        ],
    );
    assert_eq!(
        stat(&table, "snowDepth", 0),
        expected_rows as f64,
        "fillna filled every row"
    );

    // Write the prepared frame as a dataset partitioned by year; DuckDB reads
    // it back with the same rows; an existing dataset is refused.
    let out_dir = TempDir::new("written");
    let dest = out_dir.path().join("prepared");
    let dest_str = dest.display().to_string();
    let (rows, files) = prep.to_parquet(&dest_str, &["year"], false).await.unwrap();
    assert_eq!(rows, expected_rows);
    assert!(files >= 8, "one file per partition and year: {files}");
    assert!(dest.join("_SUCCESS").exists());
    assert!(!dest.join("_temporary").exists());
    let back = duckdb(&format!(
        "SELECT count(*), sum(temperature), count(DISTINCT year), min(year) FROM read_parquet('{dest_str}/**/*.parquet', hive_partitioning = true)"
    ));
    let ours = duckdb(&format!(
        "SELECT count(*), sum(coalesce(CASE WHEN isnan(temperature) THEN NULL ELSE temperature END * 9 / 5 + 32, 0)), count(DISTINCT year), min(year) FROM read_parquet('{generated}', hive_partitioning = true) WHERE year >= 2012"
    ));
    assert_eq!(back[0][0], ours[0][0]);
    assert!(close(
        back[0][1].as_f64().unwrap(),
        ours[0][1].as_f64().unwrap()
    ));
    assert_eq!(back[0][2], ours[0][2]);
    assert_eq!(back[0][3], ours[0][3]);
    let err = prep
        .to_parquet(&dest_str, &["year"], false)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--overwrite") || err.contains("exists"),
        "{err}"
    );
    let (rows, _) = prep.to_parquet(&dest_str, &["year"], true).await.unwrap();
    assert_eq!(rows, expected_rows);

    // Sorting: by the day (partitions already range it: sorted where they
    // are) and by temperature (a shuffle, worker to worker). Every row is
    // kept and the whole frame reads back in key order.
    for (key, into) in [("date", "prep_by_date"), ("temperature", "prep_by_temp")] {
        let (sorted, summary) = prep.sort_by(key, into).await.unwrap();
        assert_eq!(summary.rows, expected_rows, "{key}");
        let batches = sorted
            .clone()
            .select(&[key, "windSpeed"])
            .head(expected_rows + 10)
            .await
            .unwrap();
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows as u64, expected_rows, "{key}: every row read back");
        let keys: Vec<f64> = batches
            .iter()
            .flat_map(|b| {
                let c = arrow_cast::cast(b.column(0), &arrow_schema::DataType::Float64).unwrap();
                c.as_primitive::<Float64Type>().values().to_vec()
            })
            .collect();
        assert!(keys.windows(2).all(|w| w[0] <= w[1]), "{key}: not in order");
        let wind: f64 = batches
            .iter()
            .map(|b| {
                b.column(1)
                    .as_primitive::<Float64Type>()
                    .values()
                    .iter()
                    .sum::<f64>()
            })
            .sum();
        let before = stat(&table, "windSpeed", 1) * expected_rows as f64;
        assert!((wind - before).abs() / before < 1e-9, "{key}: rows changed");
    }
    let err = client
        .sort("prep", "nope", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");

    // memory_usage: per column, and the total equals what persist reported.
    let memory = prep.memory_usage().await.unwrap();
    let names = memory.column(0).as_string::<i32>();
    let bytes = memory
        .column(1)
        .as_primitive::<arrow_array::types::UInt64Type>();
    let last = memory.num_rows() - 1;
    assert_eq!(names.value(last), "total");
    assert_eq!(bytes.value(last), summary.bytes);
    assert_eq!(
        (0..last).map(|i| names.value(i)).collect::<Vec<_>>(),
        vec![
            "date",
            "temperature",
            "windSpeed",
            "snowDepth",
            "year",
            "heat"
        ]
    );

    // A type error is clear and runs no task.
    let err = client
        .persist(
            "gen",
            "bad",
            false,
            None,
            vec![Step::WithColumn {
                name: "x".into(),
                expr: col("temperature").floor(TruncUnit::Day),
            }],
            &mut |_, _, _| {},
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("date_trunc") && err.contains("temperature is Float64"),
        "{err}"
    );

    // Lineage through steps: kill a worker; the derived frame's lost
    // partitions are rebuilt from Parquet with every step, and the shuffled
    // frame's lost ranges from the Parquet inputs of its parent: same answers.
    let by_temp_before = client.describe("prep_by_temp", None).await.unwrap();
    kill9(pids[0]);
    let started = std::time::Instant::now();
    let again = loop {
        let info = client.info().await.unwrap();
        let frames = client.list().await.unwrap();
        let prep = frames
            .iter()
            .find(|f| f.name == "prep")
            .expect("prep listed");
        if info.workers == 1 && prep.partitions_held == prep.partitions {
            break client.describe("prep", None).await.unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "prep not rebuilt: {frames:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let by_temp = client.describe("prep_by_temp", None).await.unwrap();
    for column in ["temperature", "windSpeed", "snowDepth", "heat"] {
        for row in 0..8 {
            let (a, b) = (
                stat(&by_temp, column, row),
                stat(&by_temp_before, column, row),
            );
            let ok = if row == 1 || row == 2 {
                close(a, b)
            } else {
                a == b
            };
            assert!(
                ok,
                "prep_by_temp {column} row {row} after rebuild: {a} vs {b}"
            );
        }
    }
    let frames = client.list().await.unwrap();
    let by_temp_frame = frames.iter().find(|f| f.name == "prep_by_temp").unwrap();
    assert_eq!(by_temp_frame.partitions_held, by_temp_frame.partitions);
    let keys: Vec<f64> = client
        .frame("prep_by_temp")
        .select(&["temperature"])
        .head(expected_rows + 10)
        .await
        .unwrap()
        .iter()
        .flat_map(|b| b.column(0).as_primitive::<Float64Type>().values().to_vec())
        .collect();
    assert_eq!(
        keys.len() as u64,
        expected_rows,
        "every row of the sorted frame"
    );
    assert!(
        keys.windows(2).all(|w| w[0] <= w[1]),
        "rebuilt ranges in order"
    );
    // Same answer; mean and std may differ in the last bits because the
    // partials merge in another order now.
    assert_eq!(again.schema(), table.schema());
    for column in ["temperature", "windSpeed", "snowDepth", "year"] {
        for row in 0..8 {
            let (a, b) = (stat(&again, column, row), stat(&table, column, row));
            let ok = if row == 1 || row == 2 {
                close(a, b)
            } else {
                a == b
            };
            assert!(ok, "{column} row {row} after rebuild: {a} vs {b}");
        }
    }
    client.close().await;
}
