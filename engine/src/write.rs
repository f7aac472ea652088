//! Parquet dataset writer: many tasks write their partitions of one dataset straight into
//! the destination directory, hive-partitioned (`dest/year=2008/month=1/part-00017.snappy.parquet`,
//! the partition columns in the path only, never inside the files), and the job then
//! commits the whole dataset at once.
//!
//! This module owns the destination check, the per-task writer ([`write_partition`]), the
//! job commit ([`commit`]) and the job abort ([`abort`]). Files are framed by parquet's
//! `SerializedFileWriter`; the columns where parquet's `ArrowWriter` is slowest (dictionary
//! strings, float dictionaries, ascending integers) are encoded by [`crate::parquet_pages`],
//! the others by parquet's own column writers.
//!
//! # Commit protocol
//!
//! 1. Before any task runs, [`check_destination`] refuses a destination that is a file, or a
//!    non-empty directory unless [`WriteOptions::overwrite`] is set.
//! 2. Each task writes its files under `dest/_temporary/<job_id>/<hive dirs>/`: first to a
//!    hidden per-attempt name, then renamed to `part-<task_tag>.snappy.parquet`, so a rerun of
//!    a task replaces the staged file atomically. Readers skip `_`-prefixed names
//!    ([`crate::scan::list_files`]), so nothing staged is visible.
//! 3. Once every task succeeded, [`commit`] checks the staged files, renames every staged
//!    file to its final path, removes `_temporary/<job_id>` (and `_temporary` when empty),
//!    and writes the `_SUCCESS` marker last. Overwriting an existing dataset is atomic
//!    instead: the new dataset is built whole in a sibling directory and swapped with the
//!    old one in one `renameat2(RENAME_EXCHANGE)`, then the old one is removed, so a crash
//!    at any moment leaves the old dataset or the new one whole at the destination.
//! 4. A failed job calls [`abort`], which removes `_temporary/<job_id>` and the destination
//!    itself when this job created it and it is empty again: no half dataset is left behind.
//!
//! A partition value that is null or an empty string is an error naming the column (it is
//! not written as Hive's `__HIVE_DEFAULT_PARTITION__`, which would read back as a string
//! and break the column's type). Partition columns must be integers or strings (plain or
//! dictionary-encoded); values are rendered as decimal integers or the string itself, with
//! the characters Hive escapes (`/`, `=`, `%`, `:`, `#`, `?`, quotes, control characters,
//! ...) percent-encoded, which [`crate::scan::list_files`], pyarrow and DuckDB decode.

use std::collections::{HashMap, HashSet};
use std::fs::{self, File};
use std::io::{ErrorKind, Read as _, Write as _};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::*;
use arrow_array::{Array, ArrayRef, ArrowPrimitiveType, RecordBatch, Scalar, UInt32Array};
use arrow_cast::cast;
use arrow_row::{RowConverter, SortField};
use arrow_schema::{DataType, SchemaRef, TimeUnit};
use arrow_select::take::take_record_batch;
use parquet::arrow::arrow_writer::{compute_leaves, ArrowRowGroupWriterFactory};
use parquet::arrow::{add_encoded_arrow_schema_to_metadata, ArrowSchemaConverter, ArrowWriter};
use parquet::basic::{Compression, Encoding};
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::ColumnPath;

use crate::error::{EngineError, Result};
use crate::parquet_pages::{byte_dicts_fit, direct_kind, write_chunk_direct, Direct};

/// Rows per row group in the files written.
pub const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Name of the directory holding staged (not yet committed) files, inside the destination.
pub const TEMPORARY_DIR: &str = "_temporary";

/// Name of the marker written last by [`commit`].
pub const SUCCESS_MARKER: &str = "_SUCCESS";

/// Marker left in `_temporary/<job_id>` when this job created the destination directory,
/// so that [`abort`] removes it again.
const CREATED_DEST_MARKER: &str = ".created-destination";

/// Options of one dataset write.
#[derive(Debug, Clone)]
pub struct WriteOptions {
    /// The dataset directory.
    pub dest: PathBuf,
    /// Columns whose values make the hive directories, outermost first; empty for none.
    pub partition_by: Vec<String>,
    /// Identifier of the job, unique per write (letters, digits, `-`, `_`, `.`).
    pub job_id: String,
    /// Replace an existing dataset at `dest` instead of refusing to write.
    pub overwrite: bool,
}

pub use stratus_plan::StagedFile;

// ---------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------

fn dest_str(opts: &WriteOptions) -> Result<&str> {
    let dest = opts.dest.to_str().ok_or_else(|| EngineError::Invalid {
        path: opts.dest.display().to_string(),
        reason: "destination path is not valid UTF-8".into(),
    })?;
    if dest.trim().is_empty() {
        return Err(EngineError::Argument("empty destination path".into()));
    }
    Ok(dest)
}

/// A job id or task tag: used as a path segment, so only safe characters.
fn check_token(what: &str, value: &str, dest: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= MAX_TOKEN_BYTES
        && !value.starts_with('.')
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(EngineError::Argument(format!(
            "writing {dest}: invalid {what} '{value}' (1 to 128 letters, digits, '-', '_' or '.', not starting with '.')"
        )))
    }
}

fn check_options(opts: &WriteOptions) -> Result<&str> {
    let dest = dest_str(opts)?;
    check_token("job id", &opts.job_id, dest)?;
    let mut seen = HashSet::new();
    for name in &opts.partition_by {
        if name.is_empty() {
            return Err(EngineError::Argument(format!(
                "writing {dest}: empty partition column name"
            )));
        }
        if !seen.insert(name.as_str()) {
            return Err(EngineError::Argument(format!(
                "writing {dest}: partition column '{name}' is given twice"
            )));
        }
    }
    Ok(dest)
}

// ---------------------------------------------------------------------------------------
// Destination check
// ---------------------------------------------------------------------------------------

/// Check before any task runs: `dest` must not exist as a non-empty directory unless
/// `overwrite` is set (the error names `dest` and says to pass `--overwrite`), and must not
/// be a file at all (not even with `overwrite`: a file is never replaced by a dataset).
/// Also validates the options (job id, partition column names).
pub fn check_destination(opts: &WriteOptions) -> Result<()> {
    let dest = check_options(opts)?;
    let meta = match fs::metadata(&opts.dest) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(EngineError::io(dest, e)),
    };
    if !meta.is_dir() {
        return Err(EngineError::Argument(format!(
            "destination '{dest}' exists and is a file, not a dataset directory; remove it or choose another destination"
        )));
    }
    let names = dir_names(&opts.dest, dest)?;
    if names.is_empty() {
        return Ok(());
    }
    if opts.overwrite {
        return match not_a_dataset(&opts.dest)? {
            None => Ok(()),
            Some(why) => Err(refuse_overwrite(dest, &why)),
        };
    }
    if names.iter().all(|n| n == TEMPORARY_DIR) {
        return Err(EngineError::Argument(format!(
            "destination '{dest}' holds an unfinished write ({TEMPORARY_DIR}/): another job may be writing there, or a failed one left it; remove '{}' or pass --overwrite",
            opts.dest.join(TEMPORARY_DIR).display()
        )));
    }
    let what = if names.iter().any(|n| n == SUCCESS_MARKER) {
        "already holds a dataset"
    } else {
        "already exists and is not empty"
    };
    Err(EngineError::Argument(format!(
        "destination '{dest}' {what}; pass --overwrite (overwrite=True from Python) to replace it"
    )))
}

fn refuse_overwrite(dest: &str, why: &str) -> EngineError {
    EngineError::Argument(format!(
        "--overwrite refused: '{dest}' is not a Stratus dataset ({why}); --overwrite replaces only a directory holding {SUCCESS_MARKER} or only files a Stratus write leaves (key=value/ directories, part-*.parquet files, {TEMPORARY_DIR}/); remove it yourself or choose another destination"
    ))
}

