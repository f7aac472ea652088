//! Data roots against real processes: a `stratus local` cluster whose
//! workers may use only two directories (the fixture's and a temporary
//! "root"). Reads and writes outside them, through a symbolic link, or an
//! `--overwrite` of a directory that is not a dataset fail clearly, touch
//! nothing, and the cluster still answers a `len` with the right count
//! afterwards. A bare `stratus-worker` with no roots refuses every file and
//! says how to give it roots.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, fixture, start_local, Local, TempDir, FIXTURE_ROWS};

/// The cluster still works: `len` of the fixture.
fn still_answers(local: &Local) {
    let out = local
        .client(&["len", &fixture()])
        .expect("len after an attack");
    assert_eq!(out.trim(), FIXTURE_ROWS.to_string());
}

/// `stratus ARGS` must fail; its error (stderr).
fn refused(local: &Local, args: &[&str]) -> String {
    match local.client(args) {
        Ok(out) => panic!("`stratus {}` should fail but printed {out}", args.join(" ")),
        Err(e) => e,
    }
}

/// One Parquet file of the fixture.
fn a_fixture_file() -> std::path::PathBuf {
    let mut dirs = vec![std::path::PathBuf::from(fixture())];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|e| e == "parquet") {
                return p;
            }
        }
    }
    panic!("no Parquet file in the fixture");
}

