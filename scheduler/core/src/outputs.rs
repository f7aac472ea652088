//! Checks of what workers send, as pure functions: a task's output against
//! the task it answers ([`check_output`]), and a worker's claims at
//! registration ([`check_worker_info`]).
//!
//! A worker's output is input like any other: before a job reads it, its
//! shape must be the one the task asked for (the output kind, the partition
//! keys, the ranges, the number of columns, counts that can be summed). A
//! worker whose output fails is disconnected and its tasks run elsewhere
//! (`SchedulerState::on_report`); the error names the field at fault.

use std::collections::BTreeSet;

use stratus_protocol::messages::{PartitionKey, ReduceOp, TaskKind, TaskOutput, WorkerInfo};

/// Largest row or byte count a worker may report in one field of an output
/// (2^40: a trillion rows, a TiB): sums over millions of outputs then never
/// overflow a `u64`.
pub const MAX_REPORTED_COUNT: u64 = 1 << 40;

/// Largest memory use a heartbeat may report (2^48); larger claims are
/// clamped, so sums over the cluster never overflow.
pub const MAX_REPORTED_MEMORY: u64 = 1 << 48;

fn count(field: &str, value: u64) -> Result<(), String> {
    if value > MAX_REPORTED_COUNT {
        return Err(format!(
            "{field} = {value} exceeds the largest plausible count ({MAX_REPORTED_COUNT})"
        ));
    }
    Ok(())
}

fn len_eq(field: &str, got: usize, want: usize) -> Result<(), String> {
    if got != want {
        return Err(format!(
            "{field} has {got} entries, the task asked for {want}"
        ));
    }
    Ok(())
}

/// Partition keys a worker reports kept: each of `frame`, with an index in
/// `allowed`, each once.
fn kept_keys(
    parts: &[(PartitionKey, u64, u64)],
    frame: u64,
    allowed: &BTreeSet<u32>,
) -> Result<(), String> {
    let mut seen = BTreeSet::new();
    for (i, (key, rows, bytes)) in parts.iter().enumerate() {
        if key.frame != frame || !allowed.contains(&key.index) {
            return Err(format!(
                "LoadedMany[{i}].key = {}/{} is not a partition the task asked for",
                key.frame, key.index
            ));
        }
        if !seen.insert(key.index) {
            return Err(format!(
                "LoadedMany[{i}].key = {}/{} is reported twice",
                key.frame, key.index
            ));
        }
        count(&format!("LoadedMany[{i}].rows"), *rows)?;
        count(&format!("LoadedMany[{i}].bytes"), *bytes)?;
    }
    Ok(())
}

