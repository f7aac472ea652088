//! Control messages exchanged between clients, the scheduler and workers.
//!
//! Every message is an rkyv archive. Receivers validate a frame with bytecheck
//! and read the archived form in place; only values that the receiver keeps
//! (plans, partition specs) are deserialized into owned types.
//!
//! Streams:
//! - worker <-> scheduler: one long-lived bidirectional control stream per
//!   worker, [`Hello`] first, then [`ToWorker`] / [`FromWorker`] frames.
//! - client -> scheduler: [`Hello`] on a first stream, then one bidirectional
//!   stream per request: one [`ClientRequest`] frame, answered by
//!   [`ToClient`] frames ending in a final `Done`/`Error`.
//!
//! No message type is recursive (expressions travel as flat node lists, see
//! `stratus_plan::wire`), so validating a frame never recurses deeper than
//! the types themselves, whatever a peer sends.

use rkyv::{Archive, Deserialize, Serialize};
pub use stratus_plan::{
    AggFunc, ColumnRanges, ColumnSummary, FileRef, KeyRange, Moments, ParquetPartition,
    RangeHistogram, RowGroupMeta, StagedFile, Step,
};

/// First frame on a new connection.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct Hello {
    /// The sender's [`crate::PROTOCOL_VERSION`].
    pub protocol_version: u32,
    /// The sender's release version, for error messages.
    pub stratus_version: String,
    pub role: PeerRole,
}

/// Who is connecting.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum PeerRole {
    Worker(WorkerInfo),
    /// `run` names the run this session's work is logged to.
    Client {
        name: String,
        run: String,
    },
}

/// What a worker tells the scheduler about itself when it registers.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WorkerInfo {
    pub name: String,
    pub host: String,
    pub pid: u32,
    pub nthreads: u32,
    pub memory_limit: u64,
    /// Where the worker serves its own HTTP endpoints, if anywhere.
    pub metrics_address: Option<String>,
    /// QUIC address (`HOST:PORT`) where peers send it data.
    pub peer_address: String,
    /// Name of the certificate it presents (on the scheduler link and on its
    /// peer endpoint). The scheduler fills this in from the verified
    /// certificate; whatever the worker sends is ignored.
    pub cert_name: String,
}

/// How to reach another worker for data (from its [`WorkerInfo`]).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PeerRef {
    pub worker: u64,
    pub address: String,
    /// The name its certificate must carry (the scheduler saw it verified).
    pub cert_name: String,
}

/// A place on a worker where peers deliver data for a job.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct MailboxKey {
    pub job: u64,
    /// Distinguishes stages and attempts of the job.
    pub tag: u32,
}

/// First frame of a worker-to-worker stream; Arrow IPC follows to the end.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PeerPush {
    pub mailbox: MailboxKey,
    pub from_worker: u64,
    /// Empty: one Arrow IPC stream for `mailbox`. Else several streams one
    /// after the other, each for mailbox `(mailbox.job, part.tag)` and
    /// `part.bytes` long (a shuffle's ranges for one peer in one stream).
    pub parts: Vec<PushPart>,
}

/// The most parts one [`PeerPush`] carries (its header stays far under
/// the first frame's cap); a sender with more opens more streams.
pub const MAX_PUSH_PARTS: usize = 1024;

/// One mailbox's share of a [`PeerPush`] carrying several.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushPart {
    pub tag: u32,
    /// Bytes of its Arrow IPC stream.
    pub bytes: u64,
}

/// A dataset write (see `stratus_engine::write`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct WriteSpec {
    pub dest: String,
    pub partition_by: Vec<String>,
    pub job_id: String,
    pub overwrite: bool,
}

/// A group-by: keys, and (column, function) aggregations.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GroupBySpec {
    pub keys: Vec<String>,
    pub aggs: Vec<(String, AggFunc)>,
}

