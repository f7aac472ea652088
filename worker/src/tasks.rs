//! What each task computes: pure functions over `stratus-engine`, run on a
//! compute thread. Errors are strings for the client, naming the file at fault.
//!
//! Every task that touches local files gets the worker's [`DataRoots`] and
//! checks each path against them before the engine opens, lists or creates
//! anything (listing: every directory and link on the way, through the
//! engine's guard; reads: each file; writes: the destination, whose staging
//! and final files all lie below it). Object-store URLs go to
//! [`crate::remote`] instead, with the request's options ([`Io`]).
//!
//! Results that travel to the scheduler (head rows, group-by answers, file
//! lists, footers) are checked against the result limit
//! ([`set_max_result_bytes`], default [`DEFAULT_MAX_RESULT_BYTES`]) before
//! they are sent: too large a result fails its task with a message saying
//! what to ask for instead, rather than tripping the frame limit (which
//! would cost the worker its connection).

use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::RecordBatch;
use std::path::Path;

use crate::remote::{is_remote, Remote};
use crate::roots::DataRoots;
use stratus_engine::scan;
use stratus_protocol::messages::{
    FileRef, FooterMeta, GroupBySpec, ParquetPartition, PartitionBoundsWire, PartitionKey,
    RangeSource, ReduceOp, StagedFile, Step, TaskOutput, WriteSpec,
};

/// Default of the largest result a task sends to the scheduler.
pub const DEFAULT_MAX_RESULT_BYTES: u64 = 64 << 20;

static MAX_RESULT_BYTES: AtomicU64 = AtomicU64::new(DEFAULT_MAX_RESULT_BYTES);

/// Rows this process read from Parquet (loads, rebuilds, heads): the
/// metric `stratus_worker_parquet_rows_read_total`.
static PARQUET_ROWS_READ: AtomicU64 = AtomicU64::new(0);

/// Rows this process has read from Parquet so far.
pub fn parquet_rows_read() -> u64 {
    PARQUET_ROWS_READ.load(Ordering::Relaxed)
}

/// Set the largest result a task may send (setting `max_result_bytes`).
pub fn set_max_result_bytes(bytes: u64) {
    MAX_RESULT_BYTES.store(bytes.max(1 << 10), Ordering::Relaxed);
}

/// The result limit now.
pub fn max_result_bytes() -> u64 {
    MAX_RESULT_BYTES.load(Ordering::Relaxed)
}

/// `Ok` if a result of `bytes` fits the limit; else the error for the client.
fn within_result_limit(what: &str, bytes: usize, advice: &str) -> Result<(), String> {
    let limit = max_result_bytes();
    if bytes as u64 > limit {
        return Err(format!(
            "{what} of {bytes} bytes exceeds the result limit of {limit}; {advice}"
        ));
    }
    Ok(())
}

fn file_ref_bytes(f: &FileRef) -> usize {
    f.path.len()
        + 32
        + f.hive
            .iter()
            .map(|(k, v)| k.len() + v.len() + 16)
            .sum::<usize>()
}

/// About how many bytes an output takes in a frame (for batching reports).
pub fn approx_output_bytes(output: &TaskOutput) -> usize {
    match output {
        TaskOutput::Table { ipc, .. } => ipc.len() + 32,
        TaskOutput::Files(files) => files.iter().map(file_ref_bytes).sum(),
        TaskOutput::Footers(footers) => footers
            .iter()
            .map(|f| file_ref_bytes(&f.file) + f.schema_ipc.len() + 16 * f.row_groups.len() + 32)
            .sum(),
        TaskOutput::SortSample {
            partitions,
            sample_ipc,
        } => {
            sample_ipc.len()
                + partitions
                    .iter()
                    .map(|p| p.bounds_ipc.as_ref().map_or(0, Vec::len) + 32)
                    .sum::<usize>()
        }
        _ => 4 << 10,
    }
}