/// Whether `dir` is a dataset a write may replace: `None` when it holds
/// `_SUCCESS` (a dataset Stratus, Spark or Hadoop committed), or only what
/// a Stratus write leaves (`_temporary/`, hive `key=value/` directories and
/// `part-*.parquet` files, and the hidden `.part-*.inprogress` names of a
/// write that died); else what is there that Stratus did not write. A
/// symbolic link anywhere is never Stratus' own. Reads directory entries
/// only (`symlink_metadata`), never follows links.
pub fn not_a_dataset(dir: &Path) -> Result<Option<String>> {
    let shown = dir.display().to_string();
    let names = dir_names(dir, &shown)?;
    if names.iter().any(|n| n == SUCCESS_MARKER) {
        return Ok(None);
    }
    fn walk(dir: &Path, top: bool, staging: bool, depth: usize) -> Result<Option<String>> {
        if depth > 64 {
            return Ok(Some(format!("{} is nested too deep", dir.display())));
        }
        let shown = dir.display().to_string();
        for name in dir_names(dir, &shown)? {
            let p = dir.join(&name);
            let meta = fs::symlink_metadata(&p)
                .map_err(|e| EngineError::io(p.display().to_string(), e))?;
            let kind = meta.file_type();
            if kind.is_symlink() {
                return Ok(Some(format!("{} is a symbolic link", p.display())));
            }
            let ours = if kind.is_dir() {
                (top && name == TEMPORARY_DIR)
                    || name
                        .split_once('=')
                        .is_some_and(|(k, _)| !k.is_empty() && !k.starts_with('.'))
                    // Inside _temporary: job directories.
                    || staging
            } else if kind.is_file() {
                (name.starts_with("part-") && name.ends_with(".parquet"))
                    || (name.starts_with(".part-") && name.ends_with(".inprogress"))
                    || name == CREATED_DEST_MARKER
            } else {
                false
            };
            if !ours {
                return Ok(Some(format!("it holds {}", p.display())));
            }
            if kind.is_dir() {
                let staging = staging || (top && name == TEMPORARY_DIR);
                if let Some(why) = walk(&p, false, staging, depth + 1)? {
                    return Ok(Some(why));
                }
            }
        }
        Ok(None)
    }
    walk(dir, true, false, 0)
}

/// Names of the entries of a directory (non-UTF-8 names lossily converted).
fn dir_names(dir: &Path, shown: &str) -> Result<Vec<String>> {
    let rd = fs::read_dir(dir).map_err(|e| EngineError::io(shown, e))?;
    let mut names = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| EngineError::io(shown, e))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

// ---------------------------------------------------------------------------------------
// Hive path segments
// ---------------------------------------------------------------------------------------

/// Whether Hive percent-encodes this character in a path segment.
fn needs_escape(c: char) -> bool {
    c < ' '
        || c == '\x7f'
        || matches!(
            c,
            '"' | '#' | '%' | '\'' | '*' | '/' | ':' | '=' | '?' | '\\' | '{' | '[' | ']' | '^'
        )
}

fn push_escaped(out: &mut String, c: char) {
    let mut buf = [0u8; 4];
    for b in c.encode_utf8(&mut buf).bytes() {
        out.push_str(&format!("%{b:02X}"));
    }
}

/// Percent-encode a hive key or value. A key's leading `_` or `.` is encoded too, so the
/// directory is not taken for a hidden one by readers.
fn escape_hive(s: &str, is_key: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for (i, c) in s.chars().enumerate() {
        if needs_escape(c) || (is_key && i == 0 && (c == '_' || c == '.')) {
            push_escaped(&mut out, c);
        } else {
            out.push(c);
        }
    }
    out
}

/// Whether a partition column of this type can be rendered into a path.
fn partition_type_ok(dt: &DataType) -> bool {
    match dt {
        DataType::Dictionary(_, value) => {
            !matches!(**value, DataType::Dictionary(_, _)) && partition_type_ok(value)
        }
        _ => {
            dt.is_integer()
                || matches!(
                    dt,
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
                )
        }
    }
}

// ---------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------

/// Create the destination (remembering whether this job created it) and the job's
/// staging directory; return the latter.
fn ensure_job_dir(opts: &WriteOptions, dest: &str) -> Result<PathBuf> {
    let create = || fs::create_dir(&opts.dest);
    let created = match create() {
        Ok(()) => true,
        Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            if let Some(parent) = opts.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                fs::create_dir_all(parent)
                    .map_err(|e| EngineError::io(parent.display().to_string(), e))?;
            }
            match create() {
                Ok(()) => true,
                Err(e) if e.kind() == ErrorKind::AlreadyExists => false,
                Err(e) => return Err(EngineError::io(dest, e)),
            }
        }
        Err(e) => return Err(EngineError::io(dest, e)),
    };
    let job_dir = opts.dest.join(TEMPORARY_DIR).join(&opts.job_id);
    fs::create_dir_all(&job_dir).map_err(|e| EngineError::io(job_dir.display().to_string(), e))?;
    if created {
        let marker = job_dir.join(CREATED_DEST_MARKER);
        File::create(&marker).map_err(|e| EngineError::io(marker.display().to_string(), e))?;
    }
    Ok(job_dir)
}

/// A name unique to this attempt of a task (process, time, counter).
fn attempt_suffix() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!(
        "{}-{nanos}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether a column's values are byte strings (plain, large, views, or a dictionary of
/// them): their min/max statistics cost a string comparison per row.
fn is_byte_array(dt: &DataType) -> bool {
    match dt {
        DataType::Dictionary(_, v) => is_byte_array(v),
        DataType::Utf8
        | DataType::LargeUtf8
        | DataType::Utf8View
        | DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView => true,
        _ => false,
    }
}

/// Whether column `i` is an integer-like column (stored as Parquet INT32/INT64) whose valid
/// values never decrease over `pieces`, in order: such a column is written with
/// `DELTA_BINARY_PACKED` rather than a dictionary.
fn is_ascending(pieces: &[RecordBatch], i: usize) -> bool {
    fn ascending<T: ArrowPrimitiveType>(pieces: &[RecordBatch], i: usize) -> bool
    where
        T::Native: PartialOrd,
    {
        let mut last: Option<T::Native> = None;
        for p in pieces {
            let Some(a) = p.column(i).as_primitive_opt::<T>() else {
                return false;
            };
            let values = a.values();
            let ok = match a.nulls().filter(|n| n.null_count() > 0) {
                None => {
                    let in_order = values.windows(2).all(|w| w[0] <= w[1]);
                    let joined = match (last, values.first()) {
                        (Some(l), Some(&f)) => l <= f,
                        _ => true,
                    };
                    if let Some(&v) = values.last() {
                        last = Some(v);
                    }
                    in_order && joined
                }
                Some(nulls) => nulls.valid_indices().all(|j| {
                    let v = values[j];
                    let ok = last.is_none_or(|l| l <= v);
                    last = Some(v);
                    ok
                }),
            };
            if !ok {
                return false;
            }
        }
        true
    }
    let Some(first) = pieces.first() else {
        return false;
    };
    match first.schema_ref().field(i).data_type() {
        DataType::Int8 => ascending::<Int8Type>(pieces, i),
        DataType::Int16 => ascending::<Int16Type>(pieces, i),
        DataType::Int32 => ascending::<Int32Type>(pieces, i),
        DataType::Int64 => ascending::<Int64Type>(pieces, i),
        DataType::Date32 => ascending::<Date32Type>(pieces, i),
        DataType::Date64 => ascending::<Date64Type>(pieces, i),
        DataType::Timestamp(TimeUnit::Second, _) => ascending::<TimestampSecondType>(pieces, i),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            ascending::<TimestampMillisecondType>(pieces, i)
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            ascending::<TimestampMicrosecondType>(pieces, i)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => {
            ascending::<TimestampNanosecondType>(pieces, i)
        }
        _ => false,
    }
}

/// Writer properties of one file, from its schema and the batches it will hold.
///
/// Measured on ISD-like data (`cargo bench -p stratus-engine --bench kernels`, callgrind
/// instructions per row of `write_partition`, file bytes per row):
///
/// - Snappy on every column (the dataset's files are named `*.snappy.parquet`): about 10 %
///   smaller files (dictionary pages and timestamps compress; pages of bit-packed
///   dictionary indices barely do) for about 5 % of the writer's CPU.
/// - Dictionary encoding stays on (parquet's default) for every column but the ascending
///   ones below: float measurements have few distinct values, and without a dictionary the
///   files grow 1.8x for 6 % less CPU.
/// - Integer-like columns (timestamps, dates, integers) whose values never decrease in this
///   file (a persisted ISD partition is in time order) are written with
///   `DELTA_BINARY_PACKED` instead of a dictionary: no hashing per value and smaller files
///   (-5 % CPU, -17 % bytes on ISD).
/// - No statistics for byte-string columns (strings and their dictionaries): parquet
///   computes their min/max with a string comparison per row (12 % of the writer's CPU on
///   ISD's six string columns) and min/max of unsorted strings rarely prune anything.
///   Numeric and temporal columns keep page-level statistics (and the column index).
/// - Row groups of at most [`ROW_GROUP_ROWS`] rows; parquet's default page sizes, write
///   batch size and data page version 1 (larger batches or pages bought nothing
///   measurable; version 2 pages 1 %, not worth the older readers it would shut out).
///
/// (These were measured with parquet's `ArrowWriter` for every column; most columns are now
/// encoded by [`write_chunk_direct`] with the same encodings.)
fn writer_properties(schema: &SchemaRef, pieces: &[RecordBatch]) -> WriterProperties {
    let mut b = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS));
    for (i, f) in schema.fields().iter().enumerate() {
        let path = ColumnPath::from(f.name().as_str());
        if is_byte_array(f.data_type()) {
            b = b.set_column_statistics_enabled(path, EnabledStatistics::None);
        } else if is_ascending(pieces, i) {
            b = b
                .set_column_dictionary_enabled(path.clone(), false)
                .set_column_encoding(path, Encoding::DELTA_BINARY_PACKED);
        }
    }
    b.build()
}

