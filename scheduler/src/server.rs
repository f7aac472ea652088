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
use std::time::{Duration, Instant};

use actix::prelude::*;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use stratus_protocol::framing::{self, access, read_frame, send_message, to_owned};
use stratus_protocol::messages::{
    ArchivedClientRequest, ArchivedFromWorker, ArchivedHello, ClientRequest, Hello, ToClient,
    ToWorker, Welcome, WorkerInfo,
};
use stratus_protocol::{PROTOCOL_VERSION, STRATUS_VERSION};

use crate::metrics::Metrics;
use crate::state::{Command, Event, RequestId, SchedulerState, WorkerId};

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
    pub tx: mpsc::UnboundedSender<ToClient>,
}

/// Read the cluster as JSON for `/api/cluster`.
#[derive(Message)]
#[rtype(result = "serde_json::Value")]
pub struct ClusterJson;

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

/// Owns the [`SchedulerState`]; the only place decisions happen.
pub struct SchedulerActor {
    state: SchedulerState,
    workers: HashMap<WorkerId, WorkerLink>,
    requests: HashMap<RequestId, (String, mpsc::UnboundedSender<ToClient>)>,
    metrics: Arc<Metrics>,
    identity: Identity,
}

impl SchedulerActor {
    pub fn new(state: SchedulerState, metrics: Arc<Metrics>, identity: Identity) -> Self {
        SchedulerActor {
            state,
            workers: HashMap::new(),
            requests: HashMap::new(),
            metrics,
            identity,
        }
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
                    if let Some((kind, tx)) = self.requests.get(&request) {
                        if last {
                            let outcome = match &message {
                                ToClient::Error(_) => "error",
                                _ => "ok",
                            };
                            self.metrics.count_request(kind, outcome);
                        }
                        let _ = tx.send(message);
                    }
                    if last {
                        self.requests.remove(&request);
                    }
                }
                Command::DisconnectWorker { worker, reason } => {
                    warn!("{reason}");
                    if let Some(link) = self.workers.remove(&worker) {
                        link.conn.close(1u32.into(), reason.as_bytes());
                    }
                }
            }
        }
        self.metrics.observe(&self.state);
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
                    "id": w.id,
                    "address": address,
                    "name": w.info.name,
                    "host": w.info.host,
                    "pid": w.info.pid,
                    "threads": w.info.nthreads,
                    "memory_limit": w.info.memory_limit,
                    "memory_used": w.memory_used,
                    "persisted_bytes": w.persisted_bytes,
                    "persisted_partitions": w.partitions.len(),
                    "running_tasks": w.running.len(),
                    "metrics_url": w.info.metrics_address.as_ref().map(|a| format!("http://{a}/metrics")),
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

impl Actor for SchedulerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(Duration::from_millis(500), |actor, _| {
            actor.apply(Event::Tick)
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
        let kind = request_kind(&msg.body).to_string();
        self.requests.insert(msg.id, (kind, msg.tx));
        self.apply(Event::Request {
            request: msg.id,
            body: msg.body,
        });
    }
}

impl Handler<ClusterJson> for SchedulerActor {
    type Result = MessageResult<ClusterJson>;
    fn handle(&mut self, _: ClusterJson, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.cluster_json())
    }
}

fn request_kind(request: &ClientRequest) -> &'static str {
    match request {
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
    }
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Accept connections forever.
pub async fn accept_loop(endpoint: quinn::Endpoint, actor: Addr<SchedulerActor>) {
    while let Some(incoming) = endpoint.accept().await {
        let actor = actor.clone();
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            match incoming.await {
                Ok(conn) => {
                    if let Err(e) = serve_connection(conn, actor).await {
                        warn!("{e}");
                    }
                }
                Err(e) => debug!("handshake with {remote} failed: {e}"),
            }
        });
    }
}

async fn serve_connection(
    conn: quinn::Connection,
    actor: Addr<SchedulerActor>,
) -> stratus_protocol::Result<()> {
    let remote = conn.remote_address().to_string();
    let peer = format!("peer {remote}");
    let (mut send, mut recv) =
        conn.accept_bi()
            .await
            .map_err(|e| stratus_protocol::ProtocolError::Peer {
                peer: remote.clone(),
                what: format!("no handshake stream: {e}"),
            })?;
    let hello = match read_frame(&mut recv, &peer).await {
        Ok(Some(frame)) => {
            access::<ArchivedHello>(&frame, &peer).and_then(|h| to_owned::<_, Hello>(h, &peer))
        }
        Ok(None) => Err(stratus_protocol::ProtocolError::Peer {
            peer: remote.clone(),
            what: "closed before its handshake".into(),
        }),
        Err(e) => Err(e),
    };
    let hello = match hello {
        Ok(hello) => hello,
        Err(e) => {
            conn.close(2u32.into(), b"invalid handshake frame");
            return Err(e);
        }
    };
    if hello.protocol_version != PROTOCOL_VERSION {
        let reason = format!(
            "protocol version mismatch: scheduler speaks {PROTOCOL_VERSION} (stratus {STRATUS_VERSION}), peer {remote} speaks {} (stratus {})",
            hello.protocol_version, hello.stratus_version
        );
        send_message(
            &mut send,
            &Welcome::Rejected {
                reason: reason.clone(),
            },
            &peer,
        )
        .await?;
        let _ = send.finish();
        let _ = tokio::time::timeout(Duration::from_secs(2), conn.closed()).await;
        return Err(stratus_protocol::ProtocolError::Peer {
            peer: remote,
            what: reason,
        });
    }
    let id = next_id();
    send_message(
        &mut send,
        &Welcome::Accepted {
            peer_id: id,
            scheduler_version: STRATUS_VERSION.to_string(),
        },
        &peer,
    )
    .await?;
    match hello.role {
        stratus_protocol::messages::PeerRole::Worker(info) => {
            let peer = format!("worker '{}' ({remote})", info.name);
            serve_worker(id, info, conn, send, recv, actor, peer).await
        }
        stratus_protocol::messages::PeerRole::Client { name } => {
            let peer = format!("client '{name}' ({remote})");
            serve_client(conn, actor, peer).await
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
                Ok(ArchivedFromWorker::Heartbeat { memory_used, .. }) => {
                    actor.do_send(Input(Event::Heartbeat {
                        worker: id,
                        memory_used: memory_used.to_native(),
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

async fn serve_client(
    conn: quinn::Connection,
    actor: Addr<SchedulerActor>,
    peer: String,
) -> stratus_protocol::Result<()> {
    loop {
        let (send, recv) = match conn.accept_bi().await {
            Ok(streams) => streams,
            Err(_) => return Ok(()),
        };
        let actor = actor.clone();
        let conn = conn.clone();
        let peer = peer.clone();
        tokio::spawn(async move {
            if let Err(e) = serve_request(conn, send, recv, actor, &peer).await {
                debug!("{e}");
            }
        });
    }
}

async fn serve_request(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
    actor: Addr<SchedulerActor>,
    peer: &str,
) -> stratus_protocol::Result<()> {
    let Some(frame) = read_frame(&mut recv, peer).await? else {
        return Ok(());
    };
    let body: ClientRequest = match access::<ArchivedClientRequest>(&frame, peer) {
        Ok(r) => to_owned(r, peer)?,
        Err(e) => {
            let _ = send_message(&mut send, &ToClient::Error(e.to_string()), peer).await;
            let _ = send.finish();
            return Err(e);
        }
    };
    let id = next_id();
    let (tx, mut rx) = mpsc::unbounded_channel();
    actor.do_send(RequestUp { id, body, tx });
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
