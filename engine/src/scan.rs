//! Parquet scanning: listing a source (file, directory or glob) with its hive partition
//! values, reading footers, checking that the files agree on a schema, planning partitions
//! (whole files, row-group ranges, or runs of small files when a source has many) and
//! reading a partition into Arrow record batches.
//!
//! Reading a local file (what `persist` spends its time on): the footer is decoded once
//! per read (a file of up to [`WHOLE_READ_BYTES`] is read whole, in one read, and the
//! footer and every column chunk are sliced from those bytes); otherwise the projected
//! column chunks of a row group are read with one positioned read per run of adjacent
//! chunks and parquet's reader slices its pages from them (no read or copy per page). Each
//! row group becomes one batch of exactly its rows; string dictionaries are kept as the
//! file has them; hive-only columns are constant arrays built once per batch length. The
//! copies that remain: the read from the page cache, Snappy's decompression into a page
//! buffer, and the decoder's from that buffer into the Arrow buffers (values spread over
//! the null slots in place); grouped small files are concatenated into batches of up to
//! [`BATCH_ROWS`] rows (one more copy, of a few rows per file, worth it against hundreds
//! of tiny batches each with its own dictionaries).
//!
//! Type conventions (the "dataset schema"):
//! - the file's columns come first, as the Parquet schema describes them (any Arrow schema
//!   embedded in the footer is ignored, so every writer is read the same way);
//! - string columns (`Utf8`/`LargeUtf8`) are read as `Dictionary(Int32, Utf8)`;
//! - Spark/pyarrow `INT96` timestamps are read as `Timestamp(Nanosecond, None)`, the unit the
//!   parquet crate gives them; `TIMESTAMP(MICROS)` stays microseconds, and so on;
//! - hive keys that are not file columns are appended in path order, as non-null `Int32`
//!   when the value parses as an `i32`, else as `Dictionary(Int32, Utf8)`.

use std::cmp::Ordering;
use std::fs::{self, File};
use std::io::{ErrorKind, Read, Seek, SeekFrom};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type, UInt32Type,
    UInt64Type, UInt8Type,
};
use arrow_array::{
    Array, ArrayRef, DictionaryArray, Int32Array, RecordBatch, RecordBatchOptions, StringArray,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use bytes::Bytes;
use parquet::arrow::arrow_reader::{
    ArrowReaderMetadata, ArrowReaderOptions, ParquetRecordBatchReaderBuilder,
};
use parquet::arrow::{parquet_to_arrow_schema, ProjectionMask};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::reader::ChunkReader;
use parquet::file::statistics::Statistics;

use stratus_plan::{FilePart, FileRef, ParquetPartition, RowGroupMeta};

use crate::error::{EngineError, Result};

/// Rows per record batch produced by [`read_partition`].
pub const BATCH_ROWS: usize = 64 * 1024;

/// Deepest directory nesting followed when walking a directory (guards symlink loops).
const MAX_DEPTH: usize = 64;

const MAGIC: &[u8; 4] = b"PAR1";

/// What a file's footer says, turned into Stratus terms.
#[derive(Debug, Clone)]
pub struct FileFooter {
    /// The file.
    pub file: FileRef,
    /// Total rows in the file.
    pub num_rows: u64,
    /// Its row groups, in file order.
    pub row_groups: Vec<RowGroupMeta>,
    /// The dataset schema: file columns as Stratus reads them, then hive-only columns.
    pub schema: SchemaRef,
}

// ---------------------------------------------------------------------------------------
// Listing
// ---------------------------------------------------------------------------------------

/// Expand a source: a single file path, a bare directory (all `*.parquet` below it,
/// recursively, skipping hidden files and names starting with `_` or `.` such as
/// `_SUCCESS`), or a glob like `DIR/year=*/month=*/*.parquet` (directories a glob matches
/// are walked like bare directories). Sorted by path in natural order (`month=2` before
/// `month=10`). Errors if nothing matches or the path does not exist.
pub fn list_files(source: &str) -> Result<Vec<FileRef>> {
    list_files_guarded(source, &|_| Ok(()))
}

/// A check of a path before it is listed, opened or examined (a worker's
/// data roots): an error stops the listing with that error.
pub type Guard<'a> = &'a dyn Fn(&Path) -> Result<()>;

/// [`list_files`], calling `guard` on every path before it is examined:
/// the source, every directory before it is listed, every symbolic link
/// before it is followed, every glob match before it is used. A glob is
/// expanded here component by component (not by the `glob` crate), so that
/// no directory is listed before `guard` allowed it; `..` after a wildcard
/// is refused.
pub fn list_files_guarded(source: &str, guard: Guard<'_>) -> Result<Vec<FileRef>> {
    if source.trim().is_empty() {
        return Err(EngineError::Argument("empty source path".into()));
    }
    let source = match source.split_once("://") {
        None => source,
        Some(("file", path)) => path,
        Some((scheme, _)) => {
            return Err(EngineError::Argument(format!(
                "'{source}': {scheme}:// is not a local source (object stores are read by the worker's storage layer)"
            )))
        }
    };
    let mut paths: Vec<PathBuf> = Vec::new();
    if has_glob_meta(source) {
        let base = glob_base(source);
        let mut matched = Vec::new();
        expand_glob(source, guard, &mut matched)?;
        for p in matched {
            if is_hidden_below(&p, &base) {
                continue;
            }
            guard(&p)?;
            if p.is_dir() {
                walk_dir(&p, 0, &mut paths, guard)?;
            } else if p.is_file() {
                paths.push(p);
            }
        }
    } else {
        let p = Path::new(source);
        guard(p)?;
        let meta = fs::metadata(p).map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                EngineError::NotFound {
                    path: source.to_string(),
                }
            } else {
                EngineError::io(source, e)
            }
        })?;
        if meta.is_dir() {
            walk_dir(p, 0, &mut paths, guard)?;
        } else {
            paths.push(p.to_path_buf());
        }
    }
    paths.sort();
    paths.dedup();
    if paths.is_empty() {
        return Err(EngineError::NoMatch {
            pattern: source.to_string(),
        });
    }
    let mut files = Vec::with_capacity(paths.len());
    for p in paths {
        let Some(path) = p.to_str() else {
            return Err(EngineError::Invalid {
                path: p.display().to_string(),
                reason: "path is not valid UTF-8".into(),
            });
        };
        let size = fs::metadata(&p)
            .map_err(|e| EngineError::io(path, e))?
            .len();
        files.push(FileRef {
            path: path.to_string(),
            size,
            hive: parse_hive(&p),
        });
    }
    files.sort_by(|a, b| natural_cmp(&a.path, &b.path));
    Ok(files)
}

