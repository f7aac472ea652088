//! Parquet inputs as the scheduler plans them and workers read them: the files of a source
//! ([`FileRef`]), the size of their row groups ([`RowGroupMeta`]) and the units of input
//! cut from them ([`ParquetPartition`]), and the files a dataset write staged
//! ([`StagedFile`]). Plain data, shared by the wire messages and the engine's scan and
//! writer.

use rkyv::{Archive, Deserialize, Serialize};

/// One Parquet file of a source, with the hive partition values parsed from its path
/// (`key=value` directory segments, in path order).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FileRef {
    /// Path of the file, as found (not canonicalized).
    pub path: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// Hive partition values from the directory segments, in path order.
    pub hive: Vec<(String, String)>,
}

/// A unit of input: a whole Parquet file or a contiguous range of its row groups; or,
/// for many small files, several whole files read one after the other (the first in the
/// fields below, the others in [`ParquetPartition::more`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ParquetPartition {
    /// The (first) file to read.
    pub path: String,
    /// First row group (inclusive).
    pub row_group_start: u32,
    /// Last row group (exclusive).
    pub row_group_end: u32,
    /// Rows of the partition: in these row groups, and in every file of
    /// [`ParquetPartition::more`].
    pub rows: u64,
    /// Hive partition values of the file.
    pub hive: Vec<(String, String)>,
    /// Size of the file in bytes, as listed (0: unknown). Object-store reads
    /// need it (Azure has no suffix range).
    pub file_size: u64,
    /// Files read after the first, in order (small files grouped into one
    /// partition); empty for a partition of one file.
    pub more: Vec<FilePart>,
}

/// A further file of a [`ParquetPartition`]: a range of its row groups (a grouped small
/// file is read whole).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FilePart {
    /// The file to read.
    pub path: String,
    /// First row group (inclusive).
    pub row_group_start: u32,
    /// Last row group (exclusive).
    pub row_group_end: u32,
    /// Rows in these row groups.
    pub rows: u64,
    /// Hive partition values of the file.
    pub hive: Vec<(String, String)>,
    /// Size of the file in bytes, as listed (0: unknown).
    pub file_size: u64,
}

impl ParquetPartition {
    /// The partition of one file's row groups `start..end`.
    pub fn of_file(file: &FileRef, start: u32, end: u32, rows: u64) -> ParquetPartition {
        ParquetPartition {
            path: file.path.clone(),
            row_group_start: start,
            row_group_end: end,
            rows,
            hive: file.hive.clone(),
            file_size: file.size,
            more: Vec::new(),
        }
    }

    /// Its files, in read order, each as a partition of that file alone (the
    /// partition itself when it has one file).
    pub fn files(&self) -> Vec<ParquetPartition> {
        if self.more.is_empty() {
            return vec![self.clone()];
        }
        let more_rows: u64 = self.more.iter().map(|f| f.rows).sum();
        let mut out = Vec::with_capacity(1 + self.more.len());
        out.push(ParquetPartition {
            rows: self.rows.saturating_sub(more_rows),
            more: Vec::new(),
            ..self.clone()
        });
        out.extend(self.more.iter().map(|f| ParquetPartition {
            path: f.path.clone(),
            row_group_start: f.row_group_start,
            row_group_end: f.row_group_end,
            rows: f.rows,
            hive: f.hive.clone(),
            file_size: f.file_size,
            more: Vec::new(),
        }));
        out
    }
}

/// Size of one row group, from the file's footer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RowGroupMeta {
    /// Rows in the row group.
    pub rows: u64,
    /// Uncompressed size of its column data in bytes.
    pub uncompressed_bytes: u64,
}

/// A file a write staged under `dest/_temporary/<job_id>/`, waiting for the commit.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct StagedFile {
    /// Where the file is now: under `dest/_temporary/<job_id>/`.
    pub temp_path: String,
    /// Where the commit moves it: the same path relative to `dest`.
    pub final_path: String,
    /// Rows in the file.
    pub rows: u64,
    /// Size of the file in bytes.
    pub bytes: u64,
}
