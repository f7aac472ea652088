//! The worker's actor and its QUIC edge to the scheduler.
//!
//! [`WorkerActor`] feeds what happens (tasks assigned, cancels and drops
//! from the scheduler, deliveries from peers, task bodies ending, heartbeat
//! ticks) to the [`WorkerState`] state machine, which makes every decision,
//! and carries out the commands it returns: task bodies go to the
//! [`Executor`] (compute on blocking threads, so the QUIC I/O on the tokio
//! runtime never waits for it), reports and heartbeats go to a queue that a
//! writer task drains, sending whatever has accumulated as one frame.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use arrow_array::RecordBatch;
use tokio::sync::mpsc;
use tracing::{debug, info};

use stratus_protocol::framing::{access, read_frame, send_message, to_owned};
use stratus_protocol::handshake::Introduced;
use stratus_protocol::messages::{
    ArchivedToWorker, FromWorker, MailboxKey, PartitionKey, PeerRole, TaskAssignment, TaskReport,
    WorkerInfo,
};
use stratus_protocol::netstats::PeerKind;
use stratus_protocol::pki::Role;
use stratus_protocol::ProtocolError;

use crate::exec::Executor;
use crate::metrics::{TaskOutcome, WorkerMetrics};
use crate::peer::{Deliver, PeerService, TlsConfigHandle};
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
/// whether it was kept.
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
}

impl WorkerActor {
    /// Hand `event` to the state machine and carry out its commands;
    /// returns the answer to a delivery, if the commands hold one.
    fn feed(&mut self, event: Event) -> Option<Result<(), String>> {
        if let Event::Run(tasks) = &event {
            for task in tasks {
                self.metrics.task_started(task.id, &task.kind);
            }
        }
        let commands = self.state.handle(event);
        self.metrics.observe_store(self.state.store());
        let mut answer = None;
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
                } => {
                    let _ = self.outbox.send(FromWorker::Heartbeat {
                        memory_used,
                        running,
                    });
                }
                Command::Cancelled { id } => {
                    debug!("cancelled task {id} ended; nothing reported");
                    self.metrics.task_ended(id, TaskOutcome::Cancelled);
                }
                Command::Answer(result) => answer = Some(result),
            }
        }
        answer
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
    type Result = Result<(), String>;
    fn handle(&mut self, msg: Delivery, _: &mut Context<Self>) -> Self::Result {
        self.feed(Event::Delivery {
            mailbox: msg.mailbox,
            batches: msg.batches,
        })
        .unwrap_or_else(|| Err("the worker did not answer the delivery".into()))
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
    /// How SIGTERM reaches the scheduler as a retire request.
    pub drain: Arc<crate::drain::Drain>,
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

/// Connect, register, and serve the scheduler until it goes away.
/// Returns an error naming the scheduler when the connection ends.
pub async fn run(config: WorkerConfig) -> Result<(), ProtocolError> {
    let tls = config.tls.current();
    let endpoint = stratus_protocol::transport::client_endpoint(
        stratus_protocol::transport::client_config(tls.credentials(), Role::Scheduler, tls.deny())?,
    )?;
    let conn = stratus_protocol::transport::connect(&endpoint, &config.address).await?;
    // Peers reach us on the address we reach the scheduler from. quinn's
    // `Connection::local_ip` is always None on the dialing side, so ask the
    // kernel which source address its route to the scheduler uses.
    let local_ip = conn
        .local_ip()
        .or_else(|| source_ip_toward(conn.remote_address()))
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let peers = PeerService::bind(
        local_ip,
        config.metrics.connections().clone(),
        config.tls.clone(),
    )?;
    let peer = format!("scheduler {}", config.address);
    let role = PeerRole::Worker(WorkerInfo {
        name: config.name.clone(),
        host: std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        pid: std::process::id(),
        nthreads: config.nthreads,
        memory_limit: config.memory_limit,
        metrics_address: config
            .metrics_bound
            .map(|bound| crate::metrics::public_address(bound, local_ip)),
        peer_address: peers.address.clone(),
        // The scheduler reads the name from our verified certificate.
        cert_name: String::new(),
    });
    let Introduced {
        mut send,
        mut recv,
        peer_id: my_id,
    } = stratus_protocol::handshake::introduce(&conn, role, &peer).await?;
    info!(
        "worker '{}' registered with {} as #{my_id}",
        config.name, config.address
    );
    config.metrics.set_registered(true);
    // systemd (Type=notify): registered, so ready.
    stratus_protocol::sd_notify::notify_or_log("READY=1");

    let _tracked = config
        .metrics
        .connections()
        .track(PeerKind::Scheduler, "scheduler", &conn);
    let (outbox, mut outbox_rx) = mpsc::unbounded_channel::<FromWorker>();
    config.drain.connected(outbox.clone());
    let state = WorkerState::new(state::Config {
        name: config.name.clone(),
        id: my_id,
        nthreads: config.nthreads,
        memory_limit: config.memory_limit,
    });
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
                done: Arc::new(move |id, result| {
                    if let Some(actor) = done_to.upgrade() {
                        actor.do_send(Input(Event::TaskDone { id, result }));
                    }
                }),
            },
            outbox,
            metrics,
        }
    });
    let deliver = deliver_to(actor.clone());
    tokio::spawn(peers.clone().serve(deliver, config.peer_limits));

    // Writer: send heartbeats as they come, and batch reports that queued up.
    let writer_peer = peer.clone();
    let writer = tokio::spawn(async move {
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
                    heartbeat => {
                        if send_message(&mut send, &heartbeat, &writer_peer)
                            .await
                            .is_err()
                        {
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
    let result = loop {
        let frame = match read_frame(&mut recv, &peer).await {
            Ok(Some(frame)) => frame,
            Ok(None) => {
                break Err(ProtocolError::Peer {
                    peer: peer.clone(),
                    what: "closed the control stream".into(),
                })
            }
            Err(e) => break Err(e),
        };
        match access::<ArchivedToWorker>(&frame, &peer) {
            Ok(ArchivedToWorker::Run(tasks)) => {
                let owned: Result<Vec<TaskAssignment>, _> =
                    tasks.iter().map(|t| to_owned(t, &peer)).collect();
                match owned {
                    Ok(tasks) => actor.do_send(Input(Event::Run(tasks))),
                    Err(e) => {
                        conn.close(2u32.into(), b"invalid frame");
                        break Err(e);
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
                break Ok(());
            }
            Err(e) => {
                conn.close(2u32.into(), b"invalid frame");
                break Err(e);
            }
        }
    };
    config.drain.disconnected();
    writer.abort();
    config.metrics.set_registered(false);
    result
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
