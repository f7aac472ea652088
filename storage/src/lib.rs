//! Where datasets live, and how to reach them safely.
//!
//! - [`location`]: every source and destination form users write (plain paths
//!   and `file://`, Azure Blob as fsspec, Spark and the portal spell it, S3)
//!   parsed into one [`Location`]; a glob split into the prefix an object
//!   store can list and the pattern that remains; the endpoints no request
//!   may reach (cloud metadata and link-local addresses), whatever the
//!   settings.
//! - [`store`]: `object_store` clients built from the worker's environment,
//!   the operator's [`StoragePolicy`] and a request's options, with those
//!   guards.
//! - [`objects`]: a worker's requests: listing sources, ranged reads,
//!   uploads, deletes, the `_SUCCESS` manifest convention, and counters.
//! - [`error`]: object-store errors as users read them, without secrets.
//!
//! Parquet is not known here: the worker decodes what this crate fetches.

pub mod error;
pub mod location;
pub mod objects;
pub mod store;

pub use location::{forbidden_endpoint, object_url, split_glob, Location, StorageError};
pub use objects::{
    Manifest, ManifestFile, Object, Opened, Storage, StorageStats, SUCCESS, TEMPORARY,
};
pub use store::{RequestOptions, StoragePolicy, ALLOW_INCOMPLETE};
