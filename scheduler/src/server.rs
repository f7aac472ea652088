//! The scheduler's I/O edge: an actix actor that owns the state machine, and
//! the QUIC tasks that talk to workers and clients.
//!
//! QUIC runs on the tokio multi-thread runtime; the actor runs on the actix
//! system thread and does no I/O. Connection tasks validate frames, read them
//! in place, and send the actor [`Event`]s; the actor feeds them to
//! [`SchedulerState`] and pushes the resulting messages into per-connection
//! channels that writer tasks drain (batching whatever has queued up).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use actix::prelude::*;
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use stratus_protocol::framing::{self, access, read_frame, send_message, to_owned};
use stratus_protocol::handshake::{self, Received};
use stratus_protocol::limits::{ConnectionLimiter, ConnectionLimits};
use stratus_protocol::messages::PeerRole;
use stratus_protocol::messages::{
    ArchivedFromWorker, ArchivedRequestFrame, ClientRequest, RequestFrame, StorageOptions,
    ToClient, ToWorker, WorkerInfo,
};
use stratus_protocol::netstats::PeerKind;
use stratus_protocol::pki::Role;
use stratus_protocol::tls;
use stratus_protocol::STRATUS_VERSION;
use stratus_scheduler_core::outputs::{check_worker_info, WorkerCeilings};

use crate::metrics::Metrics;
use crate::runs::{RunError, RunStore};
use stratus_scheduler_core::activity::RequestState;
use stratus_scheduler_core::{Command, Event, RequestId, SchedulerState, WorkerId};

/// Feed an event to the state machine.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Input(pub Event);

/// A worker finished its handshake.
#[derive(Message)]
#[rtype(result = "()")]
pub struct WorkerUp {
    pub id: WorkerId,
    pub info: WorkerInfo,
    pub tx: mpsc::UnboundedSender<ToWorker>,
    pub conn: quinn::Connection,
}

/// A client opened a request stream.
#[derive(Message)]
#[rtype(result = "()")]
pub struct RequestUp {
    pub id: RequestId,
    pub body: ClientRequest,
    /// Object-store options sent with it (secrets: never logged).
    pub storage: StorageOptions,
    pub tx: mpsc::UnboundedSender<ToClient>,
    /// The run of the client's session; `None` if it named none.
    pub run: Option<String>,
    /// Name of the client certificate that sent it.
    pub client: String,
}

/// Read the cluster as JSON for `/api/cluster`.
#[derive(Message)]
#[rtype(result = "serde_json::Value")]
pub struct ClusterJson;

/// Read the adaptive target as JSON for `/api/adaptive`.
#[derive(Message)]
#[rtype(result = "serde_json::Value")]
pub struct AdaptiveJson;

/// Read the dashboard's snapshot (`/api/dashboard`, `/api/events`).
#[derive(Message)]
#[rtype(result = "serde_json::Value")]
pub struct DashboardJson;

/// What the QUIC edge and the HTTP server share with the actor.
pub struct Shared {
    pub metrics: Arc<Metrics>,
    pub runs: Arc<RunStore>,
    /// Bumped whenever something a live view shows may have changed.
    pub changes: watch::Sender<u64>,
    /// When the scheduler last had a client or a job (`--idle-timeout`).
    pub idle: IdleClock,
    /// Where the durable catalog is written (None: nowhere, in tests).
    pub catalog: Option<crate::catalog::CatalogFile>,
    /// This start's incarnation id (its start time in Unix milliseconds),
    /// told to every peer in its `Welcome`.
    pub incarnation: u64,
}

/// How long the scheduler has gone without a connected client or a job in
/// progress; past `timeout` it asks to stop (Dask's `--idle-timeout`).
#[derive(Debug)]
pub struct IdleClock {
    pub timeout: Option<Duration>,
    clients: AtomicU64,
    busy_at: std::sync::Mutex<Instant>,
    stop: tokio::sync::Notify,
}

impl IdleClock {
    pub fn new(timeout: Option<Duration>) -> Self {
        IdleClock {
            timeout,
            clients: AtomicU64::new(0),
            busy_at: std::sync::Mutex::new(Instant::now()),
            stop: tokio::sync::Notify::new(),
        }
    }

