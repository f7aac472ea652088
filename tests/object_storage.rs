//! Object storage through the `stratus` CLI against `stratus local`
//! clusters: Azure Blob on Azurite and S3 on moto (both started here on free
//! loopback ports, see tests/common/objstore.rs). Sample data comes from
//! `stratus datagen`, is uploaded with independent Python clients
//! (azure-storage-blob, boto3), and what Stratus writes is read back with
//! them (and pyarrow's S3FileSystem); DuckDB on the same files is the oracle.
//!
//! The cluster gets the emulator's settings through the environment
//! (`Azurite::worker_env`, `Moto::worker_env`); a few commands override them
//! with `--storage-option KEY=VALUE` (object_store's key names).

mod common;

use common::cluster::drop_at_exit;
use common::duckdb::{duckdb, python};
use common::objstore::{env_refs, Azurite, Moto, Object, ThrottledProxy};
use common::*;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The sample: `stratus datagen isd` (1,200,000 rows, seed 5) cut down to
/// years 2018 and 2019 (24 hive partitions `year=Y/month=M/part-00000.parquet`,
/// 199,992 rows: 8,333 a month), generated once per test binary.
struct Data {
    dir: PathBuf,
    /// Its rows, counted by DuckDB.
    rows: u64,
}

const YEARS: [&str; 2] = ["year=2018", "year=2019"];

fn data() -> &'static Data {
    static DATA: OnceLock<Data> = OnceLock::new();
    DATA.get_or_init(|| {
        let tmp = TempDir::new("objstore-data");
        let full = tmp.path().join("full");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratus"))
            .args([
                "datagen", "isd", "--rows", "1200000", "--seed", "5", "--out",
            ])
            .arg(&full)
            .output()
            .expect("run stratus datagen");
        assert!(out.status.success(), "stratus datagen: {}", stderr(&out));
        let dir = tmp.path().join("sample");
        for year in YEARS {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::rename(full.join(year), dir.join(year)).unwrap();
        }
        std::fs::remove_dir_all(&full).unwrap();
        let rows = duckdb_count(&dir);
        assert_eq!(rows, 24 * 8333, "DuckDB's count of the sample");
        let data = Data { dir, rows };
        drop_at_exit(tmp);
        data
    })
}

/// `DIR/year=*/month=*/*.parquet` (hive files only: not `_SUCCESS`).
fn parquet_glob(dir: &Path) -> String {
    format!("{}/year=*/month=*/*.parquet", dir.display())
}

/// DuckDB's row count of the hive dataset below `dir`.
fn duckdb_count(dir: &Path) -> u64 {
    duckdb(&format!(
        "SELECT count(*) FROM read_parquet('{}', hive_partitioning = true)",
        parquet_glob(dir)
    ))[0][0]
        .as_u64()
        .expect("a count")
}

/// A file of the sample, relative to its directory.
const ONE_FILE: &str = "year=2019/month=3/part-00000.parquet";

/// The numeric columns describe is checked on (file columns and `year`,
/// which is both a file column and a hive key).
const DESCRIBED: [&str; 5] = ["temperature", "windSpeed", "elevation", "snowDepth", "year"];

/// `stratus describe NAME --json --columns ...` (pandas' split JSON)
/// against DuckDB over the Parquet files below `dir`: count, min, the
/// quartiles (pandas' interpolation over DuckDB's sorted values) and max
/// exactly, mean and std to 1e-9 relative.
fn check_describe(local: &Local, name: &str, dir: &Path) {
    let columns = DESCRIBED.join(",");
    let out = local
        .client(&["describe", name, "--json", "--columns", &columns])
        .unwrap_or_else(|e| panic!("{e}\n{}", local.log_tail()));
    let table: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("describe --json ({e}): {out}"));
    let index: Vec<&str> = table["index"]
        .as_array()
        .expect("index")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let stats = ["count", "mean", "std", "min", "25%", "50%", "75%", "max"];
    assert_eq!(index, stats, "describe's rows: {out}");
    let names: Vec<&str> = table["columns"]
        .as_array()
        .expect("columns")
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for column in DESCRIBED {
        let c = names
            .iter()
            .position(|n| *n == column)
            .unwrap_or_else(|| panic!("no {column} in describe: {out}"));
        let got: Vec<f64> = (0..stats.len())
            .map(|r| table["data"][r][c].as_f64().unwrap_or(f64::NAN))
            .collect();
        let v = format!("({column})");
        let from = format!(
            "FROM read_parquet('{}', hive_partitioning = true) WHERE {v} IS NOT NULL AND NOT isnan({v}::DOUBLE)",
            parquet_glob(dir)
        );
        let body = format!(
            "m = con.execute({moments:?}).fetchone()\nv = [r[0] for r in con.execute({sorted:?}).fetchall()]\nrow = [m[0], m[1], m[2], m[3]] + [pandas_quantile(v, q) for q in (0.25, 0.5, 0.75)] + [m[4]]\nprint(json.dumps([[clean(x) for x in row]], default=str))",
            moments = format!("SELECT count(*), avg({v}), stddev_samp({v}), min({v})::DOUBLE, max({v})::DOUBLE {from}"),
            sorted = format!("SELECT ({v})::DOUBLE AS x {from} ORDER BY x"),
        );
        let expect: Vec<f64> = python(&body)[0]
            .iter()
            .map(|x| x.as_f64().unwrap_or(f64::NAN))
            .collect();
        for (i, stat) in stats.iter().enumerate() {
            let (a, b) = (got[i], expect[i]);
            let ok = (a.is_nan() && b.is_nan())
                || a == b
                || (matches!(*stat, "mean" | "std") && ((a - b) / b).abs() < 1e-9);
            assert!(ok, "{name}: {column} {stat}: ours {a} vs DuckDB {b}");
        }
    }
}