/// Whether `output` is a well-formed answer to `kind`; the error names the
/// field at fault.
pub fn check_output(kind: &TaskKind, output: &TaskOutput) -> Result<(), String> {
    match (kind, output) {
        (TaskKind::ListFiles { .. }, TaskOutput::Files(files)) => {
            for (i, f) in files.iter().enumerate() {
                if f.path.is_empty() {
                    return Err(format!("Files[{i}].path is empty"));
                }
                count(&format!("Files[{i}].size"), f.size)?;
            }
            Ok(())
        }
        (TaskKind::ReadFooters { files }, TaskOutput::Footers(footers)) => {
            len_eq("Footers", footers.len(), files.len())?;
            let mut asked: BTreeSet<&str> = files.iter().map(|f| f.path.as_str()).collect();
            for (i, footer) in footers.iter().enumerate() {
                if !asked.remove(footer.file.path.as_str()) {
                    return Err(format!(
                        "Footers[{i}].file = '{}' is not a file the task asked for (or is repeated)",
                        footer.file.path
                    ));
                }
                count(&format!("Footers[{i}].num_rows"), footer.num_rows)?;
                let mut rows = 0u64;
                for (g, rg) in footer.row_groups.iter().enumerate() {
                    count(&format!("Footers[{i}].row_groups[{g}].rows"), rg.rows)?;
                    count(
                        &format!("Footers[{i}].row_groups[{g}].uncompressed_bytes"),
                        rg.uncompressed_bytes,
                    )?;
                    rows += rg.rows;
                    count(&format!("Footers[{i}].row_groups (rows)"), rows)?;
                }
                if rows != footer.num_rows {
                    return Err(format!(
                        "Footers[{i}].num_rows = {} but its row groups hold {rows} rows",
                        footer.num_rows
                    ));
                }
            }
            Ok(())
        }
        (
            TaskKind::Load { key, .. },
            TaskOutput::Loaded {
                key: got,
                rows,
                bytes,
                fetched,
            },
        ) => {
            if got != key {
                return Err(format!(
                    "Loaded.key = {}/{} but the task loads {}/{}",
                    got.frame, got.index, key.frame, key.index
                ));
            }
            count("Loaded.rows", *rows)?;
            count("Loaded.fetched", *fetched)?;
            count("Loaded.bytes", *bytes)
        }
        (TaskKind::Reduce { op, partitions }, output) => match (op, output) {
            (ReduceOp::Summary { columns, .. }, TaskOutput::Summaries(s)) => {
                len_eq("Summaries", s.len(), columns.len())
            }
            (ReduceOp::Histograms { columns }, TaskOutput::Histograms(h)) => {
                len_eq("Histograms", h.len(), columns.len())?;
                for (c, (per_range, asked)) in h.iter().zip(columns).enumerate() {
                    len_eq(
                        &format!("Histograms[{c}] (ranges of '{}')", asked.column),
                        per_range.len(),
                        asked.ranges.len(),
                    )?;
                }
                Ok(())
            }
            (ReduceOp::MemoryUsage, TaskOutput::ColumnBytes(columns)) => {
                for (name, bytes) in columns {
                    count(&format!("ColumnBytes['{name}']"), *bytes)?;
                }
                Ok(())
            }
            (ReduceOp::SortSample { .. }, TaskOutput::SortSample { partitions: p, .. }) => {
                let mut asked: BTreeSet<u32> = partitions.iter().map(|k| k.index).collect();
                for (i, b) in p.iter().enumerate() {
                    if !asked.remove(&b.index) {
                        return Err(format!(
                            "SortSample.partitions[{i}].index = {} is not a partition the task asked for (or is repeated)",
                            b.index
                        ));
                    }
                    count(&format!("SortSample.partitions[{i}].invalid"), b.invalid)?;
                }
                Ok(())
            }
            (op, other) => Err(unexpected(&format!("reduce {op:?}"), other)),
        },
        (
            TaskKind::GroupByPartial { .. }
            | TaskKind::GroupByMerge { .. }
            | TaskKind::ShuffleSend { .. }
            | TaskKind::SendPartitions { .. },
            TaskOutput::Delivered { rows, bytes },
        ) => {
            count("Delivered.rows", *rows)?;
            count("Delivered.bytes", *bytes)
        }
        (TaskKind::GroupByFinal { .. }, TaskOutput::Table { rows, .. }) => {
            count("Table.rows", *rows)
        }
        (TaskKind::Head { n, .. }, TaskOutput::Table { rows, .. }) => {
            if rows > n {
                return Err(format!(
                    "Table.rows = {rows} but the task asked for at most {n}"
                ));
            }
            Ok(())
        }
        (TaskKind::PrepareWrite { .. } | TaskKind::AbortWrite { .. }, TaskOutput::Ok) => Ok(()),
        (TaskKind::WriteParts { .. }, TaskOutput::Staged(files)) => {
            for (i, f) in files.iter().enumerate() {
                count(&format!("Staged[{i}].rows"), f.rows)?;
                count(&format!("Staged[{i}].bytes"), f.bytes)?;
            }
            Ok(())
        }
        (TaskKind::CommitWrite { .. }, TaskOutput::Committed { rows, files }) => {
            count("Committed.rows", *rows)?;
            count("Committed.files", *files)
        }
        (TaskKind::ShuffleCollect { ranges, frame, .. }, TaskOutput::LoadedMany(parts)) => {
            kept_keys(parts, *frame, &ranges.iter().copied().collect())
        }
        (
            TaskKind::RebuildRanges {
                frame,
                parts: asked,
                ..
            },
            TaskOutput::LoadedMany(parts),
        ) => kept_keys(parts, *frame, &asked.iter().map(|p| p.1).collect()),
        (TaskKind::AdoptPartitions { partitions, .. }, TaskOutput::LoadedMany(parts)) => {
            // Kept all or none: exactly the partitions asked for.
            len_eq("LoadedMany", parts.len(), partitions.len())?;
            let mut asked: BTreeSet<PartitionKey> = partitions.iter().map(|p| p.1).collect();
            for (i, (key, rows, bytes)) in parts.iter().enumerate() {
                if !asked.remove(key) {
                    return Err(format!(
                        "LoadedMany[{i}].key = {}/{} is not a partition the task asked for (or is repeated)",
                        key.frame, key.index
                    ));
                }
                count(&format!("LoadedMany[{i}].rows"), *rows)?;
                count(&format!("LoadedMany[{i}].bytes"), *bytes)?;
            }
            Ok(())
        }
        (kind, other) => Err(unexpected(kind.label(), other)),
    }
}

