//! The worker's actor and its QUIC edge to the scheduler.
//!
//! [`WorkerActor`] owns the [`Store`] and the set of running tasks. Task
//! bodies run on blocking compute threads (at most `nthreads` at a time), so
//! the QUIC I/O on the tokio runtime never waits for compute. Results come
//! back to the actor, which keeps loaded partitions (or refuses them over the
//! memory limit) and queues reports; a writer task drains the queue and sends
//! whatever has accumulated as one frame.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use arrow_array::RecordBatch;
use tokio::sync::{mpsc, Semaphore};
use tracing::{debug, info};

use stratus_protocol::framing::{access, read_frame, send_message, to_owned};
use stratus_protocol::messages::{
    ArchivedToWorker, ArchivedWelcome, FromWorker, HeadInput, Hello, LoadInput, MailboxKey,
    PartitionKey, PeerPush, PeerRef, PeerRole, ReduceOp, TaskAssignment, TaskKind, TaskOutput,
    TaskReport, WorkerInfo,
};
use stratus_protocol::netstats::PeerKind;
use stratus_protocol::{ProtocolError, PROTOCOL_VERSION, STRATUS_VERSION};

use crate::metrics::{TaskOutcome, WorkerMetrics};
use crate::peer::{Deliver, PeerService};
use crate::store::Store;
use crate::tasks;

/// Heartbeat interval.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

#[derive(Message)]
#[rtype(result = "()")]
struct Run(Vec<TaskAssignment>);

#[derive(Message)]
#[rtype(result = "()")]
struct Cancel(Vec<u64>);

#[derive(Message)]
#[rtype(result = "()")]
struct DropPartitions(Vec<PartitionKey>);

enum Computed {
    Output(TaskOutput),
    Loaded {
        key: PartitionKey,
        batches: Vec<RecordBatch>,
    },
    /// Several partitions to keep (a shuffle's ranges).
    LoadedMany(Vec<(PartitionKey, Vec<RecordBatch>)>),
}

#[derive(Message)]
#[rtype(result = "()")]
struct Done {
    id: u64,
    result: Result<Computed, String>,
}

/// Owns the persisted partitions and the running tasks of this worker.
pub struct WorkerActor {
    name: String,
    /// Our id at the scheduler (peers see it as the sender of deliveries).
    id: u64,
    store: Store,
    /// Data peers delivered for jobs: one entry per delivery.
    running: HashSet<u64>,
    cancelled: HashSet<u64>,
    outbox: mpsc::UnboundedSender<FromWorker>,
    compute: Arc<Semaphore>,
    peers: Arc<PeerService>,
    metrics: Arc<WorkerMetrics>,
}

/// Data delivered by a peer (or by ourselves) to a mailbox.
#[derive(Message)]
#[rtype(result = "Result<(), String>")]
struct Delivery {
    mailbox: MailboxKey,
    batches: Vec<RecordBatch>,
}

#[derive(Message)]
#[rtype(result = "()")]
struct Forget(u64);

impl Handler<Delivery> for WorkerActor {
    type Result = Result<(), String>;
    fn handle(&mut self, msg: Delivery, _: &mut Context<Self>) -> Self::Result {
        self.store.deliver(&self.name, msg.mailbox, msg.batches)
    }
}

impl Handler<Forget> for WorkerActor {
    type Result = ();
    fn handle(&mut self, msg: Forget, _: &mut Context<Self>) {
        self.store.forget_job(msg.0);
    }
}

impl WorkerActor {
    fn report(&self, report: TaskReport) {
        self.metrics.task_reported(&report);
        self.metrics.observe_store(&self.store);
        let _ = self.outbox.send(FromWorker::Reports(vec![report]));
    }

