//! The worker's actor and its QUIC edge to the scheduler.
//!
//! [`WorkerActor`] feeds what happens (tasks assigned, cancels and drops
//! from the scheduler, deliveries from peers, task bodies ending, heartbeat
//! ticks) to the [`WorkerState`] state machine, which makes every decision,
//! and carries out the commands it returns: task bodies go to the
//! [`Executor`] (compute on blocking threads, so the QUIC I/O on the tokio
//! runtime never waits for it), reports and heartbeats go to a queue that a
//! writer task drains, sending whatever has accumulated as one frame.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use arrow_array::RecordBatch;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use stratus_protocol::framing::{access, read_frame, send_message, to_owned};
use stratus_protocol::handshake::Introduced;
use stratus_protocol::messages::{
    ArchivedToWorker, FromWorker, HeldPartition, MailboxKey, PartitionKey, PeerRole,
    TaskAssignment, TaskReport, WorkerInfo,
};
use stratus_protocol::netstats::PeerKind;
use stratus_protocol::pki::Role;
use stratus_protocol::ProtocolError;

use crate::exec::Executor;
use crate::metrics::{TaskOutcome, WorkerMetrics};
use crate::peer::{Deliver, PeerService, TlsConfigHandle};
use crate::spill::SpillDir;
use crate::state::{self, Command, Event, WorkerState};

/// Heartbeat interval.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// Reports batched into one frame stay under this many bytes (a quarter of
/// the frame limit) unless a single report is larger.
const REPORT_BATCH_BYTES: usize = stratus_protocol::framing::MAX_FRAME_BYTES / 4;

/// Something that happened, for the state machine.
#[derive(Message)]
#[rtype(result = "()")]
struct Input(Event);

/// Data delivered by a peer (or by ourselves) to a mailbox; the answer is
/// whether it was kept (it may wait for spills to make room: the sender is
/// held back until then).
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
struct Delivery {
    mailbox: MailboxKey,
    batches: Vec<RecordBatch>,
}

/// Carries out the decisions of this worker's [`WorkerState`].
pub struct WorkerActor {
    state: WorkerState,
    exec: Executor,
    outbox: mpsc::UnboundedSender<FromWorker>,
    metrics: Arc<WorkerMetrics>,
    /// What a rejoin re-registers (taken by the [`Rejoin`] handler).
    held: Option<Vec<(PartitionKey, u64, u64)>>,
    /// Where partitions spill (None: no spilling).
    spill_dir: Option<Arc<SpillDir>>,
    /// This actor, for the results of spills.
    me: actix::WeakAddr<WorkerActor>,
    /// Deliveries not answered yet, by ticket.
    unanswered: HashMap<u64, oneshot::Sender<Result<(), String>>>,
    next_ticket: u64,
}

impl WorkerActor {
    /// Hand `event` to the state machine and carry out its commands.
    fn feed(&mut self, event: Event) {
        match &event {
            Event::Run(tasks) => {
                for task in tasks {
                    self.metrics.task_started(task.id, &task.kind);
                }
            }
            Event::TaskDone { id, working, .. } => self.metrics.task_worked(*id, *working),
            _ => {}
        }
        let commands = self.state.handle(event);
        self.metrics.observe_store(self.state.store());
        for command in commands {
            match command {
                Command::Execute(ready) => self.exec.start(*ready),
                Command::Report(report) => {
                    self.metrics.task_reported(&report);
                    let _ = self.outbox.send(FromWorker::Reports(vec![report]));
                }
                Command::Heartbeat {
                    memory_used,
                    running,
                    spilled,
                    paused,
                } => {
                    let _ = self.outbox.send(FromWorker::Heartbeat {
                        memory_used,
                        running,
                        spilled,
                        paused,
                    });
                }
                Command::Spill { target, batches } => self.spill(target, batches),
                Command::DeleteSpill(file) => {
                    if let Some(dir) = self.spill_dir.clone() {
                        tokio::task::spawn_blocking(move || dir.delete(&file));
                    }
                }
                Command::Cancelled { id } => {
                    debug!("cancelled task {id} ended; nothing reported");
                    self.metrics.task_ended(id, TaskOutcome::Cancelled);
                }
                Command::Answer { ticket, result } => {
                    if let Some(reply) = self.unanswered.remove(&ticket) {
                        let _ = reply.send(result);
                    }
                }
                Command::Held(held) => self.held = Some(held),
            }
        }
    }