/// `NAME: ROWS rows, ...` from `stratus persist`: the rows.
fn persisted_rows(out: &str) -> u64 {
    out.split_once(": ")
        .and_then(|(_, rest)| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a persist summary: {out}"))
}

/// Frames `stratus list` shows (it must answer).
fn frames(local: &Local) -> Vec<String> {
    let out = local
        .client(&["list"])
        .unwrap_or_else(|e| panic!("the cluster no longer answers `stratus list`: {e}"));
    out.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

/// Run a command that must fail; its error (stderr), after checking that
/// it printed nothing on stdout and that the cluster still answers.
fn refused(local: &Local, args: &[&str]) -> String {
    let o = stratus(&local.file, args);
    assert!(
        !o.status.success(),
        "`stratus {}` should fail but printed {}",
        args.join(" "),
        stdout(&o)
    );
    assert!(
        stdout(&o).is_empty(),
        "a failed command printed to stdout: {}",
        stdout(&o)
    );
    frames(local);
    stderr(&o)
}

/// Whether `text` (case-insensitive) contains any of `words`.
fn mentions(text: &str, words: &[&str]) -> bool {
    let lower = text.to_lowercase();
    words.iter().any(|w| lower.contains(&w.to_lowercase()))
}

/// Check the dataset Stratus wrote, as the independent client downloaded it
/// into `dir` (`listed`: the objects as listed): DuckDB reads `rows` rows
/// from hive files `year=Y/month=M/*.parquet`, and `_SUCCESS` is JSON with
/// `"writer": "stratus"` listing exactly those files with their sizes, and
/// written no earlier than any of them.
fn check_written(dir: &Path, listed: &[Object], prefix: &str, rows: u64) {
    assert_eq!(
        duckdb_count(dir),
        rows,
        "DuckDB's count of what Stratus wrote"
    );
    let success_name = format!("{prefix}/_SUCCESS");
    let success = listed
        .iter()
        .find(|o| o.name == success_name)
        .unwrap_or_else(|| panic!("no {success_name} among {listed:?}"));
    let text = read_text(&dir.join("_SUCCESS"));
    let marker: serde_json::Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("_SUCCESS is not JSON ({e}): {text}"));
    assert_eq!(marker["writer"], "stratus", "_SUCCESS: {text}");
    let files = marker["files"]
        .as_array()
        .unwrap_or_else(|| panic!("no files list in _SUCCESS: {text}"));
    let data: Vec<&Object> = listed.iter().filter(|o| o.name != success_name).collect();
    assert!(!data.is_empty(), "only _SUCCESS was written: {listed:?}");
    assert_eq!(
        files.len(),
        data.len(),
        "_SUCCESS {text}\nvs objects {listed:?}"
    );
    for object in &data {
        let rel = &object.name[prefix.len() + 1..];
        let mut parts = rel.split('/');
        let (y, m, f) = (parts.next(), parts.next(), parts.next());
        assert!(
            y.is_some_and(|y| y.starts_with("year="))
                && m.is_some_and(|m| m.starts_with("month="))
                && f.is_some_and(|f| f.ends_with(".parquet"))
                && parts.next().is_none(),
            "not a hive file year=Y/month=M/F.parquet: {}",
            object.name
        );
        let entry = files
            .iter()
            .find(|e| e["path"].as_str().is_some_and(|p| p.ends_with(rel)))
            .unwrap_or_else(|| panic!("_SUCCESS does not list {rel}: {text}"));
        assert_eq!(
            entry["bytes"].as_u64(),
            Some(object.size),
            "size of {rel} in _SUCCESS vs the store"
        );
        assert!(
            success.modified_key() >= object.modified_key(),
            "_SUCCESS ({}) is older than {} ({})",
            success.modified,
            object.name,
            object.modified
        );
    }
}

#[test]
fn azure_blob_len_head_persist_describe_write_match_duckdb() {
    let data = data();
    let azurite = Azurite::start();
    azurite.create_container("isdsource");
    azurite.create_container("isdout");
    azurite.upload_dir(&data.dir, "isdsource", "isd");
    assert_eq!(azurite.list("isdsource", "isd").len(), 24);
    let local = start_local_env(2, &[], &env_refs(&azurite.worker_env()));
    let run = |args: &[&str]| {
        local
            .client(args)
            .unwrap_or_else(|e| panic!("{e}\n{}", local.log_tail()))
    };

    let rows = data.rows.to_string();
    assert_eq!(run(&["len", "az://isdsource/isd"]).trim(), rows);
    let glob = "az://isdsource/isd/year=*/month=*/*.parquet";
    assert_eq!(run(&["len", glob]).trim(), rows);
    let one_year = duckdb(&format!(
        "SELECT count(*) FROM read_parquet('{}/year=2019/*/*.parquet')",
        data.dir.display()
    ))[0][0]
        .as_u64()
        .unwrap();
    assert_eq!(
        run(&["len", "az://isdsource/isd/year=2019"]).trim(),
        one_year.to_string()
    );

    let head = run(&["head", glob, "-n", "3"]);
    assert!(
        head.contains("temperature") && head.contains("stationName"),
        "{head}"
    );
    assert_eq!(
        head.lines().filter(|l| l.starts_with("| ")).count(),
        4,
        "a header and 3 rows: {head}"
    );

    let out = run(&["persist", glob, "--as", "isd_az"]);
    assert_eq!(persisted_rows(&out), data.rows, "{out}");
    assert!(frames(&local).contains(&"isd_az".to_string()));
    assert_eq!(run(&["len", "isd_az"]).trim(), rows);
    check_describe(&local, "isd_az", &data.dir);

    run(&[
        "write",
        "isd_az",
        "az://isdout/prepared",
        "--partition-by",
        "year,month",
    ]);
    let listed = azurite.list("isdout", "prepared");
    let back = TempDir::new("azure-back");
    azurite.download("isdout", "prepared", back.path());
    check_written(back.path(), &listed, "prepared", data.rows);
    // Every year/month of the sample, no other.
    let partitions = duckdb(&format!(
        "SELECT count(DISTINCT (year, month)) FROM read_parquet('{}', hive_partitioning = true)",
        parquet_glob(back.path())
    ))[0][0]
        .as_u64();
    assert_eq!(partitions, Some(24));

    // What Stratus wrote reads back through Stratus too.
    assert_eq!(run(&["len", "az://isdout/prepared"]).trim(), rows);
}

#[test]
fn s3_len_persist_describe_write_match_duckdb_and_pyarrow() {
    let data = data();
    let moto = Moto::start();
    moto.create_bucket("isd-bucket");
    moto.upload_dir(&data.dir, "isd-bucket", "isd");
    assert_eq!(moto.list("isd-bucket", "isd").len(), 24);
    // The oracle reads the uploaded objects (not the local copy).
    let up = TempDir::new("s3-up");
    moto.download("isd-bucket", "isd", up.path());
    assert_eq!(duckdb_count(up.path()), data.rows);
    let local = start_local_env(2, &[], &env_refs(&moto.worker_env()));
    let run = |args: &[&str]| {
        local
            .client(args)
            .unwrap_or_else(|e| panic!("{e}\n{}", local.log_tail()))
    };

    let rows = data.rows.to_string();
    assert_eq!(run(&["len", "s3://isd-bucket/isd"]).trim(), rows);
    assert_eq!(run(&["len", "s3a://isd-bucket/isd"]).trim(), rows);
    let glob = "s3://isd-bucket/isd/year=*/month=*/*.parquet";
    assert_eq!(run(&["len", glob]).trim(), rows);

    let out = run(&["persist", glob, "--as", "isd_s3"]);
    assert_eq!(persisted_rows(&out), data.rows, "{out}");
    check_describe(&local, "isd_s3", up.path());

    run(&[
        "write",
        "isd_s3",
        "s3://isd-bucket/out/prepared",
        "--partition-by",
        "year,month",
    ]);
    let listed = moto.list("isd-bucket", "out/prepared");
    let back = TempDir::new("s3-back");
    moto.download("isd-bucket", "out/prepared", back.path());
    check_written(back.path(), &listed, "out/prepared", data.rows);

    let (pyarrow_rows, columns) = moto.pyarrow_count("isd-bucket", "out/prepared");
    assert_eq!(pyarrow_rows, data.rows, "pyarrow's count");
    for c in ["temperature", "year", "month"] {
        assert!(columns.iter().any(|n| n == c), "no {c} in {columns:?}");
    }
}

/// One Azurite (containers `isdsource` with the sample under `isd` and a
/// truncated copy under `trunc`, and `isdout` with a dataset already at
/// `existing`) and one cluster for the error cases that leave both usable.
struct Bad {
    azurite: Azurite,
    local: Local,
}

fn bad() -> Arc<Bad> {
    static BAD: Mutex<Option<Arc<Bad>>> = Mutex::new(None);
    let mut slot = BAD.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(bad) = slot.as_ref() {
        return bad.clone();
    }
    let data = data();
    let azurite = Azurite::start();
    azurite.create_container("isdsource");
    azurite.create_container("isdout");
    azurite.upload_dir(&data.dir, "isdsource", "isd");
    azurite.upload_dir(&data.dir, "isdsource", "trunc");
    let whole = std::fs::read(data.dir.join(ONE_FILE)).unwrap();
    let tmp = TempDir::new("truncated");
    let half = tmp.path().join("half.parquet");
    std::fs::write(&half, &whole[..whole.len() / 2]).unwrap();
    azurite.put("isdsource", &format!("trunc/{ONE_FILE}"), &half);
    azurite.upload_dir(&data.dir.join("year=2018"), "isdout", "existing/year=2018");
    let local = start_local_env(2, &[], &env_refs(&azurite.worker_env()));
    let bad = Arc::new(Bad { azurite, local });
    *slot = Some(bad.clone());
    // Stop the cluster and the emulator when the test binary exits.
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            // A test that failed while setting up poisoned the lock: the
            // value is still there to stop.
            let slot = match BAD.try_lock() {
                Ok(slot) => Some(slot),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(mut slot) = slot {
                slot.take();
            }
        }
    }
    drop_at_exit(Release);
    bad
}

