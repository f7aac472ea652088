//! Parquet on object stores, for the task bodies: listing a source into
//! files with their hive values; footers read with one ranged GET of the
//! last 64 KiB each (more only when a footer is longer), all files at once,
//! and cached per (URL, options) with the size and ETag, so `len` then
//! `persist` fetch each footer once; partitions read as coalesced ranged
//! GETs of only the projected column chunks, pinned to the footer's ETag, a
//! few row groups ahead of the decoder (a small file with no cached footer:
//! whole, in one request); datasets written as uploads (multipart past 8 MiB)
//! under a `_temporary/<job>` marker, committed by a `_SUCCESS` manifest
//! written last (see `stratus_storage::objects`).
//!
//! Task bodies run on blocking threads; this module waits for the async
//! requests with the runtime's handle.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use bytes::Bytes;
use parquet::file::metadata::ParquetMetaData;
use stratus_engine::scan::{self, ChunkSource, FetchedRanges, FooterTail, FOOTER_PREFETCH};
use stratus_engine::write::{encode_partition, WriteOptions};
use stratus_protocol::messages::{FileRef, ParquetPartition, StagedFile, WriteSpec};
use stratus_storage::{Location, Manifest, ManifestFile, Opened, Storage, SUCCESS, TEMPORARY};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

/// Row groups fetched ahead of the one being decoded.
const FETCH_AHEAD: usize = 4;
/// Memory the cached footers may take (decoded metadata); past it the cache
/// starts over.
const FOOTER_CACHE_BYTES: usize = 256 * 1024 * 1024;
/// Encoded bytes of a write's uploads on their way at once (past it,
/// encoding the next partition waits for the oldest uploads).
const UPLOAD_BYTES_IN_FLIGHT: u64 = 64 << 20;

/// A decoded footer and the ETag of the object it was read from.
type Footer = (Arc<ParquetMetaData>, Option<String>);

/// Object-store access of a worker.
pub struct Remote {
    pub storage: Storage,
    /// Footers by URL and the options it was read with (the same URL may
    /// name another object under another account or endpoint), with the
    /// object's size when read. Keys hold secrets: they stay in memory.
    footers: Mutex<FooterCache>,
    handle: Handle,
}

/// Cached footers and the memory they take.
#[derive(Default)]
struct FooterCache {
    entries: HashMap<String, (u64, Footer)>,
    bytes: usize,
}

/// Whether a task's path or URL is on an object store.
pub fn is_remote(path: &str) -> bool {
    Location::parse(path).is_ok_and(|l| l.is_remote())
}

impl Remote {
    pub fn new(storage: Storage, handle: Handle) -> Remote {
        Remote {
            storage,
            footers: Mutex::new(FooterCache::default()),
            handle,
        }
    }

    fn open(&self, url: &str, options: &[(String, String)]) -> Result<Opened, String> {
        self.storage.open(url, options).map_err(|e| e.to_string())
    }

    /// The source's Parquet objects with their hive values, in natural order.
    pub fn list_files(
        &self,
        source: &str,
        options: &[(String, String)],
    ) -> Result<Vec<FileRef>, String> {
        let opened = self.open(source, options)?;
        let objects = self
            .handle
            .block_on(opened.list_source())
            .map_err(|e| e.to_string())?;
        let mut files: Vec<FileRef> = objects
            .into_iter()
            .map(|o| {
                let key_part = o.key.clone();
                FileRef {
                    hive: scan::hive_values(&key_part),
                    path: o.url,
                    size: o.size,
                }
            })
            .collect();
        files.sort_by(|a, b| scan::natural_cmp(&a.path, &b.path));
        Ok(files)
    }

    /// Footers of these objects, fetched concurrently (cached ones are not).
    pub fn footers(
        &self,
        files: &[FileRef],
        options: &[(String, String)],
    ) -> Result<Vec<Arc<ParquetMetaData>>, String> {
        let mut opened = Vec::with_capacity(files.len());
        for f in files {
            opened.push(self.open(&f.path, options)?);
        }
        let fetches = files
            .iter()
            .zip(&opened)
            .map(|(f, o)| self.footer_async(o, f));
        let found = self
            .handle
            .block_on(futures_util::future::join_all(fetches));
        found
            .into_iter()
            .map(|r| r.map(|(metadata, _)| metadata))
            .collect()
    }

    fn cached(&self, opened: &Opened) -> Option<(u64, Footer)> {
        self.footers
            .lock()
            .expect("footer cache")
            .entries
            .get(&footer_key(opened))
            .cloned()
    }

