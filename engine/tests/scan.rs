//! Integration tests of `stratus_engine::scan` on small hand-made files and on the pyarrow
//! fixture (INT96 timestamps, `year` in files and paths, `month` only in paths).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int32Type, TimestampNanosecondType};
use arrow_array::{Array, ArrayRef, Float64Array, Int32Array, RecordBatch, StringArray};
use arrow_schema::{DataType, TimeUnit};
use parquet::arrow::ArrowWriter;
use parquet::file::properties::WriterProperties;
use stratus_engine::scan::{
    check_schemas, list_files, list_files_guarded, plan_partitions, read_footer, read_partition,
    FileFooter,
};
use stratus_plan::{FileRef, ParquetPartition, RowGroupMeta};

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
            "stratus-engine-{tag}-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
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

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/isd-pyarrow")
}

/// Write `batch` to `path` (creating parents) with row groups of `rg_rows` rows.
fn write_parquet(path: &Path, batch: &RecordBatch, rg_rows: usize) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let props = WriterProperties::builder()
        .set_max_row_group_row_count(Some(rg_rows))
        .build();
    let file = fs::File::create(path).unwrap();
    let mut w = ArrowWriter::try_new(file, batch.schema(), Some(props)).unwrap();
    w.write(batch).unwrap();
    w.close().unwrap();
}

/// A small weather batch: `year` (int32), `temperature` (float64), `station` (string).
fn weather(n: usize, year: i32) -> RecordBatch {
    let year: ArrayRef = Arc::new(Int32Array::from_value(year, n));
    let temp: ArrayRef = Arc::new(Float64Array::from_iter(
        (0..n).map(|i| (i % 7 != 0).then_some(i as f64 / 10.0)),
    ));
    let station: ArrayRef = Arc::new(StringArray::from_iter_values(
        (0..n).map(|i| format!("st{}", i % 5)),
    ));
    RecordBatch::try_from_iter([("year", year), ("temperature", temp), ("station", station)])
        .unwrap()
}

fn p(s: &Path) -> String {
    s.to_str().unwrap().to_string()
}

fn whole(file: &FileRef) -> ParquetPartition {
    let footer = read_footer(file).unwrap();
    ParquetPartition {
        file_size: 0,
        more: Vec::new(),
        path: file.path.clone(),
        row_group_start: 0,
        row_group_end: footer.row_groups.len() as u32,
        rows: footer.num_rows,
        hive: file.hive.clone(),
    }
}

fn total_rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

#[test]
fn lists_directories_and_globs() {
    let t = TempDir::new("list");
    for m in [1, 2, 10] {
        write_parquet(
            &t.join(&format!("year=2008/month={m}/part-0.parquet")),
            &weather(10, 2008),
            100,
        );
    }
    fs::write(t.join("_SUCCESS"), b"").unwrap();
    fs::write(t.join("year=2008/.hidden.parquet"), b"x").unwrap();
    fs::write(t.join("year=2008/notes.txt"), b"x").unwrap();
    write_parquet(&t.join("_temporary/part-9.parquet"), &weather(1, 2008), 10);
    write_parquet(
        &t.join("year=2008/month=3/_part-9.parquet"),
        &weather(1, 2008),
        10,
    );

    let dir = list_files(&p(t.path())).unwrap();
    let months: Vec<&str> = dir.iter().map(|f| f.hive[1].1.as_str()).collect();
    assert_eq!(months, vec!["1", "2", "10"], "natural order: {dir:?}");
    assert_eq!(
        dir[0].hive,
        vec![
            ("year".to_string(), "2008".to_string()),
            ("month".to_string(), "1".to_string())
        ]
    );
    assert!(dir.iter().all(|f| f.size > 0));

    let glob = list_files(&format!("{}/year=*/month=*/*.parquet", p(t.path()))).unwrap();
    assert_eq!(glob, dir);
    let glob_dirs = list_files(&format!("{}/year=*", p(t.path()))).unwrap();
    assert_eq!(glob_dirs, dir);

    let single = list_files(&dir[2].path).unwrap();
    assert_eq!(single, vec![dir[2].clone()]);
}