/// Where a task's files are: the local data roots it may touch, the
/// worker's object-store access, and the request's object-store options.
#[derive(Clone, Copy)]
pub struct Io<'a> {
    pub roots: &'a DataRoots,
    pub remote: &'a Remote,
    pub storage: &'a [(String, String)],
}

/// Expand a source into its files (only under the data roots, or on an
/// object store the worker may reach).
pub fn list_files(io: Io, source: &str) -> Result<TaskOutput, String> {
    let files = if is_remote(source) {
        io.remote.list_files(source, io.storage)?
    } else {
        let path = source.strip_prefix("file://").unwrap_or(source);
        if !path.contains("://") {
            // The whole source first, so that a source outside the roots fails
            // naming itself (not the first directory its listing would open).
            let literal = literal_prefix(path);
            io.roots.check(Path::new(&literal))?;
        }
        scan::list_files_guarded(source, &|p| io.roots.guard(p)).map_err(|e| e.to_string())?
    };
    let output = TaskOutput::Files(files);
    within_result_limit(
        &format!("the file list of '{source}'"),
        approx_output_bytes(&output),
        "narrow the path or glob",
    )?;
    Ok(output)
}

/// The part of a source before its first wildcard component (the source
/// itself when it has none).
fn literal_prefix(source: &str) -> String {
    let mut prefix = std::path::PathBuf::new();
    for c in Path::new(source).components() {
        if c.as_os_str().to_string_lossy().contains(['*', '?', '[']) {
            break;
        }
        prefix.push(c);
    }
    if prefix.as_os_str().is_empty() {
        ".".into()
    } else {
        prefix.display().to_string()
    }
}

/// Read the footers of these files (an object store's all at once).
pub fn read_footers(io: Io, files: &[FileRef]) -> Result<TaskOutput, String> {
    let remote_files: Vec<FileRef> = files
        .iter()
        .filter(|f| is_remote(&f.path))
        .cloned()
        .collect();
    let mut remote_footers = io
        .remote
        .footers(&remote_files, io.storage)?
        .into_iter()
        .zip(&remote_files);
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let footer = if is_remote(&f.path) {
            let (metadata, file) = remote_footers
                .next()
                .ok_or_else(|| format!("{}: internal: no footer fetched", f.path))?;
            scan::footer_from_metadata(file, &metadata).map_err(|e| e.to_string())?
        } else {
            io.roots.check(Path::new(&f.path))?;
            scan::read_footer(f).map_err(|e| e.to_string())?
        };
        let schema_ipc = stratus_protocol::ipc::encode_schema(&footer.schema)
            .map_err(|e| format!("file {}: {e}", f.path))?;
        out.push(FooterMeta {
            file: footer.file,
            num_rows: footer.num_rows,
            row_groups: footer.row_groups,
            schema_ipc,
        });
    }
    let output = TaskOutput::Footers(out);
    within_result_limit(
        &format!("footers of {} files", files.len()),
        approx_output_bytes(&output),
        "fewer or larger files",
    )?;
    Ok(output)
}

/// Read a partition (all rows, or the first `limit`), locally under the
/// data roots or from an object store; and the bytes fetched from the store.
fn read_partition(
    io: Io,
    input: &ParquetPartition,
    columns: Option<&[String]>,
    limit: Option<usize>,
) -> Result<(Vec<RecordBatch>, u64), String> {
    // A partition may group several files: each is checked (local) or
    // fetched (remote) on its own.
    let (batches, fetched) = if is_remote(&input.path) {
        let mut fetched = 0u64;
        let mut failed: Option<String> = None;
        let batches = scan::read_files(input, limit, |file, limit| {
            let (batches, bytes) = io
                .remote
                .read_partition(file, columns, limit, io.storage)
                .map_err(|e| {
                    failed = Some(e.clone());
                    stratus_engine::EngineError::Argument(e)
                })?;
            fetched += bytes;
            Ok(batches)
        });
        match (batches, failed) {
            (Ok(batches), _) => (batches, fetched),
            (Err(_), Some(e)) => return Err(e),
            (Err(e), None) => return Err(e.to_string()),
        }
    } else {
        io.roots.check(Path::new(&input.path))?;
        for file in &input.more {
            io.roots.check(Path::new(&file.path))?;
        }
        let batches = scan::read_partition(input, columns, limit).map_err(|e| e.to_string())?;
        (batches, 0)
    };
    let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    PARQUET_ROWS_READ.fetch_add(rows as u64, Ordering::Relaxed);
    Ok((batches, fetched))
}

