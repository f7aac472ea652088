//! The worker's spill directory: where persisted partitions go when memory
//! runs short (the decisions are [`crate::store::Store`]'s; this is the I/O).
//!
//! - **One directory per worker process**, `<spill-dir>/<worker name>` (or
//!   `<name>.1`, `<name>.2`... when another live process holds that one),
//!   held with an exclusive `flock` on its `LOCK` file for the life of the
//!   process: two clusters sharing a spill directory never touch each
//!   other's files. Files left by a process that died (SIGKILL, OOM) are
//!   deleted when the directory is next taken; a clean exit deletes its own.
//! - **A spilled partition is one Arrow IPC stream file**, written from the
//!   batches' own buffers (no copy into one message) to a temporary name and
//!   renamed. It is read back by mapping the file: the column buffers point
//!   into the mapping (no copy, no decode of values), the pages come in as a
//!   task touches them and are the kernel's to drop again. Uncompressed: a
//!   mapped file costs nothing to "read back" until it is used.
//! - **`--spill-compression lz4|zstd`** (default `none`) compresses each
//!   buffer of the record and dictionary batches (arrow-ipc's codecs; zstd at
//!   level [`ZSTD_LEVEL`]). Such a file is **not zero copy**: reading it back
//!   decompresses from the mapping into fresh allocations, the partition's
//!   Arrow bytes in RAM again, the task's until it ends
//!   ([`SpillFile::arrow_bytes`] is what its working memory is estimated
//!   from). The writer counts the bytes its buffers decompress to
//!   ([`SpillFile::inflated_bytes`]) and a read accepts no more, so a
//!   damaged length is an error naming the file, not an allocation. Only
//!   this path accepts compressed Arrow IPC: decoding anything from the
//!   network refuses it (`stratus_protocol::ipc`).
//!
//!   **Why `none`**, measured with `worker/benches/spill.rs` (ISD-like data,
//!   144 partitions, 1 M and 4 M rows in time and station order; GB/s of
//!   Arrow data; this machine's virtio ext4 disk, which `dd` with O_DIRECT
//!   writes at 2.3-2.4 GB/s and reads at 4.5-5.3 GB/s; 2 shared cores):
//!
//!   | codec | bytes on disk | write + sync | read cold | read warm |
//!   |---|---|---|---|---|
//!   | none | 1.0x | 1.0-1.3 GB/s | 1.2-1.6 GB/s | 5.2-6.3 GB/s |
//!   | lz4 | 2.5-4.2x fewer | 0.6-0.85 | 1.0-1.15 | 1.3-1.6 |
//!   | zstd (1) | 3.9-6.4x fewer | 0.36-0.46 | 0.6-0.73 | 0.78-0.86 |
//!   | zstd (3) | 3.9-6.6x fewer | 0.23-0.44 | 0.75-0.94 | 0.84-1.04 |
//!
//!   On a disk this fast, compressing costs more time than the bytes it
//!   saves, at every step, and a compressed read takes the partition's RAM
//!   back where a mapping takes none. Compression pays where disk space is
//!   what runs out (`--spill-limit`, a small disk: lz4 fits 2.5-4x more,
//!   zstd 4-6.6x), or on a disk slower than one core compresses (below
//!   about 0.6 GB/s of writes or 1 GB/s of reads: network block storage):
//!   lz4 there; zstd when space matters most. Level 1 because it wrote
//!   1.1-1.7x faster than level 3 for files 1-4% bigger.
//! - **`--spill-limit`** caps the bytes on disk: a spill past it fails with
//!   an error naming the limit, and the store stops accepting data past its
//!   memory limit until space is freed.
//! - **`--spill-disk-reserve`** is the free space a spill never takes
//!   (default `auto`: 5% of the filesystem, at most 2 GiB): spilling is
//!   bounded by default, so neither a big frame nor a peer's deliveries can
//!   fill the disk the host (and its logs) lives on. Checked with `statvfs`
//!   (space for unprivileged writers) before each file.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use stratus_protocol::units::format_bytes;

