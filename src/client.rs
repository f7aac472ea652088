//! The Rust client: one QUIC connection to the scheduler, one stream per
//! request. Requests answer with zero or more progress frames and one final
//! frame; dropping a request's future (or closing the client) cancels it on
//! the scheduler.

use std::time::{Duration, Instant};

use arrow_array::RecordBatch;

use stratus_protocol::framing::{access, read_frame, send_message, to_owned, Frame};
use stratus_protocol::messages::{
    AggFunc, ArchivedToClient, ClientRequest, ClusterInfo, FrameSummary, PeerRole, RequestFrame,
    RetiredWorker, Step, StorageOptions, ToClient,
};
use stratus_protocol::scheduler_file::Target;
use stratus_protocol::ProtocolError;

/// What can go wrong for a client.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The cluster answered with an error (bad input, lost data, ...).
    #[error("{0}")]
    Server(String),
    #[error(transparent)]
    Protocol(#[from] ProtocolError),
    #[error("no worker registered with {address} within {waited:?}: start workers (stratus-worker {address} --scheduler-file ...) or check their logs")]
    NoWorkers { address: String, waited: Duration },
    #[error("unexpected answer from the scheduler: {0}")]
    Unexpected(String),
}

/// What kind of failure a [`ClientError`] is, for callers that branch on it
/// (the Python client raises one exception class per kind).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The cluster can not be reached, the connection broke, or no worker
    /// is there to do the work.
    Connection,
    /// A persisted frame, file, object or bucket that is not there.
    NotFound,
    /// The request itself is wrong: an unknown column, a bad expression, a
    /// name already taken, a destination that is refused.
    BadInput,
    /// The request was cancelled before it finished.
    Cancelled,
    /// Anything else (a failure while the work ran).
    Other,
}

impl ClientError {
    /// The kind of this error. The cluster answers errors as text, so a
    /// server error is classified by the phrases its messages use.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Protocol(_) | ClientError::NoWorkers { .. } => ErrorKind::Connection,
            ClientError::Unexpected(_) => ErrorKind::Other,
            ClientError::Server(message) => classify_server_error(message),
        }
    }
}

/// The kind of an error message from the cluster (see [`ClientError::kind`]).
pub fn classify_server_error(message: &str) -> ErrorKind {
    let m = message.to_ascii_lowercase();
    let any = |phrases: &[&str]| phrases.iter().any(|p| m.contains(p));
    if any(&["cancelled", "canceled"]) {
        ErrorKind::Cancelled
    } else if any(&[
        "no persisted frame named",
        "no parquet files match",
        "not found",
        "no such file",
        "does not exist",
    ]) {
        ErrorKind::NotFound
    } else if any(&[
        "no worker to run",
        "no workers",
        "all workers",
        "connection lost",
    ]) {
        ErrorKind::Connection
    } else if any(&[
        "no column named",
        "has no column",
        "unknown column",
        "already holds",
        " needs ",
        "already persisted",
        "already exists",
        "already running",
        "has no numeric columns",
        "refused",
        "not allowed",
        "not supported",
        "invalid",
        "expected",
        "cannot",
        "must ",
    ]) {
        ErrorKind::BadInput
    } else {
        ErrorKind::Other
    }
}

/// Result with a [`ClientError`].
pub type Result<T> = std::result::Result<T, ClientError>;

/// Progress of a long request: stage, done, total.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Watches the progress of every request of a client.
pub trait ProgressObserver: Send + Sync {
    /// A step of a request progressed, e.g. `("describe", "quantile histograms", 3, 4)`.
    fn progress(&self, kind: &str, step: &str, done: u64, total: u64);
    /// Bytes the request has read from object stores so far (called with
    /// its progress, when there are any).
    fn fetched(&self, _kind: &str, _bytes: u64) {}
    /// The request got its final answer.
    fn finished(&self, kind: &str);
}

/// The run named by `STRATUS_RUN`, if set and not blank. Without one a
/// session logs to no run: nothing is recorded unless a run is named.
pub fn env_run_name() -> Option<String> {
    run_name(std::env::var("STRATUS_RUN").ok())
}

/// `name` unless missing or blank (`--run ""` names no run).
pub fn run_name(name: Option<String>) -> Option<String> {
    name.filter(|n| !n.trim().is_empty())
}

/// A fresh run name from `prefix`, the time and the process id
/// (`demo-20260101-120000-4242`), for a caller that wants a new run.
pub fn generated_run_name(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        chrono::Utc::now().format("%Y%m%d-%H%M%S"),
        std::process::id()
    )
}