/// The scheduler's answer to a [`Hello`].
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum Welcome {
    Accepted {
        peer_id: u64,
        scheduler_version: String,
        /// Which start of the scheduler this is (its start time in Unix
        /// milliseconds): a worker that reconnects to another incarnation
        /// re-registers what it holds ([`FromWorker::Held`]); one that the
        /// same incarnation removed drops its state and joins fresh.
        incarnation: u64,
    },
    Rejected {
        reason: String,
    },
}

/// Identifies one persisted partition: the frame it belongs to and its index.
#[derive(
    Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord,
)]
#[rkyv(derive(Debug, PartialEq, Eq, Hash))]
pub struct PartitionKey {
    pub frame: u64,
    pub index: u32,
}

/// What a worker learned from one file's footer.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FooterMeta {
    pub file: FileRef,
    pub num_rows: u64,
    pub row_groups: Vec<RowGroupMeta>,
    /// The dataset schema as an Arrow IPC schema message.
    pub schema_ipc: Vec<u8>,
}

/// Where a head task reads from.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum HeadInput {
    Persisted(PartitionKey),
    Parquet(ParquetPartition),
}

/// Where a partition to persist comes from.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum LoadInput {
    /// Read from Parquet.
    Parquet(ParquetPartition),
    /// Derive from a partition this worker already holds.
    Persisted(PartitionKey),
}

/// A computation over partitions one worker holds, with a small result.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ReduceOp {
    /// count, mean, M2, min, max of each column, and its distinct value keys
    /// with counts while there are at most `max_distinct`.
    Summary {
        columns: Vec<String>,
        max_distinct: u64,
    },
    /// Sparse histograms of value keys, for exact quantiles.
    Histograms { columns: Vec<ColumnRanges> },
    /// Bytes of Arrow buffers held per column.
    MemoryUsage,
    /// Per partition: the sort key's min and max and its null/NaN count; and
    /// a sample of the key over all partitions.
    SortSample { key: String, sample: u32 },
}

/// Bounds of a sort key in one partition.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PartitionBoundsWire {
    pub index: u32,
    /// Arrow IPC of a batch with columns `min` and `max` (one row), or None
    /// when the partition has no valid key.
    pub bounds_ipc: Option<Vec<u8>>,
    pub invalid: u64,
}

/// One Parquet input of a sorted frame's parent, as its partition was read:
/// the lineage a lost range is rebuilt from.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RangeSource {
    pub partition: ParquetPartition,
    pub columns: Option<Vec<String>>,
    pub steps: Vec<Step>,
}

