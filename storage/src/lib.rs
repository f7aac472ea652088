//! Where datasets live, and how to reach them safely.
//!
//! Owns the parsing of every source and destination form users write
//! (plain paths and `file://`, Azure Blob as fsspec, Spark and the portal
//! spell it, S3) into one [`Location`], the split of a glob into the literal
//! prefix an object store can list and the pattern that remains, and the
//! refusal of endpoints no request may reach (cloud metadata and link-local
//! addresses), whatever the settings.
//!
//! Status (work in progress for the object-storage issue): parsing and the
//! endpoint guard are done and tested; building `object_store` clients from
//! the environment and per-request options, listing and ranged reads come
//! next.

pub mod location;

pub use location::{forbidden_endpoint, split_glob, Location, StorageError};