#[test]
fn nothing_matching_is_an_error() {
    let t = TempDir::new("nomatch");
    let missing = p(&t.join("nope"));
    let e = list_files(&missing).unwrap_err().to_string();
    assert!(e.contains(&missing) && e.contains("does not exist"), "{e}");

    let pattern = format!("{}/*.parquet", p(t.path()));
    let e = list_files(&pattern).unwrap_err().to_string();
    assert_eq!(e, format!("no Parquet files match '{pattern}'"));

    fs::write(t.join("readme.txt"), b"x").unwrap();
    let e = list_files(&p(t.path())).unwrap_err().to_string();
    assert!(e.starts_with("no Parquet files match"), "{e}");
}

#[test]
fn bad_files_name_the_file() {
    let t = TempDir::new("bad");
    let text = t.join("text.parquet");
    fs::write(&text, b"this is certainly not a parquet file").unwrap();
    let files = list_files(&p(t.path())).unwrap();
    let e = read_footer(&files[0]).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("file {}: not a Parquet file", p(&text))),
        "{e}"
    );

    let good = t.join("good.parquet");
    write_parquet(&good, &weather(1000, 2008), 100);
    let bytes = fs::read(&good).unwrap();
    let cut = t.join("cut.parquet");
    fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let file = list_files(&p(&cut)).unwrap().remove(0);
    let e = read_footer(&file).unwrap_err().to_string();
    assert!(
        e.starts_with(&format!("file {}: truncated", p(&cut))),
        "{e}"
    );
    let spec = ParquetPartition {
        file_size: 0,
        more: Vec::new(),
        path: p(&cut),
        row_group_start: 0,
        row_group_end: 1,
        rows: 100,
        hive: vec![],
    };
    let e = read_partition(&spec, None, None).unwrap_err().to_string();
    assert!(e.contains(&p(&cut)) && e.contains("truncated"), "{e}");

    let empty = t.join("empty.parquet");
    fs::write(&empty, b"").unwrap();
    let file = list_files(&p(&empty)).unwrap().remove(0);
    let e = read_footer(&file).unwrap_err().to_string();
    assert!(
        e.contains(&p(&empty)) && e.contains("not a Parquet file"),
        "{e}"
    );

    // A row-group range beyond the file.
    let file = list_files(&p(&good)).unwrap().remove(0);
    let mut spec = whole(&file);
    spec.row_group_end += 1;
    let e = read_partition(&spec, None, None).unwrap_err().to_string();
    assert!(e.contains(&p(&good)) && e.contains("out of range"), "{e}");
}

#[test]
fn schema_disagreement_names_file_and_field() {
    let t = TempDir::new("schema");
    write_parquet(&t.join("a.parquet"), &weather(5, 2008), 10);
    let int_temp = RecordBatch::try_from_iter([
        ("year", Arc::new(Int32Array::from(vec![2008])) as ArrayRef),
        (
            "temperature",
            Arc::new(Int32Array::from(vec![12])) as ArrayRef,
        ),
        (
            "station",
            Arc::new(StringArray::from(vec!["x"])) as ArrayRef,
        ),
    ])
    .unwrap();
    write_parquet(&t.join("b.parquet"), &int_temp, 10);
    let footers: Vec<FileFooter> = list_files(&p(t.path()))
        .unwrap()
        .iter()
        .map(|f| read_footer(f).unwrap())
        .collect();
    let e = check_schemas(&footers).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "file {}: schema differs from {}: field 'temperature' is Float64 there but Int32 here",
            p(&t.join("b.parquet")),
            p(&t.join("a.parquet"))
        )
    );
    let ok = check_schemas(&footers[..1]).unwrap();
    assert_eq!(
        ok.field(2).data_type(),
        &DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
    );
}

#[test]
fn year_in_path_and_file_must_agree() {
    let t = TempDir::new("year");
    let bad = t.join("year=2008/bad.parquet");
    write_parquet(&bad, &weather(10, 2009), 100);
    let file = list_files(&p(&bad)).unwrap().remove(0);
    let spec = whole(&file);
    let e = read_partition(&spec, None, None).unwrap_err().to_string();
    assert_eq!(
        e,
        format!(
            "file {}: column 'year' holds 2009 but its path says year=2008",
            p(&bad)
        )
    );
    // Also when `year` is not projected.
    let cols = vec!["temperature".to_string()];
    assert!(read_partition(&spec, Some(&cols), None).is_err());

    let good = t.join("year=2009/good.parquet");
    write_parquet(&good, &weather(10, 2009), 100);
    let file = list_files(&p(&good)).unwrap().remove(0);
    let footer = read_footer(&file).unwrap();
    // `year` is a file column: kept once, with the file's type.
    assert_eq!(footer.schema.fields().len(), 3);
    let batches = read_partition(&whole(&file), None, None).unwrap();
    assert_eq!(total_rows(&batches), 10);
}

