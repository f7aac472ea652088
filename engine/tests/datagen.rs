//! Integration tests of `stratus_engine::datagen`: determinism, row counts, layout, and
//! that the generated files read back through `scan`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, TimestampMicrosecondType};
use arrow_array::Array;
use arrow_schema::{DataType, TimeUnit};
use stratus_engine::datagen::{generate_isd, DatagenOptions};
use stratus_engine::scan::{
    check_schemas, list_files, plan_partitions, read_footer, read_partition,
};

/// A unique temporary directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "stratus-engine-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// All files under `dir`, relative path -> bytes, sorted.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let files = list_files(dir.to_str().unwrap()).unwrap();
    files
        .iter()
        .map(|f| {
            let rel = Path::new(&f.path).strip_prefix(dir).unwrap();
            (rel.display().to_string(), fs::read(&f.path).unwrap())
        })
        .collect()
}

#[test]
fn same_seed_same_bytes() {
    let t = TempDir::new("datagen");
    let gen = |name: &str, seed: u64| {
        let out = t.0.join(name);
        let s = generate_isd(&DatagenOptions {
            rows: 20_000,
            out: out.clone(),
            seed,
        })
        .unwrap();
        (s, snapshot(&out))
    };
    let (s1, a) = gen("a", 7);
    let (s2, b) = gen("b", 7);
    let (_, c) = gen("c", 8);
    assert_eq!(s1, s2);
    assert_eq!(s1.rows, 20_000);
    assert_eq!(s1.files, 144);
    assert_eq!(s1.bytes, a.iter().map(|f| f.1.len() as u64).sum::<u64>());
    assert_eq!(a.len(), 144);
    assert!(a == b, "same seed gave different bytes");
    assert!(a != c, "different seeds gave the same bytes");
    assert!(
        a[0].0.ends_with("year=2008/month=1/part-00000.parquet"),
        "{}",
        a[0].0
    );
}

#[test]
fn generated_data_reads_back() {
    let t = TempDir::new("datagen-read");
    let rows = 150_000u64;
    let s = generate_isd(&DatagenOptions {
        rows,
        out: t.0.clone(),
        seed: 1,
    })
    .unwrap();
    assert_eq!(s.files, 144);
    let files = list_files(t.0.to_str().unwrap()).unwrap();
    let footers: Vec<_> = files.iter().map(|f| read_footer(f).unwrap()).collect();
    assert_eq!(footers.iter().map(|f| f.num_rows).sum::<u64>(), rows);
    assert!(footers.iter().all(|f| f.num_rows >= rows / 144));
    let schema = check_schemas(&footers).unwrap();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    assert_eq!(
        names,
        vec![
            "usaf",
            "wban",
            "datetime",
            "latitude",
            "longitude",
            "elevation",
            "windAngle",
            "windSpeed",
            "temperature",
            "seaLvlPressure",
            "cloudCoverage",
            "presentWeatherIndicator",
            "pastWeatherIndicator",
            "precipTime",
            "precipDepth",
            "snowDepth",
            "stationName",
            "countryOrRegion",
            "p_k",
            "year",
            "day",
            "version",
            "month"
        ]
    );
    assert_eq!(
        schema.field(2).data_type(),
        &DataType::Timestamp(TimeUnit::Microsecond, None)
    );

    // Read one whole partition (2019-02) and check values against its path.
    let parts = plan_partitions(&footers, 1 << 30, 1);
    let feb = parts
        .iter()
        .find(|p| p.hive == vec![("year".into(), "2019".into()), ("month".into(), "2".into())])
        .unwrap();
    let batches = read_partition(feb, None, None).unwrap();
    let mut n = 0;
    for b in &batches {
        n += b.num_rows();
        let day = b.column(20).as_primitive::<Int32Type>();
        assert!(day.values().iter().all(|&d| (1..=28).contains(&d)));
        let ts = b.column(2).as_primitive::<TimestampMicrosecondType>();
        // 2019-02-01 and 2019-03-01 in microseconds since the epoch.
        assert!(ts
            .values()
            .iter()
            .all(|&v| (1_548_979_200_000_000..1_551_398_400_000_000).contains(&v)));
        let temp = b.column(8);
        assert!(temp.null_count() > 0 && temp.null_count() < temp.len() / 10);
        let pk = b.column(18).as_any_dictionary();
        let s = pk
            .values()
            .as_string::<i32>()
            .value(pk.normalized_keys()[0]);
        assert_eq!(s.len(), 12);
    }
    assert_eq!(n as u64, feb.rows);

    // Few rows: only non-empty partitions are written, stale files of the run above go.
    let s = generate_isd(&DatagenOptions {
        rows: 100,
        out: t.0.clone(),
        seed: 1,
    })
    .unwrap();
    assert_eq!(list_files(t.0.to_str().unwrap()).unwrap().len(), 100);
    assert_eq!((s.rows, s.files), (100, 100));
}
