//! Requests to an object store on behalf of one request: listing a source
//! (glob, prefix or object) the way local sources are listed, ranged reads
//! (coalesced, many in flight under the worker's limit, pinned to the ETag
//! the listing saw), uploads (multipart past 8 MiB) and deletes; and the
//! dataset convention of Stratus on object stores: a `_SUCCESS` manifest
//! written last names the dataset's files, and a `_temporary/` marker shows a
//! write in progress or failed.
//!
//! Listing a glob lists one level at a time with a delimiter, and only the
//! directories the pattern can match (`year=*/month=1/*.parquet` lists the
//! `year=` level once, then one `month=1/` per year): never a recursive
//! listing of the whole container. A directory the glob matches, or a plain
//! prefix, is listed recursively (it is all wanted).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{
    GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart,
};
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::error::describe;
use crate::location::{object_url, split_glob, Location, StorageError};
use crate::store::{RequestOptions, StoragePolicy, StoreCache};

/// Name of the marker a Stratus write puts last.
pub const SUCCESS: &str = "_SUCCESS";
/// Prefix under a dataset that marks a Stratus write in progress (or failed).
pub const TEMPORARY: &str = "_temporary";
/// Ranges closer than this are fetched in one request.
pub const COALESCE_GAP: u64 = 1024 * 1024;
/// Coalesced ranges grow up to this size (one request each).
pub const MAX_REQUEST_BYTES: u64 = 8 * 1024 * 1024;
/// Uploads past this size are multipart, in parts of this size.
pub const PART_BYTES: usize = 8 * 1024 * 1024;
/// Parts of one upload in flight.
const PARTS_IN_FLIGHT: usize = 4;
/// Directory levels a glob may descend (as for local sources).
const MAX_DEPTH: usize = 64;
/// Objects one listing may return before the request is refused (narrow
/// the glob or prefix).
pub const MAX_LISTED: usize = 1_000_000;
/// The largest `_SUCCESS` manifest read.
pub const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

/// Counters of one worker's object-store traffic.
#[derive(Debug, Default)]
pub struct StorageStats {
    pub requests: AtomicU64,
    pub bytes_fetched: AtomicU64,
    pub bytes_uploaded: AtomicU64,
    pub in_flight: AtomicU64,
    pub peak_in_flight: AtomicU64,
    pub errors: AtomicU64,
}

/// A worker's object-store access: its policy, built stores, request permits
/// and counters.
#[derive(Debug)]
pub struct Storage {
    pub policy: StoragePolicy,
    stores: StoreCache,
    permits: Arc<Semaphore>,
    pub stats: Arc<StorageStats>,
}

impl Storage {
    pub fn new(policy: StoragePolicy) -> Storage {
        Storage::with_stats(policy, Arc::default())
    }

    /// [`Storage::new`] counting into `stats` (shared with the metrics).
    pub fn with_stats(policy: StoragePolicy, stats: Arc<StorageStats>) -> Storage {
        let permits = Arc::new(Semaphore::new(policy.max_requests.max(1)));
        Storage {
            policy,
            stores: StoreCache::default(),
            permits,
            stats,
        }
    }

    /// Open a remote URL (checked against the policy) with a request's
    /// options. Errors name the URL.
    pub fn open(&self, url: &str, options: &[(String, String)]) -> Result<Opened, StorageError> {
        let location = Location::parse(url)?;
        if !location.is_remote() {
            return Err(StorageError::Url {
                url: url.to_string(),
                what: "internal: not an object-store URL".into(),
            });
        }
        self.policy.check_allowed(url, &location)?;
        let options = RequestOptions::parse(options)?;
        let store = self
            .stores
            .store(&self.policy, url, &location, &options.store)?;
        Ok(Opened {
            url: url.trim().to_string(),
            key: location.key().unwrap_or("").to_string(),
            store,
            options,
            permits: self.permits.clone(),
            stats: self.stats.clone(),
        })
    }
}

