//! Edge cases of the analysis steps against DuckDB on a hand-made dataset:
//! NaN values, an all-null column, an empty partition, a single-row
//! partition, int32 measurements and millisecond timestamps (copies of ISD
//! differ in types).

mod common;

use common::cluster::start_cluster;
use common::duckdb::duckdb;
use common::*;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type};
use arrow_array::{
    Array, ArrayRef, Float64Array, Int32Array, RecordBatch, TimestampMillisecondArray,
};

fn write(path: &std::path::Path, batch: &RecordBatch) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let file = std::fs::File::create(path).unwrap();
    let mut w = parquet::arrow::ArrowWriter::try_new(file, batch.schema(), None).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

fn batch(ts: Vec<i64>, temp: Vec<Option<f64>>, wind: Vec<Option<i32>>) -> RecordBatch {
    let n = ts.len();
    RecordBatch::try_from_iter([
        (
            "datetime",
            Arc::new(TimestampMillisecondArray::from(ts)) as ArrayRef,
        ),
        (
            "temperature",
            Arc::new(Float64Array::from(temp)) as ArrayRef,
        ),
        ("windAngle", Arc::new(Int32Array::from(wind)) as ArrayRef),
        (
            "snowDepth",
            Arc::new(Float64Array::from(vec![None::<f64>; n])) as ArrayRef,
        ),
    ])
    .unwrap()
}

#[tokio::test(flavor = "current_thread")]
async fn describe_and_group_by_skip_nan_and_nulls_like_duckdb_across_empty_and_one_row_partitions()
{
    let dir = TempDir::new("edges");
    let day = 86_400_000i64;
    let t0 = 1_230_768_000_000i64; // 2009-01-01
                                   // month=1: NaN and nulls mixed in; month=2: a single row; month=3: empty.
    write(
        &dir.path().join("year=2009/month=1/part-0.parquet"),
        &batch(
            (0..9).map(|i| t0 + (i % 3) * day + i * 1000).collect(),
            vec![
                Some(1.5),
                Some(f64::NAN),
                None,
                Some(-2.0),
                Some(7.25),
                Some(f64::NAN),
                Some(0.0),
                Some(3.0),
                None,
            ],
            vec![
                Some(10),
                None,
                Some(350),
                Some(20),
                Some(20),
                None,
                Some(0),
                Some(90),
                Some(180),
            ],
        ),
    );
    write(
        &dir.path().join("year=2009/month=2/part-0.parquet"),
        &batch(vec![t0 + 31 * day], vec![Some(12.5)], vec![Some(45)]),
    );
    write(
        &dir.path().join("year=2009/month=3/part-0.parquet"),
        &batch(Vec::new(), Vec::new(), Vec::new()),
    );
    let cluster = start_cluster(2, 1 << 30).await;
    let client = stratus::Client::connect(&cluster.target).await.unwrap();
    let src = dir.path().display().to_string();
    let (isd, summary) = client
        .read_parquet(&src)
        .with_column(
            "date",
            stratus::col("datetime").floor(stratus::TruncUnit::Day),
        )
        .persist("edges")
        .await
        .unwrap();
    assert_eq!(summary.rows, 10);

    // describe: NaN and nulls skipped; the all-null column has count 0 and NaN
    // statistics; int32 and float columns alike.
    let table = isd.describe().await.unwrap();
    let glob = format!("{src}/year=*/month=*/*.parquet");
    for (column, cast) in [
        ("temperature", "temperature"),
        ("windAngle", "windAngle::DOUBLE"),
    ] {
        let f = format!("FILTER (WHERE {cast} IS NOT NULL AND NOT isnan({cast}))");
        let expect = &duckdb(&format!(
            "SELECT count({cast}) {f}, avg({cast}) {f}, stddev_samp({cast}) {f}, min({cast}) {f}, \
             quantile_cont({cast}, 0.25) {f}, quantile_cont({cast}, 0.5) {f}, quantile_cont({cast}, 0.75) {f}, max({cast}) {f} \
             FROM read_parquet('{glob}')"
        ))[0];
        let ours = table
            .column_by_name(column)
            .unwrap()
            .as_primitive::<Float64Type>();
        for (i, e) in expect.iter().enumerate() {
            let e = e.as_f64().unwrap();
            let o = ours.value(i);
            assert!(
                (o - e).abs() <= 1e-12 * e.abs().max(1.0),
                "{column} stat {i}: ours {o} vs DuckDB {e}"
            );
        }
    }
    let snow = table
        .column_by_name("snowDepth")
        .unwrap()
        .as_primitive::<Float64Type>();
    assert_eq!(snow.value(0), 0.0, "all-null column counts 0");
    assert!(
        (1..8).all(|i| snow.value(i).is_nan()),
        "all-null statistics are NaN"
    );

    // Daily means and counts: NaN skipped, the all-null column's mean is null.
    let daily = isd.groupby(&["date"]).mean().await.unwrap();
    let expect = duckdb(&format!(
        "SELECT avg(temperature) FILTER (WHERE NOT isnan(temperature)), avg(windAngle) FROM read_parquet('{glob}') \
         GROUP BY date_trunc('day', datetime) ORDER BY date_trunc('day', datetime)"
    ));
    assert_eq!(daily.num_rows(), expect.len(), "days");
    let temp = daily
        .column_by_name("temperature")
        .unwrap()
        .as_primitive::<Float64Type>();
    let wind = daily
        .column_by_name("windAngle")
        .unwrap()
        .as_primitive::<Float64Type>();
    let snow = daily.column_by_name("snowDepth").unwrap();
    for (row, e) in expect.iter().enumerate() {
        // A day whose temperatures are all null or NaN has a null mean.
        match e[0].as_f64() {
            Some(t) => assert!(
                (temp.value(row) - t).abs() < 1e-12,
                "day {row}: {} vs {t}",
                temp.value(row)
            ),
            None => assert!(temp.is_null(row), "day {row}: the mean must be null"),
        }
        let w = e[1].as_f64().unwrap();
        assert!(
            (wind.value(row) - w).abs() < 1e-12,
            "day {row}: {} vs {w}",
            wind.value(row)
        );
        assert!(snow.is_null(row), "all-null column's mean is null");
    }
    let counts = isd.groupby(&["month"]).count().await.unwrap();
    let n = counts
        .column_by_name("temperature")
        .unwrap()
        .as_primitive::<Int64Type>();
    // NaN is not a value (pandas): month 1 has 5 real temperatures.
    assert_eq!(n.values().to_vec(), vec![5, 1]);
    client.close().await;
}