    /// Write a partition to the spill directory on a blocking thread; the
    /// outcome comes back as [`Event::Spilled`].
    fn spill(&self, target: crate::store::SpillTarget, batches: Vec<RecordBatch>) {
        let (dir, me, metrics) = (
            self.spill_dir.clone(),
            self.me.clone(),
            self.metrics.clone(),
        );
        tokio::task::spawn_blocking(move || {
            let result = match dir {
                Some(dir) => dir.write(&target.stem(), &target.describe(), &batches),
                None => Err("no spill directory".to_string()),
            };
            drop(batches);
            match &result {
                Ok(file) => metrics.spilled(file.disk_bytes),
                Err(error) => {
                    warn!("{error}");
                    metrics.spill_failed();
                }
            }
            if let Some(actor) = me.upgrade() {
                actor.do_send(Input(Event::Spilled { target, result }));
            }
        });
    }
}

impl Actor for WorkerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(HEARTBEAT, |actor, _| {
            actor.feed(Event::Tick);
        });
    }
}

impl Handler<Input> for WorkerActor {
    type Result = ();
    fn handle(&mut self, msg: Input, _: &mut Context<Self>) {
        self.feed(msg.0);
    }
}

impl Handler<Delivery> for WorkerActor {
    type Result = ResponseFuture<Result<(), String>>;
    fn handle(&mut self, msg: Delivery, _: &mut Context<Self>) -> Self::Result {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        let (reply, answer) = oneshot::channel();
        self.unanswered.insert(ticket, reply);
        self.feed(Event::Delivery {
            ticket,
            mailbox: msg.mailbox,
            batches: msg.batches,
        });
        Box::pin(async move {
            answer
                .await
                .unwrap_or_else(|_| Err("the worker stopped before keeping the delivery".into()))
        })
    }
}

/// Deliveries to mailboxes through the actor at `actor`.
fn deliver_to(actor: Addr<WorkerActor>) -> Deliver {
    Arc::new(move |mailbox, _from, batches| {
        let actor = actor.clone();
        Box::pin(async move { deliver_through(&actor, mailbox, batches).await })
    })
}

/// The same, through a weak address (the actor's own tasks: they must not
/// keep it alive).
fn deliver_weak(actor: actix::WeakAddr<WorkerActor>) -> Deliver {
    Arc::new(move |mailbox, _from, batches| {
        let actor = actor.upgrade();
        Box::pin(async move {
            let actor = actor.ok_or("the worker is shutting down")?;
            deliver_through(&actor, mailbox, batches).await
        })
    })
}

async fn deliver_through(
    actor: &Addr<WorkerActor>,
    mailbox: MailboxKey,
    batches: Vec<RecordBatch>,
) -> Result<(), String> {
    actor
        .send(Delivery { mailbox, batches })
        .await
        .map_err(|e| e.to_string())?
}

/// Settings of a worker process.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub name: String,
    pub nthreads: u32,
    pub memory_limit: u64,
    pub address: String,
    /// Credentials and deny-list (reloadable), for the scheduler link and
    /// peer links.
    pub tls: TlsConfigHandle,
    /// This worker's metrics (served by `main` on `metrics_bound`).
    pub metrics: Arc<WorkerMetrics>,
    /// Where the metrics endpoint listens, if anywhere.
    pub metrics_bound: Option<std::net::SocketAddr>,
    /// What the peer endpoint admits.
    pub peer_limits: crate::peer::PeerLimits,
    /// The only directories tasks may read and write.
    pub data_roots: Arc<crate::roots::DataRoots>,
    /// Object-store access: allowed prefixes, credentials, request limits.
    pub storage: stratus_storage::StoragePolicy,
    /// Its counters (also read by the metrics).
    pub storage_stats: Arc<stratus_storage::StorageStats>,
    /// How long to keep trying to reconnect to a lost scheduler.
    pub reconnect_timeout: Duration,
    /// Where the scheduler is now (re-read before each reconnect attempt).
    pub relocate: Relocate,
    /// How SIGTERM reaches the scheduler as a retire request.
    pub drain: Arc<crate::drain::Drain>,
    /// The spill directory and when to spill (None: partitions past the
    /// memory limit are refused).
    pub spill: Option<(Arc<SpillDir>, crate::store::SpillPolicy)>,
}

