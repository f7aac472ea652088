//! `stratus-scheduler-core`: the scheduler's decisions as a sans-IO state
//! machine. [`SchedulerState::handle`] takes an [`Event`] and the time, and
//! returns [`Command`]s; it does no I/O and reads no clock, and this crate
//! does not depend on tokio, actix, quinn or axum (the `stratus-scheduler`
//! crate wraps it in an actor and the network).
//!
//! - [`ids`]: typed ids of workers, requests, jobs, tasks and frames;
//! - [`event`]: the events in, the commands out, the settings;
//! - [`cluster`]: workers, tasks, the queue and placement (dispatch);
//! - [`frames`]: persisted frames, their partitions, holders and lineage;
//! - [`catalog`]: frames to and from the durable catalog (restarts);
//! - [`requests`]: validation of client requests, as pure functions;
//! - [`jobs`]: the [`jobs::Job`] trait and one module per job kind;
//! - [`state`]: the machine that routes events to the cluster, frames and jobs;
//! - [`invariants`]: [`SchedulerState::check_invariants`], run by the tests after every event;
//! - [`outputs`]: checks of worker outputs against their tasks, and of a worker's claims;
//! - [`planning`]: Parquet footers to partitions;
//! - [`activity`]: requests with their steps, and the task stream.

pub mod activity;
pub mod adaptive;
pub mod catalog;
pub mod cluster;
pub mod event;
pub mod frames;
pub mod ids;
pub mod invariants;
pub mod jobs;
pub mod outputs;
pub mod planning;
pub mod requests;
pub mod state;

pub use event::{Command, Config, Event};
pub use ids::{FrameId, JobId, RequestId, TaskId, WorkerId};
pub use state::{Counters, SchedulerState};