#[test]
fn hive_columns_projection_and_limit() {
    let t = TempDir::new("hive");
    let f = t.join("year=2008/month=7/region=eu-west/part.parquet");
    write_parquet(&f, &weather(1000, 2008), 300);
    let file = list_files(&p(t.path())).unwrap().remove(0);
    let footer = read_footer(&file).unwrap();
    assert_eq!(footer.num_rows, 1000);
    assert_eq!(footer.row_groups.len(), 4);
    let names: Vec<&str> = footer
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(
        names,
        vec!["year", "temperature", "station", "month", "region"]
    );
    assert_eq!(footer.schema.field(3).data_type(), &DataType::Int32);
    assert!(matches!(
        footer.schema.field(4).data_type(),
        DataType::Dictionary(_, _)
    ));

    let spec = whole(&file);
    let batches = read_partition(&spec, None, None).unwrap();
    assert_eq!(total_rows(&batches), 1000);
    assert_eq!(batches[0].schema(), footer.schema);
    let month = batches[0].column(3).as_primitive::<Int32Type>();
    assert!(month.values().iter().all(|&m| m == 7));
    let region = batches[0].column(4).as_any_dictionary();
    assert_eq!(region.values().as_string::<i32>().value(0), "eu-west");

    // Projection in the requested order, hive and file columns mixed.
    let cols = vec![
        "region".to_string(),
        "temperature".to_string(),
        "month".to_string(),
    ];
    let batches = read_partition(&spec, Some(&cols), None).unwrap();
    let names: Vec<String> = batches[0]
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    assert_eq!(names, cols);
    assert_eq!(total_rows(&batches), 1000);
    let nulls: usize = batches.iter().map(|b| b.column(1).null_count()).sum();
    assert_eq!(nulls, 143);

    // Only hive columns.
    let cols = vec!["month".to_string()];
    let batches = read_partition(&spec, Some(&cols), Some(5)).unwrap();
    assert_eq!(total_rows(&batches), 5);

    // Unknown column.
    let cols = vec!["temperature".to_string(), "humidity".to_string()];
    let e = read_partition(&spec, Some(&cols), None)
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with(&format!("file {}: no column named 'humidity'", p(&f))),
        "{e}"
    );

    // Limit, and a row-group range.
    let batches = read_partition(&spec, None, Some(10)).unwrap();
    assert_eq!(total_rows(&batches), 10);
    assert!(read_partition(&spec, None, Some(0)).unwrap().is_empty());
    let mid = ParquetPartition {
        file_size: 0,
        more: Vec::new(),
        row_group_start: 1,
        row_group_end: 3,
        rows: 600,
        ..spec.clone()
    };
    let batches = read_partition(&mid, None, None).unwrap();
    assert_eq!(total_rows(&batches), 600);
    let temp = batches[0].column(1).as_primitive::<Float64Type>();
    assert_eq!(temp.value(0), 30.0); // row 300
                                     // Strings come as dictionaries.
    assert!(matches!(
        batches[0].column(2).data_type(),
        DataType::Dictionary(_, _)
    ));
}

fn footer(path: &str, rgs: &[u64]) -> FileFooter {
    FileFooter {
        file: FileRef {
            path: path.into(),
            size: 0,
            hive: vec![],
        },
        num_rows: rgs.len() as u64 * 10,
        row_groups: rgs
            .iter()
            .map(|&b| RowGroupMeta {
                rows: 10,
                uncompressed_bytes: b,
            })
            .collect(),
        schema: Arc::new(arrow_schema::Schema::empty()),
    }
}

fn ranges(parts: &[ParquetPartition]) -> Vec<(String, u32, u32)> {
    parts
        .iter()
        .map(|p| (p.path.clone(), p.row_group_start, p.row_group_end))
        .collect()
}