    /// Something happened: the idle time starts again.
    pub fn touch(&self) {
        *self.busy_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
    }

    /// A client connected; it counts as present until the guard drops.
    pub fn client(&self) -> ClientPresent<'_> {
        self.clients.fetch_add(1, Ordering::Relaxed);
        self.touch();
        ClientPresent(self)
    }

    /// Idle for longer than the timeout (never without one).
    fn expired(&self) -> bool {
        let Some(timeout) = self.timeout else {
            return false;
        };
        let since = *self.busy_at.lock().unwrap_or_else(|e| e.into_inner());
        self.clients.load(Ordering::Relaxed) == 0 && since.elapsed() > timeout
    }

    /// Resolves once the scheduler has been idle past its timeout.
    pub async fn stopped(&self) {
        self.stop.notified().await
    }
}

/// A connected client (see [`IdleClock::client`]).
pub struct ClientPresent<'a>(&'a IdleClock);

impl Drop for ClientPresent<'_> {
    fn drop(&mut self) {
        self.0.clients.fetch_sub(1, Ordering::Relaxed);
        self.0.touch();
    }
}

impl Shared {
    /// Tell live views to refresh.
    pub fn changed(&self) {
        self.changes.send_modify(|v| *v += 1);
    }
}

/// A client request in flight.
struct OpenRequest {
    kind: &'static str,
    tx: mpsc::UnboundedSender<ToClient>,
    started: Instant,
    /// `None`: the session named no run, nothing is logged.
    run: Option<String>,
}

/// Static facts about this scheduler.
#[derive(Debug, Clone)]
pub struct Identity {
    pub address: String,
    pub dashboard: String,
    pub head_node: String,
}

struct WorkerLink {
    tx: mpsc::UnboundedSender<ToWorker>,
    conn: quinn::Connection,
}

/// Owns the [`SchedulerState`] and carries out its commands; the decisions
/// are the state machine's (`stratus-scheduler-core`).
pub struct SchedulerActor {
    state: SchedulerState,
    workers: HashMap<WorkerId, WorkerLink>,
    requests: HashMap<RequestId, OpenRequest>,
    metrics: Arc<Metrics>,
    shared: Arc<Shared>,
    identity: Identity,
    /// One instant with its wall-clock time, to show `Instant`s as dates.
    epoch: (Instant, SystemTime),
    /// [`Self::view_fingerprint`] when live views were last woken.
    last_view: u64,
}

impl SchedulerActor {
    pub fn new(state: SchedulerState, shared: Arc<Shared>, identity: Identity) -> Self {
        shared
            .metrics
            .set_identity(&identity.address, &identity.dashboard, &identity.head_node);
        SchedulerActor {
            state,
            workers: HashMap::new(),
            requests: HashMap::new(),
            metrics: shared.metrics.clone(),
            shared,
            identity,
            epoch: (Instant::now(), SystemTime::now()),
            last_view: 0,
        }
    }

    /// Milliseconds since the Unix epoch of `t`.
    fn unix_ms(&self, t: Instant) -> u64 {
        let (base, wall) = self.epoch;
        let wall = match t.checked_duration_since(base) {
            Some(after) => wall + after,
            None => wall - base.duration_since(t),
        };
        wall.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }

    /// Send a request's final answer, after logging its timing (and row
    /// count) to its run off the actor's thread: a client that has its
    /// answer finds the numbers already in the run (read your writes).
    fn finish_and_log(&self, request: OpenRequest, message: ToClient) {
        let logged = !matches!(
            request.kind,
            "info" | "list" | "log_metrics" | "log_artifact"
        ) && !matches!(message, ToClient::Error(_));
        if !logged {
            let _ = request.tx.send(message);
            return;
        }
        let mut metrics = vec![(
            format!("{}.seconds", request.kind),
            request.started.elapsed().as_secs_f64(),
        )];
        match &message {
            ToClient::Count(rows) => metrics.push((format!("{}.rows", request.kind), *rows as f64)),
            ToClient::Persisted(frame) => {
                metrics.push((format!("{}.rows", request.kind), frame.rows as f64));
                metrics.push((format!("{}.bytes", request.kind), frame.bytes as f64));
            }
            _ => {}
        }
        let shared = self.shared.clone();
        let OpenRequest { tx, run, .. } = request;
        let Some(run) = run else {
            // No run named: no run is created or logged to.
            let _ = tx.send(message);
            return;
        };
        tokio::task::spawn_blocking(move || {
            if let Err(e) = shared.runs.log_metrics(&run, &metrics) {
                warn!("cannot log to run '{run}': {e}");
            }
            shared.changed();
            let _ = tx.send(message);
        });
    }

