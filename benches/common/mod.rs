//! Helpers shared by the bench targets (`e2e.rs`, `memory.rs`): the sample
//! data, generated once per size and order under `target/bench-data`; peak
//! and current RSS of processes from `/proc`; and, included from the
//! integration tests' helpers (both standalone files), plain HTTP GETs and
//! the comparison of two runs' answers.
#![allow(dead_code)]

#[path = "../../tests/common/answer.rs"]
pub mod answer;
#[path = "../../tests/common/http.rs"]
pub mod http;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use stratus_engine::datagen::RowOrder;
use stratus_protocol::units::format_bytes;

pub fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// The dataset of `rows` rows in `order`, generated on first use:
/// `target/bench-data/isd-<rows>` for time order (`STRATUS_BENCH_DATA`
/// moves it), `isd-<rows>-station` and `isd-<rows>-random` beside it.
pub fn dataset(rows: u64, order: RowOrder) -> PathBuf {
    let time: PathBuf = std::env::var("STRATUS_BENCH_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("target/bench-data")
                .join(format!("isd-{rows}"))
        });
    let data = match order {
        RowOrder::Time => time,
        other => PathBuf::from(format!("{}-{other}", time.display())),
    };
    // Time-ordered data from earlier runs has no marker: its last file says it is whole.
    let marker = data.join(format!(".complete-{order}"));
    let whole = marker.exists() || (order == RowOrder::Time && data.join("year=2019").exists());
    if !whole {
        let start = Instant::now();
        let s = stratus_engine::datagen::generate_isd_ordered(
            &stratus_engine::datagen::DatagenOptions {
                rows,
                out: data.clone(),
                seed: 42,
            },
            order,
        )
        .expect("generate data");
        std::fs::write(&marker, b"").expect("marker");
        eprintln!(
            "generated {} rows ({order} order), {} files, {} in {:.2} s",
            s.rows,
            s.files,
            format_bytes(s.bytes),
            secs(start.elapsed())
        );
    }
    data
}

/// A field of `/proc/PID/status` given in kB (`VmHWM`, `VmRSS`, `RssAnon`),
/// in bytes; 0 if the process or the field is gone.
pub fn status_bytes(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// `/proc/PID/status` (empty if the process is gone).
pub fn proc_status(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default()
}

/// The peak RSS (VmHWM) of a process since it started or since
/// [`reset_peaks`].
pub fn peak_rss(pid: u32) -> u64 {
    status_bytes(&proc_status(pid), "VmHWM")
}

/// Reset the peak RSS (VmHWM) of these processes to their current RSS.
pub fn reset_peaks(pids: &[u32]) {
    for pid in pids {
        let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), b"5");
    }
}

/// Now, as the reports print it (`2026-12-07 10:42 UTC`).
pub fn utc_now() -> String {
    Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// `cargo bench --bench NAME -- ARGS` as this run was started.
pub fn bench_command(name: &str) -> String {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    format!("cargo bench --bench {name} -- {}", args.join(" "))
        .trim()
        .to_string()
}

/// Write a bench's report as `target/bench-<name>.md` and `.json`, and say
/// where.
pub fn write_report(name: &str, md: &str, json: &serde_json::Value) {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    let _ = std::fs::create_dir_all(&target);
    let (md_path, json_path) = (
        target.join(format!("bench-{name}.md")),
        target.join(format!("bench-{name}.json")),
    );
    std::fs::write(&md_path, md).expect("write the Markdown report");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(json).expect("json"),
    )
    .expect("write the JSON report");
    println!("\nwritten: {} and .json", md_path.display());
}