/// Write one file of a task under `job_dir/rel_dir`, via a hidden per-attempt name then a
/// rename, and describe it.
fn write_file(
    opts: &WriteOptions,
    job_dir: &Path,
    rel_dir: &str,
    task_tag: &str,
    schema: &SchemaRef,
    pieces: &[RecordBatch],
) -> Result<StagedFile> {
    let dir = if rel_dir.is_empty() {
        job_dir.to_path_buf()
    } else {
        job_dir.join(rel_dir)
    };
    fs::create_dir_all(&dir).map_err(|e| EngineError::io(dir.display().to_string(), e))?;
    let name = format!("part-{task_tag}.snappy.parquet");
    let temp = dir.join(&name);
    let attempt = dir.join(format!(".{name}.{}.inprogress", attempt_suffix()));
    let attempt_str = attempt.display().to_string();

    let result = (|| -> Result<(u64, u64)> {
        let file = File::create(&attempt).map_err(|e| EngineError::io(&attempt_str, e))?;
        let props = writer_properties(schema, pieces);
        let rows = pieces.iter().map(|b| b.num_rows() as u64).sum();
        let file = match direct_columns(schema, &props) {
            Some(kinds) => write_direct(file, schema, props, pieces, &kinds),
            None => write_arrow(file, schema, props, pieces),
        }
        .map_err(|e| EngineError::parquet(&attempt_str, e))?;
        let bytes = file
            .metadata()
            .map_err(|e| EngineError::io(&attempt_str, e))?
            .len();
        Ok((rows, bytes))
    })();
    let (rows, bytes) = match result {
        Ok(v) => v,
        Err(e) => {
            let _ = fs::remove_file(&attempt);
            return Err(e);
        }
    };
    if let Err(e) = fs::rename(&attempt, &temp) {
        let _ = fs::remove_file(&attempt);
        return Err(EngineError::io(temp.display().to_string(), e));
    }
    let final_dir = if rel_dir.is_empty() {
        opts.dest.clone()
    } else {
        opts.dest.join(rel_dir)
    };
    Ok(StagedFile {
        temp_path: temp.display().to_string(),
        final_path: final_dir.join(&name).display().to_string(),
        rows,
        bytes,
    })
}

/// Write `pieces` with parquet's `ArrowWriter`.
fn write_arrow<W: std::io::Write + Send>(
    file: W,
    schema: &SchemaRef,
    props: WriterProperties,
    pieces: &[RecordBatch],
) -> parquet::errors::Result<W> {
    let mut writer = ArrowWriter::try_new(file, schema.clone(), Some(props))?;
    for batch in pieces {
        writer.write(batch)?;
    }
    writer.into_inner()
}

/// The columns [`write_direct`] encodes itself, or `None` when there is none or the schema
/// is nested (one Parquet leaf per field is assumed).
fn direct_columns(schema: &SchemaRef, props: &WriterProperties) -> Option<Vec<Option<Direct>>> {
    if schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return None;
    }
    let kinds: Vec<Option<Direct>> = schema
        .fields()
        .iter()
        .map(|f| direct_kind(f.data_type(), props, &ColumnPath::from(f.name().as_str())))
        .collect();
    kinds.iter().any(Option::is_some).then_some(kinds)
}

/// Write `pieces` as `ArrowWriter` does (same schema, metadata and row groups), the columns
/// of `kinds` encoded by [`write_chunk_direct`], the others by parquet's column writers.
fn write_direct<W: std::io::Write + Send>(
    file: W,
    schema: &SchemaRef,
    mut props: WriterProperties,
    pieces: &[RecordBatch],
    kinds: &[Option<Direct>],
) -> parquet::errors::Result<W> {
    let parquet_schema = ArrowSchemaConverter::new()
        .with_coerce_types(props.coerce_types())
        .convert(schema)?;
    if parquet_schema.num_columns() != schema.fields().len() {
        return write_arrow(file, schema, props, pieces);
    }
    add_encoded_arrow_schema_to_metadata(schema, &mut props);
    let props = Arc::new(props);
    let mut writer =
        SerializedFileWriter::new(file, parquet_schema.root_schema_ptr(), props.clone())?;
    // Row groups of at most the maximum rows, as `ArrowWriter` cuts them.
    let max_rows = props.max_row_group_row_count().unwrap_or(usize::MAX).max(1);
    let mut row_groups: Vec<Vec<RecordBatch>> = Vec::new();
    let mut current: Vec<RecordBatch> = Vec::new();
    let mut current_rows = 0;
    for p in pieces {
        let mut offset = 0;
        while offset < p.num_rows() {
            let take = (max_rows - current_rows).min(p.num_rows() - offset);
            current.push(p.slice(offset, take));
            offset += take;
            current_rows += take;
            if current_rows == max_rows {
                row_groups.push(std::mem::take(&mut current));
                current_rows = 0;
            }
        }
    }
    if current_rows > 0 {
        row_groups.push(current);
    }
    let factory = ArrowRowGroupWriterFactory::new(&writer, schema.clone());
    for (g, group) in row_groups.iter().enumerate() {
        let column_writers = factory.create_column_writers(g)?;
        let mut rg = writer.next_row_group()?;
        for (i, (field, mut cw)) in schema.fields().iter().zip(column_writers).enumerate() {
            let arrays: Vec<ArrayRef> = group.iter().map(|b| b.column(i).clone()).collect();
            let descr = parquet_schema.column(i);
            let dict_limit = props.column_dictionary_page_size_limit(descr.path());
            let kind =
                kinds[i].filter(|&k| k != Direct::ByteDict || byte_dicts_fit(&arrays, dict_limit));
            let direct = match kind {
                Some(kind) => write_chunk_direct(kind, &descr, &props, &arrays)?,
                None => None,
            };
            match direct {
                Some((chunk, close)) => rg.append_column(chunk.buffer(), close)?,
                None => {
                    for a in &arrays {
                        for leaf in compute_leaves(field, a)? {
                            cw.write(&leaf)?;
                        }
                    }
                    cw.close()?.append_to_row_group(&mut rg)?;
                }
            }
        }
        rg.close()?;
    }
    writer.into_inner()
}