/// One unit of work for a worker thread.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum TaskKind {
    /// Expand a source path/glob into its files.
    ListFiles { source: String },
    /// Read the footers of these files.
    ReadFooters { files: Vec<FileRef> },
    /// Read a partition and keep it in RAM under `key`.
    Load {
        key: PartitionKey,
        input: LoadInput,
        columns: Option<Vec<String>>,
        steps: Vec<Step>,
    },
    /// Compute over partitions this worker holds.
    Reduce {
        partitions: Vec<PartitionKey>,
        op: ReduceOp,
    },
    /// Partial group-by of the partitions this worker holds, delivered to a
    /// mailbox on `deliver_to` (possibly itself).
    GroupByPartial {
        partitions: Vec<PartitionKey>,
        spec: GroupBySpec,
        mailbox: MailboxKey,
        deliver_to: PeerRef,
    },
    /// An intermediate merger of a group-by's merge tree: merge the `expect`
    /// partials in `mailbox` here (without finalizing) and deliver the merged
    /// partial to mailbox `out` on `deliver_to` (possibly itself).
    GroupByMerge {
        spec: GroupBySpec,
        mailbox: MailboxKey,
        expect: u32,
        deliver_to: PeerRef,
        out: MailboxKey,
    },
    /// Merge the `expect` partials in a mailbox here and finalize.
    GroupByFinal {
        spec: GroupBySpec,
        mailbox: MailboxKey,
        expect: u32,
    },
    /// Check a write's destination (refuse an existing dataset).
    PrepareWrite { spec: WriteSpec },
    /// Stage these held partitions' files.
    WriteParts {
        partitions: Vec<PartitionKey>,
        spec: WriteSpec,
    },
    /// Move staged files into place, `_SUCCESS` last.
    CommitWrite {
        spec: WriteSpec,
        staged: Vec<StagedFile>,
    },
    /// Remove a failed write's staged files.
    AbortWrite { spec: WriteSpec },
    /// Split these held partitions by key ranges and deliver range `r` to
    /// `peers[r % peers.len()]`, mailbox `(job, tag_base + r)`.
    ShuffleSend {
        partitions: Vec<PartitionKey>,
        key: String,
        /// Arrow IPC of a one-column batch `boundary`.
        boundaries_ipc: Vec<u8>,
        /// The workers that own ranges, each once, in turn: range `r` is
        /// `peers[r % peers.len()]`'s (a send's size grows with the
        /// workers, not with the ranges).
        peers: Vec<PeerRef>,
        job: u64,
        tag_base: u32,
    },
    /// Sort what peers delivered for these ranges and keep range `r` as
    /// partition `(frame, r)`.
    ShuffleCollect {
        ranges: Vec<u32>,
        key: String,
        job: u64,
        tag_base: u32,
        frame: u64,
    },
    /// Rebuild ranges of a sorted (shuffled) frame from their lineage: read
    /// every source, keep the rows whose `key` falls in each range of
    /// `boundaries_ipc`, sort each range, apply `steps`, and keep range `r`
    /// of each `(r, index)` as partition `(frame, index)`. One pass over the
    /// sources for all ranges.
    RebuildRanges {
        frame: u64,
        parts: Vec<(u32, u32)>,
        sources: Vec<RangeSource>,
        key: String,
        boundaries_ipc: Vec<u8>,
        steps: Vec<Step>,
    },
    /// Return the first `n` rows of a partition as Arrow IPC.
    Head {
        input: HeadInput,
        n: u64,
        columns: Option<Vec<String>>,
    },
    /// A retiring worker hands held partitions over: partition `key` goes,
    /// as it is, to mailbox `(job, tag)` on `deliver_to` (one delivery per
    /// partition).
    SendPartitions {
        partitions: Vec<(PartitionKey, u32)>,
        deliver_to: PeerRef,
        job: u64,
    },
    /// Keep what mailbox `(job, tag)` received as partition `key`, under the
    /// memory limit (all or none); a mailbox nothing was delivered to is an
    /// empty partition.
    AdoptPartitions {
        partitions: Vec<(u32, PartitionKey)>,
        job: u64,
    },
}

impl TaskKind {
    /// The `(receiving worker, job)` pairs this task delivers to over peer
    /// links (each must be announced to its receiver first).
    pub fn peer_deliveries(&self) -> Vec<(u64, u64)> {
        match self {
            TaskKind::GroupByPartial {
                mailbox,
                deliver_to,
                ..
            } => vec![(deliver_to.worker, mailbox.job)],
            TaskKind::GroupByMerge {
                deliver_to, out, ..
            } => vec![(deliver_to.worker, out.job)],
            TaskKind::ShuffleSend { peers, job, .. } => {
                peers.iter().map(|o| (o.worker, *job)).collect()
            }
            TaskKind::SendPartitions {
                deliver_to, job, ..
            } => vec![(deliver_to.worker, *job)],
            _ => Vec::new(),
        }
    }

