//! What goes in and out of the state machine: [`Event`]s (a worker joined, a
//! task finished, a client asked, time passed), [`Command`]s (send this to a
//! worker, reply to that request, disconnect that worker), and its [`Config`].

use std::time::Duration;

use stratus_protocol::catalog::Catalog;
use stratus_protocol::messages::{
    ClientRequest, HeldPartition, StorageOptions, TaskReport, ToClient, ToWorker, WorkerInfo,
};

use crate::ids::{RequestId, WorkerId};

/// Settings of the state machine.
#[derive(Debug, Clone)]
pub struct Config {
    /// A worker silent for longer than this is removed.
    pub heartbeat_timeout: Duration,
    /// A task whose worker was lost this many times fails its job.
    pub max_task_attempts: u32,
    /// Public address (`quic://HOST:PORT`), for `info`.
    pub address: String,
    /// Dashboard URL, for `info`.
    pub dashboard: String,
    /// A request that has had no worker to run on for this long fails,
    /// naming the wait (`--no-workers-timeout`), instead of waiting forever.
    pub no_workers_timeout: Duration,
    /// The bounds of the adaptive target (`--minimum-workers`,
    /// `--maximum-workers`).
    pub adaptive: crate::adaptive::Bounds,
    /// After a restart, how long partitions of restored frames wait for
    /// their workers to re-register them before they are rebuilt from
    /// lineage (`--restore-grace`).
    pub restore_grace: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_timeout: Duration::from_secs(5),
            max_task_attempts: 3,
            address: String::new(),
            dashboard: String::new(),
            no_workers_timeout: Duration::from_secs(180),
            adaptive: crate::adaptive::Bounds::default(),
            restore_grace: Duration::from_secs(30),
        }
    }
}

/// Something that happened.
#[derive(Debug, Clone)]
pub enum Event {
    WorkerJoined {
        worker: WorkerId,
        info: WorkerInfo,
    },
    Heartbeat {
        worker: WorkerId,
        memory_used: u64,
        /// Bytes of its partitions spilled to disk.
        spilled: u64,
        /// Whether it holds back tasks that add data until spills end.
        paused: bool,
    },
    TaskReports {
        worker: WorkerId,
        reports: Vec<TaskReport>,
    },
    WorkerLeft {
        worker: WorkerId,
        reason: String,
    },
    /// A worker that reconnected after a restart re-registers the
    /// partitions it kept.
    WorkerHeld {
        worker: WorkerId,
        partitions: Vec<HeldPartition>,
    },
    Request {
        request: RequestId,
        body: ClientRequest,
        /// Object-store options sent with it (secrets: never logged).
        storage: StorageOptions,
        /// The run the client's session logs to.
        run: Option<String>,
        /// Name of the client certificate that sent it.
        client: String,
    },
    /// The client went away or cancelled; no answer is wanted.
    RequestCancelled {
        request: RequestId,
    },
    /// Time passed (checks heartbeats).
    Tick,
    /// A worker asks to be retired (it got SIGTERM): its partitions move to
    /// other workers, then it is told to exit.
    WorkerRetiring {
        worker: WorkerId,
    },
}

/// Something to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    ToWorker {
        worker: WorkerId,
        message: ToWorker,
    },
    Reply {
        request: RequestId,
        message: ToClient,
    },
    DisconnectWorker {
        worker: WorkerId,
        reason: String,
    },
    /// Write the durable catalog (before carrying out the commands after
    /// it, so a persist is on disk before its client hears of it).
    SaveCatalog(Box<Catalog>),
}