/// The source address the kernel picks for packets to `remote`: `connect`
/// on a UDP socket only looks up the route, nothing is sent.
fn source_ip_toward(remote: std::net::SocketAddr) -> Option<std::net::IpAddr> {
    let any: std::net::SocketAddr = match remote {
        std::net::SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        std::net::SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = std::net::UdpSocket::bind(any).ok()?;
    socket.connect(remote).ok()?;
    Some(socket.local_addr().ok()?.ip())
}

/// Re-reads where the scheduler is (its scheduler file may name a new
/// port after a restart); None keeps the address last used.
#[derive(Clone)]
pub struct Relocate(pub Arc<dyn Fn() -> Option<String> + Send + Sync>);

impl std::fmt::Debug for Relocate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Relocate")
    }
}

/// First wait before reconnecting to a lost scheduler; it doubles up to
/// [`RECONNECT_MAX_DELAY`].
const RECONNECT_FIRST_DELAY: Duration = Duration::from_millis(250);
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(5);

/// One registered connection to the scheduler.
struct Link {
    conn: quinn::Connection,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    id: u64,
    incarnation: u64,
    /// Its endpoint (kept alive with the connection).
    _endpoint: quinn::Endpoint,
}

/// Dial the scheduler at `address` and register as `role`.
async fn register(
    config: &WorkerConfig,
    address: &str,
    role: &dyn Fn(std::net::IpAddr) -> PeerRole,
) -> Result<(Link, std::net::IpAddr), ProtocolError> {
    let tls = config.tls.current();
    let endpoint = stratus_protocol::transport::client_endpoint(
        stratus_protocol::transport::client_config(tls.credentials(), Role::Scheduler, tls.deny())?,
    )?;
    let conn = stratus_protocol::transport::connect(&endpoint, address).await?;
    // Peers reach us on the address we reach the scheduler from. quinn's
    // `Connection::local_ip` is always None on the dialing side, so ask the
    // kernel which source address its route to the scheduler uses.
    let local_ip = conn
        .local_ip()
        .or_else(|| source_ip_toward(conn.remote_address()))
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let peer = format!("scheduler {address}");
    let Introduced {
        send,
        recv,
        peer_id,
        incarnation,
    } = stratus_protocol::handshake::introduce(&conn, role(local_ip), &peer).await?;
    Ok((
        Link {
            conn,
            send,
            recv,
            id: peer_id,
            incarnation,
            _endpoint: endpoint,
        },
        local_ip,
    ))
}