#[test]
fn wrong_account_key_is_refused_naming_the_url() {
    let bad = bad();
    // A well-formed key of 64 bytes that is not the account's.
    let key = "azure_storage_account_key=BwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyAhIiMkJSYnKCkqKywtLi8wMTIzNDU2Nzg5Ojs8PT4/QEFCQ0RFRg==";
    let e = refused(
        &bad.local,
        &["len", "az://isdsource/isd", "--storage-option", key],
    );
    assert!(mentions(&e, &["az://isdsource/isd", "isdsource"]), "{e}");
    assert!(
        mentions(
            &e,
            &[
                "403",
                "authoriz",
                "authentic",
                "denied",
                "forbidden",
                "signature"
            ]
        ),
        "{e}"
    );
    // Nothing echoes the key.
    assert!(
        !e.contains("BwgJCgsMDQ4PEBESExQV"),
        "the key is in the error: {e}"
    );
    // The right key (the environment's) still works on the same cluster.
    assert_eq!(
        bad.local
            .client(&["len", "az://isdsource/isd"])
            .unwrap()
            .trim(),
        data().rows.to_string()
    );
}

#[test]
fn missing_container_is_a_clear_not_found() {
    let bad = bad();
    let e = refused(&bad.local, &["len", "az://nosuchcontainer/isd"]);
    assert!(mentions(&e, &["nosuchcontainer"]), "{e}");
    assert!(
        mentions(
            &e,
            &["404", "not found", "notfound", "does not exist", "no such"]
        ),
        "{e}"
    );
    let e = refused(
        &bad.local,
        &["persist", "az://nosuchcontainer/isd", "--as", "missing"],
    );
    assert!(mentions(&e, &["nosuchcontainer"]), "{e}");
    assert!(!frames(&bad.local).contains(&"missing".to_string()));
}