    /// The kind as a metric label (`list_files`, `load`, `reduce`, ...).
    pub fn label(&self) -> &'static str {
        match self {
            TaskKind::ListFiles { .. } => "list_files",
            TaskKind::ReadFooters { .. } => "read_footers",
            TaskKind::Load { .. } => "load",
            TaskKind::Reduce { .. } => "reduce",
            TaskKind::GroupByPartial { .. } => "groupby_partial",
            TaskKind::GroupByMerge { .. } => "groupby_merge",
            TaskKind::GroupByFinal { .. } => "groupby_final",
            TaskKind::PrepareWrite { .. } => "prepare_write",
            TaskKind::WriteParts { .. } => "write_parts",
            TaskKind::CommitWrite { .. } => "commit_write",
            TaskKind::AbortWrite { .. } => "abort_write",
            TaskKind::ShuffleSend { .. } => "shuffle_send",
            TaskKind::ShuffleCollect { .. } => "shuffle_collect",
            TaskKind::RebuildRanges { .. } => "rebuild_ranges",
            TaskKind::Head { .. } => "head",
            TaskKind::SendPartitions { .. } => "send_partitions",
            TaskKind::AdoptPartitions { .. } => "adopt_partitions",
        }
    }

    /// The step of a job this task belongs to, as progress bars name it.
    pub fn step(&self) -> &'static str {
        match self {
            TaskKind::ListFiles { .. } => "list files",
            TaskKind::ReadFooters { .. } => "read footers",
            TaskKind::Load { .. } => "load partitions",
            TaskKind::Reduce { op, .. } => match op {
                ReduceOp::Summary { .. } => "column summaries",
                ReduceOp::Histograms { .. } => "quantile histograms",
                ReduceOp::MemoryUsage => "memory usage",
                ReduceOp::SortSample { .. } => "sample sort key",
            },
            TaskKind::GroupByPartial { .. } => "partial aggregates",
            TaskKind::GroupByMerge { .. } => "merge partials",
            TaskKind::GroupByFinal { .. } => "merge aggregates",
            TaskKind::PrepareWrite { .. } => "prepare write",
            TaskKind::WriteParts { .. } => "write files",
            TaskKind::CommitWrite { .. } => "commit",
            TaskKind::AbortWrite { .. } => "clean up",
            TaskKind::ShuffleSend { .. } => "shuffle: send ranges",
            TaskKind::ShuffleCollect { .. } => "shuffle: sort ranges",
            TaskKind::RebuildRanges { .. } => "rebuild sorted ranges",
            TaskKind::Head { .. } => "head",
            TaskKind::SendPartitions { .. } => "retire: send partitions",
            TaskKind::AdoptPartitions { .. } => "retire: keep partitions",
        }
    }
}

/// A task handed to a worker.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct TaskAssignment {
    pub id: u64,
    pub kind: TaskKind,
    /// The object-store options of the request the task serves (empty for
    /// most): secrets, never logged.
    pub storage: StorageOptions,
}

/// Object-store options a client sends with a request (Dask's
/// `storage_options`: account keys, SAS tokens, endpoints). They are
/// secrets: `Debug` shows the keys only, and nothing logs, shows or stores
/// the values; they travel only inside the encrypted connections.
#[derive(Archive, Serialize, Deserialize, Clone, PartialEq, Eq, Default)]
pub struct StorageOptions(pub Vec<(String, String)>);

impl std::fmt::Debug for StorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(k, _)| format!("{k}=***")))
            .finish()
    }
}

impl StorageOptions {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// What a client sends on a request stream: the request, and the
/// object-store options it carries.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct RequestFrame {
    pub body: ClientRequest,
    pub storage: StorageOptions,
}

/// Scheduler -> worker.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ToWorker {
    /// Start these tasks (batched: one frame for many tasks).
    Run(Vec<TaskAssignment>),
    /// Forget these tasks: their results are no longer wanted.
    Cancel(Vec<u64>),
    /// Release these persisted partitions.
    Drop(Vec<PartitionKey>),
    /// Release every mailbox of this job.
    Forget { job: u64 },
    /// The worker whose certificate is named `sender` will deliver data for
    /// `job` to this worker (sent before the sender is told to run). A peer
    /// endpoint admits a delivery only for a job announced with its sender.
    Expect { job: u64, sender: String },
    /// The worker is retired (its partitions moved, no task runs there):
    /// exit with status 0.
    Exit { reason: String },
}