    async fn footer_async(&self, opened: &Opened, file: &FileRef) -> Result<Footer, String> {
        if let Some((size, hit)) = self.cached(opened) {
            if size == file.size {
                return Ok(hit);
            }
        }
        // Too short to hold a footer: said without asking the store (a
        // zero-length range is no valid request).
        if file.size < 12 {
            return Err(scan::decode_footer_tail(&file.path, file.size, &[])
                .err()
                .map_or_else(|| format!("{}: truncated", file.path), |e| e.to_string()));
        }
        let key = opened.key.clone();
        let (tail, etag) = opened
            .tail(&key, file.size, FOOTER_PREFETCH, None)
            .await
            .map_err(|e| e.to_string())?;
        let metadata = match scan::decode_footer_tail(&file.path, file.size, &tail)
            .map_err(|e| e.to_string())?
        {
            FooterTail::Metadata(m) => m,
            FooterTail::Needs(n) => {
                let (tail, _) = opened
                    .tail(&key, file.size, n, etag.as_deref())
                    .await
                    .map_err(|e| e.to_string())?;
                match scan::decode_footer_tail(&file.path, file.size, &tail)
                    .map_err(|e| e.to_string())?
                {
                    FooterTail::Metadata(m) => m,
                    FooterTail::Needs(_) => {
                        return Err(format!("{}: the footer could not be decoded", file.path))
                    }
                }
            }
        };
        let footer = (metadata, etag);
        self.remember(opened, file.size, footer.clone());
        Ok(footer)
    }

    fn remember(&self, opened: &Opened, size: u64, footer: Footer) {
        let bytes = footer.0.memory_size();
        let mut cache = self.footers.lock().expect("footer cache");
        if cache.bytes + bytes > FOOTER_CACHE_BYTES {
            cache.entries.clear();
            cache.bytes = 0;
        }
        cache.bytes += bytes;
        if let Some((_, old)) = cache.entries.insert(footer_key(opened), (size, footer)) {
            cache.bytes = cache.bytes.saturating_sub(old.0.memory_size());
        }
    }

    /// Read a partition of an object (rows of its row groups, projected),
    /// and the bytes fetched for it.
    pub fn read_partition(
        &self,
        spec: &ParquetPartition,
        columns: Option<&[String]>,
        limit: Option<usize>,
        options: &[(String, String)],
    ) -> Result<(Vec<RecordBatch>, u64), String> {
        let opened = self.open(&spec.path, options)?;
        let cached = self.cached(&opened);
        // The size: from the footer read for the listing (usually on this
        // worker), else as listed, else one HEAD.
        let size = match (&cached, spec.file_size) {
            (Some((size, _)), _) => *size,
            (None, listed) if listed > 0 => listed,
            (None, _) => self
                .handle
                .block_on(opened.size(&opened.key))
                .map_err(|e| e.to_string())?
                .ok_or_else(|| format!("{}: not found (404)", spec.path))?,
        };
        let file = FileRef {
            path: spec.path.clone(),
            size,
            hive: spec.hive.clone(),
        };
        // A small file read whole with no footer at hand: one request
        // instead of a footer's and then the column chunks'.
        let whole_read = cached.is_none()
            && size >= 12
            && columns.is_none()
            && limit.is_none()
            && size <= stratus_storage::objects::MAX_REQUEST_BYTES;
        let (metadata, etag, whole) = if whole_read {
            let (bytes, etag) = self
                .handle
                .block_on(opened.tail(&opened.key, size, size, None))
                .map_err(|e| e.to_string())?;
            let metadata = match scan::decode_footer_tail(&spec.path, size, &bytes)
                .map_err(|e| e.to_string())?
            {
                FooterTail::Metadata(m) => m,
                FooterTail::Needs(_) => {
                    return Err(format!("{}: the footer could not be decoded", spec.path))
                }
            };
            self.remember(&opened, size, (metadata.clone(), etag.clone()));
            (metadata, etag, Some(bytes))
        } else {
            let (metadata, etag) = self.handle.block_on(self.footer_async(&opened, &file))?;
            (metadata, etag, None)
        };
        let mut chunks = RemoteChunks {
            handle: self.handle.clone(),
            opened,
            url: spec.path.clone(),
            size,
            etag,
            groups: Vec::new(),
            fetching: HashMap::new(),
            fetched: whole.as_ref().map_or(0, |b| b.len() as u64),
            whole,
        };
        let batches = scan::read_partition_from(spec, metadata, &mut chunks, columns, limit)
            .map_err(|e| e.to_string())?;
        Ok((batches, chunks.fetched))
    }