/// Read a partition into batches and apply the frame's steps.
pub fn load(
    io: Io,
    input: &ParquetPartition,
    columns: Option<&[String]>,
    steps: &[Step],
) -> Result<Vec<RecordBatch>, String> {
    load_counted(io, input, columns, steps).map(|(batches, _)| batches)
}

/// [`load`], and the bytes fetched from an object store for it.
pub fn load_counted(
    io: Io,
    input: &ParquetPartition,
    columns: Option<&[String]>,
    steps: &[Step],
) -> Result<(Vec<RecordBatch>, u64), String> {
    let (batches, fetched) = read_partition(io, input, columns, None)?;
    let batches = stratus_engine::expr::apply_steps(batches, steps)
        .map_err(|e| format!("partition of {}: {e}", input.path))?;
    Ok((batches, fetched))
}

/// Derive a partition from a held one.
pub fn derive(batches: Vec<RecordBatch>, steps: &[Step]) -> Result<Vec<RecordBatch>, String> {
    stratus_engine::expr::apply_steps(batches, steps).map_err(|e| e.to_string())
}

fn groupby_spec(spec: &GroupBySpec) -> stratus_engine::groupby::GroupBy {
    use stratus_engine::groupby::{AggSpec, GroupBy};
    GroupBy {
        keys: spec.keys.clone(),
        aggs: spec
            .aggs
            .iter()
            .map(|(column, f)| AggSpec::new(column.clone(), *f))
            .collect(),
    }
}

/// The partial group-by of all the batches a worker holds for a frame.
pub fn groupby_partial(batches: &[RecordBatch], spec: &GroupBySpec) -> Result<RecordBatch, String> {
    stratus_engine::groupby::partial(batches, &groupby_spec(spec)).map_err(|e| e.to_string())
}

/// Merge delivered partials into one partial, without finalizing: the work of
/// an intermediate merger of the group-by's tree. The result has the partial
/// layout, so it travels and merges again like a partial.
pub fn groupby_merge(partials: &[RecordBatch], spec: &GroupBySpec) -> Result<RecordBatch, String> {
    stratus_engine::groupby::merge(partials, &groupby_spec(spec)).map_err(|e| e.to_string())
}

/// Merge delivered partials and finalize: the group-by's answer.
pub fn groupby_final(partials: &[RecordBatch], spec: &GroupBySpec) -> Result<TaskOutput, String> {
    let spec = groupby_spec(spec);
    let merged = stratus_engine::groupby::merge(partials, &spec).map_err(|e| e.to_string())?;
    let result = stratus_engine::groupby::finalize(&merged, &spec).map_err(|e| e.to_string())?;
    let rows = result.num_rows() as u64;
    let ipc = stratus_protocol::ipc::encode_batches(&result.schema(), &[result])
        .map_err(|e| e.to_string())?;
    within_result_limit(
        &format!("group-by result ({rows} groups)"),
        ipc.len(),
        "group by fewer keys, or persist and write the result instead",
    )?;
    Ok(TaskOutput::Table { rows, ipc })
}

fn write_options(spec: &WriteSpec) -> stratus_engine::write::WriteOptions {
    stratus_engine::write::WriteOptions {
        dest: spec.dest.clone().into(),
        partition_by: spec.partition_by.clone(),
        job_id: spec.job_id.clone(),
        overwrite: spec.overwrite,
    }
}