#[test]
fn plans_partitions() {
    let footers = vec![footer("a", &[100; 10]), footer("b", &[50, 50])];
    let parts = plan_partitions(&footers, 350, 1);
    assert_eq!(
        ranges(&parts),
        vec![
            ("a".into(), 0, 3),
            ("a".into(), 3, 6),
            ("a".into(), 6, 9),
            ("a".into(), 9, 10),
            ("b".into(), 0, 2),
        ]
    );
    assert_eq!(parts[0].rows, 30);
    assert_eq!(parts.iter().map(|p| p.rows).sum::<u64>(), 120);

    // Big target: whole files, then split the largest until there are enough.
    let parts = plan_partitions(&footers, 1 << 30, 2);
    assert_eq!(
        ranges(&parts),
        vec![("a".into(), 0, 10), ("b".into(), 0, 2)]
    );
    let parts = plan_partitions(&footers, 1 << 30, 4);
    assert_eq!(
        ranges(&parts),
        vec![
            ("a".into(), 0, 2),
            ("a".into(), 2, 5),
            ("a".into(), 5, 10),
            ("b".into(), 0, 2),
        ]
    );
    // Cannot split beyond one row group each.
    let parts = plan_partitions(&footers, 1 << 30, 100);
    assert_eq!(parts.len(), 12);
    assert!(parts
        .iter()
        .all(|p| p.row_group_end - p.row_group_start == 1));
    // Deterministic.
    assert_eq!(
        plan_partitions(&footers, 1 << 30, 7),
        plan_partitions(&footers, 1 << 30, 7)
    );
    assert!(plan_partitions(&[], 100, 4).is_empty());
}

#[test]
fn reads_the_pyarrow_fixture() {
    let root = fixture();
    let files = list_files(&p(&root)).unwrap();
    assert_eq!(files.len(), 144);
    assert_eq!(
        files[0].hive,
        vec![("year".into(), "2008".into()), ("month".into(), "1".into())]
    );
    assert_eq!(files[1].hive[1].1, "2");
    let glob = list_files(&format!("{}/year=*/month=*/*.parquet", p(&root))).unwrap();
    assert_eq!(glob, files);

    let footers: Vec<FileFooter> = files.iter().map(|f| read_footer(f).unwrap()).collect();
    assert_eq!(footers.iter().map(|f| f.num_rows).sum::<u64>(), 60_000);
    let schema = check_schemas(&footers).unwrap();
    assert_eq!(schema.fields().len(), 23);
    assert_eq!(schema.field(0).name(), "usaf");
    assert_eq!(
        schema.field(2).data_type(),
        &DataType::Timestamp(TimeUnit::Nanosecond, None),
        "INT96 reads as nanoseconds"
    );
    assert_eq!(schema.field(19).name(), "year");
    assert_eq!(schema.field(19).data_type(), &DataType::Int32);
    assert_eq!(schema.field(22).name(), "month");
    assert!(!schema.field(22).is_nullable());

    let parts = plan_partitions(&footers, 64 << 20, 2);
    assert_eq!(parts.len(), 144);
    let mut rows = 0;
    let mut wind = 0;
    for part in &parts {
        let batches = read_partition(part, None, None).unwrap();
        for b in &batches {
            assert_eq!(b.schema(), schema.clone().as_ref().clone().into());
            rows += b.num_rows();
            wind += b.column(6).len() - b.column(6).null_count();
            // Timestamps fall inside the partition's year and month.
            let year: i64 = part.hive[0].1.parse().unwrap();
            let ts = b.column(2).as_primitive::<TimestampNanosecondType>();
            let secs = ts.value(0).div_euclid(1_000_000_000);
            let days = secs.div_euclid(86_400);
            let approx_year = 1970 + days * 400 / 146_097;
            assert!((approx_year - year).abs() <= 1, "{approx_year} vs {year}");
        }
    }
    assert_eq!(rows, 60_000);
    assert_eq!(
        wind, 47_412,
        "windAngle count from isd-pyarrow.describe.json"
    );

    let head = read_partition(
        &parts[0],
        Some(&["p_k".to_string(), "month".to_string()]),
        Some(5),
    )
    .unwrap();
    assert_eq!(total_rows(&head), 5);
    let pk = head[0].column(0).as_any_dictionary();
    let key = pk.normalized_keys()[0];
    let s = pk.values().as_string::<i32>().value(key);
    assert_eq!(s.len(), 12, "usaf-wban: {s}");
}

#[test]
fn file_urls_read_and_other_schemes_are_refused_clearly() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/fixtures/isd-pyarrow");
    let files = list_files(&format!("file://{fixture}")).unwrap();
    assert_eq!(files.len(), 144);
    // Object stores are the worker's storage layer's, never local paths.
    let err = list_files("s3://bucket/isd/").unwrap_err().to_string();
    assert!(
        err.contains("s3://bucket/isd/") && err.contains("not a local source"),
        "{err}"
    );
}