/// Rows of one output directory, as pieces of the projected batches in input order: whole
/// batches (a batch with one partition value, the usual case), or zero-copy slices of a
/// batch's one reordered copy (a batch holding several partition values).
struct Group {
    dir: String,
    pieces: Vec<RecordBatch>,
}

/// Write one partition's batches (called on a worker; `task_tag` unique per partition, e.g.
/// `"00017"`): split rows by the values of the `partition_by` columns, write each group to
/// `dest/_temporary/<job_id>/<hive dirs>/part-<task_tag>.snappy.parquet` without the partition
/// columns (Snappy, row groups of [`ROW_GROUP_ROWS`] rows), and return the staged files
/// (`final_path` is the same path outside `_temporary/<job_id>`), sorted by path.
///
/// Partition columns must be integer or string columns (dictionary-encoded allowed); their
/// values render as hive segments (`year=2008`, strings percent-encoded). Errors, naming the
/// destination and the column: a missing partition column, one of another type, a null or
/// empty-string value (no `__HIVE_DEFAULT_PARTITION__`), every column being a partition
/// column, batches whose schemas differ. No rows at all write no file. Running the same task
/// again replaces its staged files atomically.
pub fn write_partition(
    batches: &[RecordBatch],
    opts: &WriteOptions,
    task_tag: &str,
) -> Result<Vec<StagedFile>> {
    let dest = check_options(opts)?;
    let Some((data_schema, groups)) = group_partition(batches, opts, task_tag)? else {
        return Ok(Vec::new());
    };
    let job_dir = ensure_job_dir(opts, dest)?;
    let mut staged = Vec::with_capacity(groups.len());
    for g in groups {
        staged.push(write_file(
            opts,
            &job_dir,
            &g.dir,
            task_tag,
            &data_schema,
            &g.pieces,
        )?);
    }
    Ok(staged)
}

/// One file of a partition encoded in memory, for a destination without
/// files to stage in (an object store).
#[derive(Debug)]
pub struct EncodedFile {
    /// Hive directories, `/`-separated, empty for none (`year=2008/month=1`).
    pub dir: String,
    /// Rows in the file.
    pub rows: u64,
    /// The whole Parquet file.
    pub data: Vec<u8>,
}

/// [`write_partition`]'s files encoded in memory instead of staged on disk:
/// the same split by partition values, the same encodings and row groups.
/// The caller names and uploads them.
pub fn encode_partition(
    batches: &[RecordBatch],
    opts: &WriteOptions,
    task_tag: &str,
) -> Result<Vec<EncodedFile>> {
    let dest = check_options(opts)?;
    let Some((schema, groups)) = group_partition(batches, opts, task_tag)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        let props = writer_properties(&schema, &g.pieces);
        let rows = g.pieces.iter().map(|b| b.num_rows() as u64).sum();
        let data = match direct_columns(&schema, &props) {
            Some(kinds) => write_direct(Vec::new(), &schema, props, &g.pieces, &kinds),
            None => write_arrow(Vec::new(), &schema, props, &g.pieces),
        }
        .map_err(|e| EngineError::parquet(format!("{dest}/{}", g.dir), e))?;
        out.push(EncodedFile {
            dir: g.dir,
            rows,
            data,
        });
    }
    Ok(out)
}

/// The data schema and the groups of rows by hive directory of one
/// partition's batches; None when there is no row to write.
fn group_partition(
    batches: &[RecordBatch],
    opts: &WriteOptions,
    task_tag: &str,
) -> Result<Option<(SchemaRef, Vec<Group>)>> {
    let dest = check_options(opts)?;
    check_token("task tag", task_tag, dest)?;
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    let schema = first.schema();
    for b in &batches[1..] {
        let same = b.schema().fields().len() == schema.fields().len()
            && b.schema()
                .fields()
                .iter()
                .zip(schema.fields())
                .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type());
        if !same {
            return Err(EngineError::Argument(format!(
                "writing {dest} (task {task_tag}): the batches do not share one schema"
            )));
        }
    }
    let columns = || {
        schema
            .fields()
            .iter()
            .map(|f| f.name().as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut part_idx = Vec::with_capacity(opts.partition_by.len());
    for name in &opts.partition_by {
        let Some(i) = schema.fields().iter().position(|f| f.name() == name) else {
            return Err(EngineError::Argument(format!(
                "writing {dest}: no partition column named '{name}' (columns: {})",
                columns()
            )));
        };
        let dt = schema.field(i).data_type();
        if !partition_type_ok(dt) {
            return Err(EngineError::Argument(format!(
                "writing {dest}: partition column '{name}' is {dt}; only integer and string columns can partition a dataset"
            )));
        }
        part_idx.push(i);
    }
    let data_idx: Vec<usize> = (0..schema.fields().len())
        .filter(|i| !part_idx.contains(i))
        .collect();
    if data_idx.is_empty() {
        return Err(EngineError::Argument(format!(
            "writing {dest}: every column ({}) is a partition column; nothing is left to write in the files",
            columns()
        )));
    }
    let data_schema: SchemaRef = Arc::new(
        schema
            .project(&data_idx)
            .map_err(|e| EngineError::arrow(dest, e))?,
    );
    // The data columns of every batch, under the one data schema.
    let projected = batches
        .iter()
        .map(|b| {
            let cols = data_idx.iter().map(|&i| b.column(i).clone()).collect();
            RecordBatch::try_new(data_schema.clone(), cols).map_err(|e| EngineError::arrow(dest, e))
        })
        .collect::<Result<Vec<_>>>()?;
    if projected.iter().all(|b| b.num_rows() == 0) {
        return Ok(None);
    }

    let groups = if part_idx.is_empty() {
        vec![Group {
            dir: String::new(),
            pieces: projected.into_iter().filter(|b| b.num_rows() > 0).collect(),
        }]
    } else {
        group_rows(batches, &projected, opts, dest, &part_idx)?
    };
    Ok(Some((data_schema, groups)))
}

/// Whether every row of `col` (which holds no null) has the value of its first row.
fn is_constant(col: &ArrayRef, dest: &str) -> Result<bool> {
    if col.len() <= 1 {
        return Ok(true);
    }
    let first = Scalar::new(col.slice(0, 1));
    let same = arrow_ord::cmp::eq(col, &first).map_err(|e| EngineError::arrow(dest, e))?;
    Ok(same.true_count() == col.len())
}

/// Groups of rows by hive directory, with the row-format key of each group's values.
struct Grouper<'a> {
    opts: &'a WriteOptions,
    dest: &'a str,
    converter: RowConverter,
    index: HashMap<Box<[u8]>, usize>,
    groups: Vec<Group>,
}

impl Grouper<'_> {
    /// The group of the partition values `key` (the row-format key of row `r` of `cols`),
    /// created with its directory (`k1=v1/k2=v2`) on first sight.
    fn group(&mut self, key: &[u8], cols: &[ArrayRef], r: usize) -> Result<usize> {
        if let Some(&g) = self.index.get(key) {
            return Ok(g);
        }
        let mut dir = String::new();
        for (k, col) in cols.iter().enumerate() {
            let name = &self.opts.partition_by[k];
            let rendered = cast(col.slice(r, 1).as_ref(), &DataType::Utf8)
                .map_err(|e| EngineError::arrow(self.dest, e))?;
            let value = rendered.as_string::<i32>().value(0);
            if value.is_empty() {
                return Err(EngineError::Argument(format!(
                    "writing {}: partition column '{name}' holds an empty string; it cannot name a hive directory",
                    self.dest
                )));
            }
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(&escape_hive(name, true));
            dir.push('=');
            dir.push_str(&escape_hive(value, false));
        }
        self.groups.push(Group {
            dir,
            pieces: Vec::new(),
        });
        self.index.insert(key.into(), self.groups.len() - 1);
        Ok(self.groups.len() - 1)
    }
}