    /// Refuse an existing destination unless overwriting (never a single
    /// object), then mark the write in progress (`_temporary/<job>`).
    pub fn prepare_write(
        &self,
        spec: &WriteSpec,
        options: &[(String, String)],
    ) -> Result<(), String> {
        let (opened, dir) = self.dest(spec, options)?;
        self.handle.block_on(async {
            let object = match dir.is_empty() {
                true => None,
                false => opened
                    .size(dir.trim_end_matches('/'))
                    .await
                    .map_err(|e| e.to_string())?,
            };
            if let Some(size) = object {
                return Err(format!(
                    "{}: an object ({size} bytes) is there; a dataset is never written over an object",
                    spec.dest
                ));
            }
            let existing = opened.list_recursive(&dir).await.map_err(|e| e.to_string())?;
            if !existing.is_empty() && !spec.overwrite {
                return Err(format!(
                    "{}: the destination exists ({} objects); pass --overwrite (overwrite=True from Python) to replace it",
                    spec.dest,
                    existing.len()
                ));
            }
            // An overwrite deletes what the new dataset does not hold: only
            // ever a Stratus dataset's files.
            let foreign = existing
                .iter()
                .map(|m| m.location.to_string())
                .find(|key| !stratus_layout(&key[dir.len().min(key.len())..]));
            if let Some(key) = foreign {
                return Err(format!(
                    "{}: --overwrite replaces only a dataset Stratus wrote (hive key=value/ directories, part-*.parquet files, _SUCCESS, _temporary/), and {} is not one of its files; nothing was touched",
                    spec.dest,
                    opened.url_of(&key)
                ));
            }
            opened
                .put(
                    &marker_key(&dir, &spec.job_id),
                    Bytes::from(format!("stratus write {} in progress\n", spec.job_id)),
                )
                .await
                .map_err(|e| e.to_string())
        })
    }