#[test]
fn a_glob_matching_nothing_says_so() {
    let bad = bad();
    let url = "az://isdsource/isd/year=1999/month=*/*.parquet";
    let e = refused(&bad.local, &["len", url]);
    assert!(mentions(&e, &[url, "year=1999"]), "{e}");
    assert!(
        mentions(
            &e,
            &[
                "matches nothing",
                "matched nothing",
                "no files",
                "no parquet",
                "nothing matches",
                "no objects",
                "no such file"
            ]
        ),
        "{e}"
    );
    let e = refused(&bad.local, &["persist", url, "--as", "nothing"]);
    assert!(mentions(&e, &[url, "year=1999"]), "{e}");
    assert!(!frames(&bad.local).contains(&"nothing".to_string()));
}

#[test]
fn a_truncated_object_is_named() {
    let bad = bad();
    let listed = bad.azurite.list("isdsource", "trunc");
    let whole = std::fs::metadata(data().dir.join(ONE_FILE)).unwrap().len();
    let object = listed
        .iter()
        .find(|o| o.name.ends_with(ONE_FILE))
        .expect("the truncated object");
    assert_eq!(
        object.size,
        whole / 2,
        "the seeded object is the first half"
    );

    let e = refused(
        &bad.local,
        &["persist", "az://isdsource/trunc", "--as", "truncated"],
    );
    assert!(mentions(&e, &[ONE_FILE]), "the error names the object: {e}");
    assert!(!frames(&bad.local).contains(&"truncated".to_string()));
    let e = refused(&bad.local, &["len", "az://isdsource/trunc"]);
    assert!(mentions(&e, &[ONE_FILE]), "the error names the object: {e}");

    // An empty object named like Parquet: truncated, named, never a
    // zero-length request.
    let tmp = TempDir::new("empty-object");
    let empty = tmp.path().join("empty.parquet");
    std::fs::write(&empty, "").unwrap();
    bad.azurite.put(
        "isdsource",
        "emptyobj/year=2019/month=1/part-0.parquet",
        &empty,
    );
    for args in [
        &["len", "az://isdsource/emptyobj"][..],
        &["persist", "az://isdsource/emptyobj", "--as", "empty"][..],
    ] {
        let e = refused(&bad.local, args);
        assert!(
            mentions(&e, &["month=1/part-0.parquet"]) && mentions(&e, &["truncated"]),
            "{e}"
        );
    }
}