/// Group the rows of every batch by their hive directory, sorted by directory; each
/// group's pieces come from `projected` (the batches without their partition columns).
///
/// A batch whose partition columns are constant (the usual case: a persisted partition
/// comes from one hive directory) goes whole into its group, with no per-row work but one
/// comparison pass. Otherwise each row gets its group id (row-format keys; a row equal to
/// the previous one is not hashed again), the batch is reordered by group id with one
/// stable `take`, and each group gets a zero-copy slice of that copy.
fn group_rows(
    batches: &[RecordBatch],
    projected: &[RecordBatch],
    opts: &WriteOptions,
    dest: &str,
    part_idx: &[usize],
) -> Result<Vec<Group>> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let fields = part_idx
        .iter()
        .map(|&i| SortField::new(first.schema_ref().field(i).data_type().clone()))
        .collect();
    let mut grouper = Grouper {
        opts,
        dest,
        converter: RowConverter::new(fields).map_err(|e| EngineError::arrow(dest, e))?,
        index: HashMap::new(),
        groups: Vec::new(),
    };
    for (batch, data) in batches.iter().zip(projected) {
        let n = batch.num_rows();
        if n == 0 {
            continue;
        }
        let cols: Vec<ArrayRef> = part_idx.iter().map(|&i| batch.column(i).clone()).collect();
        for (k, c) in cols.iter().enumerate() {
            let nulls = c.logical_null_count();
            if nulls > 0 {
                return Err(EngineError::Argument(format!(
                    "writing {dest}: partition column '{}' holds {nulls} null value(s); a null cannot name a hive directory",
                    opts.partition_by[k],
                )));
            }
        }
        let mut constant = true;
        for c in &cols {
            if !is_constant(c, dest)? {
                constant = false;
                break;
            }
        }
        if constant {
            let one: Vec<ArrayRef> = cols.iter().map(|c| c.slice(0, 1)).collect();
            let rows = grouper
                .converter
                .convert_columns(&one)
                .map_err(|e| EngineError::arrow(dest, e))?;
            let g = grouper.group(rows.row(0).as_ref(), &cols, 0)?;
            grouper.groups[g].pieces.push(data.clone());
            continue;
        }
        let rows = grouper
            .converter
            .convert_columns(&cols)
            .map_err(|e| EngineError::arrow(dest, e))?;
        // Group id of every row, and the batch's groups in order of first appearance.
        let mut ids: Vec<u32> = Vec::with_capacity(n);
        let mut local: Vec<usize> = Vec::new();
        let mut local_of: HashMap<usize, u32> = HashMap::new();
        let mut prev: Option<u32> = None;
        for r in 0..n {
            if let Some(p) = prev.filter(|_| rows.row(r) == rows.row(r - 1)) {
                ids.push(p);
                continue;
            }
            let g = grouper.group(rows.row(r).as_ref(), &cols, r)?;
            let id = *local_of.entry(g).or_insert_with(|| {
                local.push(g);
                (local.len() - 1) as u32
            });
            ids.push(id);
            prev = Some(id);
        }
        // Stable counting sort of the rows by local group id, one take, then slices.
        let mut starts = vec![0u32; local.len() + 1];
        for &id in &ids {
            starts[id as usize + 1] += 1;
        }
        for i in 1..starts.len() {
            starts[i] += starts[i - 1];
        }
        let mut next = starts.clone();
        let mut perm = vec![0u32; n];
        for (r, &id) in ids.iter().enumerate() {
            perm[next[id as usize] as usize] = r as u32;
            next[id as usize] += 1;
        }
        let reordered = take_record_batch(data, &UInt32Array::from(perm))
            .map_err(|e| EngineError::arrow(dest, e))?;
        for (l, &g) in local.iter().enumerate() {
            let (s, e) = (starts[l] as usize, starts[l + 1] as usize);
            grouper.groups[g].pieces.push(reordered.slice(s, e - s));
        }
    }
    let mut groups = grouper.groups;
    groups.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(groups)
}

// ---------------------------------------------------------------------------------------
// Commit and abort
// ---------------------------------------------------------------------------------------

fn has_parent_dir(p: &Path) -> bool {
    p.components().any(|c| matches!(c, Component::ParentDir))
}

/// Remove a directory if it is empty; any failure (not empty, gone) is ignored.
fn remove_if_empty(dir: &Path) {
    let _ = fs::remove_dir(dir);
}

/// Commit (called once, after every task succeeded): check that every staged file exists
/// under `dest/_temporary/<job_id>` and maps to its path outside it; if `overwrite`, remove
/// the old dataset's files (its `_SUCCESS` first, never `_temporary`), else refuse when the
/// destination gained a dataset meanwhile; rename every staged file into place (creating
/// directories; on a failed rename the files already moved are moved back); remove
/// `_temporary/<job_id>` (and `_temporary` if empty); then write `_SUCCESS` last. Returns the
/// total rows and the number of files.
pub fn commit(opts: &WriteOptions, staged: &[StagedFile]) -> Result<(u64, usize)> {
    let dest = check_options(opts)?;
    let tmp_root = opts.dest.join(TEMPORARY_DIR);
    let job_dir = tmp_root.join(&opts.job_id);

    // A rerun of a commit that already happened (its worker was lost, or
    // the round was rerun, after the files moved): the same answer again.
    if let Some(done) = already_committed(opts, staged) {
        return Ok(done);
    }
    // Check the staged files before touching anything.
    let mut finals = HashSet::new();
    for s in staged {
        let temp = Path::new(&s.temp_path);
        let fin = Path::new(&s.final_path);
        let bad = |reason: &str| EngineError::Invalid {
            path: s.temp_path.clone(),
            reason: format!("cannot commit this staged file into {dest}: {reason}"),
        };
        let Ok(rel) = temp.strip_prefix(&job_dir) else {
            return Err(bad(&format!("it is not under {}", job_dir.display())));
        };
        if has_parent_dir(temp) || has_parent_dir(fin) || rel.as_os_str().is_empty() {
            return Err(bad("bad path"));
        }
        if fin != opts.dest.join(rel) {
            return Err(bad(&format!(
                "its final path {} is not {}",
                s.final_path,
                opts.dest.join(rel).display()
            )));
        }
        if !finals.insert(fin) {
            return Err(bad("two staged files share this final path"));
        }
        match fs::metadata(temp) {
            Ok(m) if m.is_file() => {}
            Ok(_) => return Err(bad("it is not a file")),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(bad("it does not exist (was the task's output lost?)"))
            }
            Err(e) => return Err(EngineError::io(&s.temp_path, e)),
        }
    }

    fs::create_dir_all(&opts.dest).map_err(|e| EngineError::io(dest, e))?;
    let existing: Vec<String> = dir_names(&opts.dest, dest)?
        .into_iter()
        .filter(|n| n != TEMPORARY_DIR)
        .collect();
    if opts.overwrite && !existing.is_empty() {
        // Checked again here: the directory may have changed since the job
        // started.
        if let Some(why) = not_a_dataset(&opts.dest)? {
            return Err(refuse_overwrite(dest, &why));
        }
    }
    if opts.overwrite && !existing.is_empty() {
        return commit_by_swap(opts, staged, &job_dir);
    }
    if opts.overwrite {
        // `_SUCCESS` first: the old dataset stops looking complete before it goes.
        let mut ordered = existing;
        ordered.sort_by_key(|n| n != SUCCESS_MARKER);
        for name in ordered {
            let p = opts.dest.join(&name);
            let meta = fs::symlink_metadata(&p)
                .map_err(|e| EngineError::io(p.display().to_string(), e))?;
            let r = if meta.is_dir() {
                fs::remove_dir_all(&p)
            } else {
                fs::remove_file(&p)
            };
            match r {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(EngineError::io(p.display().to_string(), e)),
            }
        }
    } else if !existing.is_empty() {
        return Err(EngineError::Argument(format!(
            "destination '{dest}' already exists and is not empty (another job committed there?); pass --overwrite (overwrite=True from Python) to replace it"
        )));
    }

    let mut moved: Vec<&StagedFile> = Vec::with_capacity(staged.len());
    for s in staged {
        let fin = Path::new(&s.final_path);
        let r = match fin.parent() {
            Some(parent) => fs::create_dir_all(parent),
            None => Ok(()),
        }
        .and_then(|()| fs::rename(&s.temp_path, fin));
        if let Err(e) = r {
            for m in moved.iter().rev() {
                let _ = fs::rename(&m.final_path, &m.temp_path);
            }
            return Err(EngineError::io(&s.final_path, e));
        }
        moved.push(s);
    }

    match fs::remove_dir_all(&job_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(EngineError::io(job_dir.display().to_string(), e)),
    }
    remove_if_empty(&tmp_root);

    let marker = opts.dest.join(SUCCESS_MARKER);
    write_marker(&marker, opts)?;

    let rows = staged
        .iter()
        .map(|s| s.rows)
        .fold(0u64, u64::saturating_add);
    Ok((rows, staged.len()))
}