/// An object found by a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    /// Its URL, spelled as the source was.
    pub url: String,
    /// Its key in the container or bucket.
    pub key: String,
    pub size: u64,
    pub etag: Option<String>,
}

/// The `_SUCCESS` manifest of a dataset Stratus wrote.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    /// `stratus`.
    pub writer: String,
    pub version: String,
    /// The write job.
    pub job: String,
    pub files: Vec<ManifestFile>,
}

/// One file of a [`Manifest`]: its path relative to the dataset, its size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ManifestFile {
    pub path: String,
    pub bytes: u64,
    pub rows: u64,
}

/// A URL opened for one request.
#[derive(Debug, Clone)]
pub struct Opened {
    /// The URL as given.
    pub url: String,
    /// Its key (may hold a glob).
    pub key: String,
    store: Arc<dyn ObjectStore>,
    pub options: RequestOptions,
    permits: Arc<Semaphore>,
    stats: Arc<StorageStats>,
}

fn is_hidden(segment: &str) -> bool {
    segment.starts_with('_') || segment.starts_with('.')
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// A glob segment that matches nearly every name at its level: `*`, a hive
/// key with any value (`year=*`), or a suffix (`*.parquet`).
fn is_broad(segment: &str) -> bool {
    if segment.contains(['?', '[']) || segment.matches('*').count() != 1 {
        return false;
    }
    segment == "*"
        || segment.starts_with('*')
        || segment
            .strip_suffix("=*")
            .is_some_and(|key| !key.is_empty() && !key.contains('*'))
}

impl Opened {
    fn error(&self, url: &str, e: &object_store::Error) -> StorageError {
        self.stats.errors.fetch_add(1, Ordering::Relaxed);
        StorageError::Url {
            url: url.to_string(),
            what: describe(e),
        }
    }

    fn path(&self, key: &str) -> Result<ObjectPath, StorageError> {
        ObjectPath::parse(key.trim_end_matches('/')).map_err(|e| StorageError::Url {
            url: object_url(&self.url, key),
            what: format!("not a valid object key: {e}"),
        })
    }

    /// The URL of `key` in this store, spelled like the opened URL.
    pub fn url_of(&self, key: &str) -> String {
        object_url(&self.url, key)
    }

    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        let permit = self.permits.acquire().await.expect("never closed");
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let now = self.stats.in_flight.fetch_add(1, Ordering::Relaxed) + 1;
        self.stats.peak_in_flight.fetch_max(now, Ordering::Relaxed);
        permit
    }

    fn release(&self) {
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    async fn list_level(
        &self,
        prefix: &str,
    ) -> Result<(Vec<String>, Vec<ObjectMeta>), StorageError> {
        let path = self.path(prefix)?;
        let _permit = self.permit().await;
        let result = self
            .store
            .list_with_delimiter((!prefix.is_empty()).then_some(&path))
            .await;
        self.release();
        let result = result.map_err(|e| self.error(&self.url_of(prefix), &e))?;
        let dirs = result
            .common_prefixes
            .into_iter()
            .map(|p| format!("{p}/"))
            .collect();
        Ok((dirs, result.objects))
    }

    /// Every object under `prefix` (a directory: ends with `/` or is empty).
    pub async fn list_recursive(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StorageError> {
        let path = self.path(prefix)?;
        let _permit = self.permit().await;
        let mut stream = self.store.list((!prefix.is_empty()).then_some(&path));
        let mut listed = Vec::new();
        let mut failed = None;
        while let Some(item) = stream.next().await {
            match item {
                Ok(meta) if listed.len() < MAX_LISTED => listed.push(meta),
                Ok(_) => {
                    self.release();
                    return Err(StorageError::Url {
                        url: self.url_of(prefix),
                        what: format!(
                            "holds more than {MAX_LISTED} objects; narrow the glob or prefix"
                        ),
                    });
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        self.release();
        match failed {
            Some(e) => Err(self.error(&self.url_of(prefix), &e)),
            None => Ok(listed),
        }
    }

    /// The source's Parquet objects: a glob's matches (directories matched
    /// walked whole), every `*.parquet` under a prefix, or the one object the
    /// key names; hidden names (`_x`, `.x`) below the literal part skipped;
    /// sorted by key. A dataset Stratus wrote is read as its `_SUCCESS`
    /// manifest lists it; one with a `_temporary/` marker and no `_SUCCESS`
    /// (a write in progress or failed) is refused unless the request allows
    /// incomplete datasets. Errors name the URL.
    pub async fn list_source(&self) -> Result<Vec<Object>, StorageError> {
        let (literal, pattern) = split_glob(&self.key);
        let (root, mut found) = match pattern {
            Some(pattern) => {
                let segments: Vec<&str> = pattern.split('/').filter(|s| !s.is_empty()).collect();
                let mut found = Vec::new();
                self.expand(&literal, &segments, 0, &mut found).await?;
                (literal.clone(), found)
            }
            None => self.list_prefix_or_object(&literal).await?,
        };
        found.sort_by(|a, b| a.location.as_ref().cmp(b.location.as_ref()));
        found.dedup_by(|a, b| a.location == b.location);
        let root_dir = if root.is_empty() || root.ends_with('/') {
            root.clone()
        } else {
            format!("{root}/")
        };
        let found = self.apply_manifest(&root_dir, found).await?;
        if found.is_empty() {
            return Err(StorageError::Url {
                url: self.url.clone(),
                what: "matches no Parquet object".into(),
            });
        }
        Ok(found
            .into_iter()
            .map(|m| Object {
                url: self.url_of(m.location.as_ref()),
                key: m.location.to_string(),
                size: m.size,
                etag: m.e_tag,
            })
            .collect())
    }

    /// A key without glob: the object itself, or everything under it.
    async fn list_prefix_or_object(
        &self,
        key: &str,
    ) -> Result<(String, Vec<ObjectMeta>), StorageError> {
        if !key.is_empty() && !key.ends_with('/') {
            let path = self.path(key)?;
            let _permit = self.permit().await;
            let head = self.store.head(&path).await;
            self.release();
            match head {
                Ok(meta) => {
                    // A single object: its directory is the dataset root.
                    let root = key.rsplit_once('/').map_or("", |(dir, _)| dir);
                    return Ok((root.to_string(), vec![meta]));
                }
                Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(self.error(&self.url, &e)),
            }
        }
        let dir = if key.is_empty() || key.ends_with('/') {
            key.to_string()
        } else {
            format!("{key}/")
        };
        let all = self.list_recursive(&dir).await?;
        if all.is_empty() {
            return Err(StorageError::Url {
                url: self.url.clone(),
                what: "not found (404): no object or prefix of that name".into(),
            });
        }
        Ok((dir.clone(), walk_filter(&dir, all)))
    }

    /// Match `segments` level by level under the directory `dir`.
    fn expand<'a>(
        &'a self,
        dir: &'a str,
        segments: &'a [&'a str],
        depth: usize,
        out: &'a mut Vec<ObjectMeta>,
    ) -> futures_util::future::BoxFuture<'a, Result<(), StorageError>> {
        Box::pin(async move {
            let Some((first, rest)) = segments.split_first() else {
                return Ok(());
            };
            if depth > MAX_DEPTH {
                return Err(StorageError::Url {
                    url: self.url.clone(),
                    what: format!("a glob deeper than {MAX_DEPTH} levels"),
                });
            }
            let bad = |e: glob::PatternError| StorageError::Url {
                url: self.url.clone(),
                what: format!("invalid glob pattern: {e}"),
            };
            if *first == "**" {
                // Everything below, matched against the rest of the pattern.
                let all = self.list_recursive(dir).await?;
                let pattern = glob::Pattern::new(&format!("**/{}", rest.join("/"))).map_err(bad)?;
                let options = glob::MatchOptions {
                    case_sensitive: true,
                    require_literal_separator: true,
                    require_literal_leading_dot: false,
                };
                for meta in all {
                    let rel = meta.location.as_ref()[dir.len()..].to_string();
                    if rel.split('/').any(is_hidden) {
                        continue;
                    }
                    if rest.is_empty() || pattern.matches_with(&format!("x/{rel}"), options) {
                        out.push(meta);
                    }
                }
                return Ok(());
            }
            if segments.iter().all(|s| is_broad(s)) {
                // What is left matches nearly everything below (`year=*`,
                // `*.parquet`): one recursive listing (a request per 1,000
                // keys) beats a listing per directory.
                let all = self.list_recursive(dir).await?;
                let pattern = glob::Pattern::new(&segments.join("/")).map_err(bad)?;
                let options = glob::MatchOptions {
                    case_sensitive: true,
                    require_literal_separator: true,
                    require_literal_leading_dot: false,
                };
                for meta in all {
                    let rel = &meta.location.as_ref()[dir.len()..];
                    let parts: Vec<&str> = rel.split('/').collect();
                    if parts.iter().any(|p| is_hidden(p)) {
                        continue;
                    }
                    // The object itself matches, or a directory above it
                    // does (walked whole: its Parquet files).
                    let matched = (1..=parts.len().min(segments.len())).any(|k| {
                        pattern.matches_with(&parts[..k].join("/"), options)
                            && (k == parts.len() || rel.ends_with(".parquet"))
                    });
                    if matched && parts.len() >= segments.len() {
                        out.push(meta);
                    }
                }
                return Ok(());
            }
            if !has_glob(first) {
                // A literal segment: no listing needed to descend.
                let next = format!("{dir}{first}/");
                if rest.is_empty() {
                    let key = format!("{dir}{first}");
                    let (_, found) =
                        self.list_prefix_or_object(&key)
                            .await
                            .or_else(|e| match e {
                                StorageError::Url { ref what, .. }
                                    if what.starts_with("not found") =>
                                {
                                    Ok((String::new(), Vec::new()))
                                }
                                e => Err(e),
                            })?;
                    out.extend(found);
                    return Ok(());
                }
                return self.expand(&next, rest, depth + 1, out).await;
            }
            let pattern = glob::Pattern::new(first).map_err(bad)?;
            let (dirs, objects) = self.list_level(dir).await?;
            let name_of = |full: &str| full[dir.len()..].trim_end_matches('/').to_string();
            if rest.is_empty() {
                for meta in objects {
                    let name = name_of(meta.location.as_ref());
                    if !is_hidden(&name) && pattern.matches(&name) {
                        out.push(meta);
                    }
                }
            }
            let mut matched_dirs: Vec<String> = dirs
                .into_iter()
                .filter(|d| {
                    let name = name_of(d);
                    !is_hidden(&name) && pattern.matches(&name)
                })
                .collect();
            matched_dirs.sort();
            if rest.is_empty() {
                // Directories a glob matches are walked whole.
                let mut walks: FuturesOrdered<_> = matched_dirs
                    .iter()
                    .map(|d| async move { self.list_recursive(d).await.map(|all| (d, all)) })
                    .collect();
                while let Some(walked) = walks.next().await {
                    let (d, all) = walked?;
                    out.extend(walk_filter(d, all));
                }
            } else {
                // Levels below, several at once.
                let mut levels: FuturesOrdered<_> = matched_dirs
                    .iter()
                    .map(|d| async move {
                        let mut found = Vec::new();
                        self.expand(d, rest, depth + 1, &mut found)
                            .await
                            .map(|_| found)
                    })
                    .collect();
                while let Some(found) = levels.next().await {
                    out.extend(found?);
                }
            }
            Ok(())
        })
    }

    /// Keep what a `_SUCCESS` manifest under `root` lists, or refuse an
    /// incomplete Stratus write.
    async fn apply_manifest(
        &self,
        root: &str,
        found: Vec<ObjectMeta>,
    ) -> Result<Vec<ObjectMeta>, StorageError> {
        match self.manifest(root).await? {
            Some(manifest) => {
                let listed: std::collections::HashMap<String, u64> = manifest
                    .files
                    .iter()
                    .map(|f| (format!("{root}{}", f.path), f.bytes))
                    .collect();
                let mut kept = Vec::with_capacity(found.len());
                for meta in found {
                    let key = meta.location.to_string();
                    match listed.get(&key) {
                        Some(&bytes) if bytes == meta.size => kept.push(meta),
                        Some(&bytes) => {
                            return Err(StorageError::Url {
                                url: self.url_of(&key),
                                what: format!(
                                    "has {} bytes but the dataset's _SUCCESS manifest says {bytes}: the dataset was changed after Stratus wrote it",
                                    meta.size
                                ),
                            })
                        }
                        // Not part of the committed dataset (old files of an
                        // overwrite being cleaned up, or strays).
                        None => {}
                    }
                }
                Ok(kept)
            }
            None => {
                if !self.options.allow_incomplete && self.write_marker(root).await? {
                    return Err(StorageError::Url {
                        url: self.url.clone(),
                        what: format!(
                            "a Stratus write to {} did not complete (there is {TEMPORARY}/ and no {SUCCESS}): its files may be partial; pass --storage-option {}=true to read them anyway",
                            self.url_of(root),
                            crate::store::ALLOW_INCOMPLETE
                        ),
                    });
                }
                Ok(found)
            }
        }
    }

    /// The Stratus manifest in `root` (a directory key), if there is one.
    pub async fn manifest(&self, root: &str) -> Result<Option<Manifest>, StorageError> {
        let key = format!("{root}{SUCCESS}");
        let Some(data) = self.get_small(&key).await? else {
            return Ok(None);
        };
        // A `_SUCCESS` of another writer (Spark's is empty) is no manifest.
        Ok(serde_json::from_slice::<Manifest>(&data)
            .ok()
            .filter(|m| m.writer == "stratus"))
    }

    /// Whether `root` holds a `_temporary/` marker of a Stratus write.
    pub async fn write_marker(&self, root: &str) -> Result<bool, StorageError> {
        let (dirs, objects) = self.list_level(&format!("{root}{TEMPORARY}/")).await?;
        Ok(!dirs.is_empty() || !objects.is_empty())
    }

    /// A small whole object (a manifest), or None if there is none; one
    /// over [`MAX_MANIFEST_BYTES`] is an error.
    pub async fn get_small(&self, key: &str) -> Result<Option<Bytes>, StorageError> {
        let path = self.path(key)?;
        let _permit = self.permit().await;
        // The size comes with the response's headers: a body too large is
        // never read.
        let got = match self.store.get(&path).await {
            Ok(result) if result.meta.size > MAX_MANIFEST_BYTES => {
                self.release();
                return Err(StorageError::Url {
                    url: self.url_of(key),
                    what: format!(
                        "{} bytes, more than the {MAX_MANIFEST_BYTES} a manifest may have",
                        result.meta.size
                    ),
                });
            }
            Ok(result) => result.bytes().await,
            Err(e) => Err(e),
        };
        self.release();
        match got {
            Ok(bytes) => {
                self.stats
                    .bytes_fetched
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                Ok(Some(bytes))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(&self.url_of(key), &e)),
        }
    }

    /// The last `n` bytes of an object of `size` bytes (a footer), and the
    /// object's ETag.
    pub async fn tail(
        &self,
        key: &str,
        size: u64,
        n: u64,
        etag: Option<&str>,
    ) -> Result<(Bytes, Option<String>), StorageError> {
        let n = n.min(size);
        self.get(key, size - n..size, etag).await
    }

    async fn get(
        &self,
        key: &str,
        range: Range<u64>,
        etag: Option<&str>,
    ) -> Result<(Bytes, Option<String>), StorageError> {
        let path = self.path(key)?;
        let options = GetOptions {
            range: Some(GetRange::Bounded(range.clone())),
            if_match: etag.map(str::to_string),
            ..GetOptions::default()
        };
        let _permit = self.permit().await;
        let got = match self.store.get_opts(&path, options).await {
            Ok(result) => {
                let etag = result.meta.e_tag.clone();
                result.bytes().await.map(|b| (b, etag))
            }
            Err(e) => Err(e),
        };
        self.release();
        let (bytes, etag) = got.map_err(|e| self.error(&self.url_of(key), &e))?;
        self.stats
            .bytes_fetched
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        if bytes.len() as u64 != range.end - range.start {
            return Err(StorageError::Url {
                url: self.url_of(key),
                what: format!(
                    "asked for bytes {}..{} and got {} bytes: the object is shorter than listed (truncated or replaced)",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            });
        }
        Ok((bytes, etag))
    }

    /// Fetch byte ranges of one object: ranges closer than
    /// [`COALESCE_GAP`] merged up to [`MAX_REQUEST_BYTES`], every request in
    /// flight at once under the worker's limit, each pinned to `etag`.
    /// Returns (start, bytes) pieces covering every range.
    pub async fn get_ranges(
        &self,
        key: &str,
        ranges: &[Range<u64>],
        etag: Option<&str>,
    ) -> Result<Vec<(u64, Bytes)>, StorageError> {
        let merged = coalesce(ranges, COALESCE_GAP, MAX_REQUEST_BYTES);
        let mut pending: FuturesOrdered<_> = merged
            .iter()
            .map(|r| async move {
                self.get(key, r.clone(), etag)
                    .await
                    .map(|(b, _)| (r.start, b))
            })
            .collect();
        let mut out = Vec::with_capacity(merged.len());
        while let Some(piece) = pending.next().await {
            out.push(piece?);
        }
        Ok(out)
    }

    /// Upload `data` to `key`: one PUT up to [`PART_BYTES`], else a multipart
    /// upload (aborted on failure, so no part is left behind).
    pub async fn put(&self, key: &str, data: Bytes) -> Result<(), StorageError> {
        let path = self.path(key)?;
        let len = data.len() as u64;
        if data.len() <= PART_BYTES {
            let _permit = self.permit().await;
            let put = self.store.put(&path, PutPayload::from(data)).await;
            self.release();
            put.map_err(|e| self.error(&self.url_of(key), &e))?;
        } else {
            let upload = {
                let _permit = self.permit().await;
                let started = self.store.put_multipart(&path).await;
                self.release();
                started.map_err(|e| self.error(&self.url_of(key), &e))?
            };
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_BYTES);
            let mut offset = 0;
            let mut failed = None;
            while offset < data.len() {
                if let Err(e) = writer.wait_for_capacity(PARTS_IN_FLIGHT).await {
                    failed = Some(e);
                    break;
                }
                let end = (offset + PART_BYTES).min(data.len());
                writer.put(data.slice(offset..end));
                self.stats.requests.fetch_add(1, Ordering::Relaxed);
                offset = end;
            }
            let finished = match failed {
                Some(e) => {
                    // A part failed: abort, so no uploaded part is left.
                    let _ = writer.abort().await;
                    Err(e)
                }
                None => writer.finish().await.map(|_| ()),
            };
            if let Err(e) = finished {
                return Err(self.error(&self.url_of(key), &e));
            }
        }
        self.stats.bytes_uploaded.fetch_add(len, Ordering::Relaxed);
        Ok(())
    }

    /// Delete objects (a missing one is not an error).
    pub async fn delete(&self, keys: &[String]) -> Result<(), StorageError> {
        let mut pending: FuturesOrdered<_> = keys
            .iter()
            .map(|key| async move {
                let path = self.path(key)?;
                let _permit = self.permit().await;
                let deleted = self.store.delete(&path).await;
                self.release();
                match deleted {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                    Err(e) => Err(self.error(&self.url_of(key), &e)),
                }
            })
            .collect();
        while let Some(done) = pending.next().await {
            done?;
        }
        Ok(())
    }

    /// The size of an object, or None if it does not exist.
    pub async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let path = self.path(key)?;
        let _permit = self.permit().await;
        let head = self.store.head(&path).await;
        self.release();
        match head {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.error(&self.url_of(key), &e)),
        }
    }
}

