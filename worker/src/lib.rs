//! `stratus-worker`: runs tasks on compute threads and holds persisted
//! partitions in RAM.
//!
//! - [`state`]: the worker's decisions as a sans-IO state machine (which
//!   tasks run under the thread limit, their inputs, what the store keeps,
//!   cancellations, what is reported);
//! - [`store`]: the persisted partitions and mailboxes and the memory they
//!   hold, refusing to go over the memory limit (owned by the state);
//! - [`tasks`]: what each task kind computes (pure functions over the engine);
//! - [`exec`]: runs task bodies on blocking threads and their deliveries;
//! - [`node`]: the actix actor that feeds the state machine and carries out
//!   its commands, and the QUIC edge to the scheduler;
//! - [`drain`]: SIGTERM asks the scheduler to retire the worker;
//! - [`peer`]: worker-to-worker data (deliveries into mailboxes);
//! - [`roots`]: the data roots, the only directories tasks read and write;
//! - [`metrics`]: Prometheus metrics and the `/metrics` endpoint;
//! - [`working`]: what a task allocates while it runs (a counting allocator).

pub mod drain;
pub mod exec;
pub mod metrics;
pub mod node;
pub mod panics;
pub mod peer;
pub mod reclaim;
pub mod remote;
pub mod roots;
pub mod spill;
pub mod state;
pub mod store;
pub mod tasks;
pub mod working;