#[test]
fn writing_over_an_existing_dataset_needs_overwrite() {
    let bad = bad();
    let local = &bad.local;
    // A frame of its own (the fixture, local files).
    local
        .client(&["persist", &fixture(), "--as", "fixture_w"])
        .unwrap_or_else(|e| panic!("{e}"));
    let before = bad.azurite.list("isdout", "existing");
    assert_eq!(before.len(), 12);
    let dest = "az://isdout/existing";
    let e = refused(
        local,
        &["write", "fixture_w", dest, "--partition-by", "year,month"],
    );
    assert!(mentions(&e, &["--overwrite"]), "{e}");
    assert!(mentions(&e, &[dest, "isdout/existing"]), "{e}");
    assert_eq!(
        bad.azurite.list("isdout", "existing"),
        before,
        "a refused write changed the destination"
    );

    // A destination holding anything a Stratus write does not leave is
    // never overwritten: nothing in it is touched.
    let tmp = TempDir::new("foreign");
    let notes = tmp.path().join("notes.txt");
    std::fs::write(&notes, "not Stratus'").unwrap();
    bad.azurite
        .upload_dir(&data().dir.join("year=2019"), "isdout", "foreign/year=2019");
    bad.azurite.put("isdout", "foreign/notes.txt", &notes);
    let foreign_before = bad.azurite.list("isdout", "foreign");
    let e = refused(
        local,
        &[
            "write",
            "fixture_w",
            "az://isdout/foreign",
            "--partition-by",
            "year,month",
            "--overwrite",
        ],
    );
    assert!(
        mentions(&e, &["notes.txt"]) && mentions(&e, &["nothing was touched"]),
        "{e}"
    );
    assert_eq!(bad.azurite.list("isdout", "foreign"), foreign_before);

    // With --overwrite it replaces the dataset: exactly the frame's rows.
    local
        .client(&[
            "write",
            "fixture_w",
            dest,
            "--partition-by",
            "year,month",
            "--overwrite",
        ])
        .unwrap_or_else(|e| panic!("{e}\n{}", local.log_tail()));
    let listed = bad.azurite.list("isdout", "existing");
    let back = TempDir::new("overwritten");
    bad.azurite.download("isdout", "existing", back.path());
    check_written(back.path(), &listed, "existing", FIXTURE_ROWS);
}

/// Object-store requests the cluster's workers made, from their metrics.
fn storage_requests(local: &Local) -> u64 {
    let cluster = local.json("api/cluster");
    let mut total = 0;
    for worker in cluster["workers"].as_array().into_iter().flatten() {
        let url = worker["metrics_url"]
            .as_str()
            .unwrap_or_else(|| panic!("no metrics_url: {cluster}"));
        let text = common::http::http_get(url);
        let line = text
            .lines()
            .find(|l| l.starts_with("stratus_worker_storage_requests_total"))
            .unwrap_or_else(|| panic!("no storage requests metric: {text}"));
        total += line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse::<f64>().ok())
            .expect("a number") as u64;
    }
    total
}