    fn apply(&mut self, event: Event) {
        let commands = self.state.handle(Instant::now(), event);
        for command in commands {
            match command {
                Command::ToWorker { worker, message } => {
                    if let Some(link) = self.workers.get(&worker) {
                        let _ = link.tx.send(message);
                    }
                }
                Command::Reply { request, message } => {
                    let last = message.is_final();
                    if !last {
                        if let Some(open) = self.requests.get(&request) {
                            let _ = open.tx.send(message);
                        }
                    } else if let Some(open) = self.requests.remove(&request) {
                        let outcome = match &message {
                            ToClient::Error(_) => "error",
                            _ => "ok",
                        };
                        self.metrics
                            .finish_request(open.kind, outcome, open.started.elapsed());
                        self.finish_and_log(open, message);
                    }
                }
                Command::DisconnectWorker { worker, reason } => {
                    warn!("{reason}");
                    if let Some(link) = self.workers.remove(&worker) {
                        link.conn.close(1u32.into(), reason.as_bytes());
                    }
                }
                Command::SaveCatalog(catalog) => {
                    // Small (metadata only) and before the replies that
                    // follow it: a persist is on disk before it is answered.
                    if let Some(file) = &self.shared.catalog {
                        let saved = file.save(&catalog);
                        if let Err(e) = &saved {
                            tracing::error!(
                                "{e:#}: the frames persisted since the last write would not \
                                 survive a restart of the scheduler"
                            );
                        }
                        self.metrics.catalog_written(saved.is_ok());
                    }
                }
            }
        }
        self.metrics.observe(&self.state);
        let view = self.view_fingerprint();
        if view != self.last_view {
            self.last_view = view;
            self.shared.changed();
        }
    }

    /// A hash of what the dashboard shows, to wake live views only when it
    /// changed (not on every heartbeat or tick).
    fn view_fingerprint(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.state.activity().version.hash(&mut h);
        self.state.task_counts().hash(&mut h);
        for w in self.state.workers() {
            (
                w.id,
                w.memory_used,
                w.persisted_bytes,
                w.spilled_bytes,
                w.paused,
                w.running.len(),
            )
                .hash(&mut h);
        }
        for f in self.state.frames() {
            (f.id, f.partitions.len()).hash(&mut h);
        }
        h.finish()
    }

    fn cluster_json(&self) -> serde_json::Value {
        let workers: Vec<_> = self
            .state
            .workers()
            .map(|w| {
                let address = self
                    .workers
                    .get(&w.id)
                    .map(|link| link.conn.remote_address().to_string());
                serde_json::json!({
                    "id": w.id.0,
                    "address": address,
                    "name": w.info.name,
                    "host": w.info.host,
                    "pid": w.info.pid,
                    "threads": w.info.nthreads,
                    "memory_limit": w.info.memory_limit,
                    "memory_used": w.memory_used,
                    "persisted_bytes": w.persisted_bytes,
                    "persisted_partitions": w.partitions.len(),
                    "spilled_bytes": w.spilled_bytes,
                    "paused": w.paused,
                    "running_tasks": w.running.len(),
                    "retiring": w.retiring.is_some(),
                    "metrics_url": w.info.metrics_address.as_ref().map(|a| format!("http://{a}/metrics")),
                    "peer_address": w.info.peer_address,
                    "certificate": w.info.cert_name,
                })
            })
            .collect();
        let frames: Vec<_> = self
            .state
            .frames()
            .map(|f| {
                serde_json::json!({
                    "name": f.name,
                    "source": f.source,
                    "rows": f.partitions.iter().map(|p| p.rows).sum::<u64>(),
                    "bytes": f.partitions.iter().map(|p| p.bytes).sum::<u64>(),
                    "partitions": f.partitions.len(),
                    "partitions_held": f.partitions.iter().filter(|p| p.holder.is_some()).count(),
                })
            })
            .collect();
        let (queued, running) = self.state.task_counts();
        serde_json::json!({
            "address": self.identity.address,
            "dashboard": self.identity.dashboard,
            "head_node": self.identity.head_node,
            "version": STRATUS_VERSION,
            "workers": workers,
            "frames": frames,
            "tasks": { "queued": queued, "running": running },
            "jobs_in_progress": self.state.jobs_in_progress(),
        })
    }
}