    /// The partial group-bys delivered to a mailbox: exactly `expect` of them.
    fn take_partials(
        &mut self,
        mailbox: &MailboxKey,
        expect: u32,
    ) -> Result<Vec<RecordBatch>, String> {
        let parts = self.store.take_mailbox(mailbox);
        if parts.len() != expect as usize {
            return Err(format!(
                "worker '{}': expected {expect} partial group-bys in mailbox {}/{}, received {}",
                self.name,
                mailbox.job,
                mailbox.tag,
                parts.len()
            ));
        }
        Ok(parts.into_iter().flatten().collect())
    }

    /// The batches of these held partitions, in order (cheap clones).
    fn held(&self, keys: &[PartitionKey]) -> Result<Vec<RecordBatch>, String> {
        let mut out = Vec::new();
        for key in keys {
            match self.store.get(key) {
                Some(p) => out.extend(p.batches.iter().cloned()),
                None => {
                    return Err(format!(
                        "worker '{}' does not hold partition {}/{}",
                        self.name, key.frame, key.index
                    ))
                }
            }
        }
        Ok(out)
    }

    /// Each held partition's batches, by key.
    fn held_each(
        &self,
        keys: &[PartitionKey],
    ) -> Result<Vec<(PartitionKey, Vec<RecordBatch>)>, String> {
        keys.iter()
            .map(|key| Ok((*key, self.held(std::slice::from_ref(key))?)))
            .collect()
    }

    fn refuse(&mut self, id: u64, error: String) {
        self.running.remove(&id);
        self.report(TaskReport::Failed { id, error });
    }
}

impl Actor for WorkerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(HEARTBEAT, |actor, _| {
            actor.metrics.observe_store(&actor.store);
            let _ = actor.outbox.send(FromWorker::Heartbeat {
                memory_used: actor.store.used() + actor.store.in_flight(),
                running: actor.running.len() as u32,
            });
        });
    }
}

fn spawn_compute<F>(compute: Arc<Semaphore>, me: Addr<WorkerActor>, id: u64, body: F)
where
    F: FnOnce() -> Result<Computed, String> + Send + 'static,
{
    tokio::spawn(async move {
        let Ok(_permit) = compute.acquire_owned().await else {
            return;
        };
        let result = match tokio::task::spawn_blocking(body).await {
            Ok(result) => result,
            Err(e) => Err(format!("task panicked: {e}")),
        };
        me.do_send(Done { id, result });
    });
}

/// Compute one batch on a compute thread and deliver it to `push.mailbox` on
/// `to` (through our own actor when `to` is us); the task reports
/// `Delivered` once the receiver holds it.
fn compute_and_deliver<F>(
    compute: Arc<Semaphore>,
    me: Addr<WorkerActor>,
    peers: Arc<PeerService>,
    id: u64,
    push: PeerPush,
    to: PeerRef,
    body: F,
) where
    F: FnOnce() -> Result<RecordBatch, String> + Send + 'static,
{
    tokio::spawn(async move {
        let result = async {
            let _permit = compute.acquire_owned().await.map_err(|e| e.to_string())?;
            let batch = tokio::task::spawn_blocking(body)
                .await
                .map_err(|e| format!("task panicked: {e}"))??;
            let rows = batch.num_rows() as u64;
            let bytes = if to.worker == push.from_worker {
                me.send(Delivery {
                    mailbox: push.mailbox,
                    batches: vec![batch],
                })
                .await
                .map_err(|e| e.to_string())??;
                0
            } else {
                peers.send(&to, push, &batch.schema(), &[batch]).await?
            };
            Ok(Computed::Output(TaskOutput::Delivered { rows, bytes }))
        }
        .await;
        me.do_send(Done { id, result });
    });
}