/// The destination of a write, checked against the data roots: the
/// destination itself (exactly the path the engine writes to), and the
/// job's staging directory `DEST/_temporary/<job>`, which must resolve
/// inside the roots too and hold no symbolic link (a link planted there
/// would lead the staged files, or their removal, elsewhere).
fn check_dest(roots: &DataRoots, spec: &WriteSpec) -> Result<(), String> {
    let dest = Path::new(&spec.dest);
    roots.check(dest)?;
    let staging = dest.join(stratus_engine::write::TEMPORARY_DIR);
    roots.check(&staging)?;
    let job_dir = staging.join(&spec.job_id);
    roots.check(&job_dir)?;
    if spec.overwrite {
        // An overwrite builds the new dataset next to the old one, then
        // swaps them: that sibling must be inside the roots too.
        if let Some(sibling) = stratus_engine::write::swap_sibling(dest, &spec.job_id) {
            roots.check(&sibling).map_err(|e| {
                format!(
                    "{e} (--overwrite builds the new dataset beside '{}' and swaps it in: \
                     write to a directory below a data root, not a root itself)",
                    spec.dest
                )
            })?;
        }
    }
    no_links_below(&job_dir, 0)
}

/// Refuse a symbolic link anywhere below `dir` (if it exists), without
/// following any.
fn no_links_below(dir: &Path, depth: usize) -> Result<(), String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    if depth > 64 {
        return Err(format!("{} is nested too deep", dir.display()));
    }
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.file_type().is_symlink() {
            return Err(format!(
                "{} is a symbolic link in a write's staging directory; refusing to write through it",
                path.display()
            ));
        }
        if meta.is_dir() {
            no_links_below(&path, depth + 1)?;
        }
    }
    Ok(())
}

/// Refuse an existing destination (unless overwriting a Stratus dataset).
pub fn prepare_write(io: Io, spec: &WriteSpec) -> Result<TaskOutput, String> {
    if is_remote(&spec.dest) {
        io.remote.prepare_write(spec, io.storage)?;
        return Ok(TaskOutput::Ok);
    }
    let roots = io.roots;
    check_dest(roots, spec)?;
    stratus_engine::write::check_destination(&write_options(spec)).map_err(|e| e.to_string())?;
    Ok(TaskOutput::Ok)
}

/// Stage the files of these partitions (one file per partition and hive
/// directory, named after the partition's index so a rerun replaces it).
pub fn write_parts(
    io: Io,
    parts: &[(PartitionKey, Vec<RecordBatch>)],
    spec: &WriteSpec,
) -> Result<TaskOutput, String> {
    if is_remote(&spec.dest) {
        let parts: Vec<(u32, &[RecordBatch])> = parts
            .iter()
            .map(|(key, batches)| (key.index, batches.as_slice()))
            .collect();
        let staged = io.remote.write_parts(&parts, spec, io.storage)?;
        return Ok(TaskOutput::Staged(staged));
    }
    let roots = io.roots;
    check_dest(roots, spec)?;
    let opts = write_options(spec);
    let mut staged = Vec::new();
    for (key, batches) in parts {
        let tag = format!("{:05}", key.index);
        staged.extend(
            stratus_engine::write::write_partition(batches, &opts, &tag)
                .map_err(|e| e.to_string())?,
        );
    }
    Ok(TaskOutput::Staged(staged))
}

/// Move staged files into place, `_SUCCESS` last.
pub fn commit_write(io: Io, spec: &WriteSpec, staged: &[StagedFile]) -> Result<TaskOutput, String> {
    let (rows, count) = if is_remote(&spec.dest) {
        io.remote.commit_write(spec, staged, io.storage)?
    } else {
        check_dest(io.roots, spec)?;
        stratus_engine::write::commit(&write_options(spec), staged).map_err(|e| e.to_string())?
    };
    Ok(TaskOutput::Committed {
        rows,
        files: count as u64,
    })
}

