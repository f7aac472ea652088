//! Integration tests of `stratus_engine::write`: hive-partitioned dataset writes from several
//! tasks, the commit protocol (nothing visible before commit, `_SUCCESS` last), overwrite,
//! abort, errors, and reading the result back with `stratus_engine::scan` (and DuckDB).

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, TimestampMicrosecondType};
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Float64Array, Int32Array, RecordBatch, StringArray,
    TimestampMicrosecondArray,
};
use arrow_schema::{DataType, Field, Schema, TimeUnit};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use stratus_engine::scan::{
    check_schemas, list_files, plan_partitions, read_footer, read_partition,
};
use stratus_engine::write::{
    abort, check_destination, commit, write_partition, StagedFile, WriteOptions,
};

/// A unique temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let p = std::env::temp_dir().join(format!(
            "stratus-write-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn join(&self, rel: &str) -> PathBuf {
        self.0.join(rel)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn opts(dest: &Path, partition_by: &[&str], job: &str, overwrite: bool) -> WriteOptions {
    WriteOptions {
        dest: dest.to_path_buf(),
        partition_by: partition_by.iter().map(|s| s.to_string()).collect(),
        job_id: job.to_string(),
        overwrite,
    }
}

/// One input row: (year, month, station, temp, time).
type Row = (i32, i32, String, Option<f64>, i64);

fn dict(values: &[&str]) -> ArrayRef {
    let d: DictionaryArray<Int32Type> = values.iter().copied().collect();
    Arc::new(d)
}

fn batch(rows: &[Row]) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("year", DataType::Int32, false),
        Field::new("month", DataType::Int32, false),
        Field::new(
            "station",
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
            false,
        ),
        Field::new("temp", DataType::Float64, true),
        Field::new(
            "time",
            DataType::Timestamp(TimeUnit::Microsecond, None),
            false,
        ),
    ]));
    let stations: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1))),
            dict(&stations),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.3))),
            Arc::new(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.4),
            )),
        ],
    )
    .unwrap()
}

/// Deterministic rows for task `t`: several years and months mixed in one batch.
fn task_rows(t: usize, n: usize) -> Vec<Row> {
    (0..n)
        .map(|i| {
            let k = t * 1000 + i;
            (
                2008 + (k % 3) as i32,
                1 + ((k / 3) % 12) as i32,
                format!("ST{:02}", k % 7),
                if k.is_multiple_of(5) {
                    None
                } else {
                    Some(k as f64 * 0.5)
                },
                1_199_145_600_000_000 + k as i64 * 3_600_000_000,
            )
        })
        .collect()
}

fn sort_key(r: &Row) -> (i32, i32, String, Option<u64>, i64) {
    (r.0, r.1, r.2.clone(), r.3.map(f64::to_bits), r.4)
}

fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by_key(sort_key);
    rows
}

/// String value `i` of a dictionary or plain string column.
fn string_at(a: &dyn Array, i: usize) -> String {
    match a.data_type() {
        DataType::Dictionary(_, _) => {
            let d = a.as_dictionary::<Int32Type>();
            let k = d.keys().value(i) as usize;
            d.values().as_string::<i32>().value(k).to_string()
        }
        _ => a.as_string::<i32>().value(i).to_string(),
    }
}

/// Read a whole dataset back through the scan module: every file's footer, one schema,
/// partitions, batches.
fn read_back(dest: &Path) -> Vec<RecordBatch> {
    let files = list_files(dest.to_str().unwrap()).unwrap();
    let footers: Vec<_> = files.iter().map(|f| read_footer(f).unwrap()).collect();
    check_schemas(&footers).unwrap();
    let parts = plan_partitions(&footers, 1 << 30, 1);
    parts
        .iter()
        .flat_map(|p| read_partition(p, None, None).unwrap())
        .collect()
}

/// Rows of batches read back (columns looked up by name).
fn rows_of(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let year = b
            .column_by_name("year")
            .unwrap()
            .as_primitive::<Int32Type>();
        let month = b
            .column_by_name("month")
            .unwrap()
            .as_primitive::<Int32Type>();
        let station = b.column_by_name("station").unwrap();
        let temp = b
            .column_by_name("temp")
            .unwrap()
            .as_primitive::<Float64Type>();
        let time = b
            .column_by_name("time")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            out.push((
                year.value(i),
                month.value(i),
                string_at(station.as_ref(), i),
                temp.is_valid(i).then(|| temp.value(i)),
                time.value(i),
            ));
        }
    }
    out
}

