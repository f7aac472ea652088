//! The engine's error type: every message names the file (and the field) at fault.

use arrow_schema::ArrowError;
use parquet::errors::ParquetError;

/// Result alias used throughout the engine.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

/// Everything that can go wrong while listing, reading or generating data.
///
/// The `Display` form always names the file, directory or pattern at fault.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A source path that does not exist.
    #[error("path '{path}' does not exist")]
    NotFound {
        /// The path as given.
        path: String,
    },
    /// A source (directory or glob) that matched no Parquet file.
    #[error("no Parquet files match '{pattern}'")]
    NoMatch {
        /// The source as given.
        pattern: String,
    },
    /// A glob pattern that could not be parsed.
    #[error("invalid glob pattern '{pattern}': {reason}")]
    BadPattern {
        /// The pattern as given.
        pattern: String,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O error on a file or directory.
    #[error("file {path}: {source}")]
    Io {
        /// The file or directory.
        path: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file that is not Parquet at all.
    #[error("file {path}: not a Parquet file ({reason})")]
    NotParquet {
        /// The file.
        path: String,
        /// Why we think so.
        reason: String,
    },
    /// A Parquet file that was cut short.
    #[error("file {path}: truncated Parquet file ({reason})")]
    Truncated {
        /// The file.
        path: String,
        /// What is missing.
        reason: String,
    },
    /// An error from the Parquet decoder or encoder.
    #[error("file {path}: {source}")]
    Parquet {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: ParquetError,
    },
    /// An error from Arrow while assembling batches.
    #[error("file {path}: {source}")]
    Arrow {
        /// The file.
        path: String,
        /// The underlying error.
        #[source]
        source: ArrowError,
    },
    /// Two files of one source whose schemas disagree.
    #[error("file {path}: schema differs from {reference}: {detail}")]
    SchemaMismatch {
        /// The file that disagrees.
        path: String,
        /// The file used as the reference (the first one).
        reference: String,
        /// The field and how it differs.
        detail: String,
    },
    /// A column stored in the file that disagrees with the hive value in its path.
    #[error("file {path}: column '{column}' holds {found} but its path says {column}={expected}")]
    HiveMismatch {
        /// The file.
        path: String,
        /// The column (and hive key).
        column: String,
        /// The value found in the file.
        found: String,
        /// The value in the path.
        expected: String,
    },
    /// A projection naming a column the file does not have.
    #[error("file {path}: no column named '{column}' (columns: {available})")]
    UnknownColumn {
        /// The file.
        path: String,
        /// The missing column.
        column: String,
        /// The columns that exist, comma separated.
        available: String,
    },
    /// Any other invalid request about a file (e.g. a row-group range out of bounds).
    #[error("file {path}: {reason}")]
    Invalid {
        /// The file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// A bad argument that concerns no particular file.
    #[error("{0}")]
    Argument(String),
}

impl EngineError {
    /// Wrap an I/O error with the path it concerns.
    pub fn io(path: impl Into<String>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }

    /// Wrap a Parquet error with the path it concerns.
    pub fn parquet(path: impl Into<String>, source: ParquetError) -> Self {
        EngineError::Parquet {
            path: path.into(),
            source,
        }
    }

    /// Wrap an Arrow error with the path it concerns.
    pub fn arrow(path: impl Into<String>, source: ArrowError) -> Self {
        EngineError::Arrow {
            path: path.into(),
            source,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + 'static>() {}

    #[test]
    fn error_is_send_sync_static() {
        assert_send_sync::<EngineError>();
    }

    #[test]
    fn messages_name_the_file() {
        let e = EngineError::HiveMismatch {
            path: "/d/year=2008/a.parquet".into(),
            column: "year".into(),
            found: "2009".into(),
            expected: "2008".into(),
        };
        assert_eq!(
            e.to_string(),
            "file /d/year=2008/a.parquet: column 'year' holds 2009 but its path says year=2008"
        );
    }
}
