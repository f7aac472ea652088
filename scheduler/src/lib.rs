//! `stratus-scheduler`: the scheduler process around its state machine.
//!
//! The decisions (workers, frames and lineage, jobs, the task queue) are the
//! sans-IO state machine of `stratus-scheduler-core`; this crate is its edge:
//!
//! - [`server`]: the actix actor that owns the state, and the QUIC edge that
//!   turns frames into events and commands into frames;
//! - [`http`]: `/metrics`, `/api/cluster` and the dashboard page;
//! - [`metrics`]: the Prometheus registry;
//! - [`runs`]: runs (logged metrics and artifacts) on the data directory;
//! - [`security`]: the TLS identity (issued, or a cluster CA of its own);
//! - [`settings`]: command line, `STRATUS_*` environment and config file.

pub mod catalog;
pub mod http;
pub mod metrics;
pub mod runs;
pub mod security;
pub mod server;
pub mod settings;
