//! Stratus: a distributed dataframe runtime.
//!
//! This crate is what users touch: the Rust client ([`client::Client`]) with a
//! lazy [`dataframe::DataFrame`] API, the local cluster launcher
//! ([`local::LocalCluster`]) and the `stratus` command line (in `main.rs`).
//! The scheduler and worker binaries live in their own crates
//! (`stratus-scheduler`, `stratus-worker`); see ARCHITECTURE.md.

pub mod client;
pub mod dataframe;
pub mod display;
pub mod local;
pub mod plots;
pub mod progress;
pub mod settings;
pub mod sql;

pub use client::{Client, ClientError};
pub use dataframe::DataFrame;
pub use stratus_plan::{col, lit, CastType, DatePart, Expr, Step, TruncUnit};
pub use stratus_protocol::messages::AggFunc as Agg;
pub use stratus_protocol::scheduler_file::{Locator, Target};