/// Remove a failed write's staged files.
pub fn abort_write(io: Io, spec: &WriteSpec) -> Result<TaskOutput, String> {
    if is_remote(&spec.dest) {
        io.remote.abort_write(spec, io.storage)?;
        return Ok(TaskOutput::Ok);
    }
    let roots = io.roots;
    check_dest(roots, spec)?;
    stratus_engine::write::abort(&write_options(spec)).map_err(|e| e.to_string())?;
    Ok(TaskOutput::Ok)
}

/// Sort-key bounds of each partition and a key sample over all of them.
pub fn sort_sample(
    parts: &[(PartitionKey, Vec<RecordBatch>)],
    key: &str,
    sample: usize,
) -> Result<TaskOutput, String> {
    use stratus_engine::sort;
    let mut partitions = Vec::with_capacity(parts.len());
    let mut samples = Vec::with_capacity(parts.len());
    let per_partition = sample.div_ceil(parts.len().max(1)).max(1);
    for (k, batches) in parts {
        let bounds = sort::key_bounds(batches, key).map_err(|e| e.to_string())?;
        let bounds_ipc = match bounds {
            Some((min, max)) => {
                let batch = RecordBatch::try_from_iter([("min", min), ("max", max)])
                    .map_err(|e| e.to_string())?;
                Some(
                    stratus_protocol::ipc::encode_batches(&batch.schema(), &[batch])
                        .map_err(|e| e.to_string())?,
                )
            }
            None => None,
        };
        partitions.push(PartitionBoundsWire {
            index: k.index,
            bounds_ipc,
            invalid: sort::invalid_count(batches, key).map_err(|e| e.to_string())? as u64,
        });
        samples.push(sort::sample_keys(batches, key, per_partition).map_err(|e| e.to_string())?);
    }
    let merged = samples
        .iter()
        .find(|s| s.data_type() != &arrow_schema::DataType::Null)
        .map(|first| {
            let typed: Vec<&dyn arrow_array::Array> = samples
                .iter()
                .filter(|s| s.data_type() == first.data_type())
                .map(|s| s.as_ref())
                .collect();
            arrow_select::concat::concat(&typed)
        })
        .transpose()
        .map_err(|e| e.to_string())?;
    let sample_ipc = match merged {
        Some(array) => {
            let batch =
                RecordBatch::try_from_iter([("sample", array)]).map_err(|e| e.to_string())?;
            stratus_protocol::ipc::encode_batches(&batch.schema(), &[batch])
                .map_err(|e| e.to_string())?
        }
        None => Vec::new(),
    };
    Ok(TaskOutput::SortSample {
        partitions,
        sample_ipc,
    })
}

/// Split batches by key ranges: one list of batches per range.
pub fn split_ranges(
    batches: &[RecordBatch],
    key: &str,
    boundaries_ipc: &[u8],
) -> Result<Vec<Vec<RecordBatch>>, String> {
    let (_, b) = stratus_protocol::ipc::decode_batches(arrow_buffer::Buffer::from(boundaries_ipc))
        .map_err(|e| e.to_string())?;
    let boundaries = b
        .first()
        .map(|b| b.column(0).clone())
        .ok_or("sort: no boundaries")?;
    stratus_engine::sort::split_by_ranges(batches, key, &boundaries).map_err(|e| e.to_string())
}

/// Sort what arrived for one range.
pub fn sort_range(batches: &[RecordBatch], key: &str) -> Result<Vec<RecordBatch>, String> {
    stratus_engine::sort::sort_batches(batches, key).map_err(|e| e.to_string())
}