/// Write `tasks` tasks concurrently (one thread each), two batches per task.
fn write_tasks(
    o: &WriteOptions,
    tasks: usize,
    rows_per_task: usize,
) -> (Vec<Row>, Vec<StagedFile>) {
    let handles: Vec<_> = (0..tasks)
        .map(|t| {
            let o = o.clone();
            std::thread::spawn(move || {
                let rows = task_rows(t, rows_per_task);
                let half = rows.len() / 2;
                let batches = vec![batch(&rows[..half]), batch(&rows[half..])];
                let staged = write_partition(&batches, &o, &format!("{t:05}")).unwrap();
                (rows, staged)
            })
        })
        .collect();
    let mut all_rows = Vec::new();
    let mut all_staged = Vec::new();
    for h in handles {
        let (rows, staged) = h.join().unwrap();
        all_rows.extend(rows);
        all_staged.extend(staged);
    }
    (all_rows, all_staged)
}

#[test]
fn partitioned_write_commits_and_reads_back() {
    let tmp = TempDir::new("roundtrip");
    let dest = tmp.join("out/isd");
    let o = opts(&dest, &["year", "month"], "job-1", false);
    check_destination(&o).unwrap();

    let (rows, staged) = write_tasks(&o, 3, 500);
    // 3 years x 12 months, every task hits every combination.
    assert_eq!(staged.len(), 3 * 36);
    for s in &staged {
        assert!(
            s.temp_path.contains("/_temporary/job-1/year="),
            "{}",
            s.temp_path
        );
        assert!(!s.final_path.contains("_temporary"), "{}", s.final_path);
        assert!(s.final_path.ends_with(".snappy.parquet"));
        assert!(Path::new(&s.temp_path).is_file());
        assert!(s.bytes > 0);
    }
    assert_eq!(staged.iter().map(|s| s.rows).sum::<u64>(), 1500);

    // Before commit nothing is visible to readers.
    let err = list_files(dest.to_str().unwrap()).unwrap_err();
    assert!(err.to_string().contains("no Parquet files"), "{err}");
    assert!(!dest.join("_SUCCESS").exists());

    let (n_rows, n_files) = commit(&o, &staged).unwrap();
    assert_eq!((n_rows, n_files), (1500, 108));
    assert!(dest.join("_SUCCESS").is_file());
    assert!(!dest.join("_temporary").exists());
    assert!(dest
        .join("year=2008/month=1/part-00000.snappy.parquet")
        .is_file());

    let files = list_files(dest.to_str().unwrap()).unwrap();
    assert_eq!(files.len(), 108);
    for f in &files {
        assert_eq!(f.hive.len(), 2);
        assert_eq!(f.hive[0].0, "year");
        assert_eq!(f.hive[1].0, "month");
    }

    // The files hold no partition columns, and are Snappy-compressed.
    let file = File::open(&files[0].path).unwrap();
    let builder = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let names: Vec<&str> = builder
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["station", "temp", "time"]);
    let col = builder.metadata().row_group(0).column(0);
    assert_eq!(col.compression(), Compression::SNAPPY);

    // The dataset schema: file columns, then year and month from the path.
    let footers: Vec<_> = files.iter().map(|f| read_footer(f).unwrap()).collect();
    let schema = check_schemas(&footers).unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(names, ["station", "temp", "time", "year", "month"]);
    assert_eq!(schema.field(3).data_type(), &DataType::Int32);

    let back = rows_of(&read_back(&dest));
    assert_eq!(sorted(back), sorted(rows));
}

