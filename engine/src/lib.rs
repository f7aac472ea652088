//! `stratus-engine`: the compute side of Stratus used by workers and by `stratus datagen`.
//!
//! It owns everything that touches data files and knows nothing about the network:
//! - [`scan`]: listing Parquet sources (files, directories, globs) with hive partitions,
//!   reading footers, checking schemas, planning partitions and reading them into Arrow;
//! - [`expr`]: evaluating plan expressions and frame steps on record batches;
//! - [`describe`]: `describe()`'s kernels (moments, distinct keys, key histograms, a
//!   worker's answer to each round) and the exact-quantile search the scheduler drives;
//! - [`groupby`]: group-by aggregation as partial, merge and finalize;
//! - [`sort`]: the per-partition pieces of the distributed sort (bounds, samples, range
//!   split, sort);
//! - [`write`]: the hive-partitioned Parquet dataset writer (stage, commit, abort), with
//!   `parquet_pages` encoding its column chunks;
//! - [`num`]: the native numeric values the kernels read, and their order-preserving keys;
//! - [`datagen`]: the deterministic synthetic ISD-like data generator;
//! - [`memory`]: accounting for the memory held by Arrow record batches;
//! - [`error`]: the crate's error type, whose messages always name the file at fault.
//!
//! Plain data it shares with the wire (files, partitions, aggregate functions, moments,
//! describe's rounds) is defined once in `stratus-plan`.

#![warn(missing_docs)]

pub mod datagen;
pub mod describe;
pub mod error;
pub mod expr;
pub mod groupby;
pub mod memory;
pub mod num;
mod parquet_pages;
pub mod scan;
pub mod sort;
pub mod write;

pub use error::{EngineError, Result};
