//! `stratus-worker`: runs tasks on compute threads and holds persisted
//! partitions in RAM.
//!
//! - [`tasks`]: what each task kind computes (pure functions over the engine);
//! - [`store`]: the persisted partitions and the memory they hold, refusing
//!   to go over the memory limit;
//! - [`node`]: the actix actor owning the store and the running tasks, and the
//!   QUIC edge to the scheduler;
//! - [`peer`]: worker-to-worker data (deliveries into mailboxes);
//! - [`metrics`]: Prometheus metrics and the `/metrics` endpoint.

pub mod metrics;
pub mod node;
pub mod peer;
pub mod store;
pub mod tasks;