#[test]
fn destination_checks() {
    let tmp = TempDir::new("check");
    // Absent, or an empty directory: fine.
    check_destination(&opts(&tmp.join("absent"), &[], "j", false)).unwrap();
    fs::create_dir_all(tmp.join("empty")).unwrap();
    check_destination(&opts(&tmp.join("empty"), &[], "j", false)).unwrap();

    // A file: refused even with overwrite.
    fs::write(tmp.join("file"), b"x").unwrap();
    for overwrite in [false, true] {
        let err = check_destination(&opts(&tmp.join("file"), &[], "j", overwrite)).unwrap_err();
        assert!(err.to_string().contains("is a file"), "{err}");
    }

    // A committed dataset: refused without overwrite, accepted with.
    let dest = tmp.join("ds");
    let o = opts(&dest, &["year"], "j1", false);
    let staged = write_partition(&[batch(&task_rows(0, 10))], &o, "00000").unwrap();
    commit(&o, &staged).unwrap();
    let err = check_destination(&o).unwrap_err().to_string();
    assert!(err.contains(dest.to_str().unwrap()), "{err}");
    assert!(err.contains("--overwrite"), "{err}");
    check_destination(&opts(&dest, &["year"], "j2", true)).unwrap();

    // Committing into it without overwrite is refused too (another job got there first).
    let o2 = opts(&dest, &["year"], "j2", false);
    let staged = write_partition(&[batch(&task_rows(1, 10))], &o2, "00000").unwrap();
    let err = commit(&o2, &staged).unwrap_err().to_string();
    assert!(err.contains("--overwrite"), "{err}");
    abort(&o2).unwrap();
    assert!(!dest.join("_temporary").exists());

    // Only a leftover _temporary: refused, saying so.
    let leftover = tmp.join("leftover");
    fs::create_dir_all(leftover.join("_temporary/old")).unwrap();
    let err = check_destination(&opts(&leftover, &[], "j", false))
        .unwrap_err()
        .to_string();
    assert!(err.contains("_temporary"), "{err}");

    // Bad job ids are refused before anything runs.
    let err = check_destination(&opts(&tmp.join("x"), &[], "../evil", false)).unwrap_err();
    assert!(err.to_string().contains("job id"), "{err}");
    let err = check_destination(&opts(&tmp.join("x"), &["a", "a"], "j", false)).unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
}

#[test]
fn overwrite_replaces_the_old_dataset() {
    let tmp = TempDir::new("overwrite");
    let dest = tmp.join("ds");
    let first = opts(&dest, &["year", "month"], "old", false);
    let (_, staged) = write_tasks(&first, 2, 100);
    commit(&first, &staged).unwrap();
    fs::write(dest.join("stray.txt"), b"left by someone").unwrap();

    let second = opts(&dest, &["year", "month"], "new", true);
    check_destination(&second).unwrap();
    let rows: Vec<Row> = (0..50)
        .map(|i| (2020, 7, "NEW".to_string(), Some(i as f64), i))
        .collect();
    let staged = write_partition(&[batch(&rows)], &second, "00000").unwrap();
    assert_eq!(staged.len(), 1);
    // While the new job is staged, readers still see the old dataset.
    assert_eq!(rows_of(&read_back(&dest)).len(), 200);

    assert_eq!(commit(&second, &staged).unwrap(), (50, 1));
    let files = list_files(dest.to_str().unwrap()).unwrap();
    assert_eq!(files.len(), 1);
    assert!(files[0]
        .path
        .ends_with("year=2020/month=7/part-00000.snappy.parquet"));
    assert!(!dest.join("year=2008").exists());
    assert!(!dest.join("stray.txt").exists());
    assert!(dest.join("_SUCCESS").is_file());
    assert_eq!(sorted(rows_of(&read_back(&dest))), sorted(rows));
}

#[test]
fn a_commit_run_again_after_it_happened_answers_the_same_and_changes_nothing() {
    // Its worker lost after the files moved, the scheduler reruns the commit.
    let tmp = TempDir::new("recommit");
    let dest = tmp.join("ds");
    let old = opts(&dest, &["year", "month"], "job-1", false);
    let (_, staged) = write_tasks(&old, 2, 100);
    commit(&old, &staged).unwrap();
    // An overwrite with the same file names as the old dataset.
    let new = opts(&dest, &["year", "month"], "job-2", true);
    let (_, staged) = write_tasks(&new, 2, 30);
    // The old dataset has the same file names: only its marker tells it
    // from this job's.
    let rerun = opts(&dest, &["year", "month"], "job-2", true);
    let files = staged.len();
    assert_eq!(commit(&new, &staged).unwrap(), (60, files));
    assert_eq!(commit(&rerun, &staged).unwrap(), (60, files));
    assert_eq!(rows_of(&read_back(&dest)).len(), 60);
    // Another job's rerun over the same staged list is still refused.
    let other = opts(&dest, &["year", "month"], "job-3", true);
    let e = commit(&other, &staged).unwrap_err().to_string();
    assert!(e.contains("cannot commit"), "{e}");
}

