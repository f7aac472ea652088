//! The analysis steps against an independent oracle: DuckDB (Python's
//! `duckdb`, installed by scripts/test) on the same Parquet files. Counts,
//! min, max and quantiles must match exactly; mean and std to 1e-9 relative.
//!
//! The tests that only read share one cluster (two workers) with a generated
//! data set persisted as `gen` and the derived frame `prep` of it; the test
//! that kills a worker starts its own cluster.

mod common;

use common::cluster::{drop_at_exit, start_shared, Shared};
use common::duckdb::{duckdb, python};
use common::*;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use arrow_array::cast::AsArray;
use arrow_array::types::Float64Type;
use arrow_array::{Array, RecordBatch};
use stratus::{col, lit, Client, DataFrame, Step, TruncUnit};
use stratus_protocol::messages::FrameSummary;

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

/// The generated ISD-like data set: 150,000 rows (seed 11), generated once
/// per test binary and removed when it exits.
struct Data {
    dir: PathBuf,
    /// Its Parquet files, for DuckDB.
    glob: String,
    /// Rows with `year >= 2012`: the rows of `prep` (DuckDB's count).
    prep_rows: u64,
}

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let dir = TempDir::new("analysis");
        stratus_engine::datagen::generate_isd(&stratus_engine::datagen::DatagenOptions {
            rows: 150_000,
            out: dir.path().to_path_buf(),
            seed: 11,
        })
        .unwrap();
        let glob = format!("{}/year=*/month=*/*.parquet", dir.path().display());
        let prep_rows = duckdb(&format!(
            "SELECT count(*) FROM read_parquet('{glob}') WHERE year >= 2012"
        ))[0][0]
            .as_u64()
            .unwrap();
        let data = Data {
            dir: dir.path().to_path_buf(),
            glob,
            prep_rows,
        };
        drop_at_exit(dir);
        data
    })
}

/// The numeric columns of the ISD data.
const MEASUREMENTS: [&str; 14] = [
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

/// Every numeric column, each as its own SQL.
fn measurements() -> Vec<(&'static str, String)> {
    MEASUREMENTS.iter().map(|c| (*c, c.to_string())).collect()
}

/// Persist ISD Parquet files from `source` as `name`, with a `date` column
/// (the day of `datetime`).
async fn persist_with_date(client: &Client, source: &str, name: &str) -> FrameSummary {
    let (_, summary) = client
        .read_parquet(source)
        .with_column("date", col("datetime").floor(TruncUnit::Day))
        .persist(name)
        .await
        .unwrap();
    summary
}

/// The derived frame of `gen` (Celsius to Fahrenheit, a product, fillna, a
/// filter and a select), not yet persisted.
fn prepared(client: &Client) -> DataFrame<'_> {
    client
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
        ])
}

/// The columns of `prep` as SQL over the generated Parquet files.
fn prep_columns() -> Vec<(&'static str, String)> {
    let filled = |c: &str| {
        format!("CASE WHEN year >= 2012 THEN coalesce(CASE WHEN isnan({c}) THEN NULL ELSE {c} END, 0) END")
    };
    vec![
        ("temperature", filled("temperature * 9 / 5 + 32")),
        ("windSpeed", filled("windSpeed")),
        ("snowDepth", filled("snowDepth")),
        (
            "heat",
            filled("(temperature * 9 / 5 + 32) * seaLvlPressure / 1000"),
        ),
    ]
}

/// Persist `gen` (the generated data) and `prep` (derived from it); the
/// summary of `prep`'s persist.
async fn persist_gen_and_prep(client: &Client) -> FrameSummary {
    persist_with_date(client, &data().dir.display().to_string(), "gen").await;
    let (_, summary) = prepared(client).persist("prep").await.unwrap();
    summary
}

/// The cluster the reading tests share, with `gen` and `prep` persisted.
fn shared() -> &'static Shared<FrameSummary> {
    static SHARED: OnceLock<Shared<FrameSummary>> = OnceLock::new();
    SHARED.get_or_init(|| {
        data();
        start_shared(2, 2 << 30, |target| async move {
            let client = Client::connect(&target).await.unwrap();
            let prep = persist_gen_and_prep(&client).await;
            client.close().await;
            prep
        })
    })
}

