//! `stratus-engine`: the compute side of Stratus used by workers and by `stratus datagen`.
//!
//! It owns everything that touches data files and knows nothing about the network:
//! - [`scan`]: listing Parquet sources (files, directories, globs) with hive partitions,
//!   reading footers, checking schemas, planning partitions and reading them into Arrow;
//! - [`datagen`]: the deterministic synthetic ISD-like data generator;
//! - [`memory`]: accounting for the memory held by Arrow record batches;
//! - [`error`]: the crate's error type, whose messages always name the file at fault.

#![warn(missing_docs)]

pub mod datagen;
pub mod describe;
pub mod error;
pub mod expr;
pub mod groupby;
pub mod memory;
mod parquet_pages;
pub mod scan;
pub mod sort;
pub mod write;

pub use error::{EngineError, Result};