/// Expand a glob pattern into the paths it matches (files and directories),
/// listing a directory only after `guard` allowed it. `*`, `?` and `[...]`
/// match within one path component, `**` any number of directories.
fn expand_glob(pattern: &str, guard: Guard<'_>, out: &mut Vec<PathBuf>) -> Result<()> {
    let bad = |reason: String| EngineError::BadPattern {
        pattern: pattern.to_string(),
        reason,
    };
    let base = glob_base(pattern);
    let mut parts = Vec::new();
    for c in Path::new(pattern)
        .components()
        .skip(base.components().count())
    {
        let part = c.as_os_str().to_string_lossy();
        if part == ".." {
            return Err(bad("'..' after a wildcard is not allowed".into()));
        }
        if part == "**" {
            parts.push(None);
        } else {
            parts.push(Some(
                glob::Pattern::new(&part).map_err(|e| bad(e.to_string()))?,
            ));
        }
    }
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    expand_parts(&base, &parts, 0, guard, out)?;
    out.sort();
    out.dedup();
    Ok(())
}

fn expand_parts(
    dir: &Path,
    parts: &[Option<glob::Pattern>],
    depth: usize,
    guard: Guard<'_>,
    out: &mut Vec<PathBuf>,
) -> Result<()> {
    let Some((first, rest)) = parts.split_first() else {
        out.push(dir.to_path_buf());
        return Ok(());
    };
    if depth > MAX_DEPTH {
        return Err(EngineError::Invalid {
            path: dir.display().to_string(),
            reason: format!("directories nested deeper than {MAX_DEPTH} levels (symlink loop?)"),
        });
    }
    guard(dir)?;
    let options = glob::MatchOptions {
        case_sensitive: true,
        require_literal_separator: true,
        require_literal_leading_dot: false,
    };
    let mut entries = Vec::new();
    match fs::read_dir(dir) {
        Ok(rd) => {
            for entry in rd {
                let entry = entry.map_err(|e| EngineError::io(dir.display().to_string(), e))?;
                entries.push(entry.path());
            }
        }
        // As the glob crate does: a missing or unreadable directory matches
        // nothing.
        Err(_) => return Ok(()),
    }
    entries.sort();
    match first {
        // `**`: this directory itself, then every directory below.
        None => {
            expand_parts(dir, rest, depth + 1, guard, out)?;
            for p in entries {
                if is_dir_guarded(&p, guard)? {
                    expand_parts(&p, parts, depth + 1, guard, out)?;
                }
            }
        }
        Some(pattern) => {
            for p in entries {
                let Some(name) = p.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if !pattern.matches_with(name, options) {
                    continue;
                }
                if rest.is_empty() {
                    out.push(p);
                } else if is_dir_guarded(&p, guard)? {
                    expand_parts(&p, rest, depth + 1, guard, out)?;
                }
            }
        }
    }
    Ok(())
}

/// Whether `p` is a directory, following a symbolic link only once `guard`
/// allowed it.
fn is_dir_guarded(p: &Path, guard: Guard<'_>) -> Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => {
            guard(p)?;
            Ok(p.is_dir())
        }
        Ok(m) => Ok(m.is_dir()),
        Err(_) => Ok(false),
    }
}

fn has_glob_meta(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// The literal directory prefix of a glob pattern (components before the first with
/// glob meta characters).
fn glob_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::new();
    for c in Path::new(pattern).components() {
        if has_glob_meta(&c.as_os_str().to_string_lossy()) {
            break;
        }
        base.push(c);
    }
    base
}

fn is_hidden_name(name: &str) -> bool {
    name.starts_with('.') || name.starts_with('_')
}

/// Whether any component of `p` below `base` is hidden (`.x` or `_x`).
fn is_hidden_below(p: &Path, base: &Path) -> bool {
    let rel = p.strip_prefix(base).unwrap_or(p);
    let mut comps: Vec<&str> = rel
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => s.to_str(),
            _ => None,
        })
        .collect();
    if comps.is_empty() {
        if let Some(name) = p.file_name().and_then(|s| s.to_str()) {
            comps.push(name);
        }
    }
    comps.into_iter().any(is_hidden_name)
}

fn walk_dir(dir: &Path, depth: usize, out: &mut Vec<PathBuf>, guard: Guard<'_>) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(EngineError::Invalid {
            path: dir.display().to_string(),
            reason: format!("directories nested deeper than {MAX_DEPTH} levels (symlink loop?)"),
        });
    }
    guard(dir)?;
    let rd = fs::read_dir(dir).map_err(|e| EngineError::io(dir.display().to_string(), e))?;
    let mut entries = Vec::new();
    for entry in rd {
        let entry = entry.map_err(|e| EngineError::io(dir.display().to_string(), e))?;
        entries.push(entry.path());
    }
    entries.sort();
    for p in entries {
        let Some(name) = p.file_name().and_then(|s| s.to_str()) else {
            continue;
        };
        if is_hidden_name(name) {
            continue;
        }
        // Follow symlinks (once the guard allowed where they lead); a
        // dangling link is skipped.
        if fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
            guard(&p)?;
        }
        let Ok(meta) = fs::metadata(&p) else {
            continue;
        };
        if meta.is_dir() {
            walk_dir(&p, depth + 1, out, guard)?;
        } else if meta.is_file() && name.ends_with(".parquet") {
            out.push(p);
        }
    }
    Ok(())
}

/// Hive `key=value` segments of the directories of a path or object URL, in
/// path order (see [`list_files`]).
pub fn hive_values(path: &str) -> Vec<(String, String)> {
    parse_hive(Path::new(path))
}

/// Hive `key=value` segments of the directories in `p`, in path order (a later duplicate
/// key replaces the earlier value in place). Keys and values are percent-decoded.
fn parse_hive(p: &Path) -> Vec<(String, String)> {
    let mut hive: Vec<(String, String)> = Vec::new();
    let Some(parent) = p.parent() else {
        return hive;
    };
    for c in parent.components() {
        let Component::Normal(seg) = c else { continue };
        let Some(seg) = seg.to_str() else { continue };
        let Some((k, v)) = seg.split_once('=') else {
            continue;
        };
        if k.is_empty() {
            continue;
        }
        let (k, v) = (percent_decode(k), percent_decode(v));
        if let Some(slot) = hive.iter_mut().find(|(key, _)| *key == k) {
            slot.1 = v;
        } else {
            hive.push((k, v));
        }
    }
    hive
}

fn percent_decode(s: &str) -> String {
    if !s.contains('%') {
        return s.to_string();
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// Natural order: runs of digits compare as numbers, the rest byte by byte; ties are broken
/// by plain byte order so the order is total and deterministic.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (x, y) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < x.len() && j < y.len() {
        if x[i].is_ascii_digit() && y[j].is_ascii_digit() {
            let si = i;
            while i < x.len() && x[i].is_ascii_digit() {
                i += 1;
            }
            let sj = j;
            while j < y.len() && y[j].is_ascii_digit() {
                j += 1;
            }
            let da = trim_zeros(&x[si..i]);
            let db = trim_zeros(&y[sj..j]);
            let ord = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
            if ord != Ordering::Equal {
                return ord;
            }
        } else {
            if x[i] != y[j] {
                return x[i].cmp(&y[j]);
            }
            i += 1;
            j += 1;
        }
    }
    (x.len() - i).cmp(&(y.len() - j)).then_with(|| a.cmp(b))
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|&&c| c == b'0').count();
    &d[n..]
}