/// The suffix of spill files (anything else in the directory is left alone).
const SUFFIX: &str = ".arrows";

/// How spill files are written (`--spill-compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpillCompression {
    /// Plain Arrow IPC, read back by mapping (zero copy).
    #[default]
    None,
    /// Record and dictionary batches lz4-frame compressed (lz4_flex).
    Lz4,
    /// The same with zstd (at [`ZSTD_LEVEL`] unless
    /// [`SpillDir::with_zstd_level`] says otherwise).
    Zstd,
}

/// The zstd level of spill files: 1 wrote 1.1-1.7x faster than arrow's
/// default 3 for files 1-4% bigger (module doc).
pub const ZSTD_LEVEL: i32 = 1;

impl SpillCompression {
    /// Parse `none`, `lz4` or `zstd`.
    pub fn parse(text: &str) -> Result<SpillCompression, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "none" => Ok(SpillCompression::None),
            "lz4" => Ok(SpillCompression::Lz4),
            "zstd" => Ok(SpillCompression::Zstd),
            _ => Err(format!("'{text}' is not none, lz4 or zstd")),
        }
    }

    /// Its name, as parsed.
    pub fn name(self) -> &'static str {
        match self {
            SpillCompression::None => "none",
            SpillCompression::Lz4 => "lz4",
            SpillCompression::Zstd => "zstd",
        }
    }
}

/// A partition on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpillFile {
    pub path: PathBuf,
    /// Bytes of the file.
    pub disk_bytes: u64,
    /// How it was written.
    pub compression: SpillCompression,
    /// Bytes its compressed buffers decompress to (0 when uncompressed):
    /// what reading it back allocates, and the most a read accepts.
    pub inflated_bytes: u64,
}

impl SpillFile {
    /// The bytes of Arrow data it holds: the file's for an uncompressed one
    /// (read back by mapping), the decompressed buffers' otherwise.
    pub fn arrow_bytes(&self) -> u64 {
        match self.compression {
            SpillCompression::None => self.disk_bytes,
            _ => self.inflated_bytes.max(self.disk_bytes),
        }
    }
}

/// Free space spilling leaves on the spill directory's filesystem.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DiskReserve {
    /// Bytes.
    Bytes(u64),
    /// A fraction (0..=1) of the filesystem's size.
    Fraction(f64),
    /// 5% of the filesystem's size, at most [`AUTO_RESERVE_CAP`].
    Auto,
}

/// The most the `auto` disk reserve keeps free.
pub const AUTO_RESERVE_CAP: u64 = 2 << 30;

impl DiskReserve {
    /// Parse `auto`, `10%` or a size (`2GiB`, `0`).
    pub fn parse(text: &str) -> Result<DiskReserve, String> {
        let text = text.trim();
        if text.eq_ignore_ascii_case("auto") {
            return Ok(DiskReserve::Auto);
        }
        match text.strip_suffix('%') {
            Some(percent) => {
                let value: f64 = percent
                    .trim()
                    .parse()
                    .map_err(|_| format!("'{text}' is not a percentage"))?;
                if !(0.0..=100.0).contains(&value) {
                    return Err(format!("'{text}' is not between 0% and 100%"));
                }
                Ok(DiskReserve::Fraction(value / 100.0))
            }
            None => stratus_protocol::units::parse_bytes(text).map(DiskReserve::Bytes),
        }
    }

    /// The bytes to keep free on a filesystem of `size` bytes.
    fn bytes(self, size: u64) -> u64 {
        match self {
            DiskReserve::Bytes(b) => b,
            DiskReserve::Fraction(f) => (f * size as f64) as u64,
            DiskReserve::Auto => (size / 20).min(AUTO_RESERVE_CAP),
        }
    }
}

/// Bytes free (for unprivileged writers) and the size of the filesystem
/// holding `dir`.
fn filesystem_space(dir: &Path) -> std::io::Result<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: a NUL-terminated path and a buffer statvfs fills on success.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it filled the buffer.
    let stat = unsafe { stat.assume_init() };
    // The field types are per platform (u32 on some 32-bit targets).
    #[allow(clippy::unnecessary_cast)]
    let unit = stat.f_frsize as u64;
    #[allow(clippy::unnecessary_cast)]
    let (free, blocks) = (stat.f_bavail as u64, stat.f_blocks as u64);
    Ok((free * unit, blocks * unit))
}