fn unexpected(kind: &str, output: &TaskOutput) -> String {
    let name = match output {
        TaskOutput::Files(_) => "Files",
        TaskOutput::Footers(_) => "Footers",
        TaskOutput::Loaded { .. } => "Loaded",
        TaskOutput::Table { .. } => "Table",
        TaskOutput::Summaries(_) => "Summaries",
        TaskOutput::Histograms(_) => "Histograms",
        TaskOutput::ColumnBytes(_) => "ColumnBytes",
        TaskOutput::Delivered { .. } => "Delivered",
        TaskOutput::Staged(_) => "Staged",
        TaskOutput::Committed { .. } => "Committed",
        TaskOutput::Ok => "Ok",
        TaskOutput::SortSample { .. } => "SortSample",
        TaskOutput::LoadedMany(_) => "LoadedMany",
    };
    format!("output {name} does not answer a {kind} task")
}

/// Ceilings on what a worker may claim when it registers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerCeilings {
    /// Most compute threads one worker may claim.
    pub max_threads: u32,
    /// Largest memory limit one worker may claim, in bytes.
    pub max_memory: u64,
}

impl Default for WorkerCeilings {
    fn default() -> Self {
        WorkerCeilings {
            max_threads: 1024,
            max_memory: 64 << 40,
        }
    }
}

/// Whether a registering worker's claims are within the ceilings; the error
/// is the reason the worker is told (`Welcome::Rejected`).
pub fn check_worker_info(info: &WorkerInfo, ceilings: &WorkerCeilings) -> Result<(), String> {
    if info.nthreads == 0 {
        return Err("nthreads = 0: a worker needs at least one thread".into());
    }
    if info.nthreads > ceilings.max_threads {
        return Err(format!(
            "nthreads = {} exceeds the scheduler's ceiling of {} threads per worker (setting max_worker_threads)",
            info.nthreads, ceilings.max_threads
        ));
    }
    if info.memory_limit > ceilings.max_memory {
        return Err(format!(
            "memory_limit = {} bytes exceeds the scheduler's ceiling of {} bytes per worker (setting max_worker_memory)",
            info.memory_limit, ceilings.max_memory
        ));
    }
    if info.name.is_empty() || info.name.len() > 256 {
        return Err(format!(
            "name of {} bytes: a worker name has 1 to 256 bytes",
            info.name.len()
        ));
    }
    Ok(())
}