// ---------------------------------------------------------------------------------------
// Footers and schemas
// ---------------------------------------------------------------------------------------

/// Open a file and parse its Parquet footer, with errors that tell "not Parquet" from
/// "truncated" from "corrupt". A file of at most `whole_up_to` bytes is read whole in one
/// read, and its bytes returned with the footer (the footer is decoded from them).
fn open_parquet(
    path: &str,
    whole_up_to: u64,
) -> Result<(File, u64, Arc<ParquetMetaData>, Option<Bytes>)> {
    let mut f = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let len = f.metadata().map_err(|e| EngineError::io(path, e))?.len();
    if len == 0 {
        return Err(EngineError::NotParquet {
            path: path.into(),
            reason: "the file is empty".into(),
        });
    }
    let whole = if len <= whole_up_to {
        let mut bytes = Vec::with_capacity(len as usize);
        (&mut f)
            .take(len)
            .read_to_end(&mut bytes)
            .map_err(|e| EngineError::io(path, e))?;
        Some(Bytes::from(bytes))
    } else {
        None
    };
    let mut head = [0u8; 4];
    let n = match &whole {
        Some(bytes) => {
            let n = bytes.len().min(4);
            head[..n].copy_from_slice(&bytes[..n]);
            n
        }
        None => read_up_to(&mut f, &mut head).map_err(|e| EngineError::io(path, e))?,
    };
    if n < 4 || &head != MAGIC {
        if n < 4 && MAGIC.starts_with(&head[..n]) {
            return Err(EngineError::Truncated {
                path: path.into(),
                reason: format!("only {len} bytes"),
            });
        }
        return Err(EngineError::NotParquet {
            path: path.into(),
            reason: "it does not start with the PAR1 magic bytes".into(),
        });
    }
    if len < 12 {
        return Err(EngineError::Truncated {
            path: path.into(),
            reason: format!("only {len} bytes"),
        });
    }
    if let Some(bytes) = &whole {
        if bytes.len() as u64 != len {
            return Err(EngineError::Truncated {
                path: path.into(),
                reason: format!("{} of {len} bytes read", bytes.len()),
            });
        }
        return match decode_footer_tail(path, len, bytes)? {
            FooterTail::Metadata(m) => Ok((f, len, m, whole)),
            FooterTail::Needs(_) => Err(EngineError::Invalid {
                path: path.into(),
                reason: "internal: footer not decoded from the whole file".into(),
            }),
        };
    }
    let tail_len = len.min(FOOTER_PREFETCH);
    let mut tail = vec![0u8; tail_len as usize];
    f.seek(SeekFrom::End(-(tail_len as i64)))
        .and_then(|_| f.read_exact(&mut tail))
        .map_err(|e| EngineError::io(path, e))?;
    let metadata = match decode_footer_tail(path, len, &tail)? {
        FooterTail::Metadata(m) => m,
        FooterTail::Needs(n) => {
            let mut tail = vec![0u8; n as usize];
            f.seek(SeekFrom::End(-(n as i64)))
                .and_then(|_| f.read_exact(&mut tail))
                .map_err(|e| EngineError::io(path, e))?;
            match decode_footer_tail(path, len, &tail)? {
                FooterTail::Metadata(m) => m,
                FooterTail::Needs(_) => {
                    return Err(EngineError::Invalid {
                        path: path.into(),
                        reason: "internal: footer not decoded from the bytes it asked for".into(),
                    })
                }
            }
        }
    };
    Ok((f, len, metadata, None))
}

/// The longest footer read (a file's claim beyond it is refused before
/// anything is allocated for it).
pub const MAX_FOOTER_BYTES: u64 = 64 * 1024 * 1024;

/// Bytes read from the end of a file in the first attempt at its footer: most
/// footers fit, so one read (one ranged GET on an object store) does.
pub const FOOTER_PREFETCH: u64 = 64 * 1024;

/// What the last bytes of a Parquet file give.
pub enum FooterTail {
    /// The decoded, checked footer.
    Metadata(Arc<ParquetMetaData>),
    /// The footer is longer than the bytes given: read this many bytes from the end.
    Needs(u64),
}

/// Decode a Parquet footer from the last `tail.len()` bytes of a file of `file_len`
/// bytes, with errors that tell truncated from encrypted from corrupt (naming `path`),
/// and check that every column chunk lies inside the data. Used for local files and
/// for objects fetched by a ranged read of their end.
pub fn decode_footer_tail(path: &str, file_len: u64, tail: &[u8]) -> Result<FooterTail> {
    if file_len < 12 || tail.len() < 8 {
        return Err(EngineError::Truncated {
            path: path.into(),
            reason: format!("only {file_len} bytes"),
        });
    }
    let end = &tail[tail.len() - 8..];
    if &end[4..] == b"PARE" {
        return Err(EngineError::Invalid {
            path: path.into(),
            reason: "encrypted Parquet files are not supported".into(),
        });
    }
    if &end[4..] != MAGIC {
        return Err(EngineError::Truncated {
            path: path.into(),
            reason: format!("{file_len} bytes and no PAR1 magic bytes at the end"),
        });
    }
    let footer_len = u64::from(u32::from_le_bytes([end[0], end[1], end[2], end[3]]));
    if footer_len > MAX_FOOTER_BYTES {
        return Err(EngineError::Invalid {
            path: path.into(),
            reason: format!(
                "the footer claims {footer_len} bytes, more than the {MAX_FOOTER_BYTES} Stratus reads"
            ),
        });
    }
    if footer_len + 12 > file_len {
        return Err(EngineError::Truncated {
            path: path.into(),
            reason: format!(
                "the footer claims {footer_len} bytes but the file has only {file_len}"
            ),
        });
    }
    if footer_len + 8 > tail.len() as u64 {
        return Ok(FooterTail::Needs(footer_len + 8));
    }
    let start = tail.len() - 8 - footer_len as usize;
    let metadata = ParquetMetaDataReader::decode_metadata(&tail[start..tail.len() - 8])
        .map_err(|e| EngineError::parquet(path, e))?;
    let data_end = file_len - footer_len - 8;
    for (i, rg) in metadata.row_groups().iter().enumerate() {
        for col in rg.columns() {
            let (start, clen) = col.byte_range();
            let end = start.saturating_add(clen);
            if end > data_end {
                return Err(EngineError::Truncated {
                    path: path.into(),
                    reason: format!(
                        "row group {i} column '{}' ends at byte {end} but the data ends at {data_end}",
                        col.column_path()
                    ),
                });
            }
        }
    }
    Ok(FooterTail::Metadata(Arc::new(metadata)))
}

fn read_up_to(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn dict_utf8() -> DataType {
    DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8))
}