impl SchedulerActor {
    /// The dashboard's snapshot (shape documented in ARCHITECTURE.md).
    fn dashboard_json(&self) -> serde_json::Value {
        use serde_json::json;
        let cluster = self.cluster_json();
        let workers = cluster["workers"].clone();
        let info = self.state.cluster_info();
        let persisted: u64 = self
            .state
            .frames()
            .flat_map(|f| f.partitions.iter())
            .map(|p| p.bytes)
            .sum();
        let activity = self.state.activity();
        let jobs: Vec<_> = activity
            .requests()
            .rev()
            .take(stratus_scheduler_core::activity::KEPT_REQUESTS)
            .map(|r| {
                let (state, error) = match &r.state {
                    RequestState::Running => ("running", None),
                    RequestState::Ok => ("ok", None),
                    RequestState::Error(e) => ("error", Some(e.as_str())),
                    RequestState::Cancelled => ("cancelled", None),
                };
                json!({
                    "id": r.id,
                    "kind": r.kind,
                    "target": r.target,
                    "run": r.run,
                    "client": r.client,
                    "state": state,
                    "error": error,
                    "started": self.unix_ms(r.started),
                    "ended": r.ended.map(|t| self.unix_ms(t)),
                    "steps": r.steps.iter().map(|s| json!({
                        "name": s.name, "done": s.done, "total": s.total,
                    })).collect::<Vec<_>>(),
                    "fetched_bytes": r.fetched,
                    "waiting": r.waiting,
                })
            })
            .collect();
        let tasks: Vec<_> = activity
            .tasks()
            .map(|t| {
                json!({
                    "id": t.id,
                    "job": t.request,
                    "kind": t.kind,
                    "worker": t.worker,
                    "start": self.unix_ms(t.start),
                    "end": self.unix_ms(t.end),
                    "outcome": t.outcome,
                })
            })
            .collect();
        json!({
            "now": self.unix_ms(Instant::now()),
            "cluster": {
                "address": self.identity.address,
                "dashboard": self.identity.dashboard,
                "head_node": self.identity.head_node,
                "version": STRATUS_VERSION,
                "workers": info.workers,
                "threads": info.threads,
                "memory_limit": info.memory_limit,
                "memory_used": info.memory_used,
                "persisted_bytes": persisted,
            },
            "workers": workers,
            "jobs": jobs,
            "tasks": tasks,
            "frames": cluster["frames"].clone(),
            "runs": self.shared.runs.dashboard_json(20),
        })
    }
}

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_millis(500), |actor, _| {
            actor.apply(Event::Tick);
            let idle = &actor.shared.idle;
            if actor.state.jobs_in_progress() > 0 {
                idle.touch();
            } else if idle.expired() {
                if let Some(timeout) = idle.timeout {
                    info!(
                        "idle for {} (no client, no job): stopping (--idle-timeout)",
                        stratus_protocol::units::format_duration(timeout)
                    );
                }
                idle.stop.notify_one();
            }
        });
    }
}

impl Handler<Input> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, msg: Input, _: &mut Context<Self>) {
        if let Event::WorkerLeft { worker, .. } = &msg.0 {
            self.workers.remove(worker);
        }
        if let Event::RequestCancelled { request } = &msg.0 {
            self.requests.remove(request);
        }
        self.apply(msg.0);
    }
}

impl Handler<WorkerUp> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, msg: WorkerUp, _: &mut Context<Self>) {
        info!(
            "worker '{}' registered from {} ({} threads, {} bytes)",
            msg.info.name,
            msg.conn.remote_address(),
            msg.info.nthreads,
            msg.info.memory_limit
        );
        self.workers.insert(
            msg.id,
            WorkerLink {
                tx: msg.tx,
                conn: msg.conn,
            },
        );
        self.apply(Event::WorkerJoined {
            worker: msg.id,
            info: msg.info,
        });
    }
}