    /// Encode and upload the files of these partitions; each upload starts
    /// as soon as its file is encoded, and encoding waits for the oldest
    /// uploads while more than `UPLOAD_BYTES_IN_FLIGHT` are on their way,
    /// so a big share is never held encoded all at once.
    pub fn write_parts(
        &self,
        parts: &[(u32, &[RecordBatch])],
        spec: &WriteSpec,
        options: &[(String, String)],
    ) -> Result<Vec<StagedFile>, String> {
        let (opened, dir) = self.dest(spec, options)?;
        let opts = WriteOptions {
            dest: spec.dest.clone().into(),
            partition_by: spec.partition_by.clone(),
            job_id: spec.job_id.clone(),
            overwrite: spec.overwrite,
        };
        let mut uploads: VecDeque<(StagedFile, JoinHandle<Result<(), String>>)> = VecDeque::new();
        let mut in_flight = 0u64;
        let mut staged = Vec::new();
        let mut failed = None;
        // Wait for the oldest upload; its file is staged, or the error kept.
        let settle = |(file, upload): (StagedFile, JoinHandle<Result<(), String>>),
                      staged: &mut Vec<StagedFile>,
                      failed: &mut Option<String>| {
            match self.handle.block_on(upload) {
                Ok(Ok(())) => staged.push(file),
                Ok(Err(e)) => {
                    failed.get_or_insert(e);
                }
                Err(e) => {
                    failed.get_or_insert(format!("{}: upload stopped: {e}", file.final_path));
                }
            }
        };
        'parts: for (index, batches) in parts {
            let tag = format!("{index:05}");
            let files = match encode_partition(batches, &opts, &tag) {
                Ok(files) => files,
                Err(e) => {
                    failed = Some(e.to_string());
                    break;
                }
            };
            for file in files {
                let rel = if file.dir.is_empty() {
                    data_name(&tag, &spec.job_id)
                } else {
                    format!("{}/{}", file.dir, data_name(&tag, &spec.job_id))
                };
                let key = format!("{dir}{rel}");
                let url = opened.url_of(&key);
                let staged_file = StagedFile {
                    temp_path: url.clone(),
                    final_path: url,
                    rows: file.rows,
                    bytes: file.data.len() as u64,
                };
                let opened = opened.clone();
                let data = Bytes::from(file.data);
                in_flight += staged_file.bytes;
                let upload = self
                    .handle
                    .spawn(async move { opened.put(&key, data).await.map_err(|e| e.to_string()) });
                uploads.push_back((staged_file, upload));
                while in_flight > UPLOAD_BYTES_IN_FLIGHT {
                    let Some(oldest) = uploads.pop_front() else {
                        break;
                    };
                    in_flight -= oldest.0.bytes;
                    settle(oldest, &mut staged, &mut failed);
                    if failed.is_some() {
                        break 'parts;
                    }
                }
            }
        }
        for upload in uploads {
            settle(upload, &mut staged, &mut failed);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(staged),
        }
    }

    /// Check every file is there with its size, write the `_SUCCESS`
    /// manifest (the commit point), then remove what the dataset no longer
    /// holds (an overwritten dataset's files) and the write's marker.
    pub fn commit_write(
        &self,
        spec: &WriteSpec,
        staged: &[StagedFile],
        options: &[(String, String)],
    ) -> Result<(u64, usize), String> {
        let (opened, dir) = self.dest(spec, options)?;
        let base = opened.url_of(&dir);
        let mut files = Vec::with_capacity(staged.len());
        for s in staged {
            let rel = s.final_path.strip_prefix(&base).ok_or_else(|| {
                format!(
                    "{}: a staged file outside the destination {base}",
                    s.final_path
                )
            })?;
            files.push(ManifestFile {
                path: rel.to_string(),
                bytes: s.bytes,
                rows: s.rows,
            });
        }
        files.sort_by(|a, b| scan::natural_cmp(&a.path, &b.path));
        let rows = files.iter().map(|f| f.rows).sum();
        self.handle.block_on(async {
            let checks = files.iter().map(|f| {
                let key = format!("{dir}{}", f.path);
                let opened = &opened;
                async move { (opened.size(&key).await, key, f.bytes) }
            });
            for (size, key, bytes) in futures_util::future::join_all(checks).await {
                match size.map_err(|e| e.to_string())? {
                    Some(size) if size == bytes => {}
                    Some(size) => {
                        return Err(format!(
                            "{}: {size} bytes where {bytes} were written",
                            opened.url_of(&key)
                        ))
                    }
                    None => return Err(format!("{}: missing at commit", opened.url_of(&key))),
                }
            }
            let manifest = Manifest {
                writer: "stratus".into(),
                version: env!("CARGO_PKG_VERSION").into(),
                job: spec.job_id.clone(),
                files: files.clone(),
            };
            let json = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
            opened
                .put(&format!("{dir}{SUCCESS}"), Bytes::from(json))
                .await
                .map_err(|e| e.to_string())?;
            // Committed: what follows only tidies up.
            let keep: std::collections::HashSet<String> =
                files.iter().map(|f| format!("{dir}{}", f.path)).collect();
            let all = opened
                .list_recursive(&dir)
                .await
                .map_err(|e| e.to_string())?;
            let success = format!("{dir}{SUCCESS}");
            let stale: Vec<String> = all
                .into_iter()
                .map(|m| m.location.to_string())
                .filter(|k| !keep.contains(k) && *k != success)
                .collect();
            opened.delete(&stale).await.map_err(|e| e.to_string())
        })?;
        Ok((rows, files.len()))
    }

    /// Remove a failed write's files and marker: an overwritten dataset
    /// stays as it was (its `_SUCCESS` still lists its files).
    pub fn abort_write(
        &self,
        spec: &WriteSpec,
        options: &[(String, String)],
    ) -> Result<(), String> {
        let (opened, dir) = self.dest(spec, options)?;
        let suffix = format!("-{}.snappy.parquet", spec.job_id);
        let marker = marker_key(&dir, &spec.job_id);
        self.handle.block_on(async {
            let all = opened
                .list_recursive(&dir)
                .await
                .map_err(|e| e.to_string())?;
            let ours: Vec<String> = all
                .into_iter()
                .map(|m| m.location.to_string())
                .filter(|k| k.ends_with(&suffix) || *k == marker)
                .collect();
            opened.delete(&ours).await.map_err(|e| e.to_string())
        })
    }

    /// The destination opened, and its key as a directory (`dir/`).
    fn dest(
        &self,
        spec: &WriteSpec,
        options: &[(String, String)],
    ) -> Result<(Opened, String), String> {
        let opened = self.open(&spec.dest, options)?;
        let key = opened.key.trim_end_matches('/').to_string();
        if key.contains(['*', '?', '[']) {
            return Err(format!(
                "{}: a write destination can not be a glob",
                spec.dest
            ));
        }
        let dir = if key.is_empty() {
            key
        } else {
            format!("{key}/")
        };
        Ok((opened, dir))
    }
}

fn footer_key(opened: &Opened) -> String {
    let mut options = opened.options.store.clone();
    options.sort();
    format!("{}\u{0}{options:?}", opened.url)
}