/// The values of a describe row that must match: exactly, but for the mean
/// and std (rows 1 and 2), which may differ in the last bits when partials
/// merge in another order.
fn same_stats(a: &RecordBatch, b: &RecordBatch, columns: &[&str], what: &str) {
    for column in columns {
        for row in 0..8 {
            let (x, y) = (stat(a, column, row), stat(b, column, row));
            let ok = if row == 1 || row == 2 {
                close(x, y)
            } else {
                x == y
            };
            assert!(ok, "{what}: {column} row {row}: {x} vs {y}");
        }
    }
}

#[tokio::test(flavor = "current_thread")]
async fn describe_matches_duckdb_exactly_on_every_numeric_column() {
    let cluster = shared();
    let client = cluster.client().await;
    // The generated data set and the pyarrow-written fixture (INT96
    // datetimes): every numeric column, exact quantiles. (The cluster's work
    // comes first: DuckDB blocks this thread, and with it the client's
    // connection, which a 10 s silence closes.)
    let generated = client.frame("gen").describe().await.unwrap();
    persist_with_date(&client, &fixture(), "fixture").await;
    let fixture_table = client.frame("fixture").describe().await.unwrap();
    client.close().await;
    check_describe(&generated, &data().glob, &measurements());
    let fixture_glob = format!("{}/year=*/month=*/*.parquet", fixture());
    check_describe(&fixture_table, &fixture_glob, &measurements());
}

#[tokio::test(flavor = "current_thread")]
async fn daily_means_and_std_merged_worker_to_worker_match_duckdb() {
    let cluster = shared();
    let client = cluster.client().await;
    let generated = &data().glob;
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
    client.close().await;
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
}