impl Handler<RequestUp> for SchedulerActor {
    type Result = ();
    fn handle(&mut self, msg: RequestUp, _: &mut Context<Self>) {
        self.requests.insert(
            msg.id,
            OpenRequest {
                kind: msg.body.kind(),
                tx: msg.tx,
                started: Instant::now(),
                run: msg.run.clone(),
            },
        );
        self.apply(Event::Request {
            request: msg.id,
            body: msg.body,
            storage: msg.storage,
            run: msg.run,
            client: msg.client,
        });
    }
}

impl Handler<DashboardJson> for SchedulerActor {
    type Result = MessageResult<DashboardJson>;
    fn handle(&mut self, _: DashboardJson, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.dashboard_json())
    }
}

impl Handler<AdaptiveJson> for SchedulerActor {
    type Result = MessageResult<AdaptiveJson>;
    fn handle(&mut self, _: AdaptiveJson, _: &mut Context<Self>) -> Self::Result {
        let t = self.state.adaptive();
        MessageResult(serde_json::json!({
            "target": t.target,
            "minimum": t.minimum,
            "maximum": t.maximum,
            "workers": self.state.workers().count(),
            "by_memory": t.by_memory,
            "by_work": t.by_work,
        }))
    }
}

impl Handler<ClusterJson> for SchedulerActor {
    type Result = MessageResult<ClusterJson>;
    fn handle(&mut self, _: ClusterJson, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.cluster_json())
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Largest client request frame: the largest request is an artifact
/// (`runs::MAX_ARTIFACT_BYTES`) with its name; nothing needs the 256 MiB a
/// worker's frames may take.
pub const MAX_REQUEST_FRAME_BYTES: usize = crate::runs::MAX_ARTIFACT_BYTES + (16 << 20);

/// What the QUIC edge admits: connections, and a worker's claims.
#[derive(Debug, Clone, Copy, Default)]
pub struct ServerLimits {
    pub connections: ConnectionLimits,
    pub workers: WorkerCeilings,
}

/// Accept connections forever (within `limits`).
pub async fn accept_loop(
    endpoint: quinn::Endpoint,
    actor: Addr<SchedulerActor>,
    shared: Arc<Shared>,
    limits: ServerLimits,
) {
    let limiter = ConnectionLimiter::new(limits.connections);
    while let Some(incoming) = endpoint.accept().await {
        let remote = incoming.remote_address();
        let permit = match limiter.admit(remote.ip()) {
            Ok(permit) => permit,
            Err(reason) => {
                warn!("refusing a connection from {remote}: {reason}");
                incoming.refuse();
                continue;
            }
        };
        let actor = actor.clone();
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match incoming.await {
                Ok(conn) => {
                    if let Err(e) = serve_connection(conn, actor, shared, limits.workers).await {
                        warn!("{e}");
                    }
                }
                Err(e) => warn!("refused a connection from {remote}: {e}"),
            }
        });
    }
}