/// The file's own columns as Stratus reads them (the reader's schema hint) and the
/// dataset schema (file columns then hive-only columns).
fn file_schemas(
    path: &str,
    metadata: &ParquetMetaData,
    hive: &[(String, String)],
) -> Result<(SchemaRef, SchemaRef)> {
    let raw = parquet_to_arrow_schema(metadata.file_metadata().schema_descr(), None)
        .map_err(|e| EngineError::parquet(path, e))?;
    let file_fields: Vec<Field> = raw
        .fields()
        .iter()
        .map(|f| match f.data_type() {
            DataType::Utf8 | DataType::LargeUtf8 => f.as_ref().clone().with_data_type(dict_utf8()),
            _ => f.as_ref().clone(),
        })
        .collect();
    let mut all = file_fields.clone();
    for (k, v) in hive {
        if file_fields.iter().any(|f| f.name() == k) || all.iter().any(|f| f.name() == k) {
            continue;
        }
        let dt = if v.parse::<i32>().is_ok() {
            DataType::Int32
        } else {
            dict_utf8()
        };
        all.push(Field::new(k.clone(), dt, false));
    }
    Ok((
        Arc::new(Schema::new(file_fields)),
        Arc::new(Schema::new(all)),
    ))
}

/// Read only the footer (metadata) of a file. Errors name the file: not Parquet,
/// truncated, unreadable.
pub fn read_footer(file: &FileRef) -> Result<FileFooter> {
    let (_f, _, metadata, _) = open_parquet(&file.path, FOOTER_PREFETCH)?;
    footer_from_metadata(file, &metadata)
}

/// A file's footer in Stratus terms, from its decoded Parquet metadata.
pub fn footer_from_metadata(file: &FileRef, metadata: &ParquetMetaData) -> Result<FileFooter> {
    let (_, schema) = file_schemas(&file.path, metadata, &file.hive)?;
    let row_groups = metadata
        .row_groups()
        .iter()
        .map(|rg| RowGroupMeta {
            rows: u64::try_from(rg.num_rows()).unwrap_or(0),
            uncompressed_bytes: u64::try_from(rg.total_byte_size()).unwrap_or(0),
        })
        .collect();
    Ok(FileFooter {
        file: file.clone(),
        num_rows: u64::try_from(metadata.file_metadata().num_rows()).unwrap_or(0),
        row_groups,
        schema,
    })
}

/// Check all footers agree on the schema (field names, order, types; nullability may
/// differ, the result is nullable where any file is); return the common schema or an error
/// naming the first file that disagrees, the reference file (the first one), and the field.
pub fn check_schemas(footers: &[FileFooter]) -> Result<SchemaRef> {
    let Some(first) = footers.first() else {
        return Err(EngineError::Argument(
            "no files to take a schema from".into(),
        ));
    };
    let reference = &first.schema;
    let mut nullable: Vec<bool> = reference.fields().iter().map(|f| f.is_nullable()).collect();
    for footer in &footers[1..] {
        if Arc::ptr_eq(&footer.schema, reference) {
            continue;
        }
        let here = &footer.schema;
        let mismatch = |detail: String| EngineError::SchemaMismatch {
            path: footer.file.path.clone(),
            reference: first.file.path.clone(),
            detail,
        };
        let n = reference.fields().len().max(here.fields().len());
        for i in 0..n {
            match (reference.fields().get(i), here.fields().get(i)) {
                (Some(a), Some(b)) => {
                    if a.name() != b.name() {
                        return Err(mismatch(format!(
                            "field #{} is '{}' there but '{}' here",
                            i + 1,
                            a.name(),
                            b.name()
                        )));
                    }
                    if a.data_type() != b.data_type() {
                        return Err(mismatch(format!(
                            "field '{}' is {} there but {} here",
                            a.name(),
                            a.data_type(),
                            b.data_type()
                        )));
                    }
                    if let Some(slot) = nullable.get_mut(i) {
                        *slot |= b.is_nullable();
                    }
                }
                (Some(a), None) => {
                    return Err(mismatch(format!("field '{}' is missing here", a.name())));
                }
                (None, Some(b)) => {
                    return Err(mismatch(format!(
                        "field '{}' is here but not there",
                        b.name()
                    )));
                }
                (None, None) => {}
            }
        }
    }
    let fields: Vec<Field> = reference
        .fields()
        .iter()
        .zip(nullable)
        .map(|(f, n)| f.as_ref().clone().with_nullable(n))
        .collect();
    Ok(Arc::new(Schema::new(fields)))
}

// ---------------------------------------------------------------------------------------
// Planning
// ---------------------------------------------------------------------------------------

/// Sources with more files than this have their small files grouped: below it, one
/// partition per file (a task's overhead is small next to the read of a whole source);
/// above it, consecutive whole files share a partition up to the target size (the
/// overhead of a task and of a file's reader set-up outweighs reading 100 rows).
pub const GROUP_FILES_OVER: usize = 1024;

/// Most files grouped into one partition (bounds a task's size on the wire).
pub const MAX_GROUP_FILES: usize = 512;

/// Row groups `start..end` of file `footer`.
#[derive(Clone, Copy)]
struct Seg {
    footer: usize,
    start: usize,
    end: usize,
}

/// A planned partition: one file's row-group range, or several whole files.
struct Part {
    segs: Vec<Seg>,
}

fn rg_weight(rg: &RowGroupMeta) -> u64 {
    rg.uncompressed_bytes.max(1)
}

/// Weights of a part's row groups, in order.
fn part_weights(footers: &[FileFooter], p: &Part) -> Vec<u64> {
    p.segs
        .iter()
        .flat_map(|s| {
            footers[s.footer].row_groups[s.start..s.end]
                .iter()
                .map(rg_weight)
        })
        .collect()
}