/// Rebuild lost ranges of a sorted frame from its lineage: each source is
/// read (with its columns and steps) and split by the sort's boundaries, and
/// only the wanted ranges' pieces are kept; then each range is sorted and
/// gets the frame's later `steps`. One pass over the sources for all ranges.
pub fn rebuild_ranges(
    io: Io,
    sources: &[RangeSource],
    key: &str,
    boundaries_ipc: &[u8],
    ranges: &[u32],
    steps: &[Step],
) -> Result<Vec<(u32, Vec<RecordBatch>)>, String> {
    let mut pieces: Vec<Vec<RecordBatch>> = vec![Vec::new(); ranges.len()];
    for source in sources {
        let batches = load(
            io,
            &source.partition,
            source.columns.as_deref(),
            &source.steps,
        )?;
        let mut split = split_ranges(&batches, key, boundaries_ipc)?;
        let count = split.len();
        for (kept, &r) in pieces.iter_mut().zip(ranges) {
            let range = split.get_mut(r as usize).ok_or_else(|| {
                format!("sort: range {r} is not among the {count} ranges of the sort")
            })?;
            kept.append(range);
        }
    }
    ranges
        .iter()
        .zip(pieces)
        .map(|(&r, batches)| Ok((r, derive(sort_range(&batches, key)?, steps)?)))
        .collect()
}

/// A worker-level reduction over the batches of the partitions it holds.
pub fn reduce(batches: &[RecordBatch], op: &ReduceOp) -> Result<TaskOutput, String> {
    use stratus_engine::describe;
    match op {
        ReduceOp::Summary {
            columns,
            max_distinct,
        } => describe::summaries(batches, columns, *max_distinct as usize)
            .map(TaskOutput::Summaries)
            .map_err(|e| e.to_string()),
        ReduceOp::Histograms { columns } => describe::range_histograms(batches, columns)
            .map(TaskOutput::Histograms)
            .map_err(|e| e.to_string()),
        ReduceOp::SortSample { .. } => Err("sort samples need partitions one by one".into()),
        ReduceOp::MemoryUsage => {
            let Some(first) = batches.first() else {
                return Ok(TaskOutput::ColumnBytes(Vec::new()));
            };
            let schema = first.schema();
            let bytes = stratus_engine::memory::columns_memory_bytes(batches);
            Ok(TaskOutput::ColumnBytes(
                schema
                    .fields()
                    .iter()
                    .zip(bytes)
                    .map(|(field, bytes)| (field.name().clone(), bytes as u64))
                    .collect(),
            ))
        }
    }
}