#[test]
fn a_metadata_endpoint_is_refused_before_any_request() {
    // A cluster of its own, with no store behind it: whatever request a
    // worker made would show in its request counter.
    let env = [("AZURE_STORAGE_ACCOUNT_NAME", "devstoreaccount1")];
    let local = start_local_env(1, &[], &env);
    let endpoint = "http://169.254.169.254/x";
    for args in [
        vec!["len", "az://isdsource/isd"],
        vec!["head", "az://isdsource/isd"],
        vec!["persist", "az://isdsource/isd", "--as", "meta"],
    ] {
        let option = format!("azure_storage_endpoint={endpoint}");
        let mut args = args.clone();
        args.extend(["--storage-option", &option]);
        let e = refused(&local, &args);
        // Refused before any request: the workers made none at all.
        assert_eq!(storage_requests(&local), 0, "{e}");
        assert!(mentions(&e, &["169.254.169.254"]), "{e}");
        assert!(
            mentions(
                &e,
                &[
                    "refused",
                    "forbidden",
                    "not allowed",
                    "metadata",
                    "link-local"
                ]
            ),
            "{e}"
        );
        assert!(
            !mentions(
                &e,
                &[
                    "timed out",
                    "timeout",
                    "unreachable",
                    "error sending request"
                ]
            ),
            "a request was attempted: {e}"
        );
    }
    assert!(!frames(&local).contains(&"meta".to_string()));
}

#[test]
fn the_emulator_dying_mid_persist_fails_the_persist_cleanly() {
    let data = data();
    let mut azurite = Azurite::start();
    azurite.create_container("isdsource");
    azurite.upload_dir(&data.dir, "isdsource", "isd");
    // The cluster reaches Azurite through a proxy that slows every answer,
    // so the persist is certainly still reading when the emulator goes.
    let mut proxy = ThrottledProxy::start(azurite.port);
    let mut env = azurite.worker_env();
    for (k, v) in env.iter_mut() {
        if k == "AZURE_STORAGE_ENDPOINT" {
            *v = format!("http://127.0.0.1:{}/{}", proxy.port, azurite.account());
        }
    }
    let local = start_local_env(2, &[], &env_refs(&env));

    let file = local.file.clone();
    let persist = std::thread::spawn(move || {
        let o = stratus(&file, &["persist", "az://isdsource/isd", "--as", "doomed"]);
        (o, Instant::now())
    });
    // Wait until the scheduler runs the persist, then let it read a little.
    let _ = poll(Duration::from_secs(60), || {
        if persist.is_finished() {
            return Ok(());
        }
        let page = local.json("api/dashboard");
        let running = page["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|j| j["kind"] == "persist" && j["state"] == "running");
        running
            .then_some(())
            .ok_or_else(|| "no running persist yet".to_string())
    });
    std::thread::sleep(Duration::from_millis(500));
    if persist.is_finished() {
        let (o, _) = persist.join().unwrap();
        panic!(
            "the persist ended ({}) before the emulator could be stopped: {}{}",
            o.status,
            stdout(&o),
            stderr(&o)
        );
    }
    azurite.stop();
    proxy.stop();
    let stopped = Instant::now();

    let (o, ended) = persist.join().unwrap();
    assert!(
        !o.status.success(),
        "the persist succeeded without its storage: {}",
        stdout(&o)
    );
    let e = stderr(&o);
    let took = ended.duration_since(stopped);
    assert!(
        took < Duration::from_secs(90),
        "the persist took {took:?} to fail after the emulator stopped: {e}"
    );
    assert!(
        mentions(
            &e,
            &["az://isdsource/isd", "isdsource", "part-00000.parquet"]
        ),
        "the error names what it was reading: {e}"
    );
    assert!(
        mentions(
            &e,
            &[
                "connect",
                "refused",
                "unreachable",
                "reset",
                "closed",
                "unavailable",
                "i/o",
                "io error",
                "eof",
                "timed out",
                "timeout"
            ]
        ),
        "the error says the storage went away: {e}"
    );
    assert!(
        !frames(&local).contains(&"doomed".to_string()),
        "a failed persist left its frame"
    );
}

/// Every file below `dir` (recursively), as text where it is text.
fn text_below(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            text_below(&path, out);
        } else if let Ok(bytes) = std::fs::read(&path) {
            out.push_str(&String::from_utf8_lossy(&bytes));
        }
    }
}