/// What a finished task produced.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum TaskOutput {
    Files(Vec<FileRef>),
    Footers(Vec<FooterMeta>),
    Loaded {
        key: PartitionKey,
        rows: u64,
        bytes: u64,
        /// Bytes read from an object store for it (0 for local files).
        fetched: u64,
    },
    /// Arrow IPC stream of the rows.
    Table {
        rows: u64,
        ipc: Vec<u8>,
    },
    /// One per requested column.
    Summaries(Vec<ColumnSummary>),
    /// Per column, per range.
    Histograms(Vec<Vec<RangeHistogram>>),
    /// Bytes per column, in schema order.
    ColumnBytes(Vec<(String, u64)>),
    /// Data delivered to a peer's mailbox (and acknowledged).
    Delivered {
        rows: u64,
        bytes: u64,
    },
    /// Files staged by a write.
    Staged(Vec<StagedFile>),
    /// A write committed: rows and files.
    Committed {
        rows: u64,
        files: u64,
    },
    /// Done, nothing to report.
    Ok,
    /// Sort-key bounds per partition, and a sample (Arrow IPC, one column).
    SortSample {
        partitions: Vec<PartitionBoundsWire>,
        sample_ipc: Vec<u8>,
    },
    /// Partitions kept: (key, rows, bytes).
    LoadedMany(Vec<(PartitionKey, u64, u64)>),
}

/// The outcome of one task.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum TaskReport {
    Finished {
        id: u64,
        output: TaskOutput,
    },
    Failed {
        id: u64,
        error: String,
        /// The worker this task could not reach (a delivery's receiver whose
        /// connection failed), when that is why it failed. The scheduler
        /// then waits for its verdict on that worker before failing the job:
        /// a receiver that died is a lost worker (the job runs its round
        /// again), not an error of the request.
        unreachable_peer: Option<u64>,
    },
}

/// Worker -> scheduler.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum FromWorker {
    Heartbeat {
        memory_used: u64,
        running: u32,
        /// Bytes (as Arrow buffers) of partitions spilled to disk.
        spilled: u64,
        /// Tasks that add data wait for spills (memory past the pause
        /// fraction of the limit).
        paused: bool,
    },
    /// Task outcomes, batched.
    Reports(Vec<TaskReport>),
    /// The partitions this worker kept from an earlier incarnation of the
    /// scheduler (sent once, first, after reconnecting to a new one).
    Held(Vec<HeldPartition>),
    /// The worker was asked to stop (SIGTERM): retire it (move its
    /// partitions to other workers, wait for its tasks, then `Exit`).
    Retire,
}

/// A persisted partition a worker holds, as it re-registers it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct HeldPartition {
    pub key: PartitionKey,
    pub rows: u64,
    pub bytes: u64,
}

/// A client's request; one per stream.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ClientRequest {
    /// Cluster summary.
    Info,
    /// Row count of a persisted frame or a Parquet source.
    Len {
        source: String,
    },
    /// First rows.
    Head {
        source: String,
        n: u64,
        columns: Option<Vec<String>>,
    },
    /// Read a source into the workers' RAM under a name.
    Persist {
        source: String,
        name: String,
        replace: bool,
        columns: Option<Vec<String>>,
        /// Derivation steps (with_column, filter, select, drop, fillna).
        steps: Vec<Step>,
    },
    /// count, mean, std, min, quartiles, max of numeric columns (exact).
    Describe {
        source: String,
        columns: Option<Vec<String>>,
    },
    /// Bytes of Arrow buffers held per column.
    MemoryUsage {
        source: String,
    },
    /// Sort a persisted frame by a column (set_index); `into` names the
    /// result (None: replace the frame).
    Sort {
        source: String,
        by: String,
        into: Option<String>,
    },
    /// Write a persisted frame as a hive-partitioned Parquet dataset.
    Write {
        source: String,
        dest: String,
        partition_by: Vec<String>,
        overwrite: bool,
    },
    /// Group by keys and aggregate; `all_numeric` adds that function of every
    /// numeric non-key column (pandas' `groupby(keys).mean()`).
    GroupBy {
        source: String,
        keys: Vec<String>,
        aggs: Vec<(String, AggFunc)>,
        all_numeric: Option<AggFunc>,
    },
    Unpersist {
        name: String,
    },
    /// Persisted frames.
    List,
    /// Retire workers by name: move their persisted partitions to other
    /// workers, wait for their tasks, then tell them to exit. Refused when
    /// the others have no room, unless `force` (then what does not fit is
    /// dropped and rebuilt from lineage).
    Retire {
        workers: Vec<String>,
        force: bool,
    },
    /// Log numbers to the session's run (step timings, row counts, anything).
    LogMetrics {
        metrics: Vec<(String, f64)>,
    },
    /// Store a file (a PNG plot) with the session's run.
    LogArtifact {
        name: String,
        content_type: String,
        data: Vec<u8>,
    },
}