#[test]
fn abort_leaves_nothing() {
    let tmp = TempDir::new("abort");
    // The job created dest: abort removes it.
    let dest = tmp.join("new/ds");
    let o = opts(&dest, &["year", "month"], "job-a", false);
    let (_, staged) = write_tasks(&o, 2, 50);
    assert!(!staged.is_empty());
    abort(&o).unwrap();
    assert!(!dest.exists());
    // Aborting twice (or a job that wrote nothing) is fine.
    abort(&o).unwrap();

    // dest existed (empty) before the job: abort leaves it, empty.
    let dest = tmp.join("existing");
    fs::create_dir_all(&dest).unwrap();
    let o = opts(&dest, &["year"], "job-b", false);
    write_partition(&[batch(&task_rows(0, 20))], &o, "00001").unwrap();
    assert!(dest.join("_temporary/job-b").is_dir());
    abort(&o).unwrap();
    assert!(dest.is_dir());
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 0);

    // Another job's staging area survives this job's abort.
    let other = opts(&dest, &["year"], "job-c", false);
    write_partition(&[batch(&task_rows(0, 20))], &other, "00001").unwrap();
    let mine = opts(&dest, &["year"], "job-d", false);
    write_partition(&[batch(&task_rows(1, 20))], &mine, "00001").unwrap();
    abort(&mine).unwrap();
    assert!(dest.join("_temporary/job-c").is_dir());
    assert!(!dest.join("_temporary/job-d").exists());
    abort(&other).unwrap();
    assert_eq!(fs::read_dir(&dest).unwrap().count(), 0);
}

#[test]
fn bad_partition_columns_are_errors_naming_them() {
    let tmp = TempDir::new("badcols");
    let dest = tmp.join("ds");
    let b = batch(&task_rows(0, 10));

    let err = write_partition(
        std::slice::from_ref(&b),
        &opts(&dest, &["year", "mnth"], "j", false),
        "0",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("'mnth'"), "{err}");
    assert!(err.contains(dest.to_str().unwrap()), "{err}");
    assert!(!dest.exists(), "nothing is written on a bad request");

    let err = write_partition(
        std::slice::from_ref(&b),
        &opts(&dest, &["temp"], "j", false),
        "0",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("'temp'") && err.contains("Float64"), "{err}");

    // Nulls in a partition column.
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Utf8, true),
        Field::new("v", DataType::Int32, false),
    ]));
    let nulls = RecordBatch::try_new(
        schema.clone(),
        vec![
            Arc::new(StringArray::from(vec![Some("a"), None])),
            Arc::new(Int32Array::from(vec![1, 2])),
        ],
    )
    .unwrap();
    let err = write_partition(&[nulls], &opts(&dest, &["k"], "j", false), "0")
        .unwrap_err()
        .to_string();
    assert!(err.contains("'k'") && err.contains("null"), "{err}");

    // Empty strings cannot name a directory either.
    let empty = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(StringArray::from(vec![Some("a"), Some("")])),
            Arc::new(Int32Array::from(vec![1, 2])),
        ],
    )
    .unwrap();
    let err = write_partition(&[empty], &opts(&dest, &["k"], "j", false), "0")
        .unwrap_err()
        .to_string();
    assert!(err.contains("'k'") && err.contains("empty string"), "{err}");

    // Every column a partition column.
    let err = write_partition(
        &[b],
        &opts(
            &dest,
            &["year", "month", "station", "temp", "time"],
            "j",
            false,
        ),
        "0",
    )
    .unwrap_err();
    // (temp is Float64, refused first; a two-column batch shows the other error)
    assert!(err.to_string().contains("temp"), "{err}");
    let ints = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("a", DataType::Int32, false)])),
        vec![Arc::new(Int32Array::from(vec![1]))],
    )
    .unwrap();
    let err = write_partition(&[ints], &opts(&dest, &["a"], "j", false), "0").unwrap_err();
    assert!(err.to_string().contains("every column"), "{err}");
}

#[test]
fn string_partition_values_are_encoded_and_decode_back() {
    let tmp = TempDir::new("strings");
    let dest = tmp.join("ds");
    let o = opts(&dest, &["station"], "j", false);
    let names = ["a/b", "x=y%z", "plain", "q?#:"];
    let rows: Vec<Row> = (0..40)
        .map(|i| (2008, 1, names[i % 4].to_string(), Some(i as f64), i as i64))
        .collect();
    let staged = write_partition(&[batch(&rows)], &o, "00000").unwrap();
    assert_eq!(staged.len(), 4);
    commit(&o, &staged).unwrap();
    assert!(dest
        .join("station=a%2Fb/part-00000.snappy.parquet")
        .is_file());
    assert!(dest.join("station=x%3Dy%25z").is_dir());

    let files = list_files(dest.to_str().unwrap()).unwrap();
    let mut values: Vec<String> = files.iter().map(|f| f.hive[0].1.clone()).collect();
    values.sort();
    let mut expected: Vec<String> = names.iter().map(|s| s.to_string()).collect();
    expected.sort();
    assert_eq!(values, expected);

    // Read back: station now comes from the path (a dictionary column at the end).
    let back = rows_of(&read_back(&dest));
    assert_eq!(sorted(back), sorted(rows));
}