/// Split files into partitions: each file whole if its uncompressed size <= target_bytes,
/// else contiguous row-group ranges of about target_bytes each. When there are more than
/// [`GROUP_FILES_OVER`] files, consecutive files that are whole partitions are then grouped
/// into one partition while the group stays within target_bytes and [`MAX_GROUP_FILES`]
/// files (their hive values may differ; the group's rows carry each file's). Then, while
/// there are fewer than `min_partitions` partitions and some partition has more than one
/// row group, split the largest partition (the first one on ties) in two at the row group
/// that best balances the bytes. Partitions keep file and row-group order. Deterministic.
pub fn plan_partitions(
    footers: &[FileFooter],
    target_bytes: u64,
    min_partitions: usize,
) -> Vec<ParquetPartition> {
    let target = target_bytes.max(1);
    let mut parts: Vec<Part> = Vec::new();
    // Whether each part is a whole file within the target (may be grouped), and its bytes.
    let mut small: Vec<Option<u64>> = Vec::new();
    for (fi, f) in footers.iter().enumerate() {
        let n = f.row_groups.len();
        let total = f
            .row_groups
            .iter()
            .map(|rg| rg.uncompressed_bytes)
            .fold(0u64, u64::saturating_add);
        if total <= target || n <= 1 {
            parts.push(Part {
                segs: vec![Seg {
                    footer: fi,
                    start: 0,
                    end: n,
                }],
            });
            small.push((total <= target).then_some(total));
            continue;
        }
        let mut start = 0;
        let mut acc = 0u64;
        for (i, rg) in f.row_groups.iter().enumerate() {
            if i > start && acc.saturating_add(rg.uncompressed_bytes) > target {
                parts.push(Part {
                    segs: vec![Seg {
                        footer: fi,
                        start,
                        end: i,
                    }],
                });
                small.push(None);
                start = i;
                acc = 0;
            }
            acc = acc.saturating_add(rg.uncompressed_bytes);
        }
        parts.push(Part {
            segs: vec![Seg {
                footer: fi,
                start,
                end: n,
            }],
        });
        small.push(None);
    }

    if footers.len() > GROUP_FILES_OVER {
        parts = group_small_files(footers, parts, &small, target);
    }

    while parts.len() < min_partitions {
        let mut best: Option<(usize, u64)> = None;
        for (i, p) in parts.iter().enumerate() {
            let weights = part_weights(footers, p);
            if weights.len() < 2 {
                continue;
            }
            let w = weights.iter().fold(0u64, |a, &b| a.saturating_add(b));
            if best.is_none_or(|(_, bw)| w > bw) {
                best = Some((i, w));
            }
        }
        let Some((idx, total)) = best else { break };
        let weights = part_weights(footers, &parts[idx]);
        // Split after row group m (1..len) of the part, minimising |left - right|.
        let mut left = 0u64;
        let mut split = 1;
        let mut best_diff = u64::MAX;
        for m in 1..weights.len() {
            left = left.saturating_add(weights[m - 1]);
            let right = total.saturating_sub(left);
            let diff = left.abs_diff(right);
            if diff < best_diff {
                best_diff = diff;
                split = m;
            }
        }
        let (first, second) = split_part(&parts[idx], split);
        parts[idx] = first;
        parts.insert(idx + 1, second);
    }

    parts
        .into_iter()
        .map(|p| {
            let piece = |s: &Seg| {
                let f = &footers[s.footer];
                let rows = f.row_groups[s.start..s.end]
                    .iter()
                    .map(|rg| rg.rows)
                    .fold(0u64, u64::saturating_add);
                let start = u32::try_from(s.start).unwrap_or(u32::MAX);
                let end = u32::try_from(s.end).unwrap_or(u32::MAX);
                ParquetPartition::of_file(&f.file, start, end, rows)
            };
            let mut first = piece(&p.segs[0]);
            for s in &p.segs[1..] {
                let q = piece(s);
                first.rows = first.rows.saturating_add(q.rows);
                first.more.push(FilePart {
                    path: q.path,
                    row_group_start: q.row_group_start,
                    row_group_end: q.row_group_end,
                    rows: q.rows,
                    hive: q.hive,
                    file_size: q.file_size,
                });
            }
            first
        })
        .collect()
}

/// Group consecutive small whole-file parts (see [`plan_partitions`]); files with
/// different hive keys (not values) are never grouped.
fn group_small_files(
    footers: &[FileFooter],
    parts: Vec<Part>,
    small: &[Option<u64>],
    target: u64,
) -> Vec<Part> {
    let keys = |p: &Part| {
        footers[p.segs[0].footer]
            .file
            .hive
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
    };
    let mut out: Vec<Part> = Vec::with_capacity(parts.len());
    // The bytes of the last part of `out` while it can take more small files.
    let mut open: Option<u64> = None;
    for (p, size) in parts.into_iter().zip(small) {
        match (size, open, out.last_mut()) {
            (Some(size), Some(bytes), Some(last))
                if bytes.saturating_add(*size) <= target
                    && last.segs.len() < MAX_GROUP_FILES
                    && keys(last) == keys(&p) =>
            {
                last.segs.extend(p.segs);
                open = Some(bytes + size);
            }
            _ => {
                open = *size;
                out.push(p);
            }
        }
    }
    out
}

/// A part cut after its `at`-th row group (counted over all its files).
fn split_part(p: &Part, at: usize) -> (Part, Part) {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    let mut seen = 0;
    for s in &p.segs {
        let n = s.end - s.start;
        if seen + n <= at {
            first.push(*s);
        } else if seen >= at {
            second.push(*s);
        } else {
            let cut = s.start + (at - seen);
            first.push(Seg { end: cut, ..*s });
            second.push(Seg { start: cut, ..*s });
        }
        seen += n;
    }
    (Part { segs: first }, Part { segs: second })
}

// ---------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------

/// Where an output column comes from.
enum Source {
    /// Index among the file's top-level columns.
    File(usize),
    /// Index into the hive values.
    Hive(usize),
}

/// Read a partition into Arrow record batches (about [`BATCH_ROWS`] rows each): only the
/// given row groups; optional projection by column name, output in the requested order
/// (None = all columns of the dataset schema; an unknown name is an error naming it and the
/// file); hive-only columns added from the path as constant columns. A hive key that is also
/// a file column keeps the file's column and type, and every value read must equal the path
/// value (checked from the row-group statistics when they prove it, else on the values).
/// `limit`: stop after that many rows. The result may be empty (e.g. `limit == Some(0)`).
/// A partition of several files reads them in order and joins their batches (see
/// [`read_files`]).
pub fn read_partition(
    spec: &ParquetPartition,
    columns: Option<&[String]>,
    limit: Option<usize>,
) -> Result<Vec<RecordBatch>> {
    read_files(spec, limit, |file, limit| {
        let (file_handle, len, metadata, whole) = open_parquet(&file.path, WHOLE_READ_BYTES)?;
        let mut chunks = LocalChunks::new(file_handle, &file.path, len, whole);
        read_partition_from(file, metadata, &mut chunks, columns, limit)
    })
}

/// Files up to this size are read whole, in one read, when a partition is read: the
/// footer and the column chunks come from the same bytes.
pub const WHOLE_READ_BYTES: u64 = 1 << 20;

/// Read the files of a partition in order with `read_one(file, limit)` (each file as a
/// partition of its own, the limit left), and join the results: batches of a few rows
/// each (grouped small files) are concatenated into batches of up to [`BATCH_ROWS`] rows,
/// and every batch takes the partition's schema (a field is nullable where any file's is;
/// types must agree, else an error naming the file). Row order is the files' order.
/// A partition of one file is handed to `read_one` as it is.
pub fn read_files<F>(
    spec: &ParquetPartition,
    limit: Option<usize>,
    mut read_one: F,
) -> Result<Vec<RecordBatch>>
where
    F: FnMut(&ParquetPartition, Option<usize>) -> Result<Vec<RecordBatch>>,
{
    if spec.more.is_empty() {
        return read_one(spec, limit);
    }
    let mut read: Vec<(String, Vec<RecordBatch>)> = Vec::new();
    let mut rows = 0usize;
    for file in spec.files() {
        let left = limit.map(|l| l.saturating_sub(rows));
        if left == Some(0) {
            break;
        }
        let batches = read_one(&file, left)?;
        rows += batches.iter().map(RecordBatch::num_rows).sum::<usize>();
        read.push((file.path, batches));
    }
    join_files(read)
}