#[test]
fn storage_options_reach_the_workers_and_nowhere_else() {
    let data = data();
    let azurite = Azurite::start();
    azurite.create_container("isdsource");
    azurite.upload_dir(&data.dir.join("year=2019"), "isdsource", "secret/year=2019");
    // The workers know the account and endpoint, not the key.
    let mut env: Vec<(String, String)> = azurite
        .worker_env()
        .into_iter()
        .filter(|(k, _)| k != "AZURE_STORAGE_ACCOUNT_KEY")
        .collect();
    // Debug logs of every process, the HTTP stack's included.
    env.push((
        "STRATUS_LOG".into(),
        "debug,quinn=info,quinn_proto=info,rustls=info".into(),
    ));
    let local = start_local_env(2, &[], &env_refs(&env));
    let source = "az://isdsource/secret";

    // Without the key the store is anonymous, and Azurite refuses it.
    let e = refused(&local, &["len", source]);
    assert!(
        mentions(&e, &["403", "404", "denied", "authoriz", "not found"]),
        "{e}"
    );

    // With it, as an option of each request.
    let key = azurite.key();
    let option = format!("account_key={key}");
    let with_key = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--storage-option", option.as_str(), "--run", "secrets"]);
        local
            .client(&args)
            .unwrap_or_else(|e| panic!("{e}\n{}", local.log_tail()))
    };
    let rows = data.rows / 2;
    assert_eq!(with_key(&["len", source]).trim(), rows.to_string());
    // Progress (-v: plain lines) counts the bytes fetched from the store.
    let persisted = stratus(
        &local.file,
        &[
            "persist",
            source,
            "--as",
            "secret_isd",
            "-v",
            "--storage-option",
            &option,
            "--run",
            "secrets",
        ],
    );
    assert!(persisted.status.success(), "{}", stderr(&persisted));
    assert_eq!(persisted_rows(&stdout(&persisted)), rows);
    let progress = stderr(&persisted);
    assert!(
        progress.contains("load partitions") && progress.contains("fetched)"),
        "{progress}"
    );
    with_key(&["head", source, "-n", "2"]);

    // The key is nowhere: not in the logs of the scheduler and workers
    // (verbose), the dashboard's and cluster's JSON, the run, the metrics.
    let mut seen = String::new();
    text_below(local.dir.path(), &mut seen);
    seen.push_str(&local.json("api/dashboard").to_string());
    let cluster = local.json("api/cluster");
    seen.push_str(&cluster.to_string());
    seen.push_str(&local.json("api/runs").to_string());
    seen.push_str(&common::http::http_get(&format!(
        "{}metrics",
        local.dashboard()
    )));
    for worker in cluster["workers"].as_array().into_iter().flatten() {
        if let Some(url) = worker["metrics_url"].as_str() {
            let metrics = common::http::http_get(url);
            assert!(
                metrics.contains("stratus_worker_storage_requests_total"),
                "{metrics}"
            );
            seen.push_str(&metrics);
        }
    }
    assert!(
        seen.contains("secret_isd"),
        "the places searched hold the work"
    );
    assert!(
        seen.contains("data roots") && seen.contains("DEBUG"),
        "the workers' debug logs are among them"
    );
    for piece in [key, &key[..20], &key[key.len() - 20..]] {
        assert!(!seen.contains(piece), "the account key leaked");
    }
}