/// Write the `_SUCCESS` marker, holding the committing job's id (so a rerun
/// of the same commit can tell its own dataset from the one it replaced).
fn write_marker(marker: &Path, opts: &WriteOptions) -> Result<()> {
    File::create(marker)
        .and_then(|mut f| {
            f.write_all(opts.job_id.as_bytes())?;
            f.sync_all()
        })
        .map_err(|e| EngineError::io(marker.display().to_string(), e))
}

/// `(rows, files)` when this job's commit has already happened: none of its
/// staged files is left, the destination's `_SUCCESS` names this job, and
/// every final file is in place.
/// The longest token [`check_token`] accepts: a job id, so also the
/// longest `_SUCCESS` a commit of ours writes.
const MAX_TOKEN_BYTES: usize = 128;

fn already_committed(opts: &WriteOptions, staged: &[StagedFile]) -> Option<(u64, usize)> {
    if staged.is_empty() || opts.job_id.is_empty() {
        return None;
    }
    // Ours holds a job id: read no more than one could be, whatever a user
    // left under that name.
    let mut marker = Vec::new();
    File::open(opts.dest.join(SUCCESS_MARKER))
        .ok()?
        .take(MAX_TOKEN_BYTES as u64 + 1)
        .read_to_end(&mut marker)
        .ok()?;
    let all_moved = staged
        .iter()
        .all(|s| !Path::new(&s.temp_path).exists() && Path::new(&s.final_path).is_file());
    (marker == opts.job_id.as_bytes() && all_moved).then(|| {
        let rows = staged
            .iter()
            .map(|s| s.rows)
            .fold(0u64, u64::saturating_add);
        (rows, staged.len())
    })
}

/// Where an overwrite builds the new dataset, next to the old one (same
/// file system, so every move is a rename): `.<name>.stratus-new-<job>`.
pub fn swap_sibling(dest: &Path, job_id: &str) -> Option<PathBuf> {
    let name = dest.file_name()?.to_string_lossy().into_owned();
    Some(dest.with_file_name(format!(".{name}.stratus-new-{job_id}")))
}

/// Crash-test hooks: `STRATUS_FAILPOINTS=name,...` makes the process abort
/// at those points (read once; tests use it to crash a commit midway).
fn failpoint(name: &str) {
    static POINTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    let points = POINTS.get_or_init(|| {
        std::env::var("STRATUS_FAILPOINTS")
            .map(|v| v.split(',').map(|p| p.trim().to_string()).collect())
            .unwrap_or_default()
    });
    if points.iter().any(|p| p == name) {
        eprintln!("failpoint {name}: aborting");
        std::process::abort();
    }
}

/// Swap the directories `a` and `b` in one step (Linux `renameat2` with
/// `RENAME_EXCHANGE`). Err(None) when the file system can not.
fn exchange(a: &Path, b: &Path) -> std::result::Result<(), Option<std::io::Error>> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let (Ok(a), Ok(b)) = (
        CString::new(a.as_os_str().as_bytes()),
        CString::new(b.as_os_str().as_bytes()),
    ) else {
        return Err(None);
    };
    // SAFETY: two NUL-terminated paths, relative to the working directory.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP) => Err(None),
        _ => Err(Some(e)),
    }
}