async fn serve_connection(
    conn: quinn::Connection,
    actor: Addr<SchedulerActor>,
    shared: Arc<Shared>,
    ceilings: WorkerCeilings,
) -> stratus_protocol::Result<()> {
    let remote = conn.remote_address().to_string();
    // The TLS handshake verified the certificate (our CA, role worker or
    // client, not denied); read who it names.
    let cert = match tls::peer_certificate(&conn) {
        Ok(cert) => cert,
        Err(e) => {
            conn.close(2u32.into(), b"no usable certificate");
            return Err(e);
        }
    };
    let peer = format!("peer {remote} (certificate '{}')", cert.name);
    let Received {
        mut send,
        recv,
        hello,
    } = handshake::receive(&conn, &remote).await?;
    let (needed, acting) = match &hello.role {
        PeerRole::Worker(_) => (Role::Worker, "registering as a worker"),
        PeerRole::Client { .. } => (Role::Client, "submitting requests"),
    };
    if cert.role != needed {
        let reason = format!(
            "certificate '{}' has role {}; {acting} needs a {needed} certificate (stratus certs issue DIR --role {needed} --name NAME)",
            cert.name, cert.role
        );
        warn!("refusing {peer}: {reason}");
        handshake::refuse(&conn, &mut send, &reason, &peer).await?;
        return Ok(());
    }
    if let PeerRole::Worker(info) = &hello.role {
        if let Err(reason) = check_worker_info(info, &ceilings) {
            let reason = format!("worker '{}' refused: {reason}", info.name);
            warn!("{peer}: {reason}");
            handshake::refuse(&conn, &mut send, &reason, &peer).await?;
            return Ok(());
        }
    }
    let id = next_id();
    handshake::welcome(&mut send, id, shared.incarnation, &peer).await?;
    match hello.role {
        PeerRole::Worker(mut info) => {
            // Peers will check this name on the worker's peer endpoint.
            info.cert_name = cert.name.clone();
            let peer = format!(
                "worker '{}' ({remote}, certificate '{}')",
                info.name, cert.name
            );
            let tracker = shared.metrics.connections();
            let _tracked = tracker.track(PeerKind::Worker, &info.name, &conn);
            serve_worker(WorkerId(id), info, conn, send, recv, actor, peer).await
        }
        PeerRole::Client { run, .. } => {
            let peer = format!("client '{}' ({remote})", cert.name);
            // An empty name in the handshake means the session names no run.
            let run = (!run.trim().is_empty()).then_some(run);
            let tracker = shared.metrics.connections();
            let _tracked = tracker.track(PeerKind::Client, &remote, &conn);
            let shared_for_idle = shared.clone();
            let _present = shared_for_idle.idle.client();
            serve_client(ClientSession {
                conn,
                actor,
                peer,
                client: cert.name,
                run,
                shared,
            })
            .await
        }
    }
}

async fn serve_worker(
    id: WorkerId,
    info: WorkerInfo,
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    actor: Addr<SchedulerActor>,
    peer: String,
) -> stratus_protocol::Result<()> {
    let (tx, mut rx) = mpsc::unbounded_channel::<ToWorker>();
    actor.do_send(WorkerUp {
        id,
        info,
        tx,
        conn: conn.clone(),
    });
    let writer_peer = peer.clone();
    let writer = tokio::spawn(async move {
        while let Some(message) = rx.recv().await {
            if let Err(e) = send_message(&mut send, &message, &writer_peer).await {
                debug!("{e}");
                break;
            }
        }
    });
    let reason = loop {
        match read_frame(&mut recv, &peer).await {
            Ok(Some(frame)) => match access::<ArchivedFromWorker>(&frame, &peer) {
                Ok(ArchivedFromWorker::Heartbeat {
                    memory_used,
                    spilled,
                    paused,
                    ..
                }) => {
                    actor.do_send(Input(Event::Heartbeat {
                        worker: id,
                        memory_used: memory_used.to_native(),
                        spilled: spilled.to_native(),
                        paused: *paused,
                    }));
                }
                Ok(ArchivedFromWorker::Held(held)) => {
                    let mut partitions = Vec::with_capacity(held.len());
                    for h in held.iter() {
                        partitions.push(to_owned(h, &peer)?);
                    }
                    info!(
                        "{peer} kept {} partition(s) from an earlier start of the scheduler",
                        partitions.len()
                    );
                    actor.do_send(Input(Event::WorkerHeld {
                        worker: id,
                        partitions,
                    }));
                }
                Ok(ArchivedFromWorker::Reports(reports)) => {
                    let mut owned = Vec::with_capacity(reports.len());
                    for r in reports.iter() {
                        owned.push(to_owned(r, &peer)?);
                    }
                    actor.do_send(Input(Event::TaskReports {
                        worker: id,
                        reports: owned,
                    }));
                }
                Ok(ArchivedFromWorker::Retire) => {
                    info!("{peer} asks to be retired (SIGTERM): moving its partitions");
                    actor.do_send(Input(Event::WorkerRetiring { worker: id }));
                }
                Err(e) => {
                    conn.close(2u32.into(), b"invalid frame");
                    break e.to_string();
                }
            },
            Ok(None) => break format!("{peer} closed its control stream"),
            Err(e) => break e.to_string(),
        }
    };
    writer.abort();
    warn!("removing {peer}: {reason}");
    actor.do_send(Input(Event::WorkerLeft { worker: id, reason }));
    Ok(())
}

