//! Generate synthetic ISD data and report size and time.
//!
//! Usage: `cargo run --release -p stratus-engine --example datagen -- ROWS OUT_DIR [SEED]`

use std::time::Instant;

use stratus_engine::datagen::{generate_isd, DatagenOptions};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: datagen ROWS OUT_DIR [SEED]";
    let rows: u64 = args.next().ok_or(usage)?.parse()?;
    let out = args.next().ok_or(usage)?.into();
    let seed: u64 = args.next().map_or(Ok(42), |s| s.parse())?;
    let t = Instant::now();
    let summary = generate_isd(&DatagenOptions { rows, out, seed })?;
    println!(
        "{} rows, {} files, {} bytes ({:.1} MiB) in {:.2} s",
        summary.rows,
        summary.files,
        summary.bytes,
        summary.bytes as f64 / (1 << 20) as f64,
        t.elapsed().as_secs_f64()
    );
    Ok(())
}