/// The guard sees every directory before it is listed and every link before
/// it is followed: refusing one stops the listing with the guard's error,
/// and globs match as the `glob` crate does.
#[test]
fn the_guard_is_asked_before_anything_is_listed_or_followed() {
    let t = TempDir::new("guard");
    let inside = t.path().join("inside");
    let outside = t.path().join("outside");
    for dir in [
        "year=2008/month=1",
        "year=2008/month=2",
        "year=2009/month=1",
    ] {
        fs::create_dir_all(inside.join(dir)).unwrap();
        fs::write(inside.join(dir).join("a.parquet"), b"PAR1").unwrap();
    }
    fs::create_dir_all(&outside).unwrap();
    fs::write(outside.join("secret.parquet"), b"PAR1").unwrap();
    let seen = std::cell::RefCell::new(Vec::new());
    let guard = |path: &Path| -> stratus_engine::error::Result<()> {
        seen.borrow_mut().push(path.to_path_buf());
        if path.canonicalize().is_ok_and(|c| c.starts_with(&outside)) {
            return Err(stratus_engine::error::EngineError::Argument(format!(
                "{} refused",
                path.display()
            )));
        }
        Ok(())
    };
    // Globs: the same answers as before.
    let pattern = format!("{}/year=*/month=*/*.parquet", p(&inside));
    assert_eq!(
        list_files_guarded(&pattern, &guard).unwrap(),
        list_files(&pattern).unwrap()
    );
    assert_eq!(list_files_guarded(&pattern, &guard).unwrap().len(), 3);
    let deep = format!("{}/**/*.parquet", p(&inside));
    assert_eq!(list_files_guarded(&deep, &guard).unwrap().len(), 3);
    let one = format!("{}/year=2008/month=[2-9]/a.parquet", p(&inside));
    assert_eq!(list_files_guarded(&one, &guard).unwrap().len(), 1);
    // `..` after a wildcard is refused outright.
    let climb = format!("{}/*/../../outside/*.parquet", p(&inside));
    let e = list_files_guarded(&climb, &guard).unwrap_err().to_string();
    assert!(e.contains("'..'"), "{e}");
    // A link inside leading outside: refused before it is listed.
    std::os::unix::fs::symlink(&outside, inside.join("year=2010")).unwrap();
    seen.borrow_mut().clear();
    for source in [
        p(&inside),
        pattern.clone(),
        format!("{}/year=2010/*", p(&inside)),
    ] {
        let e = list_files_guarded(&source, &guard).unwrap_err().to_string();
        assert!(
            e.contains("year=2010") && e.contains("refused"),
            "{source}: {e}"
        );
    }
    assert!(
        !seen.borrow().iter().any(|s| s.ends_with("secret.parquet")),
        "a file behind the refused link was examined: {:?}",
        seen.borrow()
    );
}

/// Every (file, row group start, end) a plan reads, in order.
fn pieces(parts: &[ParquetPartition]) -> Vec<(String, u32, u32)> {
    parts
        .iter()
        .flat_map(|p| p.files())
        .map(|p| (p.path, p.row_group_start, p.row_group_end))
        .collect()
}