#[tokio::test(flavor = "current_thread")]
async fn counts_per_year_and_month_match_duckdb_exactly() {
    let cluster = shared();
    let client = cluster.client().await;
    let counts = client
        .frame("gen")
        .groupby(&["year", "month"])
        .count()
        .await
        .unwrap();
    client.close().await;
    let expect = duckdb(&format!(
        "SELECT year, month, count(windAngle), count(*) FROM read_parquet('{}', hive_partitioning = true) \
         GROUP BY year, month ORDER BY year, month",
        data().glob
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
}

#[tokio::test(flavor = "current_thread")]
async fn group_by_and_sort_on_an_unknown_column_name_it() {
    let cluster = shared();
    let client = cluster.client().await;
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
    let err = client
        .sort("prep", "nope", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("nope"), "{err}");
    client.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn derived_frames_apply_steps_next_to_their_parent() {
    // `prep`: persisted from the persisted `gen` with a filter, derived
    // columns, fillna and a select, computed where `gen`'s partitions are.
    let cluster = shared();
    let client = cluster.client().await;
    let expected_rows = data().prep_rows;
    assert_eq!(cluster.prepared.rows, expected_rows);
    let table = client.frame("prep").describe().await.unwrap();
    client.close().await;
    check_describe(&table, &data().glob, &prep_columns());
    assert_eq!(
        stat(&table, "snowDepth", 0),
        expected_rows as f64,
        "fillna filled every row"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn write_produces_a_hive_dataset_duckdb_reads_back() {
    let cluster = shared();
    let client = cluster.client().await;
    let expected_rows = data().prep_rows;
    let out_dir = TempDir::new("written");
    let dest = out_dir.path().join("prepared");
    let dest_str = dest.display().to_string();
    let (rows, files) = client
        .frame("prep")
        .to_parquet(&dest_str, &["year"], false)
        .await
        .unwrap();
    client.close().await;
    assert_eq!(rows, expected_rows);
    assert!(files >= 8, "one file per partition and year: {files}");
    assert!(dest.join("_SUCCESS").exists());
    assert!(!dest.join("_temporary").exists());
    let back = duckdb(&format!(
        "SELECT count(*), sum(temperature), count(DISTINCT year), min(year) FROM read_parquet('{dest_str}/**/*.parquet', hive_partitioning = true)"
    ));
    let ours = duckdb(&format!(
        "SELECT count(*), sum(coalesce(CASE WHEN isnan(temperature) THEN NULL ELSE temperature END * 9 / 5 + 32, 0)), count(DISTINCT year), min(year) FROM read_parquet('{}', hive_partitioning = true) WHERE year >= 2012",
        data().glob
    ));
    assert_eq!(back[0][0], ours[0][0]);
    assert!(close(
        back[0][1].as_f64().unwrap(),
        ours[0][1].as_f64().unwrap()
    ));
    assert_eq!(back[0][2], ours[0][2]);
    assert_eq!(back[0][3], ours[0][3]);
}

#[tokio::test(flavor = "current_thread")]
async fn write_refuses_an_existing_dataset_unless_told_to_overwrite() {
    let cluster = shared();
    let client = cluster.client().await;
    let expected_rows = data().prep_rows;
    let prep = client.frame("prep");
    let out_dir = TempDir::new("overwritten");
    let dest_str = out_dir.path().join("prepared").display().to_string();
    prep.to_parquet(&dest_str, &["year"], false).await.unwrap();
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
    client.close().await;
}

/// Sort `prep` by `key` into `into`: every row is kept and the whole frame
/// reads back in key order.
async fn check_sort(key: &str, into: &str) {
    let cluster = shared();
    let client = cluster.client().await;
    let expected_rows = data().prep_rows;
    let prep = client.frame("prep");
    let table = prep.describe().await.unwrap();
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
    client.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn sort_by_day_keeps_every_row_in_key_order() {
    // The partitions already range the day: each is sorted where it is.
    check_sort("date", "prep_by_date").await;
}

#[tokio::test(flavor = "current_thread")]
async fn sort_by_temperature_shuffles_every_row_into_key_order() {
    // Rows move worker to worker.
    check_sort("temperature", "prep_by_temp").await;
}

#[tokio::test(flavor = "current_thread")]
async fn memory_usage_lists_each_column_and_totals_what_persist_reported() {
    let cluster = shared();
    let client = cluster.client().await;
    let memory = client.frame("prep").memory_usage().await.unwrap();
    let names = memory.column(0).as_string::<i32>();
    let bytes = memory
        .column(1)
        .as_primitive::<arrow_array::types::UInt64Type>();
    let last = memory.num_rows() - 1;
    assert_eq!(names.value(last), "total");
    assert_eq!(bytes.value(last), cluster.prepared.bytes);
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
    client.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn a_type_error_names_the_function_and_the_column_type() {
    let cluster = shared();
    let client = cluster.client().await;
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
    client.close().await;
}

#[tokio::test(flavor = "current_thread")]
async fn derived_and_sorted_frames_are_rebuilt_after_their_worker_is_killed() {
    // A cluster of its own, which this test kills a worker of: `stratus
    // local` as a process (a second `LocalCluster` in this process would
    // share the shared one's run directory).
    let expected_rows = data().prep_rows;
    let local = start_local(2, &["--memory-limit", "2GiB", "--no-nanny"]);
    let victim = local.worker_pid("local-0");
    let client = Client::connect(&local.target()).await.unwrap();
    persist_gen_and_prep(&client).await;
    let table = client.describe("prep", None).await.unwrap();
    client
        .sort("prep", "temperature", Some("prep_by_temp"))
        .await
        .unwrap();
    let by_temp_before = client.describe("prep_by_temp", None).await.unwrap();

    // The derived frame's lost partitions are rebuilt from Parquet with
    // every step, and the shuffled frame's lost ranges from the Parquet
    // inputs of its parent: same answers.
    kill9(victim);
    let again = eventually_async(Duration::from_secs(60), "prep rebuilt", || async {
        let info = client.info().await.unwrap();
        let frames = client.list().await.unwrap();
        let prep = frames
            .iter()
            .find(|f| f.name == "prep")
            .expect("prep listed");
        match info.workers == 1 && prep.partitions_held == prep.partitions {
            true => Some(client.describe("prep", None).await.unwrap()),
            false => None,
        }
    })
    .await;
    let by_temp = client.describe("prep_by_temp", None).await.unwrap();
    same_stats(
        &by_temp,
        &by_temp_before,
        &["temperature", "windSpeed", "snowDepth", "heat"],
        "prep_by_temp after the rebuild",
    );
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
    // Same answer for the derived frame.
    assert_eq!(again.schema(), table.schema());
    same_stats(
        &again,
        &table,
        &["temperature", "windSpeed", "snowDepth", "year"],
        "prep after the rebuild",
    );
    client.close().await;
}