/// Connect, register, and serve the scheduler. When the connection is
/// lost the worker keeps its partitions and reconnects with back-off for up
/// to `reconnect_timeout`: to a new start of the scheduler it re-registers
/// what it holds; to the start that removed it (silent too long), it joins
/// fresh. Returns an error naming the scheduler when it gives up.
pub async fn run(config: WorkerConfig) -> Result<(), ProtocolError> {
    let peers: std::sync::OnceLock<Arc<PeerService>> = std::sync::OnceLock::new();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    // The peer endpoint is bound once, on the address of the first route to
    // the scheduler, and advertised on every registration.
    let bind_error: std::sync::Mutex<Option<ProtocolError>> = std::sync::Mutex::new(None);
    let role = |local_ip: std::net::IpAddr| {
        let peer_address = match peers.get() {
            Some(p) => p.address.clone(),
            None => match PeerService::bind(
                local_ip,
                config.metrics.connections().clone(),
                config.tls.clone(),
            ) {
                Ok(p) => {
                    let address = p.address.clone();
                    let _ = peers.set(p);
                    address
                }
                Err(e) => {
                    *bind_error.lock().expect("not poisoned") = Some(e);
                    String::new()
                }
            },
        };
        PeerRole::Worker(WorkerInfo {
            name: config.name.clone(),
            host: host.clone(),
            pid: std::process::id(),
            nthreads: config.nthreads,
            memory_limit: config.memory_limit,
            metrics_address: config
                .metrics_bound
                .map(|bound| crate::metrics::public_address(bound, local_ip)),
            peer_address,
            // The scheduler reads the name from our verified certificate.
            cert_name: String::new(),
        })
    };
    let mut address = config.address.clone();
    let (mut link, _) = register(&config, &address, &role).await?;
    if let Some(e) = bind_error.lock().expect("not poisoned").take() {
        return Err(e);
    }
    let peers = peers
        .get()
        .expect("bound at the first registration")
        .clone();
    info!(
        "worker '{}' registered with {address} as #{} (scheduler incarnation {})",
        config.name, link.id, link.incarnation
    );

    let (outbox, outbox_rx) = mpsc::unbounded_channel::<FromWorker>();
    let outbox_rx = Arc::new(tokio::sync::Mutex::new(outbox_rx));
    let retire_outbox = outbox.clone();
    let state = WorkerState::new(state::Config {
        name: config.name.clone(),
        id: link.id,
        nthreads: config.nthreads,
        memory_limit: config.memory_limit,
        spill: config.spill.as_ref().map(|(_, policy)| *policy),
    });
    let spill_dir = config.spill.as_ref().map(|(dir, _)| dir.clone());
    let metrics = config.metrics.clone();
    let exec_peers = peers.clone();
    let data_roots = config.data_roots.clone();
    let storage = config.storage.clone();
    let storage_stats = config.storage_stats.clone();
    let actor = WorkerActor::create(move |ctx| {
        let me = ctx.address().downgrade();
        let done_to = me.clone();
        WorkerActor {
            state,
            exec: Executor {
                peers: exec_peers,
                roots: data_roots,
                remote: Arc::new(crate::remote::Remote::new(
                    stratus_storage::Storage::with_stats(storage, storage_stats),
                    tokio::runtime::Handle::current(),
                )),
                local: deliver_weak(me),
                done: Arc::new(move |id, result, working| {
                    if let Some(actor) = done_to.upgrade() {
                        actor.do_send(Input(Event::TaskDone {
                            id,
                            result,
                            working,
                        }));
                    }
                }),
            },
            outbox,
            metrics,
            held: None,
            spill_dir,
            me: ctx.address().downgrade(),
            unanswered: HashMap::new(),
            next_ticket: 0,
        }
    });
    let deliver = deliver_to(actor.clone());
    tokio::spawn(peers.clone().serve(deliver, config.peer_limits));

    loop {
        config.metrics.set_registered(true);
        // systemd (Type=notify): registered, so ready (again).
        stratus_protocol::sd_notify::notify_or_log("READY=1");
        let peer = format!("scheduler {address}");
        config.drain.connected(retire_outbox.clone());
        let lost = serve(link, &actor, &peers, &outbox_rx, &config, &peer).await;
        config.drain.disconnected();
        config.metrics.set_registered(false);
        match &lost {
            Lost::Retired => return Ok(()),
            // Asked to stop: nothing to reconnect for.
            _ if config.drain.requested() => {
                warn!("lost {peer} while retiring ({lost}): exiting");
                return Ok(());
            }
            _ => {}
        }
        let held = actor.send(HeldNow).await.unwrap_or(0);
        warn!(
            "lost {peer}: {lost}; keeping {held} partition(s) and reconnecting for up to {}",
            stratus_protocol::units::format_duration(config.reconnect_timeout)
        );
        stratus_protocol::sd_notify::notify_or_log("STATUS=reconnecting to the scheduler");
        let previous = match &lost {
            Lost::Removed(incarnation) | Lost::Connection(incarnation, _) => *incarnation,
            Lost::Retired => unreachable!("returned above"),
        };
        let deadline = tokio::time::Instant::now() + config.reconnect_timeout;
        let mut delay = RECONNECT_FIRST_DELAY;
        link = loop {
            if let Some(found) = (config.relocate.0)() {
                address = found;
            }
            match register(&config, &address, &role).await {
                Ok((link, _)) => break link,
                Err(e) => {
                    let now = tokio::time::Instant::now();
                    if now + delay > deadline {
                        return Err(ProtocolError::Peer {
                            peer: format!("scheduler {address}"),
                            what: format!(
                                "lost ({lost}) and not back within {} (reconnect_timeout); last attempt: {e}",
                                stratus_protocol::units::format_duration(config.reconnect_timeout)
                            ),
                        });
                    }
                    debug!("reconnecting to {address}: {e}; next attempt in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RECONNECT_MAX_DELAY);
                }
            }
        };
        config.metrics.reconnected();
        // The same start of the scheduler welcoming us again removed us:
        // what we hold was rebuilt elsewhere; join fresh.
        let keep_partitions = link.incarnation != previous;
        let held = actor
            .send(Rejoin {
                id: link.id,
                keep_partitions,
            })
            .await
            .unwrap_or_default();
        // Nothing queued for the old connection goes to the new one.
        {
            let mut rx = outbox_rx.lock().await;
            while rx.try_recv().is_ok() {}
        }
        if keep_partitions {
            info!(
                "worker '{}' registered again with {address} as #{} (a new start of the scheduler, incarnation {}): re-registering {} partition(s)",
                config.name,
                link.id,
                link.incarnation,
                held.len()
            );
            let held = FromWorker::Held(
                held.into_iter()
                    .map(|(key, rows, bytes)| HeldPartition { key, rows, bytes })
                    .collect(),
            );
            send_message(&mut link.send, &held, &format!("scheduler {address}")).await?;
        } else {
            warn!(
                "worker '{}' registered again with {address} as #{}: the scheduler had removed it, so it dropped what it held and joined fresh",
                config.name, link.id
            );
        }
    }
}

/// Why a connection to the scheduler ended (with its incarnation).
enum Lost {
    /// The scheduler retired this worker: exit (status 0).
    Retired,
    /// The scheduler closed it, removing this worker.
    Removed(u64),
    /// It broke or closed otherwise.
    Connection(u64, ProtocolError),
}

impl std::fmt::Display for Lost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Lost::Retired => f.write_str("the scheduler retired this worker"),
            Lost::Removed(_) => f.write_str("the scheduler removed this worker"),
            Lost::Connection(_, e) => write!(f, "{e}"),
        }
    }
}