/// The batches of several files as one partition's (see [`read_files`]).
fn join_files(read: Vec<(String, Vec<RecordBatch>)>) -> Result<Vec<RecordBatch>> {
    let Some(schema) = read
        .iter()
        .flat_map(|(_, b)| b.first())
        .next()
        .map(|b| b.schema())
    else {
        return Ok(Vec::new());
    };
    let first_path = read[0].0.clone();
    let mut nullable: Vec<bool> = schema.fields().iter().map(|f| f.is_nullable()).collect();
    for (path, batches) in &read {
        for b in batches {
            let here = b.schema();
            let same = here.fields().len() == schema.fields().len()
                && here
                    .fields()
                    .iter()
                    .zip(schema.fields())
                    .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
            if !same {
                return Err(EngineError::SchemaMismatch {
                    path: path.clone(),
                    reference: first_path.clone(),
                    detail: format!(
                        "the files of one partition read as {schema:?} there but {here:?} here"
                    ),
                });
            }
            for (n, f) in nullable.iter_mut().zip(here.fields()) {
                *n |= f.is_nullable();
            }
        }
    }
    let schema: SchemaRef = Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .zip(&nullable)
            .map(|(f, &n)| f.as_ref().clone().with_nullable(n))
            .collect::<Vec<_>>(),
    ));
    let mut out = Vec::new();
    let mut pending: Vec<RecordBatch> = Vec::new();
    let mut pending_rows = 0usize;
    let flush = |pending: &mut Vec<RecordBatch>, out: &mut Vec<RecordBatch>, path: &str| {
        let batch = match pending.len() {
            0 => return Ok(()),
            1 => pending.pop().expect("one batch"),
            _ => arrow_select::concat::concat_batches(&schema, pending.iter())
                .map_err(|e| EngineError::arrow(path, e))?,
        };
        pending.clear();
        out.push(batch);
        Ok::<(), EngineError>(())
    };
    for (path, batches) in read {
        for b in batches {
            let b = RecordBatch::try_new_with_options(
                schema.clone(),
                b.columns().to_vec(),
                &RecordBatchOptions::new().with_row_count(Some(b.num_rows())),
            )
            .map_err(|e| EngineError::arrow(&path, e))?;
            if pending_rows + b.num_rows() > BATCH_ROWS {
                flush(&mut pending, &mut out, &path)?;
                pending_rows = 0;
            }
            pending_rows += b.num_rows();
            pending.push(b);
        }
        if pending_rows >= BATCH_ROWS {
            flush(&mut pending, &mut out, &path)?;
            pending_rows = 0;
        }
    }
    flush(&mut pending, &mut out, &first_path)?;
    Ok(out)
}

/// Where [`read_partition_from`] gets column-chunk bytes: a local file, or
/// ranges fetched from an object store.
pub trait ChunkSource {
    /// What parquet's reader reads a group's bytes from.
    type Reader: ChunkReader + 'static;
    /// Called once before any [`ChunkSource::open`]: the groups of row groups
    /// that will be opened, in order, and the leaf columns read from each (so
    /// a remote source can start fetching every byte range at once).
    fn plan(
        &mut self,
        _metadata: &ParquetMetaData,
        _groups: &[Vec<usize>],
        _leaves: &[usize],
    ) -> Result<()> {
        Ok(())
    }
    /// The bytes of group `index` of the plan.
    fn open(&mut self, index: usize) -> Result<Self::Reader>;
}

/// A local file as a [`ChunkSource`]: the column chunks of each group of row groups are
/// read into memory with one positioned read per run of adjacent chunks when the group is
/// opened (parquet's reader then slices pages out of them without further reads or
/// copies); a file read whole ([`WHOLE_READ_BYTES`]) is sliced from those bytes.
pub struct LocalChunks {
    file: File,
    path: String,
    len: u64,
    whole: Option<Bytes>,
    /// Per planned group: the byte ranges of its column chunks.
    groups: Vec<Vec<std::ops::Range<u64>>>,
}

impl LocalChunks {
    /// A file of `len` bytes; `whole`: its bytes, when already read.
    pub fn new(file: File, path: &str, len: u64, whole: Option<Bytes>) -> LocalChunks {
        LocalChunks {
            file,
            path: path.to_string(),
            len,
            whole,
            groups: Vec::new(),
        }
    }
}

/// Byte ranges of the column chunks of `leaves` in `row_groups`, sorted, adjacent ones
/// merged.
fn chunk_ranges(
    metadata: &ParquetMetaData,
    row_groups: &[usize],
    leaves: &[usize],
) -> Vec<std::ops::Range<u64>> {
    let mut ranges: Vec<std::ops::Range<u64>> = row_groups
        .iter()
        .flat_map(|&rg| {
            let rg = metadata.row_group(rg);
            leaves.iter().map(move |&leaf| {
                let (start, len) = rg.column(leaf).byte_range();
                start..start.saturating_add(len)
            })
        })
        .collect();
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<std::ops::Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    merged
}

impl ChunkSource for LocalChunks {
    type Reader = FetchedRanges;

    fn plan(
        &mut self,
        metadata: &ParquetMetaData,
        groups: &[Vec<usize>],
        leaves: &[usize],
    ) -> Result<()> {
        if self.whole.is_none() {
            self.groups = groups
                .iter()
                .map(|g| chunk_ranges(metadata, g, leaves))
                .collect();
        }
        Ok(())
    }

    fn open(&mut self, index: usize) -> Result<FetchedRanges> {
        use std::os::unix::fs::FileExt;
        let len = self.len;
        if let Some(whole) = &self.whole {
            return Ok(FetchedRanges::new(
                &self.path,
                len,
                vec![(0, whole.clone())],
            ));
        }
        let Some(ranges) = self.groups.get(index) else {
            return Err(EngineError::Invalid {
                path: self.path.clone(),
                reason: format!("internal: row-group group {index} was not planned"),
            });
        };
        let mut pieces = Vec::with_capacity(ranges.len());
        for r in ranges {
            let mut buf = vec![0u8; (r.end - r.start) as usize];
            self.file
                .read_exact_at(&mut buf, r.start)
                .map_err(|e| EngineError::io(&self.path, e))?;
            pieces.push((r.start, Bytes::from(buf)));
        }
        Ok(FetchedRanges::new(&self.path, len, pieces))
    }
}

/// Byte ranges of one file fetched into memory (column chunks of the row
/// groups a read needs), as parquet's reader reads them: a slice of a range
/// is handed out without a copy. Asking for bytes outside every range is an
/// error (a bug in the fetch plan), never a silent read of zeros.
#[derive(Debug, Clone)]
pub struct FetchedRanges {
    path: String,
    file_len: u64,
    /// Sorted by start, not overlapping.
    ranges: Vec<(u64, Bytes)>,
}

impl FetchedRanges {
    /// `ranges`: (start offset, bytes) of a file of `file_len` bytes.
    pub fn new(path: &str, file_len: u64, mut ranges: Vec<(u64, Bytes)>) -> FetchedRanges {
        ranges.sort_by_key(|(start, _)| *start);
        FetchedRanges {
            path: path.to_string(),
            file_len,
            ranges,
        }
    }

