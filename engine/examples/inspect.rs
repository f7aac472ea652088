//! Print the dataset schema, row counts and partition plan of a Parquet source.
//!
//! Usage: `cargo run -p stratus-engine --example inspect -- SOURCE`

use stratus_engine::scan;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let source = std::env::args()
        .nth(1)
        .ok_or("usage: inspect SOURCE (file, directory or glob)")?;
    let files = scan::list_files(&source)?;
    let footers = files
        .iter()
        .map(scan::read_footer)
        .collect::<Result<Vec<_>, _>>()?;
    let schema = scan::check_schemas(&footers)?;
    let rows: u64 = footers.iter().map(|f| f.num_rows).sum();
    let row_groups: usize = footers.iter().map(|f| f.row_groups.len()).sum();
    println!(
        "{} files, {rows} rows, {row_groups} row groups",
        files.len()
    );
    for f in schema.fields() {
        println!(
            "  {}: {} (nullable: {})",
            f.name(),
            f.data_type(),
            f.is_nullable()
        );
    }
    let parts = scan::plan_partitions(&footers, 128 << 20, 4);
    println!("{} partitions at 128 MiB", parts.len());
    if std::env::args().nth(2).as_deref() == Some("--stats") {
        print_stats(&parts)?;
    }
    if let Some(first) = parts.first() {
        let batches = scan::read_partition(first, None, Some(3))?;
        for b in &batches {
            println!("{b:?}");
        }
    }
    Ok(())
}

/// count / mean / std of every Float64 column, over all partitions.
fn print_stats(parts: &[stratus_plan::ParquetPartition]) -> Result<(), Box<dyn std::error::Error>> {
    use arrow_array::cast::AsArray;
    use arrow_array::types::Float64Type;
    use arrow_array::Array;
    let mut acc: Vec<(String, u64, f64, f64)> = Vec::new();
    let mut mem = 0usize;
    for p in parts {
        let batches = scan::read_partition(p, None, None)?;
        mem += stratus_engine::memory::batches_memory_bytes(&batches);
        for b in &batches {
            for (f, c) in b.schema().fields().iter().zip(b.columns()) {
                if c.data_type() != &arrow_schema::DataType::Float64 {
                    continue;
                }
                let i = match acc.iter().position(|a| &a.0 == f.name()) {
                    Some(i) => i,
                    None => {
                        acc.push((f.name().clone(), 0, 0.0, 0.0));
                        acc.len() - 1
                    }
                };
                for v in c.as_primitive::<Float64Type>().iter().flatten() {
                    acc[i].1 += 1;
                    acc[i].2 += v;
                    acc[i].3 += v * v;
                }
            }
        }
    }
    println!("arrow memory: {mem} bytes");
    for (name, n, s, s2) in acc {
        let mean = s / n.max(1) as f64;
        let var = (s2 - n as f64 * mean * mean) / (n.max(2) - 1) as f64;
        println!(
            "  {name:>24}: count {n:>10} mean {mean:>10.3} std {:>10.3}",
            var.max(0.0).sqrt()
        );
    }
    Ok(())
}