#[test]
fn many_small_files_are_grouped_into_partitions() {
    use stratus_engine::scan::{GROUP_FILES_OVER, MAX_GROUP_FILES};
    // Up to GROUP_FILES_OVER files: one partition per file, as before.
    let few: Vec<FileFooter> = (0..GROUP_FILES_OVER)
        .map(|i| footer(&format!("f{i:05}"), &[10]))
        .collect();
    let parts = plan_partitions(&few, 1 << 20, 2);
    assert_eq!(parts.len(), GROUP_FILES_OVER);
    assert!(parts.iter().all(|p| p.more.is_empty()));

    // More: consecutive whole files share a partition up to the target bytes, in order.
    let n = 3000;
    let mut many: Vec<FileFooter> = (0..n).map(|i| footer(&format!("f{i:05}"), &[10])).collect();
    // A big file (split by row groups) and a file of other hive keys stay apart.
    many[1500] = footer("big", &[600, 600]);
    many[2000].file.hive = vec![("k".into(), "v".into())];
    let parts = plan_partitions(&many, 1000, 1);
    let expected: Vec<(String, u32, u32)> = many
        .iter()
        .flat_map(|f| {
            if f.file.path == "big" {
                vec![("big".to_string(), 0, 1), ("big".to_string(), 1, 2)]
            } else {
                vec![(f.file.path.clone(), 0, 1)]
            }
        })
        .collect();
    assert_eq!(pieces(&parts), expected, "every row group once, in order");
    assert_eq!(
        parts.iter().map(|p| p.rows).sum::<u64>(),
        10 * (n as u64 + 1)
    );
    for p in &parts {
        let files = p.files();
        assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), p.rows);
        assert!(files.len() <= 100, "at most 1000 bytes: {}", files.len());
        assert!(files.iter().all(|f| f.more.is_empty()));
    }
    let with = |path: &str| {
        parts
            .iter()
            .find(|p| p.files().iter().any(|f| f.path == path))
            .unwrap()
    };
    assert_eq!(with("f00000").more.len(), 99);
    assert!(with("big").more.is_empty());
    assert_eq!(
        with("f02000").files().len(),
        1,
        "other hive keys: {:?}",
        with("f02000")
    );
    assert_eq!(with("f02001").path, "f02001");

    // Groups stop at MAX_GROUP_FILES files, and split again for min_partitions.
    let parts = plan_partitions(&many, 1 << 30, 1);
    assert!(parts.iter().all(|p| p.files().len() <= MAX_GROUP_FILES));
    assert_eq!(parts[0].files().len(), MAX_GROUP_FILES);
    let split = plan_partitions(&many[..1200], 1 << 30, 8);
    assert_eq!(split.len(), 8);
    assert_eq!(
        pieces(&split),
        pieces(&plan_partitions(&many[..1200], 1, 1))
    );
    // Deterministic.
    assert_eq!(
        plan_partitions(&many, 1000, 3),
        plan_partitions(&many, 1000, 3)
    );
}

#[test]
fn grouped_files_read_as_their_files_one_after_the_other() {
    let t = TempDir::new("grouped");
    // Three files of two months (month only in the path), of 25, 40 and 7 rows, the
    // middle one in row groups of 16.
    let specs: Vec<(String, usize, usize)> = vec![
        ("year=2008/month=1/a.parquet".into(), 25, 100),
        ("year=2008/month=1/b.parquet".into(), 40, 16),
        ("year=2008/month=2/c.parquet".into(), 7, 100),
    ];
    for (rel, n, rg) in &specs {
        write_parquet(&t.join(rel), &weather(*n, 2008), *rg);
    }
    let files = list_files(&p(t.path())).unwrap();
    let singles: Vec<ParquetPartition> = files.iter().map(whole).collect();
    let mut grouped = singles[0].clone();
    for s in &singles[1..] {
        grouped.rows += s.rows;
        grouped.more.push(stratus_plan::FilePart {
            path: s.path.clone(),
            row_group_start: s.row_group_start,
            row_group_end: s.row_group_end,
            rows: s.rows,
            hive: s.hive.clone(),
            file_size: s.file_size,
        });
    }
    assert_eq!(grouped.files(), singles);

    let one_by_one: Vec<RecordBatch> = singles
        .iter()
        .flat_map(|s| read_partition(s, None, None).unwrap())
        .collect();
    let batches = read_partition(&grouped, None, None).unwrap();
    assert_eq!(batches.len(), 1, "small files' batches joined");
    let schema = batches[0].schema();
    let expected = arrow_select::concat::concat_batches(&schema, &one_by_one).unwrap();
    assert_eq!(batches[0], expected);
    // The hive values of each row are its file's.
    let month = batches[0]
        .column_by_name("month")
        .unwrap()
        .as_primitive::<Int32Type>();
    let months: Vec<i32> = month.values().to_vec();
    assert_eq!(months, [vec![1; 65], vec![2; 7]].concat());

    // A projection and a limit across files.
    let cols = vec!["month".to_string(), "temperature".to_string()];
    let limited = read_partition(&grouped, Some(&cols), Some(30)).unwrap();
    assert_eq!(total_rows(&limited), 30);
    let limited = arrow_select::concat::concat_batches(&limited[0].schema(), &limited).unwrap();
    let projected = expected.project(&[3, 1]).unwrap();
    assert_eq!(limited.column(0), &projected.column(0).slice(0, 30));
    assert_eq!(limited.column(1), &projected.column(1).slice(0, 30));
    assert!(read_partition(&grouped, None, Some(0)).unwrap().is_empty());

    // An error names the file at fault, not the partition's first.
    fs::write(t.join("year=2008/month=2/c.parquet"), b"PAR1 no more").unwrap();
    let e = read_partition(&grouped, None, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("c.parquet"), "{e}");
}