impl Handler<Run> for WorkerActor {
    type Result = ();
    fn handle(&mut self, msg: Run, ctx: &mut Context<Self>) {
        for task in msg.0 {
            let id = task.id;
            self.running.insert(id);
            self.metrics.task_started(id, &task.kind);
            let me = ctx.address();
            let compute = self.compute.clone();
            match task.kind {
                TaskKind::ListFiles { source } => spawn_compute(compute, me, id, move || {
                    tasks::list_files(&source).map(Computed::Output)
                }),
                TaskKind::ReadFooters { files } => spawn_compute(compute, me, id, move || {
                    tasks::read_footers(&files).map(Computed::Output)
                }),
                TaskKind::Load {
                    key,
                    input: LoadInput::Parquet(input),
                    columns,
                    steps,
                } => spawn_compute(compute, me, id, move || {
                    tasks::load(&input, columns.as_deref(), &steps)
                        .map(|batches| Computed::Loaded { key, batches })
                }),
                TaskKind::Load {
                    key,
                    input: LoadInput::Persisted(parent),
                    steps,
                    ..
                } => match self.held(&[parent]) {
                    Ok(batches) => spawn_compute(compute, me, id, move || {
                        tasks::derive(batches, &steps)
                            .map(|batches| Computed::Loaded { key, batches })
                    }),
                    Err(error) => self.refuse(id, error),
                },
                TaskKind::GroupByPartial {
                    partitions,
                    spec,
                    mailbox,
                    deliver_to,
                } => match self.held(&partitions) {
                    Ok(batches) => {
                        let push = PeerPush {
                            mailbox,
                            from_worker: self.id,
                        };
                        compute_and_deliver(
                            compute,
                            me,
                            self.peers.clone(),
                            id,
                            push,
                            deliver_to,
                            move || tasks::groupby_partial(&batches, &spec),
                        );
                    }
                    Err(error) => self.refuse(id, error),
                },
                TaskKind::GroupByMerge {
                    spec,
                    mailbox,
                    expect,
                    deliver_to,
                    out,
                } => match self.take_partials(&mailbox, expect) {
                    Err(error) => self.refuse(id, error),
                    Ok(partials) => {
                        let push = PeerPush {
                            mailbox: out,
                            from_worker: self.id,
                        };
                        compute_and_deliver(
                            compute,
                            me,
                            self.peers.clone(),
                            id,
                            push,
                            deliver_to,
                            move || tasks::groupby_merge(&partials, &spec),
                        );
                    }
                },
                TaskKind::GroupByFinal {
                    spec,
                    mailbox,
                    expect,
                } => match self.take_partials(&mailbox, expect) {
                    Err(error) => self.refuse(id, error),
                    Ok(batches) => spawn_compute(compute, me, id, move || {
                        tasks::groupby_final(&batches, &spec).map(Computed::Output)
                    }),
                },
                TaskKind::PrepareWrite { spec } => spawn_compute(compute, me, id, move || {
                    tasks::prepare_write(&spec).map(Computed::Output)
                }),
                TaskKind::WriteParts { partitions, spec } => match self.held_each(&partitions) {
                    Ok(parts) => spawn_compute(compute, me, id, move || {
                        tasks::write_parts(&parts, &spec).map(Computed::Output)
                    }),
                    Err(error) => self.refuse(id, error),
                },
                TaskKind::CommitWrite { spec, staged } => {
                    spawn_compute(compute, me, id, move || {
                        tasks::commit_write(&spec, &staged).map(Computed::Output)
                    })
                }
                TaskKind::AbortWrite { spec } => spawn_compute(compute, me, id, move || {
                    tasks::abort_write(&spec).map(Computed::Output)
                }),
                TaskKind::Reduce {
                    partitions,
                    op: ReduceOp::SortSample { key, sample },
                } => match self.held_each(&partitions) {
                    Ok(parts) => spawn_compute(compute, me, id, move || {
                        tasks::sort_sample(&parts, &key, sample as usize).map(Computed::Output)
                    }),
                    Err(error) => self.refuse(id, error),
                },
                TaskKind::ShuffleSend {
                    partitions,
                    key,
                    boundaries_ipc,
                    owners,
                    job,
                    tag_base,
                } => match self.held(&partitions) {
                    Ok(batches) => {
                        let peers = self.peers.clone();
                        let my_id = self.id;
                        tokio::spawn(async move {
                            let result = async {
                                let _permit =
                                    compute.acquire_owned().await.map_err(|e| e.to_string())?;
                                let ranges = tokio::task::spawn_blocking(move || {
                                    tasks::split_ranges(&batches, &key, &boundaries_ipc)
                                })
                                .await
                                .map_err(|e| format!("task panicked: {e}"))??;
                                let (mut rows, mut bytes) = (0u64, 0u64);
                                // Deliveries to peers run concurrently (each waits
                                // for its acknowledgement); ours go to our actor.
                                let mut sends = tokio::task::JoinSet::new();
                                for (r, range) in ranges.into_iter().enumerate() {
                                    let Some(schema) = range.first().map(|b| b.schema()) else {
                                        continue;
                                    };
                                    let owner =
                                        owners.get(r).ok_or("sort: a range has no owner")?.clone();
                                    let mailbox = MailboxKey {
                                        job,
                                        tag: tag_base + r as u32,
                                    };
                                    rows += range.iter().map(|b| b.num_rows() as u64).sum::<u64>();
                                    if owner.worker == my_id {
                                        me.send(Delivery {
                                            mailbox,
                                            batches: range,
                                        })
                                        .await
                                        .map_err(|e| e.to_string())??;
                                    } else {
                                        let push = PeerPush {
                                            mailbox,
                                            from_worker: my_id,
                                        };
                                        let peers = peers.clone();
                                        sends.spawn(async move {
                                            peers.send(&owner, push, &schema, &range).await
                                        });
                                    }
                                }
                                while let Some(sent) = sends.join_next().await {
                                    bytes +=
                                        sent.map_err(|e| format!("delivery panicked: {e}"))??;
                                }
                                Ok(Computed::Output(TaskOutput::Delivered { rows, bytes }))
                            }
                            .await;
                            me.do_send(Done { id, result });
                        });
                    }
                    Err(error) => self.refuse(id, error),
                },
                TaskKind::ShuffleCollect {
                    ranges,
                    key,
                    job,
                    tag_base,
                    frame,
                } => {
                    let received: Vec<(u32, Vec<RecordBatch>)> = ranges
                        .iter()
                        .map(|r| {
                            let mailbox = MailboxKey {
                                job,
                                tag: tag_base + r,
                            };
                            let batches = self
                                .store
                                .take_mailbox(&mailbox)
                                .into_iter()
                                .flatten()
                                .collect();
                            (*r, batches)
                        })
                        .collect();
                    spawn_compute(compute, me, id, move || {
                        let mut sorted = Vec::with_capacity(received.len());
                        for (r, batches) in received {
                            let batches = tasks::sort_range(&batches, &key)?;
                            sorted.push((PartitionKey { frame, index: r }, batches));
                        }
                        Ok(Computed::LoadedMany(sorted))
                    })
                }
                TaskKind::RebuildRanges {
                    frame,
                    parts,
                    sources,
                    key,
                    boundaries_ipc,
                    steps,
                } => spawn_compute(compute, me, id, move || {
                    let ranges: Vec<u32> = parts.iter().map(|&(r, _)| r).collect();
                    let rebuilt =
                        tasks::rebuild_ranges(&sources, &key, &boundaries_ipc, &ranges, &steps)?;
                    Ok(Computed::LoadedMany(
                        parts
                            .iter()
                            .zip(rebuilt)
                            .map(|(&(_, index), (_, batches))| {
                                (PartitionKey { frame, index }, batches)
                            })
                            .collect(),
                    ))
                }),
                TaskKind::Reduce { partitions, op } => match self.held(&partitions) {
                    Ok(batches) => spawn_compute(compute, me, id, move || {
                        tasks::reduce(&batches, &op).map(Computed::Output)
                    }),
                    Err(error) => self.refuse(id, error),
                },
                TaskKind::Head {
                    input: HeadInput::Parquet(input),
                    n,
                    columns,
                } => spawn_compute(compute, me, id, move || {
                    tasks::head_parquet(&input, n, columns.as_deref()).map(Computed::Output)
                }),
                TaskKind::Head {
                    input: HeadInput::Persisted(key),
                    n,
                    columns,
                } => match self.store.get(&key) {
                    Some(p) => {
                        let batches = p.batches.clone();
                        spawn_compute(compute, me, id, move || {
                            tasks::head_of(&batches, n, columns.as_deref()).map(Computed::Output)
                        })
                    }
                    None => {
                        self.running.remove(&id);
                        self.report(TaskReport::Failed {
                            id,
                            error: format!(
                                "worker '{}' does not hold partition {}/{}",
                                self.name, key.frame, key.index
                            ),
                        });
                    }
                },
            }
        }
    }
}