#[test]
fn no_partition_columns_write_one_file_per_task() {
    let tmp = TempDir::new("flat");
    let dest = tmp.join("ds");
    let o = opts(&dest, &[], "flat", false);
    let (rows, staged) = write_tasks(&o, 3, 120);
    assert_eq!(staged.len(), 3);
    assert_eq!(commit(&o, &staged).unwrap(), (360, 3));
    for t in 0..3 {
        assert!(dest.join(format!("part-{t:05}.snappy.parquet")).is_file());
    }
    let back = rows_of(&read_back(&dest));
    assert_eq!(sorted(back), sorted(rows));
}

#[test]
fn empty_input_writes_nothing_and_retries_replace_staged_files() {
    let tmp = TempDir::new("retry");
    let dest = tmp.join("ds");
    let o = opts(&dest, &["year"], "j", false);
    assert!(write_partition(&[], &o, "00000").unwrap().is_empty());
    assert!(write_partition(&[batch(&[])], &o, "00000")
        .unwrap()
        .is_empty());
    assert!(!dest.exists());

    // A task run twice (e.g. after a lost worker) stages the same paths; the last wins.
    let rows = task_rows(0, 30);
    let first = write_partition(&[batch(&rows)], &o, "00007").unwrap();
    let again = write_partition(&[batch(&rows)], &o, "00007").unwrap();
    assert_eq!(
        first.iter().map(|s| &s.temp_path).collect::<Vec<_>>(),
        again.iter().map(|s| &s.temp_path).collect::<Vec<_>>()
    );
    // No in-progress files are left behind.
    for s in &again {
        let dir = Path::new(&s.temp_path).parent().unwrap();
        assert_eq!(fs::read_dir(dir).unwrap().count(), 1, "{}", dir.display());
    }
    assert_eq!(commit(&o, &again).unwrap(), (30, 3));
    assert_eq!(sorted(rows_of(&read_back(&dest))), sorted(rows));
}

#[test]
fn commit_refuses_foreign_or_missing_staged_files() {
    let tmp = TempDir::new("foreign");
    let dest = tmp.join("ds");
    let o = opts(&dest, &["year"], "j", false);
    let staged = write_partition(&[batch(&task_rows(0, 10))], &o, "00000").unwrap();

    let victim = tmp.join("victim.parquet");
    fs::write(&victim, b"not mine").unwrap();
    let mut bad = staged.clone();
    bad[0].temp_path = victim.display().to_string();
    let err = commit(&o, &bad).unwrap_err().to_string();
    assert!(err.contains("not under"), "{err}");
    assert!(victim.is_file());

    let mut bad = staged.clone();
    bad[0].final_path = tmp.join("elsewhere.parquet").display().to_string();
    assert!(commit(&o, &bad).is_err());

    // Nothing moved: the real commit still works.
    let mut missing = staged.clone();
    missing[0].temp_path = missing[0].temp_path.replace("part-00000", "part-99999");
    missing[0].final_path = missing[0].final_path.replace("part-00000", "part-99999");
    let err = commit(&o, &missing).unwrap_err().to_string();
    assert!(err.contains("does not exist"), "{err}");
    assert!(!dest.join("_SUCCESS").exists());
    assert_eq!(commit(&o, &staged).unwrap(), (10, staged.len()));
}