/// An overwrite of an existing dataset, atomic: the new dataset is built
/// whole (`_SUCCESS` included) in [`swap_sibling`], then swapped with the
/// old directory in one `renameat2(RENAME_EXCHANGE)`, then the old one is
/// removed. A crash at any moment leaves `dest` holding the old dataset or
/// the new one, whole; what it leaves next to it (a hidden sibling) is
/// removed by the next overwrite of `dest`. On a file system without the
/// exchange, the swap is two renames with a moment in between where `dest`
/// is absent (never half-written).
fn commit_by_swap(
    opts: &WriteOptions,
    staged: &[StagedFile],
    job_dir: &Path,
) -> Result<(u64, usize)> {
    let dest = dest_str(opts)?;
    let new_dir = swap_sibling(&opts.dest, &opts.job_id).ok_or_else(|| {
        EngineError::Argument(format!("destination '{dest}' has no directory name"))
    })?;
    let shown_new = new_dir.display().to_string();
    // What an earlier crashed overwrite of this destination left.
    if let (Some(parent), Some(name)) = (opts.dest.parent(), opts.dest.file_name()) {
        let prefix = format!(".{}.stratus-", name.to_string_lossy());
        if let Ok(entries) = fs::read_dir(parent) {
            for entry in entries.flatten() {
                let n = entry.file_name().to_string_lossy().into_owned();
                if n.starts_with(&prefix) && entry.path() != new_dir {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
    }
    fs::create_dir_all(&new_dir).map_err(|e| EngineError::io(&shown_new, e))?;
    let undo = |moved: &[(PathBuf, &StagedFile)]| {
        for (at, s) in moved.iter().rev() {
            let _ = fs::rename(at, &s.temp_path);
        }
        let _ = fs::remove_dir_all(&new_dir);
    };
    let mut moved: Vec<(PathBuf, &StagedFile)> = Vec::with_capacity(staged.len());
    for s in staged {
        let rel = Path::new(&s.temp_path)
            .strip_prefix(job_dir)
            .expect("checked above")
            .to_path_buf();
        let at = new_dir.join(&rel);
        let r = match at.parent() {
            Some(parent) => fs::create_dir_all(parent),
            None => Ok(()),
        }
        .and_then(|()| fs::rename(&s.temp_path, &at));
        if let Err(e) = r {
            undo(&moved);
            return Err(EngineError::io(at.display().to_string(), e));
        }
        moved.push((at, s));
    }
    let marker = new_dir.join(SUCCESS_MARKER);
    if let Err(e) = write_marker(&marker, opts) {
        undo(&moved);
        return Err(e);
    }
    // Our staging is empty now; other jobs' staging goes with the new dataset.
    let tmp_root = opts.dest.join(TEMPORARY_DIR);
    let _ = fs::remove_dir_all(job_dir);
    remove_if_empty(&tmp_root);
    if tmp_root.exists() {
        let _ = fs::rename(&tmp_root, new_dir.join(TEMPORARY_DIR));
    }
    failpoint("write.commit.before_swap");
    match exchange(&new_dir, &opts.dest) {
        Ok(()) => {}
        Err(Some(e)) => {
            undo(&moved);
            return Err(EngineError::io(dest, e));
        }
        Err(None) => {
            // No exchange here: move the old one aside, the new one in.
            let old_dir = opts.dest.with_file_name(format!(
                ".{}.stratus-old-{}",
                opts.dest.file_name().unwrap_or_default().to_string_lossy(),
                opts.job_id
            ));
            fs::rename(&opts.dest, &old_dir).map_err(|e| EngineError::io(dest, e))?;
            if let Err(e) = fs::rename(&new_dir, &opts.dest) {
                let _ = fs::rename(&old_dir, &opts.dest);
                undo(&moved);
                return Err(EngineError::io(dest, e));
            }
            let _ = fs::rename(&old_dir, &new_dir);
        }
    }
    failpoint("write.commit.after_swap");
    // The old dataset now sits where the new one was built.
    let _ = fs::remove_dir_all(&new_dir);
    let rows = staged
        .iter()
        .map(|s| s.rows)
        .fold(0u64, u64::saturating_add);
    Ok((rows, staged.len()))
}

/// Abort: remove `_temporary/<job_id>` (and `_temporary` when it is then empty), and the
/// destination too when this job created it and it is empty again. Aborting a job that wrote
/// nothing is not an error.
pub fn abort(opts: &WriteOptions) -> Result<()> {
    let dest = check_options(opts)?;
    let tmp_root = opts.dest.join(TEMPORARY_DIR);
    let job_dir = tmp_root.join(&opts.job_id);
    let created = job_dir.join(CREATED_DEST_MARKER).is_file();
    match fs::remove_dir_all(&job_dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(EngineError::io(job_dir.display().to_string(), e)),
    }
    remove_if_empty(&tmp_root);
    if created {
        match fs::remove_dir(&opts.dest) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::DirectoryNotEmpty) => {}
            Err(e) => return Err(EngineError::io(dest, e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hive_escaping() {
        assert_eq!(escape_hive("a/b=c%d", false), "a%2Fb%3Dc%25d");
        assert_eq!(escape_hive("plain é", false), "plain é");
        assert_eq!(escape_hive("_key", true), "%5Fkey");
        assert_eq!(escape_hive("_value", false), "_value");
        assert_eq!(escape_hive("a\nb", false), "a%0Ab");
    }

    #[test]
    fn constant_columns() {
        let c = |a: ArrayRef| is_constant(&a, "d").unwrap();
        assert!(c(Arc::new(arrow_array::Int32Array::from(vec![3, 3, 3]))));
        assert!(!c(Arc::new(arrow_array::Int32Array::from(vec![3, 3, 4]))));
        let dict = |keys: Vec<i32>, values: Vec<&str>| -> ArrayRef {
            Arc::new(
                arrow_array::DictionaryArray::<Int32Type>::try_new(
                    keys.into(),
                    Arc::new(arrow_array::StringArray::from(values)),
                )
                .unwrap(),
            )
        };
        // Different keys, equal values: constant all the same.
        assert!(c(dict(vec![0, 1, 0], vec!["a", "a"])));
        assert!(!c(dict(vec![0, 1, 0], vec!["a", "b"])));
    }

    #[test]
    fn only_a_stratus_dataset_may_be_overwritten() {
        let dir = std::env::temp_dir().join(format!("stratus-notds-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let make = |files: &[&str]| {
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            for f in files {
                let p = dir.join(f);
                fs::create_dir_all(p.parent().unwrap()).unwrap();
                fs::write(p, b"x").unwrap();
            }
        };
        // Ours: committed (_SUCCESS), or only what writes leave.
        make(&["_SUCCESS", "anything.txt"]);
        assert_eq!(not_a_dataset(&dir).unwrap(), None);
        make(&[
            "year=2008/month=1/part-00000.snappy.parquet",
            "part-00001.snappy.parquet",
            "_temporary/job-1/year=2009/.part-00002.snappy.parquet.1-2-3.inprogress",
            "_temporary/job-1/.created-destination",
        ]);
        assert_eq!(not_a_dataset(&dir).unwrap(), None);
        // Not ours: anything else, named.
        for bad in [
            "notes.txt",
            "year=2008/notes.txt",
            "data/part-0.parquet",
            "_other/x",
            ".hidden",
        ] {
            make(&["year=2008/part-00000.snappy.parquet", bad]);
            let why = not_a_dataset(&dir).unwrap().expect(bad);
            assert!(why.contains(bad.split('/').next().unwrap()), "{bad}: {why}");
        }
        // A symbolic link is never ours, wherever it leads.
        make(&["year=2008/part-00000.snappy.parquet"]);
        std::os::unix::fs::symlink(std::env::temp_dir(), dir.join("year=2009")).unwrap();
        let why = not_a_dataset(&dir).unwrap().unwrap();
        assert!(why.contains("symbolic link"), "{why}");
        // And check_destination refuses the overwrite, naming the directory.
        make(&["keep.txt"]);
        let opts = WriteOptions {
            dest: dir.clone(),
            partition_by: vec![],
            job_id: "j".into(),
            overwrite: true,
        };
        let e = check_destination(&opts).unwrap_err().to_string();
        assert!(
            e.contains(&dir.display().to_string())
                && e.contains("keep.txt")
                && e.contains("not a Stratus dataset"),
            "{e}"
        );
        assert!(dir.join("keep.txt").exists());
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn whole_batches_and_reordered_slices_keep_input_order() {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let dest = std::env::temp_dir().join(format!("stratus-write-unit-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dest);
        let batch = |ks: Vec<&str>, vs: Vec<i64>| {
            let k: arrow_array::DictionaryArray<Int32Type> = ks.into_iter().collect();
            RecordBatch::try_from_iter([
                ("k", Arc::new(k) as ArrayRef),
                ("v", Arc::new(arrow_array::Int64Array::from(vs)) as ArrayRef),
            ])
            .unwrap()
        };
        let batches = [
            batch(vec!["a", "a"], vec![1, 2]),
            batch(vec!["b", "a", "b", "a"], vec![3, 4, 5, 6]),
            batch(vec!["b"], vec![7]),
        ];
        let opts = WriteOptions {
            dest: dest.clone(),
            partition_by: vec!["k".into()],
            job_id: "j".into(),
            overwrite: false,
        };
        let staged = write_partition(&batches, &opts, "00000").unwrap();
        let read = |s: &StagedFile| -> Vec<i64> {
            let f = File::open(&s.temp_path).unwrap();
            ParquetRecordBatchReaderBuilder::try_new(f)
                .unwrap()
                .build()
                .unwrap()
                .flat_map(|b| {
                    let b = b.unwrap();
                    assert_eq!(b.num_columns(), 1, "the partition column stays out");
                    b.column(0).as_primitive::<Int64Type>().values().to_vec()
                })
                .collect()
        };
        assert_eq!(staged.len(), 2);
        assert!(staged[0]
            .final_path
            .ends_with("k=a/part-00000.snappy.parquet"));
        assert_eq!(read(&staged[0]), [1, 2, 4, 6]);
        assert_eq!(read(&staged[1]), [3, 5, 7]);
        abort(&opts).unwrap();
        let _ = fs::remove_dir_all(&dest);
    }

    /// The direct encoders against parquet's own writer: nulls (in keys and in dictionary
    /// values), different and sliced Arrow dictionaries, floats with NaN, zeros of both
    /// signs and a dictionary outgrowing its page limit (PLAIN pages after it), several row
    /// groups and pages; read back equal, with the same statistics and page indexes.
    #[test]
    fn direct_encoding_matches_arrow_writer() {
        use arrow_array::{DictionaryArray, Float64Array, StringArray};
        use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
        use parquet::file::metadata::PageIndexPolicy;
        let dir = std::env::temp_dir().join(format!("stratus-write-direct-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let mut batches = Vec::new();
        // Rows before each batch, for the ascending columns.
        let mut row0 = 0i64;
        let total = 70_000 + 90_001 + 5 + 100_000;
        for b in 0..4usize {
            let n = [70_000, 90_001, 5, 100_000][b];
            let names: Vec<Option<String>> = (0..300)
                .map(|i| {
                    (i % 97 != 5).then(|| format!("station {} {}", i * (b + 1), "x".repeat(i % 13)))
                })
                .collect();
            let values = Arc::new(StringArray::from(names)) as ArrayRef;
            let keys: arrow_array::Int32Array = (0..n)
                .map(|_| {
                    let r = next();
                    (r % 50 != 0).then_some(((r >> 8) % 300) as i32)
                })
                .collect();
            let dict = DictionaryArray::<Int32Type>::try_new(keys, values).unwrap();
            let few: Float64Array = (0..n)
                .map(|i| match next() % 20 {
                    0 => None,
                    1 => Some(f64::NAN),
                    2 => Some(-0.0),
                    3 => Some(0.0),
                    r => Some((r as f64) * 0.1 + (i / 5000) as f64),
                })
                .collect();
            // Distinct values: the dictionary outgrows its limit, later pages are PLAIN.
            let many: Float64Array = (0..n)
                .map(|i| Some((b * 1_000_000 + i) as f64 * 0.5))
                .collect();
            let all_null: Float64Array = (0..n).map(|_| None::<f64>).collect();
            // Ascending integers (DELTA_BINARY_PACKED): nulls, runs, jumps, both extremes.
            let rows = (0..n as i64).map(|i| row0 + i);
            let time: arrow_array::TimestampMicrosecondArray = rows
                .clone()
                .map(|r| (r % 17 != 3).then_some(r / 7 * 60_000_000))
                .collect();
            let int: arrow_array::Int32Array = rows
                .clone()
                .map(|r| {
                    Some(match r {
                        1 => i32::MIN,
                        r if r == total - 1 => i32::MAX,
                        r => (r / 3) as i32 * 1000 - 100_000_000,
                    })
                })
                .collect();
            let wide: arrow_array::Int64Array = rows
                .clone()
                .map(|r| {
                    Some(match r {
                        1 => i64::MIN,
                        r if r == total - 1 => i64::MAX,
                        r => r * r,
                    })
                })
                .collect();
            let date: arrow_array::Date32Array = rows.map(|r| Some((r / 1000) as i32)).collect();
            row0 += n as i64;
            let batch = RecordBatch::try_from_iter([
                ("s", Arc::new(dict) as ArrayRef),
                ("few", Arc::new(few) as ArrayRef),
                ("many", Arc::new(many) as ArrayRef),
                ("none", Arc::new(all_null) as ArrayRef),
                ("time", Arc::new(time) as ArrayRef),
                ("int", Arc::new(int) as ArrayRef),
                ("wide", Arc::new(wide) as ArrayRef),
                ("date", Arc::new(date) as ArrayRef),
            ])
            .unwrap();
            // A slice, so the Arrow dictionary is shared by pieces with offsets.
            batches.push(batch.slice(1, n - 1));
        }
        let schema = batches[0].schema();
        assert!(
            direct_columns(&schema, &writer_properties(&schema, &batches))
                .unwrap()
                .iter()
                .all(Option::is_some)
        );
        let write = |direct: bool, name: &str| -> PathBuf {
            let path = dir.join(name);
            let file = File::create(&path).unwrap();
            // A smaller dictionary limit: `many` outgrows it within the first row group.
            let props = writer_properties(&schema, &batches)
                .into_builder()
                .set_dictionary_page_size_limit(256 * 1024)
                // Uncompressed: the direct path leaves wide Snappy delta pages to parquet.
                .set_column_compression("time".into(), Compression::UNCOMPRESSED)
                .set_column_compression("int".into(), Compression::UNCOMPRESSED)
                .set_column_compression("wide".into(), Compression::UNCOMPRESSED)
                .build();
            if direct {
                let kinds = direct_columns(&schema, &props).unwrap();
                write_direct(file, &schema, props, &batches, &kinds).unwrap();
            } else {
                write_arrow(file, &schema, props, &batches).unwrap();
            }
            path
        };
        let ours = write(true, "direct.parquet");
        let theirs = write(false, "arrow.parquet");
        let read = |path: &Path| {
            let options =
                ArrowReaderOptions::new().with_page_index_policy(PageIndexPolicy::Required);
            let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(
                File::open(path).unwrap(),
                options,
            )
            .unwrap();
            let meta = builder.metadata().clone();
            let batches: Vec<RecordBatch> = builder.build().unwrap().map(|b| b.unwrap()).collect();
            (
                meta,
                arrow_select::concat::concat_batches(&batches[0].schema(), &batches).unwrap(),
            )
        };
        let (our_meta, our_data) = read(&ours);
        let (their_meta, their_data) = read(&theirs);
        assert_eq!(our_data.schema(), their_data.schema());
        assert_eq!(
            our_data.num_rows(),
            batches.iter().map(|b| b.num_rows()).sum::<usize>()
        );
        for i in 0..our_data.num_columns() {
            // Compare through a cast (NaN != NaN for the arrays' equality).
            let show = |d: &RecordBatch| {
                let c = cast(d.column(i), &DataType::Utf8).unwrap();
                c.as_string::<i32>()
                    .iter()
                    .map(|v| v.map(str::to_owned))
                    .collect::<Vec<_>>()
            };
            assert_eq!(show(&our_data), show(&their_data), "column {i}");
        }
        assert_eq!(our_meta.num_row_groups(), their_meta.num_row_groups());
        assert!(our_meta.num_row_groups() > 1);
        for m in [&our_meta, &their_meta] {
            let data_pages = m.row_group(0).column(2).page_encoding_stats_mask().unwrap();
            assert!(
                data_pages.is_set(Encoding::PLAIN) && data_pages.is_set(Encoding::RLE_DICTIONARY)
            );
            let data_pages = m.row_group(0).column(1).page_encoding_stats_mask().unwrap();
            assert!(data_pages.is_only(Encoding::RLE_DICTIONARY));
        }
        for g in 0..our_meta.num_row_groups() {
            let (a, b) = (our_meta.row_group(g), their_meta.row_group(g));
            assert_eq!(a.num_rows(), b.num_rows());
            for c in 0..a.num_columns() {
                let (x, y) = (a.column(c), b.column(c));
                assert_eq!(x.statistics(), y.statistics(), "row group {g} column {c}");
                assert_eq!(
                    x.encodings_mask(),
                    y.encodings_mask(),
                    "row group {g} column {c}"
                );
                assert_eq!(x.num_values(), y.num_values());
            }
            let (ci_a, ci_b) = (
                our_meta.column_index().unwrap(),
                their_meta.column_index().unwrap(),
            );
            for c in 0..a.num_columns() {
                // Present for the same columns (page boundaries differ: parquet's writer
                // cuts pages at multiples of its 1024-row mini batches).
                use parquet::file::page_index::column_index::ColumnIndexMetaData as Ci;
                let kind = |ci: &Ci| match ci {
                    Ci::NONE => "none",
                    Ci::DOUBLE(_) => "double",
                    Ci::INT32(_) => "int32",
                    Ci::INT64(_) => "int64",
                    _ => "other",
                };
                assert_eq!(
                    kind(&ci_a[g][c]),
                    kind(&ci_b[g][c]),
                    "row group {g} column {c}"
                );
            }
            let (oi_a, oi_b) = (
                our_meta.offset_index().unwrap(),
                their_meta.offset_index().unwrap(),
            );
            for c in 0..a.num_columns() {
                let rows = |oi: &parquet::file::page_index::offset_index::OffsetIndexMetaData| {
                    oi.page_locations()
                        .iter()
                        .map(|l| l.first_row_index)
                        .collect::<Vec<_>>()
                };
                assert!(rows(&oi_a[g][c]).len() > 1);
                assert_eq!(rows(&oi_a[g][c])[0], 0);
                let _ = rows(&oi_b[g][c]);
            }
        }
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn partition_types() {
        assert!(partition_type_ok(&DataType::Int32));
        assert!(partition_type_ok(&DataType::UInt64));
        assert!(partition_type_ok(&DataType::Utf8));
        assert!(partition_type_ok(&DataType::Dictionary(
            Box::new(DataType::Int32),
            Box::new(DataType::Utf8)
        )));
        assert!(!partition_type_ok(&DataType::Float64));
    }
}