impl Handler<Done> for WorkerActor {
    type Result = ();
    fn handle(&mut self, msg: Done, _: &mut Context<Self>) {
        let id = msg.id;
        self.running.remove(&id);
        if self.cancelled.remove(&id) {
            debug!("dropping the result of cancelled task {id}");
            self.metrics.task_ended(id, TaskOutcome::Cancelled);
            return;
        }
        let report = match msg.result {
            Ok(Computed::Output(output)) => TaskReport::Finished { id, output },
            Ok(Computed::Loaded { key, batches }) => {
                match self.store.insert(&self.name, key, batches) {
                    Ok((rows, bytes)) => TaskReport::Finished {
                        id,
                        output: TaskOutput::Loaded { key, rows, bytes },
                    },
                    Err(error) => TaskReport::Failed { id, error },
                }
            }
            Ok(Computed::LoadedMany(parts)) => {
                let mut kept: Vec<(PartitionKey, u64, u64)> = Vec::with_capacity(parts.len());
                let mut failure = None;
                for (key, batches) in parts {
                    match self.store.insert(&self.name, key, batches) {
                        Ok((rows, bytes)) => kept.push((key, rows, bytes)),
                        Err(error) => {
                            failure = Some(error);
                            break;
                        }
                    }
                }
                match failure {
                    Some(error) => {
                        for (key, _, _) in kept {
                            self.store.remove(&key);
                        }
                        TaskReport::Failed { id, error }
                    }
                    None => TaskReport::Finished {
                        id,
                        output: TaskOutput::LoadedMany(kept),
                    },
                }
            }
            Err(error) => TaskReport::Failed { id, error },
        };
        self.report(report);
    }
}