/// Every live client connection of this process, so that a signal handler can
/// close them (telling the scheduler to cancel their requests) before exit.
static OPEN: std::sync::Mutex<Vec<(quinn::Endpoint, quinn::Connection)>> =
    std::sync::Mutex::new(Vec::new());

/// Close every client connection of this process and wait briefly for the
/// closes to be sent: the scheduler then cancels their requests at once.
pub async fn close_all() {
    let open = std::mem::take(&mut *OPEN.lock().unwrap_or_else(|e| e.into_inner()));
    for (endpoint, conn) in open {
        conn.close(0u32.into(), b"cancelled by the client");
        let _ = tokio::time::timeout(Duration::from_millis(500), endpoint.wait_idle()).await;
    }
}

/// A connection to a Stratus scheduler.
pub struct Client {
    endpoint: quinn::Endpoint,
    conn: quinn::Connection,
    address: String,
    run: Option<String>,
    observer: Option<std::sync::Arc<dyn ProgressObserver>>,
    /// Object-store options sent with every request (secrets).
    storage: StorageOptions,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.address)
            .field("run", &self.run)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Connect to the cluster described by `target` and say hello; work is
    /// logged to the run `STRATUS_RUN` names, or to no run if it is unset.
    pub async fn connect(target: &Target) -> Result<Client> {
        Self::connect_with(target, env_run_name().as_deref()).await
    }

    /// Connect, logging this session's work to the run named `run`.
    pub async fn connect_run(target: &Target, run: &str) -> Result<Client> {
        Self::connect_with(target, Some(run)).await
    }

    /// Connect, logging this session's work to `run`, or to no run (a blank
    /// name is no run): request timings are then not recorded, and the
    /// scheduler refuses [`Client::log_metrics`] and [`Client::log_artifact`].
    pub async fn connect_with(target: &Target, run: Option<&str>) -> Result<Client> {
        let run = run_name(run.map(str::to_string));
        let credentials = target.credentials();
        credentials.require_role(stratus_protocol::pki::Role::Client)?;
        let endpoint = stratus_protocol::transport::client_endpoint(
            stratus_protocol::transport::client_config(
                &credentials,
                stratus_protocol::pki::Role::Scheduler,
                &stratus_protocol::tls::DenyList::default(),
            )?,
        )?;
        let conn = stratus_protocol::transport::connect(&endpoint, &target.address).await?;
        let peer = format!("scheduler {}", target.address);
        let role = PeerRole::Client {
            name: format!("stratus-client-{}", std::process::id()),
            // The handshake's empty name means "no run".
            run: run.clone().unwrap_or_default(),
        };
        // Requests each open a stream of their own; the handshake's ends here.
        stratus_protocol::handshake::introduce(&conn, role, &peer).await?;
        OPEN.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((endpoint.clone(), conn.clone()));
        Ok(Client {
            endpoint,
            conn,
            address: target.address.clone(),
            run,
            observer: None,
            storage: StorageOptions::default(),
        })
    }

    /// Send object-store options (Dask's `storage_options`: account keys,
    /// SAS tokens, endpoints, as `object_store` names them) with every later
    /// request; the workers read and write object-store URLs with them on
    /// top of their own environment. They travel only inside the encrypted
    /// connection and are never logged or shown.
    pub fn set_storage_options(&mut self, options: Vec<(String, String)>) {
        self.storage = StorageOptions(options);
    }

    /// A handle on the same connection that sends `options` (see
    /// [`Client::set_storage_options`]) with its requests instead of this
    /// client's: per-frame `storage_options`, as Dask's `read_parquet` takes
    /// them. Closing it closes the shared connection.
    pub fn with_storage_options(&self, options: Vec<(String, String)>) -> Client {
        Client {
            endpoint: self.endpoint.clone(),
            conn: self.conn.clone(),
            address: self.address.clone(),
            run: self.run.clone(),
            observer: self.observer.clone(),
            storage: StorageOptions(options),
        }
    }

    /// The object-store options sent with every request.
    pub fn storage_options(&self) -> &[(String, String)] {
        &self.storage.0
    }

    /// The run this session logs to, if any.
    pub fn run(&self) -> Option<&str> {
        self.run.as_deref()
    }

    /// Report the progress of every later request to `observer`.
    pub fn set_progress(&mut self, observer: std::sync::Arc<dyn ProgressObserver>) {
        self.observer = Some(observer);
    }

    /// Log numbers (a step's duration, a row count, anything) to the run;
    /// returns the run's id (`/api/runs/{id}` on the dashboard address).
    /// Without a run the scheduler refuses, saying how to name one.
    pub async fn log_metrics(&self, metrics: &[(&str, f64)]) -> Result<String> {
        let request = ClientRequest::LogMetrics {
            metrics: metrics.iter().map(|(n, v)| (n.to_string(), *v)).collect(),
        };
        self.logged(&request).await
    }

    /// Store a file (a PNG plot) with the run, under `name` (letters, digits,
    /// '.', '_', '-'); returns the run's id.
    pub async fn log_artifact(
        &self,
        name: &str,
        content_type: &str,
        data: Vec<u8>,
    ) -> Result<String> {
        let request = ClientRequest::LogArtifact {
            name: name.to_string(),
            content_type: content_type.to_string(),
            data,
        };
        self.logged(&request).await
    }

    async fn logged(&self, request: &ClientRequest) -> Result<String> {
        match self.call_owned(request, &mut |_, _, _| {}).await? {
            ToClient::Logged { run_id } => Ok(run_id),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// The scheduler's address.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Send a request; return its final frame (validated), reporting progress.
    async fn call(&self, request: &ClientRequest, progress: Progress<'_>) -> Result<Frame> {
        let peer = format!("scheduler {}", self.address);
        let (mut send, mut recv) = self.conn.open_bi().await.map_err(|e| ProtocolError::Peer {
            peer: peer.clone(),
            what: format!("cannot open a request stream: {e}"),
        })?;
        let frame = RequestFrame {
            body: request.clone(),
            storage: self.storage.clone(),
        };
        send_message(&mut send, &frame, &peer).await?;
        let _ = send.finish();
        loop {
            let frame = read_frame(&mut recv, &peer)
                .await
                .map_err(|e| self.lost_during(e, request))?
                .ok_or_else(|| ProtocolError::Peer {
                    peer: peer.clone(),
                    what: "ended the request without an answer".into(),
                })?;
            match access::<ArchivedToClient>(&frame, &peer)? {
                ArchivedToClient::Progress {
                    stage,
                    done,
                    total,
                    fetched,
                } => {
                    let (done, total) = (done.to_native(), total.to_native());
                    if let Some(observer) = &self.observer {
                        let fetched = fetched.to_native();
                        if fetched > 0 {
                            observer.fetched(request.kind(), fetched);
                        }
                        observer.progress(request.kind(), stage.as_str(), done, total);
                    }
                    progress(stage.as_str(), done, total)
                }
                ArchivedToClient::Error(message) => {
                    if let Some(observer) = &self.observer {
                        observer.finished(request.kind());
                    }
                    return Err(ClientError::Server(message.to_string()));
                }
                _ => {
                    if let Some(observer) = &self.observer {
                        observer.finished(request.kind());
                    }
                    return Ok(frame);
                }
            }
        }
    }

    /// A request's stream failed: when the connection itself is gone, say
    /// so, and what to do (a restarted scheduler keeps persisted frames).
    fn lost_during(&self, error: ProtocolError, request: &ClientRequest) -> ProtocolError {
        if self.conn.close_reason().is_none() {
            return error;
        }
        match error {
            ProtocolError::Peer { peer, what } => ProtocolError::Peer {
                peer,
                what: format!(
                    "{what}: the connection was lost while '{}' ran (the scheduler stopped or \
                     restarted; persisted frames survive a restart): connect again and run it again",
                    request.kind()
                ),
            },
            other => other,
        }
    }

    async fn call_owned(
        &self,
        request: &ClientRequest,
        progress: Progress<'_>,
    ) -> Result<ToClient> {
        let frame = self.call(request, progress).await?;
        let peer = format!("scheduler {}", self.address);
        let archived = access::<ArchivedToClient>(&frame, &peer)?;
        Ok(to_owned(archived, &peer)?)
    }

    /// Cluster summary.
    pub async fn info(&self) -> Result<ClusterInfo> {
        match self
            .call_owned(&ClientRequest::Info, &mut |_, _, _| {})
            .await?
        {
            ToClient::Info(info) => Ok(info),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Wait until at least `n` workers are registered (Dask's `wait_for_workers`).
    pub async fn wait_for_workers(&self, n: u32, timeout: Duration) -> Result<ClusterInfo> {
        let start = Instant::now();
        loop {
            let info = self.info().await?;
            if info.workers >= n {
                return Ok(info);
            }
            if start.elapsed() >= timeout {
                return Err(ClientError::NoWorkers {
                    address: self.address.clone(),
                    waited: timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Row count of a persisted frame or a Parquet source.
    pub async fn len(&self, source: &str) -> Result<u64> {
        let request = ClientRequest::Len {
            source: normalize_source(source),
        };
        match self.call_owned(&request, &mut |_, _, _| {}).await? {
            ToClient::Count(n) => Ok(n),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Read a source into the workers' RAM under `name`.
    pub async fn persist(
        &self,
        source: &str,
        name: &str,
        replace: bool,
        columns: Option<Vec<String>>,
        steps: Vec<Step>,
        progress: Progress<'_>,
    ) -> Result<FrameSummary> {
        let request = ClientRequest::Persist {
            source: normalize_source(source),
            name: name.to_string(),
            replace,
            columns,
            steps,
        };
        match self.call_owned(&request, progress).await? {
            ToClient::Persisted(summary) => Ok(summary),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// First `n` rows.
    pub async fn head(
        &self,
        source: &str,
        n: u64,
        columns: Option<Vec<String>>,
    ) -> Result<Vec<RecordBatch>> {
        let request = ClientRequest::Head {
            source: normalize_source(source),
            n,
            columns,
        };
        let frame = self.call(&request, &mut |_, _, _| {}).await?;
        let peer = format!("scheduler {}", self.address);
        let ArchivedToClient::Table(bytes) = access::<ArchivedToClient>(&frame, &peer)? else {
            return Err(ClientError::Unexpected("expected a table".into()));
        };
        Ok(stratus_protocol::ipc::decode_table_payload(
            bytes.as_slice(),
        )?)
    }

    /// Retire workers by name (`stratus retire`): their persisted
    /// partitions move to the other workers over the peer links, their
    /// tasks end, and they exit with status 0. Refused, naming the bytes
    /// needed and free, when the others have no room, unless `force` (then
    /// what does not fit is dropped and rebuilt from lineage later). The
    /// answer says what moved where.
    pub async fn retire(&self, workers: &[String], force: bool) -> Result<Vec<RetiredWorker>> {
        let request = ClientRequest::Retire {
            workers: workers.to_vec(),
            force,
        };
        match self.call_owned(&request, &mut |_, _, _| {}).await? {
            ToClient::Retired(retired) => Ok(retired),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Release a persisted frame.
    pub async fn unpersist(&self, name: &str) -> Result<()> {
        let request = ClientRequest::Unpersist {
            name: name.to_string(),
        };
        self.call(&request, &mut |_, _, _| {}).await.map(|_| ())
    }

    async fn table(&self, request: &ClientRequest) -> Result<RecordBatch> {
        let frame = self.call(request, &mut |_, _, _| {}).await?;
        let peer = format!("scheduler {}", self.address);
        let ArchivedToClient::Table(bytes) = access::<ArchivedToClient>(&frame, &peer)? else {
            return Err(ClientError::Unexpected("expected a table".into()));
        };
        stratus_protocol::ipc::decode_table_payload(bytes.as_slice())?
            .pop()
            .ok_or_else(|| ClientError::Unexpected("empty table".into()))
    }

    /// `describe()` of a persisted frame: count, mean, std, min, 25%, 50%,
    /// 75%, max of its numeric columns (or `columns`). The first column of the
    /// result is the statistic's name.
    pub async fn describe(&self, frame: &str, columns: Option<Vec<String>>) -> Result<RecordBatch> {
        self.table(&ClientRequest::Describe {
            source: frame.to_string(),
            columns,
        })
        .await
    }

    /// Bytes of Arrow buffers a persisted frame holds, per column and in total.
    pub async fn memory_usage(&self, frame: &str) -> Result<RecordBatch> {
        self.table(&ClientRequest::MemoryUsage {
            source: frame.to_string(),
        })
        .await
    }

    /// Group a persisted frame by `keys` and aggregate: `aggs` as (column,
    /// function) pairs, plus `all_numeric`'s function over every numeric
    /// non-key column (every column for Count), as pandas'
    /// `groupby(keys).mean()`. Keys first, sorted by key.
    pub async fn groupby(
        &self,
        frame: &str,
        keys: Vec<String>,
        aggs: Vec<(String, AggFunc)>,
        all_numeric: Option<AggFunc>,
    ) -> Result<RecordBatch> {
        self.table(&ClientRequest::GroupBy {
            source: frame.to_string(),
            keys,
            aggs,
            all_numeric,
        })
        .await
    }

    /// Write a persisted frame as a hive-partitioned Parquet dataset at
    /// `dest` (`dest/year=2008/month=1/part-*.parquet` for `["year", "month"]`):
    /// each worker writes its own partitions, the dataset appears atomically
    /// with `_SUCCESS` last. Refuses an existing dataset unless `overwrite`.
    /// Returns (rows, files).
    pub async fn write_parquet(
        &self,
        frame: &str,
        dest: &str,
        partition_by: Vec<String>,
        overwrite: bool,
    ) -> Result<(u64, u64)> {
        let table = self
            .table(&ClientRequest::Write {
                source: frame.to_string(),
                dest: normalize_source(dest),
                partition_by,
                overwrite,
            })
            .await?;
        let number = |name: &str| {
            table
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<arrow_array::UInt64Array>())
                .map(|a| a.value(0))
                .ok_or_else(|| ClientError::Unexpected(format!("write answer lacks '{name}'")))
        };
        Ok((number("rows")?, number("files")?))
    }

    /// Sort a persisted frame by a column (`set_index`): in place, or into a
    /// new frame named `into`. Partitions that already range the key are
    /// sorted where they are; otherwise rows move worker to worker.
    pub async fn sort(&self, frame: &str, by: &str, into: Option<&str>) -> Result<FrameSummary> {
        let request = ClientRequest::Sort {
            source: frame.to_string(),
            by: by.to_string(),
            into: into.map(str::to_string),
        };
        match self.call_owned(&request, &mut |_, _, _| {}).await? {
            ToClient::Persisted(summary) => Ok(summary),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Persisted frames.
    pub async fn list(&self) -> Result<Vec<FrameSummary>> {
        match self
            .call_owned(&ClientRequest::List, &mut |_, _, _| {})
            .await?
        {
            ToClient::Frames(frames) => Ok(frames),
            other => Err(ClientError::Unexpected(format!("{other:?}"))),
        }
    }

    /// Close the connection (cancelling anything in flight) and wait briefly
    /// for the close to reach the scheduler.
    pub async fn close(self) {
        OPEN.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(_, c)| c.stable_id() != self.conn.stable_id());
        self.conn.close(0u32.into(), b"client closed");
        // The CONNECTION_CLOSE goes out on the next driver poll; waiting out the
        // whole draining period (3 PTO, ~80 ms) would only slow every command.
        let _ = tokio::time::timeout(Duration::from_millis(1), self.endpoint.wait_idle()).await;
    }
}

/// Make a relative local path absolute, so workers (whose working directory
/// differs) read the same files. Names of persisted frames (no `/`, not an
/// existing path) and URLs pass through unchanged.
pub fn normalize_source(source: &str) -> String {
    let path = std::path::Path::new(source);
    if source.contains("://") || path.is_absolute() {
        return source.to_string();
    }
    if source.contains('/') || path.exists() {
        if let Ok(cwd) = std::env::current_dir() {
            return cwd.join(path).display().to_string();
        }
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_are_classified_by_their_phrases() {
        let kind = |m: &str| classify_server_error(m);
        assert_eq!(kind("no persisted frame named 'x'"), ErrorKind::NotFound);
        assert_eq!(
            kind("no Parquet files match '/d/*.parquet'"),
            ErrorKind::NotFound
        );
        assert_eq!(kind("az://c/p: not found (404)"), ErrorKind::NotFound);
        assert_eq!(
            kind("describe: no column named 'nope' in 'isd'"),
            ErrorKind::BadInput
        );
        assert_eq!(
            kind("a frame named 'isd' is already persisted (use --replace to replace it)"),
            ErrorKind::BadInput
        );
        assert_eq!(
            kind("temperature + 'a': arithmetic needs numbers, got Float64 + Utf8"),
            ErrorKind::BadInput
        );
        assert_eq!(
            kind("destination '/d' already holds a dataset; pass --overwrite to replace it"),
            ErrorKind::BadInput
        );
        assert_eq!(kind("the request was cancelled"), ErrorKind::Cancelled);
        assert_eq!(kind("no worker to run this on"), ErrorKind::Connection);
        assert_eq!(kind("worker w1: disk full"), ErrorKind::Other);
    }
}