/// This worker's spill directory, locked for the life of the process.
#[derive(Debug)]
pub struct SpillDir {
    dir: PathBuf,
    /// Held open: the `flock` lasts as long as the descriptor.
    _lock: File,
    /// 0: no cap.
    limit: u64,
    /// Free space on the filesystem spilling never takes.
    reserve: DiskReserve,
    used: AtomicU64,
    /// Files written, so names never repeat within the process.
    serial: AtomicU64,
    compression: SpillCompression,
    zstd_level: i32,
}

impl SpillDir {
    /// Take `<root>/<name>` (or the first `<name>.N` no live process holds),
    /// creating it, and delete the spill files a dead process left there.
    pub fn open(root: &Path, name: &str, limit: u64) -> Result<SpillDir, String> {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        for n in 0..64 {
            let dir = if n == 0 {
                root.join(&safe)
            } else {
                root.join(format!("{safe}.{n}"))
            };
            std::fs::create_dir_all(&dir)
                .map_err(|e| format!("spill directory {}: {e}", dir.display()))?;
            let lock_path = dir.join("LOCK");
            let lock = File::options()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&lock_path)
                .map_err(|e| format!("spill directory lock {}: {e}", lock_path.display()))?;
            // SAFETY: flock on a descriptor we own.
            let taken = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if taken != 0 {
                continue; // another live worker's: try the next name
            }
            let spill = SpillDir {
                dir,
                _lock: lock,
                limit,
                reserve: DiskReserve::Auto,
                used: AtomicU64::new(0),
                serial: AtomicU64::new(0),
                compression: SpillCompression::None,
                zstd_level: ZSTD_LEVEL,
            };
            let stale = spill.delete_all();
            if stale > 0 {
                tracing::info!(
                    "spill directory {}: deleted {stale} file(s) a process that died left",
                    spill.dir.display()
                );
            }
            return Ok(spill);
        }
        Err(format!(
            "spill directory {}: 64 directories for worker '{name}' are held by live processes",
            root.display()
        ))
    }

    /// The same, keeping `reserve` free on its filesystem (default `auto`).
    pub fn with_disk_reserve(mut self, reserve: DiskReserve) -> SpillDir {
        self.reserve = reserve;
        self
    }

    /// The same, writing files compressed so (default none).
    pub fn with_compression(mut self, compression: SpillCompression) -> SpillDir {
        self.compression = compression;
        self
    }

    /// The same, at this zstd level (1..=22; the bench compares levels).
    pub fn with_zstd_level(mut self, level: i32) -> SpillDir {
        self.zstd_level = level;
        self
    }

    /// How files are written.
    pub fn compression(&self) -> SpillCompression {
        self.compression
    }

    /// The directory this worker owns.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Bytes of spill files on disk.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// Write batches as one file named after `stem` (`what` they are, in
    /// errors).
    pub fn write(
        &self,
        stem: &str,
        what: &str,
        batches: &[RecordBatch],
    ) -> Result<SpillFile, String> {
        let Some(schema) = batches.first().map(RecordBatch::schema) else {
            return Err(format!("{what} has no batches to spill"));
        };
        let failed = |e: stratus_protocol::ProtocolError| format!("spilling {what}: {e}");
        let codec = match self.compression {
            SpillCompression::None => None,
            SpillCompression::Lz4 => Some(arrow_ipc::CompressionType::LZ4_FRAME),
            SpillCompression::Zstd => Some(arrow_ipc::CompressionType::ZSTD),
        };
        let (chunks, inflated) = match codec {
            // The batches' own buffers, no copy.
            None => (
                stratus_protocol::ipc::encode_chunks(&schema, batches).map_err(failed)?,
                0,
            ),
            Some(codec) => {
                let level = (codec == arrow_ipc::CompressionType::ZSTD).then_some(self.zstd_level);
                let bytes = stratus_protocol::ipc::encode_batches_compressed(
                    &schema, batches, codec, level,
                )
                .map_err(failed)?;
                // What reading it back may allocate (the bound `read` checks).
                let inflated = stratus_protocol::ipc::inflated_bytes(&bytes).map_err(failed)?;
                (vec![bytes::Bytes::from(bytes)], inflated)
            }
        };
        let size: u64 = chunks.iter().map(|c| c.len() as u64).sum();
        if self.limit > 0 && self.used() + size > self.limit {
            return Err(format!(
                "spill limit reached in {}: {} on disk, {what} needs {}, limit {} (--spill-limit)",
                self.dir.display(),
                format_bytes(self.used()),
                format_bytes(size),
                format_bytes(self.limit)
            ));
        }
        self.check_reserve(what, size)?;
        let serial = self.serial.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{stem}-{serial}{SUFFIX}"));
        let temp = self.dir.join(format!(".{stem}-{serial}.tmp"));
        let written = (|| -> std::io::Result<()> {
            let mut file = std::io::BufWriter::with_capacity(1 << 20, File::create(&temp)?);
            for chunk in &chunks {
                file.write_all(chunk)?;
            }
            // No fsync: a spill file only has to outlive its process's
            // use of it (a crash makes it stale anyway); the kernel writes
            // it back in the background.
            file.into_inner().map_err(|e| e.into_error())?;
            std::fs::rename(&temp, &path)
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(format!(
                "cannot spill {what} to {}: {e}",
                self.dir.display()
            ));
        }
        self.used.fetch_add(size, Ordering::Relaxed);
        Ok(SpillFile {
            path,
            disk_bytes: size,
            compression: self.compression,
            inflated_bytes: inflated,
        })
    }

    /// Whether `size` more bytes leave the filesystem its reserve.
    fn check_reserve(&self, what: &str, size: u64) -> Result<(), String> {
        if self.reserve == DiskReserve::Bytes(0) {
            return Ok(());
        }
        let (free, total) = filesystem_space(&self.dir)
            .map_err(|e| format!("spill directory {}: statvfs: {e}", self.dir.display()))?;
        let keep = self.reserve.bytes(total);
        if free < size.saturating_add(keep) {
            return Err(format!(
                "spill disk reserve reached in {}: {what} needs {}, the filesystem has {} free of {} and keeps {} free (--spill-disk-reserve)",
                self.dir.display(),
                format_bytes(size),
                format_bytes(free),
                format_bytes(total),
                format_bytes(keep)
            ));
        }
        Ok(())
    }

    /// Delete a spill file (its partition was dropped).
    pub fn delete(&self, file: &SpillFile) {
        if std::fs::remove_file(&file.path).is_ok() {
            self.used.fetch_sub(
                file.disk_bytes.min(self.used()),
                std::sync::atomic::Ordering::Relaxed,
            );
        }
    }

    /// Delete every spill file in the directory; how many there were.
    pub fn delete_all(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut deleted = 0;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if (name.ends_with(SUFFIX) || name.ends_with(".tmp"))
                && std::fs::remove_file(entry.path()).is_ok()
            {
                deleted += 1;
            }
        }
        self.used.store(0, Ordering::Relaxed);
        deleted
    }
}