#[test]
fn duckdb_reads_the_committed_dataset() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import duckdb"])
        .output();
    assert!(
        probe.map(|o| o.status.success()).unwrap_or(false),
        "this test needs python3 with duckdb (pip install duckdb==2.0.1)"
    );
    let tmp = TempDir::new("duckdb");
    let dest = tmp.join("ds");
    let o = opts(&dest, &["year", "month"], "duck", false);
    let (rows, staged) = write_tasks(&o, 2, 300);
    commit(&o, &staged).unwrap();

    let expected_count = rows.len();
    let expected_temp: f64 = rows.iter().filter_map(|r| r.3).sum();
    let expected_year: i64 = rows.iter().map(|r| i64::from(r.0)).sum();
    let expected_month: i64 = rows.iter().map(|r| i64::from(r.1)).sum();
    let glob = format!("{}/**/*.parquet", dest.display());
    let script = format!(
        "import duckdb\n\
         r = duckdb.sql(\"SELECT count(*), sum(temp), sum(year), sum(month), count(DISTINCT station) \
         FROM read_parquet('{glob}', hive_partitioning=true)\").fetchall()[0]\n\
         print(r[0], repr(r[1]), r[2], r[3], r[4])\n"
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "duckdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let parts: Vec<&str> = text.split_whitespace().collect();
    assert_eq!(parts.len(), 5, "{text}");
    assert_eq!(parts[0].parse::<usize>().unwrap(), expected_count);
    let temp: f64 = parts[1].parse().unwrap();
    assert!(
        (temp - expected_temp).abs() < 1e-6 * expected_temp.abs(),
        "{temp} vs {expected_temp}"
    );
    assert_eq!(parts[2].parse::<i64>().unwrap(), expected_year);
    assert_eq!(parts[3].parse::<i64>().unwrap(), expected_month);
    assert_eq!(parts[4], "7");

    // A string partition value with '/' decodes in DuckDB too.
    let dest2 = tmp.join("ds2");
    let o2 = opts(&dest2, &["station"], "duck2", false);
    let rows2: Vec<Row> = vec![(2008, 1, "a/b=c".into(), Some(1.0), 0)];
    let staged = write_partition(&[batch(&rows2)], &o2, "00000").unwrap();
    commit(&o2, &staged).unwrap();
    let script = format!(
        "import duckdb\n\
         print(duckdb.sql(\"SELECT station FROM read_parquet('{}/**/*.parquet', hive_partitioning=true)\").fetchall()[0][0])\n",
        dest2.display()
    );
    let out = std::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "a/b=c");
}

/// In a child process (the test binary run again, see
/// `an_overwrite_crashed_at_any_point_leaves_the_old_or_the_new_dataset_whole`):
/// stage and commit the overwrite described by the environment, aborting at
/// the failpoint `STRATUS_FAILPOINTS` names.
#[test]
fn crash_child_commit() {
    let Ok(dest) = std::env::var("STRATUS_TEST_CRASH_DEST") else {
        return; // run by the parent test only
    };
    let o = opts(Path::new(&dest), &["year", "month"], "crashing", true);
    let rows: Vec<Row> = (0..50)
        .map(|i| (2020, 7, "NEW".to_string(), Some(i as f64), i))
        .collect();
    let staged = write_partition(&[batch(&rows)], &o, "00000").unwrap();
    commit(&o, &staged).unwrap();
}

#[test]
fn an_overwrite_crashed_at_any_point_leaves_the_old_or_the_new_dataset_whole() {
    for (point, new_wins) in [
        ("write.commit.before_swap", false),
        ("write.commit.after_swap", true),
    ] {
        let tmp = TempDir::new("crash");
        let dest = tmp.join("ds");
        let first = opts(&dest, &["year", "month"], "old", false);
        let (_, staged) = write_tasks(&first, 2, 100);
        commit(&first, &staged).unwrap();
        let old_rows = sorted(rows_of(&read_back(&dest)));
        assert_eq!(old_rows.len(), 200);

        let status = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "crash_child_commit",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("STRATUS_TEST_CRASH_DEST", &dest)
            .env("STRATUS_FAILPOINTS", point)
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&status.stderr);
        assert!(
            !status.status.success() && stderr.contains(&format!("failpoint {point}")),
            "the child did not crash at {point}: {stderr}"
        );
        // The destination holds one whole dataset: the old or the new.
        assert!(dest.join("_SUCCESS").is_file(), "{point}: no _SUCCESS");
        let now = sorted(rows_of(&read_back(&dest)));
        if new_wins {
            assert_eq!(now.len(), 50, "{point}");
            assert!(now.iter().all(|r| r.2 == "NEW"), "{point}");
        } else {
            assert_eq!(now, old_rows, "{point}");
        }
        // The next overwrite succeeds and removes what the crash left next to it.
        let again = opts(&dest, &["year", "month"], "again", true);
        check_destination(&again).unwrap();
        let staged = write_partition(&[batch(&task_rows(3, 30))], &again, "00000").unwrap();
        commit(&again, &staged).unwrap();
        assert_eq!(rows_of(&read_back(&dest)).len(), 30);
        let siblings: Vec<String> = fs::read_dir(&tmp.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(siblings, vec!["ds".to_string()], "{point}");
        assert!(!dest.join("_temporary").exists(), "{point}");
    }
}