    fn slice(&self, start: u64, length: Option<usize>) -> parquet::errors::Result<Bytes> {
        let i = self.ranges.partition_point(|(s, _)| *s <= start);
        if i > 0 {
            let (s, bytes) = &self.ranges[i - 1];
            let offset = (start - s) as usize;
            let end = match length {
                Some(n) => offset.checked_add(n),
                None => Some(bytes.len()),
            };
            if let Some(end) = end.filter(|&e| e <= bytes.len() && offset <= e) {
                return Ok(bytes.slice(offset..end));
            }
        }
        Err(parquet::errors::ParquetError::General(format!(
            "{}: bytes {start}..{} were not fetched",
            self.path,
            length.map_or("end".to_string(), |n| (start + n as u64).to_string())
        )))
    }
}

impl parquet::file::reader::Length for FetchedRanges {
    fn len(&self) -> u64 {
        self.file_len
    }
}

impl ChunkReader for FetchedRanges {
    type T = bytes::buf::Reader<Bytes>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        use bytes::Buf;
        Ok(self.slice(start, None)?.reader())
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<Bytes> {
        self.slice(start, Some(length))
    }
}

/// [`read_partition`] with the footer already decoded and column-chunk bytes
/// from `chunks`.
pub fn read_partition_from<C: ChunkSource>(
    spec: &ParquetPartition,
    metadata: Arc<ParquetMetaData>,
    chunks: &mut C,
    columns: Option<&[String]>,
    limit: Option<usize>,
) -> Result<Vec<RecordBatch>> {
    let path = spec.path.as_str();
    let n_rg = metadata.num_row_groups();
    let (start, end) = (spec.row_group_start as usize, spec.row_group_end as usize);
    if start > end || end > n_rg {
        return Err(EngineError::Invalid {
            path: path.into(),
            reason: format!("row groups {start}..{end} out of range (the file has {n_rg})"),
        });
    }
    let (file_schema, dataset_schema) = file_schemas(path, &metadata, &spec.hive)?;
    let n_file = file_schema.fields().len();

    // Resolve the projection.
    let names: Vec<String> = match columns {
        Some(c) => c.to_vec(),
        None => dataset_schema
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect(),
    };
    let mut sources = Vec::with_capacity(names.len());
    let mut out_fields = Vec::with_capacity(names.len());
    for name in &names {
        let Some(idx) = dataset_schema
            .fields()
            .iter()
            .position(|f| f.name() == name)
        else {
            return Err(EngineError::UnknownColumn {
                path: path.into(),
                column: name.clone(),
                available: dataset_schema
                    .fields()
                    .iter()
                    .map(|f| f.name().as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        };
        out_fields.push(dataset_schema.field(idx).clone());
        if idx < n_file {
            sources.push(Source::File(idx));
        } else {
            let Some(h) = spec.hive.iter().position(|(k, _)| k == name) else {
                return Err(EngineError::Invalid {
                    path: path.into(),
                    reason: format!("column '{name}' has no hive value"),
                });
            };
            sources.push(Source::Hive(h));
        }
    }
    let out_schema = Arc::new(Schema::new(out_fields));

    // Hive keys stored in the file too: verify them.
    let mut verify: Vec<(usize, &str, &str)> = Vec::new(); // (file index, key, value)
    for (k, v) in &spec.hive {
        if let Some(i) = file_schema.fields().iter().position(|f| f.name() == k) {
            if !stats_prove_value(
                &metadata,
                start..end,
                i,
                file_schema.field(i).data_type(),
                v,
            ) {
                verify.push((i, k.as_str(), v.as_str()));
            }
        }
    }

    let mut read_idx: Vec<usize> = sources
        .iter()
        .filter_map(|s| match s {
            Source::File(i) => Some(*i),
            Source::Hive(_) => None,
        })
        .chain(verify.iter().map(|v| v.0))
        .collect();
    read_idx.sort_unstable();
    read_idx.dedup();

    let total_rows: u64 = metadata.row_groups()[start..end]
        .iter()
        .map(|rg| u64::try_from(rg.num_rows()).unwrap_or(0))
        .sum();
    let wanted = limit.map_or(total_rows, |l| total_rows.min(l as u64));
    if wanted == 0 {
        return Ok(Vec::new());
    }

    let mut consts: Vec<Option<(usize, ArrayRef)>> = vec![None; spec.hive.len()];
    let mut assemble = |batch: Option<&RecordBatch>, rows: usize| -> Result<RecordBatch> {
        let mut cols: Vec<ArrayRef> = Vec::with_capacity(sources.len());
        for s in &sources {
            match s {
                Source::File(i) => {
                    let pos = read_idx
                        .binary_search(i)
                        .map_err(|_| EngineError::Invalid {
                            path: path.into(),
                            reason: "internal: projected column not read".into(),
                        })?;
                    let Some(b) = batch else {
                        return Err(EngineError::Invalid {
                            path: path.into(),
                            reason: "internal: no batch for file columns".into(),
                        });
                    };
                    cols.push(b.column(pos).clone());
                }
                Source::Hive(h) => {
                    let cached = match &consts[*h] {
                        Some((n, a)) if *n == rows => a.clone(),
                        _ => {
                            let a = constant_array(&spec.hive[*h].1, rows, path)?;
                            consts[*h] = Some((rows, a.clone()));
                            a
                        }
                    };
                    cols.push(cached);
                }
            }
        }
        RecordBatch::try_new_with_options(
            out_schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| EngineError::arrow(path, e))
    };

    let mut out = Vec::new();
    if read_idx.is_empty() {
        // Only hive columns (or none): no need to touch the column data.
        let mut left = wanted;
        while left > 0 {
            let n = left.min(BATCH_ROWS as u64);
            out.push(assemble(None, n as usize)?);
            left -= n;
        }
        return Ok(out);
    }

    let options = ArrowReaderOptions::new().with_schema(file_schema.clone());
    let arm = ArrowReaderMetadata::try_new(metadata.clone(), options)
        .map_err(|e| EngineError::parquet(path, e))?;
    let mask = ProjectionMask::roots(arm.parquet_schema(), read_idx.iter().copied());
    // The reader reserves `batch_size` rows of capacity for every batch, so a
    // row group's short last batch would hold up to a whole batch of unused
    // memory. Without a limit (persist), read each row group as one batch of
    // exactly its rows: persisted buffers then have no slack.
    let readers: Vec<(Vec<usize>, usize)> = match limit {
        // Only the row groups that hold the first `limit` rows.
        Some(l) => {
            let mut rows = 0u64;
            let needed: Vec<usize> = (start..end)
                .take_while(|&rg| {
                    let take = rows < l as u64;
                    rows += u64::try_from(metadata.row_group(rg).num_rows()).unwrap_or(0);
                    take
                })
                .collect();
            vec![(needed, BATCH_ROWS)]
        }
        None => (start..end)
            .map(|rg| {
                let rows = usize::try_from(metadata.row_group(rg).num_rows()).unwrap_or(0);
                (vec![rg], rows.max(1))
            })
            .collect(),
    };
    let leaves: Vec<usize> = (0..arm.parquet_schema().num_columns())
        .filter(|&leaf| mask.leaf_included(leaf))
        .collect();
    let groups: Vec<Vec<usize>> = readers.iter().map(|(g, _)| g.clone()).collect();
    chunks.plan(&metadata, &groups, &leaves)?;
    // One reader per group, built only when the previous one is drained, so a
    // remote source's later groups are still arriving while this one decodes.
    for (index, (row_groups, batch_size)) in readers.into_iter().enumerate() {
        let mut builder =
            ParquetRecordBatchReaderBuilder::new_with_metadata(chunks.open(index)?, arm.clone())
                .with_row_groups(row_groups)
                .with_projection(mask.clone())
                .with_batch_size(batch_size);
        if let Some(l) = limit {
            builder = builder
                .with_limit(l.saturating_sub(out.iter().map(|b: &RecordBatch| b.num_rows()).sum()));
        }
        let reader = builder.build().map_err(|e| EngineError::parquet(path, e))?;
        for batch in reader {
            let batch = batch.map_err(|e| EngineError::arrow(path, e))?;
            for (i, key, value) in &verify {
                let pos = read_idx
                    .binary_search(i)
                    .map_err(|_| EngineError::Invalid {
                        path: path.into(),
                        reason: "internal: verified column not read".into(),
                    })?;
                check_hive_values(path, key, value, batch.column(pos))?;
            }
            let rows = batch.num_rows();
            out.push(assemble(Some(&batch), rows)?);
        }
    }
    Ok(out)
}

/// A non-null constant column holding a hive value: Int32 if it parses, else a dictionary.
fn constant_array(value: &str, rows: usize, path: &str) -> Result<ArrayRef> {
    if let Ok(v) = value.parse::<i32>() {
        return Ok(Arc::new(Int32Array::from_value(v, rows)));
    }
    let keys = Int32Array::from_value(0, rows);
    let values = StringArray::from(vec![value]);
    let dict = DictionaryArray::<Int32Type>::try_new(keys, Arc::new(values))
        .map_err(|e| EngineError::arrow(path, e))?;
    Ok(Arc::new(dict))
}

/// Whether the row-group statistics prove that a signed integer column holds only `value`
/// (min == max == value and no nulls) in the given row groups.
fn stats_prove_value(
    metadata: &ParquetMetaData,
    row_groups: std::ops::Range<usize>,
    col: usize,
    dt: &DataType,
    value: &str,
) -> bool {
    if !matches!(
        dt,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64
    ) {
        return false;
    }
    let Ok(expected) = value.trim().parse::<i64>() else {
        return false;
    };
    // The column must be a top-level primitive: find its leaf by name.
    let descr = metadata.file_metadata().schema_descr();
    let Some(field) = descr.root_schema().get_fields().get(col) else {
        return false;
    };
    if !field.is_primitive() {
        return false;
    }
    let Some(leaf) = (0..descr.num_columns()).find(|&l| descr.get_column_root_idx(l) == col) else {
        return false;
    };
    metadata.row_groups()[row_groups].iter().all(|rg| {
        let Some(stats) = rg.columns().get(leaf).and_then(|c| c.statistics()) else {
            return false;
        };
        if stats.null_count_opt() != Some(0) {
            return false;
        }
        match stats {
            Statistics::Int32(s) => {
                s.min_opt().map(|&v| i64::from(v)) == Some(expected)
                    && s.max_opt().map(|&v| i64::from(v)) == Some(expected)
            }
            Statistics::Int64(s) => {
                s.min_opt() == Some(&expected) && s.max_opt() == Some(&expected)
            }
            _ => false,
        }
    })
}

/// Check that every value of a file column equals its hive path value. Integer, float and
/// string columns are checked; other types are not compared.
fn check_hive_values(path: &str, key: &str, value: &str, array: &ArrayRef) -> Result<()> {
    let mismatch = |found: String| EngineError::HiveMismatch {
        path: path.into(),
        column: key.into(),
        found,
        expected: value.into(),
    };
    if array.null_count() > 0 {
        return Err(mismatch("null".into()));
    }
    macro_rules! check_int {
        ($t:ty) => {{
            let expected = value.trim().parse::<i128>().ok();
            for v in array.as_primitive::<$t>().values().iter() {
                if Some(i128::from(*v)) != expected {
                    return Err(mismatch(v.to_string()));
                }
            }
            Ok(())
        }};
    }
    macro_rules! check_float {
        ($t:ty) => {{
            let expected = value.trim().parse::<f64>().ok();
            for v in array.as_primitive::<$t>().values().iter() {
                if Some(f64::from(*v)) != expected {
                    return Err(mismatch(v.to_string()));
                }
            }
            Ok(())
        }};
    }
    match array.data_type() {
        DataType::Int8 => check_int!(Int8Type),
        DataType::Int16 => check_int!(Int16Type),
        DataType::Int32 => check_int!(Int32Type),
        DataType::Int64 => check_int!(Int64Type),
        DataType::UInt8 => check_int!(UInt8Type),
        DataType::UInt16 => check_int!(UInt16Type),
        DataType::UInt32 => check_int!(UInt32Type),
        DataType::UInt64 => check_int!(UInt64Type),
        DataType::Float32 => check_float!(Float32Type),
        DataType::Float64 => check_float!(Float64Type),
        DataType::Utf8 => {
            for v in array.as_string::<i32>().iter().flatten() {
                if v != value {
                    return Err(mismatch(format!("'{v}'")));
                }
            }
            Ok(())
        }
        DataType::LargeUtf8 => {
            for v in array.as_string::<i64>().iter().flatten() {
                if v != value {
                    return Err(mismatch(format!("'{v}'")));
                }
            }
            Ok(())
        }
        DataType::Dictionary(_, inner) if **inner == DataType::Utf8 => {
            let Some(dict) = array.as_any_dictionary_opt() else {
                return Ok(());
            };
            let values = dict.values().as_string::<i32>();
            let ok: Vec<bool> = values.iter().map(|v| v == Some(value)).collect();
            for k in dict.normalized_keys() {
                if !ok.get(k).copied().unwrap_or(false) {
                    let found = if values.is_valid(k) {
                        format!("'{}'", values.value(k))
                    } else {
                        "null".into()
                    };
                    return Err(mismatch(found));
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order() {
        let mut v = vec![
            "/d/year=2008/month=10/a.parquet",
            "/d/year=2008/month=2/a.parquet",
            "/d/year=2008/month=1/a.parquet",
            "/d/year=2009/month=1/a.parquet",
        ];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            v,
            vec![
                "/d/year=2008/month=1/a.parquet",
                "/d/year=2008/month=2/a.parquet",
                "/d/year=2008/month=10/a.parquet",
                "/d/year=2009/month=1/a.parquet",
            ]
        );
        assert_eq!(natural_cmp("a01", "a1"), Ordering::Less);
    }

    #[test]
    fn hive_parsing() {
        let h = parse_hive(Path::new("/x/year=2008/month=3/k%3Dv=a%2Fb/part.parquet"));
        assert_eq!(
            h,
            vec![
                ("year".to_string(), "2008".to_string()),
                ("month".to_string(), "3".to_string()),
                ("k=v".to_string(), "a/b".to_string()),
            ]
        );
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%4"), "%4");
    }
}