#[test]
fn reads_and_writes_outside_the_data_roots_fail_and_the_cluster_answers_on() {
    let root = TempDir::new("root");
    let outside = TempDir::new("outside");
    let root_dir = root.path().canonicalize().unwrap();
    let outside_dir = outside.path().canonicalize().unwrap();
    let fixture_root = Path::new(&fixture()).canonicalize().unwrap();
    let local = start_local(
        1,
        &[
            "--data-root",
            &root_dir.display().to_string(),
            "--data-root",
            &fixture_root.display().to_string(),
        ],
    );
    still_answers(&local);
    let roots_named = |e: &str| e.contains(&root_dir.display().to_string());

    // A real Parquet file outside the roots (in the temp dir, which is a
    // default root of `stratus local` but not of this cluster).
    let secret = outside_dir.join("secret.parquet");
    std::fs::copy(a_fixture_file(), &secret).unwrap();
    let secret_str = secret.display().to_string();
    for args in [
        vec!["len", secret_str.as_str()],
        vec!["head", secret_str.as_str(), "-n", "1"],
    ] {
        let e = refused(&local, &args);
        assert!(
            e.contains(&secret_str) && e.contains("outside") && roots_named(&e),
            "{args:?}: {e}"
        );
        still_answers(&local);
    }
    // A system file, and a directory listing by glob.
    let e = refused(&local, &["head", "/etc/hostname"]);
    assert!(e.contains("/etc/hostname") && roots_named(&e), "{e}");
    let pattern = format!("{}/*", outside_dir.display());
    let e = refused(&local, &["len", &pattern]);
    assert!(
        e.contains(&outside_dir.display().to_string()) && roots_named(&e),
        "{e}"
    );
    // `..` does not climb out.
    let climbing = format!(
        "{}/../{}/secret.parquet",
        root_dir.display(),
        outside_dir.file_name().unwrap().to_string_lossy()
    );
    let e = refused(&local, &["len", &climbing]);
    assert!(e.contains("outside") && roots_named(&e), "{e}");
    still_answers(&local);

    // A symbolic link inside a root that leads outside: refused, whether
    // named directly or found while listing the root.
    std::os::unix::fs::symlink(&outside_dir, root_dir.join("link")).unwrap();
    let link = root_dir.join("link");
    let e = refused(&local, &["len", &link.display().to_string()]);
    assert!(
        e.contains("link") && e.contains("outside") && roots_named(&e),
        "{e}"
    );
    let e = refused(
        &local,
        &["len", &format!("{}/link/*.parquet", root_dir.display())],
    );
    assert!(e.contains("outside"), "{e}");
    let e = refused(&local, &["len", &root_dir.display().to_string()]);
    assert!(e.contains("link") && e.contains("outside"), "{e}");
    still_answers(&local);

    // Writes: outside the roots, and through the link, create nothing.
    local
        .client(&["persist", &fixture(), "--as", "isd"])
        .expect("persist the fixture");
    let dest = outside_dir.join("written");
    let e = refused(&local, &["write", "isd", &dest.display().to_string()]);
    assert!(
        e.contains(&dest.display().to_string()) && roots_named(&e),
        "{e}"
    );
    assert!(!dest.exists(), "a refused write created {}", dest.display());
    let e = refused(
        &local,
        &["write", "isd", &link.join("x").display().to_string()],
    );
    assert!(e.contains("outside"), "{e}");
    assert!(!outside_dir.join("x").exists());
    let e = refused(&local, &["write", "isd", "/etc/stratus-x"]);
    assert!(e.contains("/etc/stratus-x") && roots_named(&e), "{e}");
    still_answers(&local);

    // --overwrite replaces a dataset, never an arbitrary directory.
    let notes = root_dir.join("notes");
    std::fs::create_dir_all(notes.join("sub")).unwrap();
    std::fs::write(notes.join("important.txt"), b"keep me").unwrap();
    std::fs::write(notes.join("sub/part-0.parquet"), b"not ours").unwrap();
    let notes_str = notes.display().to_string();
    let e = refused(&local, &["write", "isd", &notes_str, "--overwrite"]);
    assert!(
        e.contains(&notes_str)
            && e.contains("not a Stratus dataset")
            && e.contains("important.txt"),
        "{e}"
    );
    assert_eq!(
        std::fs::read(notes.join("important.txt")).unwrap(),
        b"keep me"
    );
    assert_eq!(
        std::fs::read(notes.join("sub/part-0.parquet")).unwrap(),
        b"not ours"
    );
    still_answers(&local);

    // A "dataset" whose staging directory is a link to outside: writing
    // through it is refused, and nothing appears outside.
    let trap = root_dir.join("trap");
    std::fs::create_dir_all(&trap).unwrap();
    std::fs::write(trap.join("_SUCCESS"), b"").unwrap();
    std::os::unix::fs::symlink(&outside_dir, trap.join("_temporary")).unwrap();
    let before: Vec<_> = std::fs::read_dir(&outside_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    let e = refused(
        &local,
        &["write", "isd", &trap.display().to_string(), "--overwrite"],
    );
    assert!(e.contains("_temporary") && e.contains("outside"), "{e}");
    let after: Vec<_> = std::fs::read_dir(&outside_dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(
        before,
        after,
        "a refused write touched {}",
        outside_dir.display()
    );
    still_answers(&local);

    // Inside the roots all of it works: a write, then its overwrite.
    let out = root_dir.join("out");
    let out_str = out.display().to_string();
    local
        .client(&["write", "isd", &out_str, "--partition-by", "year"])
        .expect("write inside a root");
    assert!(out.join("_SUCCESS").exists());
    local
        .client(&[
            "write",
            "isd",
            &out_str,
            "--partition-by",
            "year",
            "--overwrite",
        ])
        .expect("overwrite a dataset");
    let back = local.client(&["len", &out_str]).unwrap();
    assert_eq!(back.trim(), FIXTURE_ROWS.to_string());
    still_answers(&local);
}

#[test]
fn a_bare_worker_has_no_data_roots_and_says_how_to_give_it_some() {
    let dir = TempDir::new("bare");
    let file = dir.path().join("s.json");
    let bin = Path::new(env!("CARGO_BIN_EXE_stratus")).parent().unwrap();
    let mut scheduler = Command::new(bin.join("stratus-scheduler"))
        .args(["--host", "127.0.0.1", "--port", "0"])
        .args(["--dashboard-address", "127.0.0.1:0"])
        .arg("--scheduler-file")
        .arg(&file)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(30), "the scheduler file", || {
        file.exists().then_some(())
    });
    let mut worker = Command::new(bin.join("stratus-worker"))
        .arg("--scheduler-file")
        .arg(&file)
        .args(["--nthreads", "1", "--memory-limit", "1GiB"])
        .env_remove("STRATUS_DATA_ROOTS")
        .env_remove("STRATUS_SCHEDULER")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let o = common::stratus(&file, &["--wait-for-workers", "1", "len", &fixture()]);
    let _ = worker.kill();
    let _ = scheduler.kill();
    let _ = worker.wait();
    let _ = scheduler.wait();
    assert!(!o.status.success());
    let e = common::stderr(&o);
    assert!(
        e.contains("no data roots")
            && e.contains("--data-root")
            && e.contains("STRATUS_DATA_ROOTS"),
        "{e}"
    );
}