impl Drop for SpillDir {
    /// A clean exit leaves no spill file behind.
    fn drop(&mut self) {
        self.delete_all();
    }
}

/// Bytes of spill files read back since the process started.
static BYTES_READ: AtomicU64 = AtomicU64::new(0);

/// Bytes of spill files read back since the process started (a metric).
pub fn bytes_read() -> u64 {
    BYTES_READ.load(Ordering::Relaxed)
}

/// Read a spilled partition back: its column buffers point into a read-only
/// mapping of the file (kept alive by the buffers); a compressed file's are
/// decompressed from the mapping into fresh allocations.
pub fn read(file: &SpillFile) -> Result<Vec<RecordBatch>, String> {
    let what = |e: &dyn std::fmt::Display| format!("spill file {}: {e}", file.path.display());
    let opened = File::open(&file.path).map_err(|e| what(&e))?;
    // SAFETY: the file is this process's own, written once and renamed into
    // place; nothing writes to it while it is mapped (it is only deleted).
    let map = unsafe { memmap2::Mmap::map(&opened) }.map_err(|e| what(&e))?;
    if map.is_empty() {
        return Err(what(&"empty"));
    }
    let len = map.len();
    let ptr = NonNull::new(map.as_ptr() as *mut u8).ok_or_else(|| what(&"mapped at null"))?;
    // SAFETY: `ptr` and `len` describe the mapping, which the buffer keeps
    // alive through its owner for as long as any slice of it exists.
    let buffer = unsafe { Buffer::from_custom_allocation(ptr, len, Arc::new(map)) };
    let (_, batches) = match file.compression {
        SpillCompression::None => stratus_protocol::ipc::decode_batches(buffer),
        _ => stratus_protocol::ipc::decode_local_batches(buffer, file.inflated_bytes),
    }
    .map_err(|e| what(&e))?;
    BYTES_READ.fetch_add(len as u64, Ordering::Relaxed);
    Ok(batches)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Float64Array, Int64Array, StringArray};
    use std::sync::Arc;

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "stratus-spill-test-{tag}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    fn batch(n: i64) -> RecordBatch {
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values(0..n)) as arrow_array::ArrayRef,
            ),
            (
                "t",
                Arc::new(Float64Array::from_iter(
                    (0..n).map(|i| (i % 7 != 0).then_some(i as f64 / 2.0)),
                )),
            ),
            (
                "s",
                Arc::new(StringArray::from_iter_values(
                    (0..n).map(|i| format!("st{i}")),
                )),
            ),
        ])
        .unwrap()
    }

    /// Files in a spill directory other than its lock.
    fn spill_files(dir: &Path) -> usize {
        std::fs::read_dir(dir)
            .unwrap()
            .filter(|e| e.as_ref().unwrap().file_name() != "LOCK")
            .count()
    }

    fn write(dir: &SpillDir, batches: &[RecordBatch]) -> Result<SpillFile, String> {
        dir.write("p3-9", "partition 3/9", batches)
    }

    #[test]
    fn a_spilled_partition_reads_back_equal_and_is_deleted_with_the_directory() {
        let root = temp("roundtrip");
        let batches = vec![batch(1000), batch(17)];
        let path;
        {
            let dir = SpillDir::open(&root, "w/1", 0).unwrap();
            assert!(dir.path().ends_with("w_1"), "{}", dir.path().display());
            let file = write(&dir, &batches).unwrap();
            assert_eq!(dir.used(), file.disk_bytes);
            let back = read(&file).unwrap();
            assert_eq!(back, batches);
            path = file.path.clone();
            assert!(path.exists());
        }
        assert!(!path.exists(), "a clean exit deletes its spill files");
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_second_process_gets_its_own_directory_and_stale_files_are_deleted() {
        let root = temp("lock");
        let first = SpillDir::open(&root, "w", 0).unwrap();
        let file = write(&first, &[batch(10)]).unwrap();
        // flock is per open file description: a second open in this
        // process contends like another process would.
        let second = SpillDir::open(&root, "w", 0).unwrap();
        assert_ne!(first.path(), second.path());
        assert!(file.path.exists(), "the other worker's file is untouched");
        // A file a dead worker left in a free directory goes at open.
        let stale = second.path().join("1-1-0.arrows");
        std::fs::write(&stale, b"junk").unwrap();
        drop(second);
        std::fs::write(&stale, b"junk").unwrap();
        let third = SpillDir::open(&root, "w", 0).unwrap();
        assert_eq!(third.path(), stale.parent().unwrap());
        assert!(!stale.exists());
        drop((first, third));
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_spill_past_the_limit_fails_naming_it_and_deleting_frees_room() {
        let root = temp("limit");
        let dir = SpillDir::open(&root, "w", 20_000).unwrap();
        let file = write(&dir, &[batch(500)]).unwrap();
        let error = write(&dir, &[batch(500)]).unwrap_err();
        assert!(error.contains("spill limit"), "{error}");
        dir.delete(&file);
        assert_eq!(dir.used(), 0);
        write(&dir, &[batch(500)]).unwrap();
        drop(dir);
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn the_disk_reserve_is_parsed_and_a_spill_into_it_fails_naming_it() {
        assert_eq!(DiskReserve::parse("auto"), Ok(DiskReserve::Auto));
        assert_eq!(DiskReserve::parse("10%"), Ok(DiskReserve::Fraction(0.1)));
        assert_eq!(DiskReserve::parse("0"), Ok(DiskReserve::Bytes(0)));
        assert_eq!(DiskReserve::parse("2KiB"), Ok(DiskReserve::Bytes(2048)));
        assert!(DiskReserve::parse("120%").is_err());
        assert!(DiskReserve::parse("lots").is_err());
        assert_eq!(DiskReserve::Auto.bytes(1 << 30), (1 << 30) / 20);
        assert_eq!(DiskReserve::Auto.bytes(1 << 40), AUTO_RESERVE_CAP);

        let root = temp("reserve");
        // Keeping the whole filesystem free: no spill fits.
        let dir = SpillDir::open(&root, "w", 0)
            .unwrap()
            .with_disk_reserve(DiskReserve::Fraction(1.0));
        let error = write(&dir, &[batch(100)]).unwrap_err();
        assert!(
            error.contains("spill disk reserve reached")
                && error.contains("partition 3/9")
                && error.contains("--spill-disk-reserve"),
            "{error}"
        );
        assert_eq!(dir.used(), 0);
        assert_eq!(spill_files(dir.path()), 0, "nothing is left of it");
        // No reserve: it fits.
        let dir = dir.with_disk_reserve(DiskReserve::Bytes(0));
        write(&dir, &[batch(100)]).unwrap();
        drop(dir);
        let _ = std::fs::remove_dir_all(&root);
    }

    /// Strings with nulls, a dictionary column (shared across batches, as
    /// Parquet's station column reads), a boolean, and a timestamp.
    fn mixed(n: i64, offset: i64) -> RecordBatch {
        use arrow_array::{BooleanArray, DictionaryArray, Int32Array, TimestampSecondArray};
        let keys = Int32Array::from_iter((0..n).map(|i| (i % 5 != 3).then_some((i % 3) as i32)));
        let values = StringArray::from(vec!["USW00094728", "USW00023174", "GME00121150"]);
        let station = DictionaryArray::try_new(keys, Arc::new(values)).unwrap();
        RecordBatch::try_from_iter([
            (
                "id",
                Arc::new(Int64Array::from_iter_values(offset..offset + n)) as arrow_array::ArrayRef,
            ),
            ("station", Arc::new(station)),
            (
                "name",
                Arc::new(StringArray::from_iter(
                    (0..n).map(|i| (i % 4 != 0).then(|| format!("name {}", i + offset))),
                )),
            ),
            (
                "ok",
                Arc::new(BooleanArray::from_iter(
                    (0..n).map(|i| (i % 6 != 1).then_some(i % 2 == 0)),
                )),
            ),
            (
                "datetime",
                Arc::new(TimestampSecondArray::from_iter_values(
                    (0..n).map(|i| 1_600_000_000 + i * 3600),
                )),
            ),
        ])
        .unwrap()
    }

    #[test]
    fn each_compression_reads_back_equal_with_strings_dictionaries_nulls_and_slices() {
        let root = temp("codecs");
        let big = mixed(5000, 0);
        let batches = vec![
            big.clone(),
            mixed(17, 9),
            // Slices at offsets that are not a multiple of 8 (bitmaps are
            // re-cut, string offsets re-based).
            big.slice(3, 1201),
            big.slice(4999, 1),
            big.slice(100, 0),
            mixed(300, 77),
        ];
        for compression in [
            SpillCompression::None,
            SpillCompression::Lz4,
            SpillCompression::Zstd,
        ] {
            let dir = SpillDir::open(&root, "w", 0)
                .unwrap()
                .with_compression(compression);
            let file = write(&dir, &batches).unwrap();
            assert_eq!(file.compression, compression);
            assert_eq!(dir.used(), file.disk_bytes);
            let back = read(&file).unwrap();
            assert_eq!(back, batches, "{compression:?}");
            if compression == SpillCompression::None {
                assert_eq!(file.inflated_bytes, 0);
                assert_eq!(file.arrow_bytes(), file.disk_bytes);
            } else {
                assert!(
                    file.disk_bytes < file.inflated_bytes,
                    "{compression:?}: {} bytes on disk for {} inflated",
                    file.disk_bytes,
                    file.inflated_bytes
                );
                assert_eq!(file.arrow_bytes(), file.inflated_bytes);
            }
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn a_damaged_compressed_spill_file_is_an_error_naming_it() {
        let root = temp("damaged-codec");
        for compression in [SpillCompression::Lz4, SpillCompression::Zstd] {
            let dir = SpillDir::open(&root, "w", 0)
                .unwrap()
                .with_compression(compression);
            let file = write(&dir, &[mixed(2000, 0), mixed(100, 5)]).unwrap();
            let bytes = std::fs::read(&file.path).unwrap();
            let named = |error: &str| {
                assert!(
                    error.contains(&file.path.display().to_string()),
                    "{compression:?}: {error}"
                )
            };
            // Truncated.
            std::fs::write(&file.path, &bytes[..bytes.len() / 2]).unwrap();
            named(&read(&file).unwrap_err());
            // The record batch's lengths claim far more than was written (a
            // decompression bomb, were it not our own file): refused before
            // allocating.
            let mut claims = file.clone();
            claims.inflated_bytes = file.inflated_bytes / 2;
            std::fs::write(&file.path, &bytes).unwrap();
            let error = read(&claims).unwrap_err();
            named(&error);
            assert!(error.contains("claim more than"), "{error}");
            // Compressed bytes overwritten: an error or (if the codec can not
            // tell) batches that fail validation; never a panic.
            let mut garbled = bytes.clone();
            let middle = garbled.len() / 2;
            for b in &mut garbled[middle..middle + 64] {
                *b ^= 0x5a;
            }
            std::fs::write(&file.path, &garbled).unwrap();
            if let Err(error) = read(&file) {
                named(&error);
            }
            // A file recorded as uncompressed that is not: refused, as from
            // the network.
            std::fs::write(&file.path, &bytes).unwrap();
            let mut plain = file.clone();
            plain.compression = SpillCompression::None;
            let error = read(&plain).unwrap_err();
            named(&error);
            assert!(error.contains("refused"), "{error}");
            drop(dir);
        }
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn spill_compression_is_parsed() {
        assert_eq!(SpillCompression::parse("none"), Ok(SpillCompression::None));
        assert_eq!(SpillCompression::parse(" LZ4 "), Ok(SpillCompression::Lz4));
        assert_eq!(SpillCompression::parse("zstd"), Ok(SpillCompression::Zstd));
        let error = SpillCompression::parse("gzip").unwrap_err();
        assert!(error.contains("'gzip'") && error.contains("lz4"), "{error}");
        for c in [
            SpillCompression::None,
            SpillCompression::Lz4,
            SpillCompression::Zstd,
        ] {
            assert_eq!(SpillCompression::parse(c.name()), Ok(c));
        }
    }

    #[test]
    fn a_damaged_spill_file_is_an_error_naming_it() {
        let root = temp("damaged");
        let dir = SpillDir::open(&root, "w", 0).unwrap();
        let file = write(&dir, &[batch(100)]).unwrap();
        let bytes = std::fs::read(&file.path).unwrap();
        std::fs::write(&file.path, &bytes[..bytes.len() / 2]).unwrap();
        let error = read(&file).unwrap_err();
        assert!(error.contains(&file.path.display().to_string()), "{error}");
        drop(dir);
        let _ = std::fs::remove_dir_all(&root);
    }
}