/// A client's connection: what each of its requests needs.
#[derive(Clone)]
struct ClientSession {
    conn: quinn::Connection,
    actor: Addr<SchedulerActor>,
    /// Names the client in errors.
    peer: String,
    /// Name of its certificate.
    client: String,
    run: Option<String>,
    shared: Arc<Shared>,
}

async fn serve_client(session: ClientSession) -> stratus_protocol::Result<()> {
    loop {
        let (send, recv) = match session.conn.accept_bi().await {
            Ok(streams) => streams,
            Err(_) => return Ok(()),
        };
        let session = session.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_request(session, send, recv).await {
                debug!("{e}");
            }
        });
    }
}

async fn serve_request(
    session: ClientSession,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> stratus_protocol::Result<()> {
    let ClientSession {
        conn,
        actor,
        peer,
        client,
        run,
        shared,
    } = session;
    let peer = peer.as_str();
    let Some(frame) = framing::read_frame_limited(&mut recv, peer, MAX_REQUEST_FRAME_BYTES).await?
    else {
        return Ok(());
    };
    // A frame that fails validation, or an expression beyond the limits
    // (checked while deserializing), is answered with the reason.
    let RequestFrame { body, storage } =
        match access::<ArchivedRequestFrame>(&frame, peer).and_then(|r| to_owned(r, peer)) {
            Ok(request) => request,
            Err(e) => {
                let _ = send_message(&mut send, &ToClient::Error(e.to_string()), peer).await;
                let _ = send.finish();
                return Err(e);
            }
        };
    if matches!(
        body,
        ClientRequest::LogMetrics { .. } | ClientRequest::LogArtifact { .. }
    ) {
        // Run logging touches only the run store (and the disk): no actor.
        let kind = body.kind();
        let started = Instant::now();
        let store = shared.clone();
        let logged = tokio::task::spawn_blocking(move || {
            let Some(run) = run else {
                return Err(RunError::NoRun);
            };
            match &body {
                ClientRequest::LogMetrics { metrics } => store.runs.log_metrics(&run, metrics),
                ClientRequest::LogArtifact {
                    name,
                    content_type,
                    data,
                } => store.runs.log_artifact(&run, name, content_type, data),
                _ => Ok(String::new()),
            }
        })
        .await;
        let answer = match logged {
            Ok(Ok(run_id)) => ToClient::Logged { run_id },
            Ok(Err(e)) => ToClient::Error(e.to_string()),
            Err(e) => ToClient::Error(format!("logging failed: {e}")),
        };
        let outcome = if matches!(answer, ToClient::Logged { .. }) {
            "ok"
        } else {
            "error"
        };
        shared
            .metrics
            .finish_request(kind, outcome, started.elapsed());
        shared.changed();
        send_message(&mut send, &answer, peer).await?;
        let _ = send.finish();
        return Ok(());
    }
    let id = RequestId(next_id());
    let (tx, mut rx) = mpsc::unbounded_channel();
    info!(
        "request {} from client '{client}': {}{}",
        id.0,
        body.kind(),
        body.target().map(|t| format!(" {t}")).unwrap_or_default()
    );
    actor.do_send(RequestUp {
        id,
        body,
        storage,
        tx,
        run,
        client,
    });
    loop {
        tokio::select! {
            message = rx.recv() => {
                let Some(message) = message else { return Ok(()) };
                let last = message.is_final();
                let body = framing::encode(&message)?;
                if let Err(e) = framing::write_frame(&mut send, &body, peer).await {
                    actor.do_send(Input(Event::RequestCancelled { request: id }));
                    return Err(e);
                }
                if last {
                    let _ = send.finish();
                    return Ok(());
                }
            }
            _ = conn.closed() => {
                actor.do_send(Input(Event::RequestCancelled { request: id }));
                return Ok(());
            }
            _ = send.stopped() => {
                actor.do_send(Input(Event::RequestCancelled { request: id }));
                return Ok(());
            }
        }
    }
}