impl ClientRequest {
    /// A short name of the request's kind, for metrics, runs and the dashboard.
    pub fn kind(&self) -> &'static str {
        match self {
            ClientRequest::Info => "info",
            ClientRequest::Len { .. } => "len",
            ClientRequest::Head { .. } => "head",
            ClientRequest::Persist { .. } => "persist",
            ClientRequest::Unpersist { .. } => "unpersist",
            ClientRequest::List => "list",
            ClientRequest::Describe { .. } => "describe",
            ClientRequest::MemoryUsage { .. } => "memory_usage",
            ClientRequest::GroupBy { .. } => "groupby",
            ClientRequest::Write { .. } => "write",
            ClientRequest::Sort { .. } => "sort",
            ClientRequest::LogMetrics { .. } => "log_metrics",
            ClientRequest::LogArtifact { .. } => "log_artifact",
            ClientRequest::Retire { .. } => "retire",
        }
    }

    /// The frame or source the request works on, if any (for the dashboard).
    pub fn target(&self) -> Option<&str> {
        match self {
            ClientRequest::Len { source }
            | ClientRequest::Head { source, .. }
            | ClientRequest::Persist { source, .. }
            | ClientRequest::Describe { source, .. }
            | ClientRequest::MemoryUsage { source }
            | ClientRequest::Sort { source, .. }
            | ClientRequest::Write { source, .. }
            | ClientRequest::GroupBy { source, .. } => Some(source),
            ClientRequest::Unpersist { name } => Some(name),
            _ => None,
        }
    }
}

/// Cluster summary for `stratus info`.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct ClusterInfo {
    pub address: String,
    pub dashboard: String,
    pub workers: u32,
    pub threads: u32,
    pub memory_limit: u64,
    pub memory_used: u64,
    /// How long a request waits when there is no worker (the scheduler's
    /// `--no-workers-timeout`): the client's default wait at start.
    pub no_workers_timeout_seconds: f64,
}

/// A persisted frame as `stratus list` shows it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FrameSummary {
    pub name: String,
    pub source: String,
    pub rows: u64,
    pub bytes: u64,
    pub partitions: u32,
    /// Partitions currently held by a worker (the rest are being rebuilt).
    pub partitions_held: u32,
}

/// What a retire did to one worker.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct RetiredWorker {
    pub name: String,
    /// Per receiving worker: its name, partitions and bytes moved there.
    pub moved: Vec<(String, u64, u64)>,
    /// Partitions (and bytes) dropped for lack of room (`--force`), rebuilt
    /// from lineage.
    pub dropped_partitions: u64,
    pub dropped_bytes: u64,
}

/// Scheduler -> client, on a request's stream.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum ToClient {
    Progress {
        stage: String,
        done: u64,
        total: u64,
        /// Bytes the request read from object stores so far.
        fetched: u64,
    },
    Info(ClusterInfo),
    Count(u64),
    /// Arrow IPC stream.
    Table(Vec<u8>),
    Frames(Vec<FrameSummary>),
    Persisted(FrameSummary),
    /// Workers retired (told to exit), with what moved where.
    Retired(Vec<RetiredWorker>),
    /// Logged to the run with this id (`/api/runs/{id}`).
    Logged {
        run_id: String,
    },
    Done,
    Error(String),
}

impl ToClient {
    /// Whether this message ends the request.
    pub fn is_final(&self) -> bool {
        !matches!(self, ToClient::Progress { .. })
    }
}