#[test]
fn an_incomplete_stratus_write_is_refused_and_a_manifest_defines_the_dataset() {
    let bad = bad();
    let local = &bad.local;
    let data = data();
    let one_year = data.rows / 2;
    // A Stratus write that never committed: files and its _temporary marker,
    // no _SUCCESS.
    bad.azurite
        .upload_dir(&data.dir.join("year=2019"), "isdout", "halfway/year=2019");
    let tmp = TempDir::new("marker");
    let marker = tmp.path().join("job");
    std::fs::write(&marker, "stratus write job-7 in progress\n").unwrap();
    bad.azurite
        .put("isdout", "halfway/_temporary/job-7", &marker);
    let e = refused(local, &["len", "az://isdout/halfway"]);
    assert!(mentions(&e, &["did not complete"]), "{e}");
    assert!(mentions(&e, &["stratus_allow_incomplete"]), "{e}");
    let e = refused(
        local,
        &["persist", "az://isdout/halfway", "--as", "halfway"],
    );
    assert!(mentions(&e, &["did not complete"]), "{e}");
    assert!(!frames(local).contains(&"halfway".to_string()));
    // Read anyway, when asked.
    let n = local
        .client(&[
            "len",
            "az://isdout/halfway",
            "--storage-option",
            "stratus_allow_incomplete=true",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(n.trim(), one_year.to_string());

    // Another writer's empty _SUCCESS (Spark's) is no manifest: every file
    // is read.
    bad.azurite
        .upload_dir(&data.dir.join("year=2019"), "isdout", "spark/year=2019");
    let empty = tmp.path().join("empty");
    std::fs::write(&empty, "").unwrap();
    bad.azurite.put("isdout", "spark/_SUCCESS", &empty);
    assert_eq!(
        local.client(&["len", "az://isdout/spark"]).unwrap().trim(),
        one_year.to_string()
    );

    // A committed Stratus dataset reads as its manifest lists it: a stray
    // file next to it (an overwrite's leftover) is not part of it.
    let dest = "az://isdout/manifested";
    local
        .client(&["persist", &fixture(), "--as", "fixture_m"])
        .unwrap_or_else(|e| panic!("{e}"));
    local
        .client(&["write", "fixture_m", dest, "--partition-by", "year,month"])
        .unwrap_or_else(|e| panic!("{e}\n{}", local.log_tail()));
    assert_eq!(
        local.client(&["len", dest]).unwrap().trim(),
        FIXTURE_ROWS.to_string()
    );
    bad.azurite.put(
        "isdout",
        "manifested/year=2019/month=3/part-99999-stray.snappy.parquet",
        &data.dir.join(ONE_FILE),
    );
    assert_eq!(
        local.client(&["len", dest]).unwrap().trim(),
        FIXTURE_ROWS.to_string(),
        "the stray file was read"
    );
    // DuckDB, which lists files, sees the stray one too.
    assert!(bad
        .azurite
        .list("isdout", "manifested")
        .iter()
        .any(|o| o.name.contains("stray")));
}

#[test]
fn workers_refuse_urls_outside_their_allowed_prefixes() {
    let data = data();
    let azurite = Azurite::start();
    azurite.create_container("isdsource");
    azurite.upload_dir(&data.dir.join("year=2019"), "isdsource", "open/year=2019");
    azurite.upload_dir(&data.dir.join("year=2019"), "isdsource", "closed/year=2019");
    let mut env = azurite.worker_env();
    env.push((
        "STRATUS_WORKER__URL_ALLOW".into(),
        "az://isdsource/open".into(),
    ));
    let local = start_local_env(1, &[], &env_refs(&env));
    assert_eq!(
        local
            .client(&["len", "az://isdsource/open"])
            .unwrap()
            .trim(),
        (data.rows / 2).to_string()
    );
    for refused_url in [
        "az://isdsource/closed",
        "az://isdsource/openly",
        "s3://isdsource/open",
    ] {
        let e = refused(&local, &["len", refused_url]);
        assert!(
            mentions(&e, &["url_allow"]) && e.contains(refused_url),
            "{e}"
        );
    }
}

/// Run `stratus demo --data DATA --out OUT` with the store's environment in
/// an empty directory; its stdout, after checking every step ran and the
/// written row count.
fn run_demo(env: &[(String, String)], data_url: &str, out_url: &str, rows: u64) -> String {
    let dir = TempDir::new("demo-store");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_stratus"))
        .current_dir(dir.path())
        .args(["demo", "--data", data_url, "--out", out_url])
        .envs(env_refs(env))
        .env_remove("STRATUS_SCHEDULER_FILE")
        .env_remove("STRATUS_RUN")
        .output()
        .expect("run stratus demo");
    let text = stdout(&out);
    assert!(out.status.success(), "{text}\n{}", stderr(&out));
    assert!(
        text.contains(&format!("1. len(df) from Parquet footers: {rows} rows")),
        "{text}"
    );
    for step in [
        "2. ",
        "3. describe",
        "4. groupby(date)",
        "5. memory_usage",
        "set_index(date)",
        "6. ",
    ] {
        assert!(text.contains(step), "no step {step}: {text}");
    }
    assert!(
        text.contains(&format!("written to {out_url}: {rows} rows")),
        "{text}"
    );
    text
}

/// `stratus demo --data URL --out URL`: the whole workflow (len, persist
/// with date, describe, daily means and plots, memory, counts, set_index,
/// prepare and write) reading from and writing to the emulator.
#[test]
fn the_demo_runs_the_workflow_from_azure_blob_and_writes_back() {
    let data = data();
    let azurite = Azurite::start();
    azurite.create_container("isdsource");
    azurite.create_container("isdout");
    azurite.upload_dir(&data.dir, "isdsource", "isd");
    run_demo(
        &azurite.worker_env(),
        "az://isdsource/isd/year=*/month=*/*.parquet",
        "az://isdout/demo-prepared",
        data.rows,
    );
    let listed = azurite.list("isdout", "demo-prepared");
    let back = TempDir::new("demo-back");
    azurite.download("isdout", "demo-prepared", back.path());
    check_written(back.path(), &listed, "demo-prepared", data.rows);
}

/// The same from and to S3 (moto), read back with pyarrow.
#[test]
fn the_demo_runs_the_workflow_from_s3_and_writes_back() {
    let data = data();
    let moto = Moto::start();
    moto.create_bucket("isd-demo");
    moto.upload_dir(&data.dir, "isd-demo", "isd");
    run_demo(
        &moto.worker_env(),
        "s3://isd-demo/isd",
        "s3://isd-demo/prepared",
        data.rows,
    );
    let (rows, columns) = moto.pyarrow_count("isd-demo", "prepared");
    assert_eq!(rows, data.rows);
    assert!(columns.iter().any(|c| c == "temperature"), "{columns:?}");
}