impl Handler<Cancel> for WorkerActor {
    type Result = ();
    fn handle(&mut self, msg: Cancel, _: &mut Context<Self>) {
        for id in msg.0 {
            if self.running.contains(&id) {
                self.cancelled.insert(id);
            }
        }
    }
}

impl Handler<DropPartitions> for WorkerActor {
    type Result = ();
    fn handle(&mut self, msg: DropPartitions, _: &mut Context<Self>) {
        for key in msg.0 {
            self.store.remove(&key);
        }
    }
}

/// Settings of a worker process.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    pub name: String,
    pub nthreads: u32,
    pub memory_limit: u64,
    pub address: String,
    pub ca_pem: String,
    /// This worker's metrics (served by `main` on `metrics_bound`).
    pub metrics: Arc<WorkerMetrics>,
    /// Where the metrics endpoint listens, if anywhere.
    pub metrics_bound: Option<std::net::SocketAddr>,
}

/// Connect, register, and serve the scheduler until it goes away.
/// Returns an error naming the scheduler when the connection ends.
pub async fn run(config: WorkerConfig) -> Result<(), ProtocolError> {
    let endpoint = stratus_protocol::transport::client_endpoint(&config.ca_pem)?;
    let conn = stratus_protocol::transport::connect(&endpoint, &config.address).await?;
    // Peers reach us on the address we reach the scheduler from.
    let local_ip = conn
        .local_ip()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST));
    let peers = PeerService::bind(local_ip, config.metrics.connections().clone())?;
    let peer = format!("scheduler {}", config.address);
    let (mut send, mut recv) = conn.open_bi().await.map_err(|e| ProtocolError::Peer {
        peer: peer.clone(),
        what: format!("cannot open control stream: {e}"),
    })?;
    let hello = Hello {
        protocol_version: PROTOCOL_VERSION,
        stratus_version: STRATUS_VERSION.to_string(),
        role: PeerRole::Worker(WorkerInfo {
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
            peer_cert: peers.cert_pem.clone(),
        }),
    };
    send_message(&mut send, &hello, &peer).await?;
    let frame = read_frame(&mut recv, &peer)
        .await?
        .ok_or_else(|| ProtocolError::Peer {
            peer: peer.clone(),
            what: "closed the connection during the handshake".into(),
        })?;
    let my_id = match access::<ArchivedWelcome>(&frame, &peer)? {
        ArchivedWelcome::Accepted { peer_id, .. } => {
            info!(
                "worker '{}' registered with {} as #{}",
                config.name,
                config.address,
                peer_id.to_native()
            );
            peer_id.to_native()
        }
        ArchivedWelcome::Rejected { reason } => {
            return Err(ProtocolError::Peer {
                peer,
                what: format!("refused this worker: {reason}"),
            })
        }
    };

    let _tracked = config
        .metrics
        .connections()
        .track(PeerKind::Scheduler, "scheduler", &conn);
    let (outbox, mut outbox_rx) = mpsc::unbounded_channel::<FromWorker>();
    let actor = WorkerActor {
        name: config.name.clone(),
        id: my_id,
        store: Store::new(config.memory_limit),
        running: HashSet::new(),
        cancelled: HashSet::new(),
        outbox,
        compute: Arc::new(Semaphore::new(config.nthreads.max(1) as usize)),
        peers: peers.clone(),
        metrics: config.metrics.clone(),
    }
    .start();
    let mailbox_owner = actor.clone();
    let deliver: Deliver = Arc::new(move |mailbox, _from, batches| {
        let owner = mailbox_owner.clone();
        Box::pin(async move {
            owner
                .send(Delivery { mailbox, batches })
                .await
                .map_err(|e| e.to_string())?
        })
    });
    tokio::spawn(peers.clone().serve(deliver));

    // Writer: send heartbeats as they come, and batch reports that queued up.
    let writer_peer = peer.clone();
    let writer = tokio::spawn(async move {
        while let Some(first) = outbox_rx.recv().await {
            let mut reports = Vec::new();
            let mut pending = vec![first];
            while let Ok(more) = outbox_rx.try_recv() {
                pending.push(more);
            }
            for message in pending {
                match message {
                    FromWorker::Reports(mut r) => reports.append(&mut r),
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
                    Ok(tasks) => actor.do_send(Run(tasks)),
                    Err(e) => {
                        conn.close(2u32.into(), b"invalid frame");
                        break Err(e);
                    }
                }
            }
            Ok(ArchivedToWorker::Cancel(ids)) => {
                actor.do_send(Cancel(ids.iter().map(|i| i.to_native()).collect()));
            }
            Ok(ArchivedToWorker::Forget { job }) => actor.do_send(Forget(job.to_native())),
            Ok(ArchivedToWorker::Drop(keys)) => {
                actor.do_send(DropPartitions(
                    keys.iter()
                        .map(|k| PartitionKey {
                            frame: k.frame.to_native(),
                            index: k.index.to_native(),
                        })
                        .collect(),
                ));
            }
            Err(e) => {
                conn.close(2u32.into(), b"invalid frame");
                break Err(e);
            }
        }
    };
    writer.abort();
    result
}