/// Whether `rel` (a key below a destination) is what a Stratus write leaves:
/// `_SUCCESS`, anything under `_temporary/`, or `key=value/` directories
/// holding `part-*.parquet` files.
fn stratus_layout(rel: &str) -> bool {
    if rel == SUCCESS || rel.starts_with(&format!("{TEMPORARY}/")) {
        return true;
    }
    let mut parts: Vec<&str> = rel.split('/').collect();
    let Some(name) = parts.pop() else {
        return false;
    };
    name.starts_with("part-")
        && name.ends_with(".parquet")
        && parts
            .iter()
            .all(|d| d.split_once('=').is_some_and(|(k, _)| !k.is_empty()))
}

/// Data file name of a partition of a write: the job id makes an
/// overwrite's new files distinct from the old ones.
fn data_name(tag: &str, job: &str) -> String {
    format!("part-{tag}-{job}.snappy.parquet")
}

fn marker_key(dir: &str, job: &str) -> String {
    format!("{dir}{TEMPORARY}/{job}")
}

/// The (start, bytes) pieces of one planned group, arriving.
type Fetch = JoinHandle<Result<Vec<(u64, Bytes)>, String>>;

/// Column chunks of one object, fetched a few row groups ahead of the
/// decoder.
struct RemoteChunks {
    handle: Handle,
    opened: Opened,
    url: String,
    size: u64,
    etag: Option<String>,
    /// Byte ranges of each planned group.
    groups: Vec<Vec<std::ops::Range<u64>>>,
    fetching: HashMap<usize, Fetch>,
    /// Bytes received so far.
    fetched: u64,
    /// The whole object, when it was read in one request.
    whole: Option<Bytes>,
}

impl RemoteChunks {
    fn start(&mut self, index: usize) {
        if index >= self.groups.len() || self.fetching.contains_key(&index) {
            return;
        }
        let ranges = std::mem::take(&mut self.groups[index]);
        let opened = self.opened.clone();
        let etag = self.etag.clone();
        let key = opened.key.clone();
        let fetch = self.handle.spawn(async move {
            opened
                .get_ranges(&key, &ranges, etag.as_deref())
                .await
                .map_err(|e| e.to_string())
        });
        self.fetching.insert(index, fetch);
    }
}

impl Drop for RemoteChunks {
    fn drop(&mut self) {
        for (_, fetch) in self.fetching.drain() {
            fetch.abort();
        }
    }
}

impl ChunkSource for RemoteChunks {
    type Reader = FetchedRanges;

    fn plan(
        &mut self,
        metadata: &ParquetMetaData,
        groups: &[Vec<usize>],
        leaves: &[usize],
    ) -> stratus_engine::Result<()> {
        if self.whole.is_some() {
            return Ok(());
        }
        self.groups = groups
            .iter()
            .map(|row_groups| {
                row_groups
                    .iter()
                    .flat_map(|&rg| {
                        let rg = metadata.row_group(rg);
                        leaves.iter().map(move |&leaf| {
                            let (start, len) = rg.column(leaf).byte_range();
                            // The footer check bounded both by the object's size.
                            start..start.saturating_add(len)
                        })
                    })
                    .collect()
            })
            .collect();
        for index in 0..FETCH_AHEAD.min(self.groups.len()) {
            self.start(index);
        }
        Ok(())
    }

    fn open(&mut self, index: usize) -> stratus_engine::Result<FetchedRanges> {
        if let Some(whole) = &self.whole {
            return Ok(FetchedRanges::new(
                &self.url,
                self.size,
                vec![(0, whole.clone())],
            ));
        }
        self.start(index);
        self.start(index + FETCH_AHEAD);
        let fetch =
            self.fetching
                .remove(&index)
                .ok_or_else(|| stratus_engine::EngineError::Invalid {
                    path: self.url.clone(),
                    reason: format!("internal: row-group group {index} was not planned"),
                })?;
        let pieces = self
            .handle
            .block_on(fetch)
            .map_err(|e| stratus_engine::EngineError::Invalid {
                path: self.url.clone(),
                reason: format!("fetch stopped: {e}"),
            })?
            // Storage errors name the URL already.
            .map_err(stratus_engine::EngineError::Argument)?;
        self.fetched += pieces.iter().map(|(_, b)| b.len() as u64).sum::<u64>();
        Ok(FetchedRanges::new(&self.url, self.size, pieces))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_stratus_layout_may_be_overwritten() {
        for ours in [
            "_SUCCESS",
            "_temporary/job-1",
            "year=2019/month=1/part-00003-job-1.snappy.parquet",
            "part-00000.parquet",
        ] {
            assert!(stratus_layout(ours), "{ours}");
        }
        for theirs in [
            "notes.txt",
            "year=2019/data.parquet",
            "raw/part-0.parquet",
            "year=2019/month=1/part-0.csv",
            "_logs/x",
        ] {
            assert!(!stratus_layout(theirs), "{theirs}");
        }
    }
}
