//! `stratus-scheduler`: keeps the cluster and decides who runs what.
//!
//! - [`state`]: the sans-IO state machine (events in, commands out) holding
//!   workers, persisted frames with their lineage, jobs and the task queue;
//! - [`planning`]: footers to partitions (schema checks, splitting);
//! - [`server`]: the actix actor that owns the state, and the QUIC edge that
//!   turns frames into events and commands into frames;
//! - [`http`]: `/metrics`, `/api/cluster` and the dashboard page;
//! - [`metrics`]: the Prometheus registry;
//! - [`runs`]: runs (logged metrics and artifacts) on the data directory;
//! - [`activity`]: requests with their steps, and the task stream;
//! - [`settings`]: command line, `STRATUS_*` environment and config file.

pub mod activity;
pub mod http;
pub mod metrics;
pub mod planning;
pub mod reduce;
pub mod runs;
pub mod server;
pub mod settings;
pub mod state;