/// How many partitions the worker holds.
#[derive(Message)]
#[rtype(result = "usize")]
struct HeldNow;

impl Handler<HeldNow> for WorkerActor {
    type Result = usize;
    fn handle(&mut self, _: HeldNow, _: &mut Context<Self>) -> usize {
        self.state.store().len()
    }
}

/// Registered again (see [`Event::Rejoin`]); the answer is what to
/// re-register.
#[derive(Message)]
#[rtype(result = "Vec<(PartitionKey, u64, u64)>")]
struct Rejoin {
    id: u64,
    keep_partitions: bool,
}

impl Handler<Rejoin> for WorkerActor {
    type Result = MessageResult<Rejoin>;
    fn handle(&mut self, msg: Rejoin, _: &mut Context<Self>) -> Self::Result {
        self.held = None;
        self.feed(Event::Rejoin {
            id: msg.id,
            keep_partitions: msg.keep_partitions,
        });
        MessageResult(self.held.take().unwrap_or_default())
    }
}

/// Serve one registered connection until it ends.
async fn serve(
    link: Link,
    actor: &Addr<WorkerActor>,
    peers: &Arc<PeerService>,
    outbox_rx: &Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<FromWorker>>>,
    config: &WorkerConfig,
    peer: &str,
) -> Lost {
    let Link {
        conn,
        mut send,
        mut recv,
        incarnation,
        ..
    } = link;
    let _tracked = config
        .metrics
        .connections()
        .track(PeerKind::Scheduler, "scheduler", &conn);

    // Writer: send heartbeats as they come, and batch reports that queued up.
    let writer_peer = peer.to_string();
    let outbox_rx = outbox_rx.clone();
    let writer = tokio::spawn(async move {
        let mut outbox_rx = outbox_rx.lock().await;
        while let Some(first) = outbox_rx.recv().await {
            let mut reports = Vec::new();
            let mut batch_bytes = 0usize;
            let mut pending = vec![first];
            while let Ok(more) = outbox_rx.try_recv() {
                pending.push(more);
            }
            for message in pending {
                match message {
                    FromWorker::Reports(r) => {
                        // Big results go in frames of their own, well under the frame limit.
                        for report in r {
                            let size = match &report {
                                TaskReport::Finished { output, .. } => {
                                    crate::tasks::approx_output_bytes(output)
                                }
                                TaskReport::Failed { error, .. } => error.len(),
                            };
                            if batch_bytes + size > REPORT_BATCH_BYTES && !reports.is_empty() {
                                let full = FromWorker::Reports(std::mem::take(&mut reports));
                                batch_bytes = 0;
                                if send_message(&mut send, &full, &writer_peer).await.is_err() {
                                    return;
                                }
                            }
                            batch_bytes += size;
                            reports.push(report);
                        }
                    }
                    other => {
                        if send_message(&mut send, &other, &writer_peer).await.is_err() {
                            return;
                        }
                    }
                }
            }
            if !reports.is_empty()
                && send_message(&mut send, &FromWorker::Reports(reports), &writer_peer)
                    .await
                    .is_err()
            {
                return;
            }
        }
    });

    let announcements = peers.announcements().clone();
    let lost = loop {
        let frame = match read_frame(&mut recv, peer).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                break Lost::Connection(
                    incarnation,
                    ProtocolError::Peer {
                        peer: peer.to_string(),
                        what: "closed the control stream".into(),
                    },
                )
            }
            Err(e) => {
                // The scheduler closes the connection with code 1 when it
                // removes a worker.
                if let Some(quinn::ConnectionError::ApplicationClosed(close)) = conn.close_reason()
                {
                    if close.error_code == quinn::VarInt::from_u32(1) {
                        warn!(
                            "the scheduler removed this worker: {}",
                            String::from_utf8_lossy(&close.reason)
                        );
                        break Lost::Removed(incarnation);
                    }
                }
                break Lost::Connection(incarnation, e);
            }
        };
        match access::<ArchivedToWorker>(&frame, peer) {
            Ok(ArchivedToWorker::Run(tasks)) => {
                let owned: Result<Vec<TaskAssignment>, _> =
                    tasks.iter().map(|t| to_owned(t, peer)).collect();
                match owned {
                    Ok(tasks) => actor.do_send(Input(Event::Run(tasks))),
                    Err(e) => {
                        conn.close(2u32.into(), b"invalid frame");
                        break Lost::Connection(incarnation, e);
                    }
                }
            }
            Ok(ArchivedToWorker::Cancel(ids)) => {
                actor.do_send(Input(Event::Cancel(
                    ids.iter().map(|i| i.to_native()).collect(),
                )));
            }
            Ok(ArchivedToWorker::Forget { job }) => {
                announcements.forget(job.to_native());
                actor.do_send(Input(Event::Forget {
                    job: job.to_native(),
                }))
            }
            Ok(ArchivedToWorker::Expect { job, sender }) => {
                announcements.expect(job.to_native(), sender.to_string());
            }
            Ok(ArchivedToWorker::Drop(keys)) => {
                actor.do_send(Input(Event::Drop(
                    keys.iter()
                        .map(|k| PartitionKey {
                            frame: k.frame.to_native(),
                            index: k.index.to_native(),
                        })
                        .collect(),
                )));
            }
            Ok(ArchivedToWorker::Exit { reason }) => {
                info!("the scheduler retired this worker ({reason}); exiting");
                conn.close(0u32.into(), b"retired");
                break Lost::Retired;
            }
            Err(e) => {
                conn.close(2u32.into(), b"invalid frame");
                break Lost::Connection(incarnation, e);
            }
        }
    };
    writer.abort();
    let _ = writer.await;
    lost
}

#[cfg(test)]
mod tests {
    use super::source_ip_toward;

    #[test]
    fn the_source_address_toward_loopback_is_loopback() {
        // Only a route lookup: nothing is sent (port 9 is discard anyway).
        assert_eq!(
            source_ip_toward("127.0.0.1:9".parse().unwrap()),
            Some("127.0.0.1".parse().unwrap())
        );
    }
}