/// The first `n` rows of batches, as an Arrow IPC stream.
pub fn head_of(
    batches: &[RecordBatch],
    n: u64,
    columns: Option<&[String]>,
) -> Result<TaskOutput, String> {
    let mut taken = Vec::new();
    let mut rows = 0u64;
    let mut schema = None;
    for batch in batches {
        let batch = match columns {
            Some(cols) => {
                let indices = cols
                    .iter()
                    .map(|c| {
                        batch
                            .schema()
                            .index_of(c)
                            .map_err(|_| format!("no column named '{c}'"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                batch.project(&indices).map_err(|e| e.to_string())?
            }
            None => batch.clone(),
        };
        schema.get_or_insert_with(|| batch.schema());
        if rows >= n {
            break;
        }
        let want = (n - rows).min(batch.num_rows() as u64) as usize;
        rows += want as u64;
        taken.push(batch.slice(0, want));
    }
    let Some(schema) = schema else {
        return Ok(TaskOutput::Table {
            rows: 0,
            ipc: Vec::new(),
        });
    };
    let ipc = stratus_protocol::ipc::encode_batches(&schema, &taken).map_err(|e| e.to_string())?;
    within_result_limit(
        &format!("head result ({rows} rows)"),
        ipc.len(),
        "ask for fewer rows or columns",
    )?;
    Ok(TaskOutput::Table { rows, ipc })
}

/// The first `n` rows of a Parquet partition.
pub fn head_parquet(
    io: Io,
    input: &ParquetPartition,
    n: u64,
    columns: Option<&[String]>,
) -> Result<TaskOutput, String> {
    let (batches, _) = read_partition(io, input, columns, Some(n as usize))?;
    head_of(&batches, n, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, ArrayRef, Float64Array, StringArray};
    use std::sync::Arc;

    #[test]
    fn results_over_the_limit_fail_with_advice() {
        let limit = max_result_bytes();
        assert!(within_result_limit("head result (3 rows)", 100, "ask for fewer rows").is_ok());
        let e = within_result_limit(
            "head result (9 rows)",
            limit as usize + 1,
            "ask for fewer rows",
        )
        .unwrap_err();
        assert_eq!(
            e,
            format!(
                "head result (9 rows) of {} bytes exceeds the result limit of {limit}; ask for fewer rows",
                limit + 1
            )
        );
    }

    fn table(output: TaskOutput) -> RecordBatch {
        let TaskOutput::Table { ipc, .. } = output else {
            panic!("expected a table, got {output:?}");
        };
        let (_, batches) =
            stratus_protocol::ipc::decode_batches(arrow_buffer::Buffer::from(ipc.as_slice()))
                .expect("decode the result");
        assert_eq!(batches.len(), 1);
        batches.into_iter().next().unwrap()
    }

    /// A merged partial delivered to the next level of the tree, as Arrow IPC.
    fn delivered(partial: RecordBatch) -> RecordBatch {
        let ipc =
            stratus_protocol::ipc::encode_batches(&partial.schema(), &[partial]).expect("encode");
        let (_, mut batches) =
            stratus_protocol::ipc::decode_batches(arrow_buffer::Buffer::from(ipc.as_slice()))
                .expect("decode");
        batches.remove(0)
    }

    #[test]
    fn merging_partials_in_a_tree_gives_the_star_result() {
        use stratus_protocol::messages::AggFunc::*;
        let spec = GroupBySpec {
            keys: vec!["city".into()],
            aggs: [Count, Sum, Mean, Std, Min, Max]
                .into_iter()
                .map(|f| ("temperature".to_string(), f))
                .collect(),
        };
        let cities = ["Oslo", "Lima", "Pune", "Kyiv"];
        // Five holders' partials over different mixes of cities and values.
        let partials: Vec<RecordBatch> = (0..5)
            .map(|h| {
                let rows = 7 + 3 * h;
                let city: Vec<&str> = (0..rows).map(|i| cities[(i * (h + 1)) % 4]).collect();
                let temperature: Vec<Option<f64>> = (0..rows)
                    .map(|i| (i % 5 != 3).then(|| 1000.0 + (i * 7 + h * 13) as f64 / 8.0))
                    .collect();
                let batch = RecordBatch::try_from_iter([
                    ("city", Arc::new(StringArray::from(city)) as ArrayRef),
                    (
                        "temperature",
                        Arc::new(Float64Array::from(temperature)) as ArrayRef,
                    ),
                ])
                .unwrap();
                groupby_partial(&[batch], &spec).unwrap()
            })
            .collect();

        let star = table(groupby_final(&partials, &spec).unwrap());
        // Fan-in 2: (0 1) (2 3) 4 -> ((0 1) (2 3)) 4 -> root.
        let m01 = delivered(groupby_merge(&partials[0..2], &spec).unwrap());
        let m23 = delivered(groupby_merge(&partials[2..4], &spec).unwrap());
        let m0123 = delivered(groupby_merge(&[m01, m23], &spec).unwrap());
        let tree = table(groupby_final(&[m0123, partials[4].clone()], &spec).unwrap());

        assert_eq!(star.schema(), tree.schema());
        assert_eq!(star.num_rows(), 4);
        for (name, (a, b)) in star
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .zip(star.columns().iter().zip(tree.columns()))
        {
            match (
                a.as_any().downcast_ref::<Float64Array>(),
                b.as_any().downcast_ref::<Float64Array>(),
            ) {
                (Some(a), Some(b)) => {
                    for i in 0..a.len() {
                        assert_eq!(a.is_null(i), b.is_null(i), "{name}[{i}]");
                        let (x, y) = (a.value(i), b.value(i));
                        assert!(
                            (x - y).abs() <= 1e-12 * x.abs().max(1.0),
                            "{name}[{i}]: star {x}, tree {y}"
                        );
                    }
                }
                _ => assert_eq!(a, b, "column {name}"),
            }
        }
    }
}