/// `*.parquet` objects of a recursive listing under `dir`, none hidden below it.
fn walk_filter(dir: &str, all: Vec<ObjectMeta>) -> Vec<ObjectMeta> {
    all.into_iter()
        .filter(|m| {
            let rel = m.location.as_ref().get(dir.len()..).unwrap_or("");
            rel.ends_with(".parquet") && !rel.split('/').any(is_hidden)
        })
        .collect()
}

/// Merge ranges closer than `gap` while the merged range stays within
/// `max` (a single range longer than `max` stays whole).
pub fn coalesce(ranges: &[Range<u64>], gap: u64, max: u64) -> Vec<Range<u64>> {
    let mut sorted: Vec<Range<u64>> = ranges.iter().filter(|r| r.end > r.start).cloned().collect();
    sorted.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for r in sorted {
        if let Some(last) = out.last_mut() {
            let joined_end = last.end.max(r.end);
            if r.start <= last.end.saturating_add(gap) && joined_end - last.start <= max {
                last.end = joined_end;
                continue;
            }
            if r.start < last.end {
                // Overlapping but too long to merge: start where the last ends.
                if r.end > last.end {
                    let start = last.end;
                    out.push(start..r.end);
                }
                continue;
            }
        }
        out.push(r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_coalesce_across_small_gaps_up_to_the_request_size() {
        let mb = 1024 * 1024;
        assert_eq!(
            coalesce(&[0..10, 20..30, (2 * mb)..(2 * mb + 5)], mb, 8 * mb),
            vec![0..30, (2 * mb)..(2 * mb + 5)]
        );
        // Merging stops at the maximum request size.
        assert_eq!(
            coalesce(&[0..(5 * mb), (5 * mb)..(10 * mb)], mb, 8 * mb),
            vec![0..(5 * mb), (5 * mb)..(10 * mb)]
        );
        // Out of order, empty and overlapping ranges.
        assert_eq!(
            coalesce(&[50..60, 5..5, 0..10, 8..12], 0, 100),
            vec![0..12, 50..60]
        );
        // Every byte asked for is covered.
        let asked = [0..(9 * mb), (3 * mb)..(12 * mb)];
        let got = coalesce(&asked, 0, 8 * mb);
        for r in &asked {
            for probe in [r.start, r.end - 1] {
                assert!(got.iter().any(|g| g.contains(&probe)), "{probe} in {got:?}");
            }
        }
    }

    #[test]
    fn broad_segments_match_nearly_everything_at_their_level() {
        for broad in ["*", "year=*", "*.parquet", "*-0.parquet"] {
            assert!(is_broad(broad), "{broad}");
        }
        for narrow in [
            "year=201*",
            "part-?.parquet",
            "[ab]*",
            "*a*",
            "month=1",
            "**",
        ] {
            assert!(!is_broad(narrow), "{narrow}");
        }
    }

    #[test]
    fn walks_keep_visible_parquet_objects() {
        let meta = |key: &str| ObjectMeta {
            location: ObjectPath::from(key),
            last_modified: Default::default(),
            size: 1,
            e_tag: None,
            version: None,
        };
        let kept = walk_filter(
            "d/",
            vec![
                meta("d/year=1/a.parquet"),
                meta("d/_temporary/1/a.parquet"),
                meta("d/_SUCCESS"),
                meta("d/.hidden.parquet"),
                meta("d/year=1/notes.txt"),
            ],
        );
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].location.as_ref(), "d/year=1/a.parquet");
    }
}
