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

/// A unit of input: a whole Parquet file or a contiguous range of its row groups.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ParquetPartition {
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
    /// Size of the file in bytes, as listed (0: unknown). Object-store reads
    /// need it (Azure has no suffix range).
    pub file_size: u64,
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
