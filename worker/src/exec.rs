//! Runs the task bodies [`crate::state::WorkerState`] starts: the compute on
//! a blocking thread (so QUIC I/O on the tokio runtime never waits for it),
//! then, for tasks that deliver, the deliveries to mailboxes (a peer's over
//! the peer endpoint, ours back through the actor). It decides nothing: the
//! result goes back to the state machine as it came out.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arrow_array::RecordBatch;
use stratus_protocol::messages::{
    MailboxKey, PartitionKey, StorageOptions, TaskOutput, MAX_PUSH_PARTS,
};

use crate::peer::{Deliver, PeerService};
use crate::remote::Remote;
use crate::roots::DataRoots;
use crate::state::{load, load_each, Computed, Destination, Ready, TaskError, TaskId, Work};
use crate::store::Part;
use crate::tasks;

/// Called with a task body's result.
/// A task's id, result, and the most it allocated at once (its working
/// memory, [`crate::working`]).
pub type OnDone = Arc<dyn Fn(TaskId, Result<Computed, TaskError>, u64) + Send + Sync>;

tokio::task_local! {
    /// The most a task's compute steps allocated at once, so far.
    static TASK_PEAK: std::cell::Cell<u64>;
}

/// What task bodies need from the outside world.
#[derive(Clone)]
pub struct Executor {
    /// Deliveries to other workers.
    pub peers: Arc<PeerService>,
    /// The directories tasks may read and write (checked by the task
    /// bodies before they touch any file).
    pub roots: Arc<DataRoots>,
    /// Object stores (listing, reads, writes).
    pub remote: Arc<Remote>,
    /// Deliveries to this worker's own mailboxes.
    pub local: Deliver,
    /// Where results go.
    pub done: OnDone,
}

impl Executor {
    /// Run a ready task in the background; its result goes to `done`.
    pub fn start(&self, ready: Ready) {
        let this = self.clone();
        tokio::spawn(TASK_PEAK.scope(std::cell::Cell::new(0), async move {
            let Ready { id, work, storage } = ready;
            let result = this.run(work, storage).await;
            let peak = TASK_PEAK.with(std::cell::Cell::get);
            (this.done)(id, result, peak);
        }));
    }

    /// A task that delivers to mailboxes computes, then delivers (its
    /// error may name the peer it could not reach); the others compute.
    async fn run(&self, work: Work, storage: StorageOptions) -> Result<Computed, TaskError> {
        match work {
            Work::GroupByPartial { batches, spec, to } => {
                let batch = compute(move || tasks::groupby_partial(&load(batches)?, &spec)).await?;
                self.deliver_one(to, batch).await
            }
            Work::GroupByMerge { partials, spec, to } => {
                let batch = compute(move || tasks::groupby_merge(&load(partials)?, &spec)).await?;
                self.deliver_one(to, batch).await
            }
            Work::ShuffleSend {
                batches,
                key,
                boundaries_ipc,
                peers,
                job,
                tag_base,
                me,
            } => {
                // Handshakes with the peers not met yet run during the split.
                self.peers.warm(&peers, me);
                // A chunk of partitions at a time: split, delivered, dropped,
                // so the ranges never hold a second copy of the whole share.
                let (mut rows, mut bytes) = (0u64, 0u64);
                let boundaries = Arc::new(boundaries_ipc);
                let chunk_bytes = SHUFFLE_CHUNK_BYTES.load(Ordering::Relaxed);
                for chunk in shuffle_chunks(batches, chunk_bytes) {
                    let (key, boundaries) = (key.clone(), boundaries.clone());
                    let ranges =
                        compute(move || tasks::split_ranges(&load(chunk)?, &key, &boundaries[..]))
                            .await?;
                    let to = Owners {
                        peers: &peers,
                        job,
                        tag_base,
                        me,
                    };
                    let sent = self.shuffle_send(ranges, to).await?;
                    if let Computed::Output(TaskOutput::Delivered { rows: r, bytes: b }) = sent {
                        rows += r;
                        bytes += b;
                    }
                }
                Ok(Computed::Output(TaskOutput::Delivered { rows, bytes }))
            }
            Work::SendPartitions { parts, to, job, me } => {
                let parts = compute(move || load_each(parts)).await?;
                self.send_partitions(parts, to, job, me).await
            }
            work => Ok(self.compute_only(work, storage).await?),
        }
    }

    async fn compute_only(&self, work: Work, storage: StorageOptions) -> Result<Computed, String> {
        let output = |r: Result<TaskOutput, String>| r.map(Computed::Output);
        let (roots, remote) = (self.roots.clone(), self.remote.clone());
        // The task's file access, built inside its compute closure.
        macro_rules! io {
            () => {
                tasks::Io {
                    roots: &roots,
                    remote: &remote,
                    storage: &storage.0,
                }
            };
        }
        match work {
            Work::ListFiles { source } => {
                compute(move || output(tasks::list_files(io!(), &source))).await
            }
            Work::ReadFooters { files } => {
                compute(move || output(tasks::read_footers(io!(), &files))).await
            }
            Work::Load {
                key,
                input,
                columns,
                steps,
            } => {
                compute(move || {
                    tasks::load_counted(io!(), &input, columns.as_deref(), &steps).map(
                        |(batches, fetched)| Computed::Loaded {
                            key,
                            batches,
                            fetched,
                        },
                    )
                })
                .await
            }
            Work::Derive {
                key,
                batches,
                steps,
            } => {
                compute(move || {
                    tasks::derive(load(batches)?, &steps).map(|batches| Computed::Loaded {
                        key,
                        batches,
                        fetched: 0,
                    })
                })
                .await
            }
            Work::GroupByFinal { partials, spec } => {
                compute(move || output(tasks::groupby_final(&load(partials)?, &spec))).await
            }
            Work::PrepareWrite { spec } => {
                compute(move || output(tasks::prepare_write(io!(), &spec))).await
            }
            Work::WriteParts { parts, spec } => {
                compute(move || output(tasks::write_parts(io!(), &load_each(parts)?, &spec))).await
            }
            Work::CommitWrite { spec, staged } => {
                compute(move || output(tasks::commit_write(io!(), &spec, &staged))).await
            }
            Work::AbortWrite { spec } => {
                compute(move || output(tasks::abort_write(io!(), &spec))).await
            }
            Work::SortSample { parts, key, sample } => {
                compute(move || output(tasks::sort_sample(&load_each(parts)?, &key, sample))).await
            }
            Work::Reduce { batches, op } => {
                compute(move || output(tasks::reduce(&load(batches)?, &op))).await
            }
            Work::HeadParquet { input, n, columns } => {
                compute(move || output(tasks::head_parquet(io!(), &input, n, columns.as_deref())))
                    .await
            }
            Work::HeadOf {
                batches,
                n,
                columns,
            } => {
                compute(move || output(tasks::head_of(&load(batches)?, n, columns.as_deref())))
                    .await
            }
            Work::ShuffleCollect {
                received,
                key,
                frame,
            } => {
                compute(move || {
                    let mut sorted = Vec::with_capacity(received.len());
                    for (r, parts) in received {
                        // One range read back at a time.
                        let batches = tasks::sort_range(&load(parts)?, &key)?;
                        sorted.push((PartitionKey { frame, index: r }, batches));
                    }
                    Ok(Computed::LoadedMany(sorted))
                })
                .await
            }
            Work::RebuildRanges {
                frame,
                parts,
                sources,
                key,
                boundaries_ipc,
                steps,
            } => {
                compute(move || {
                    let ranges: Vec<u32> = parts.iter().map(|&(r, _)| r).collect();
                    let rebuilt = tasks::rebuild_ranges(
                        io!(),
                        &sources,
                        &key,
                        &boundaries_ipc,
                        &ranges,
                        &steps,
                    )?;
                    Ok(Computed::LoadedMany(
                        parts
                            .iter()
                            .zip(rebuilt)
                            .map(|(&(_, index), (_, batches))| {
                                (PartitionKey { frame, index }, batches)
                            })
                            .collect(),
                    ))
                })
                .await
            }
            Work::GroupByPartial { .. }
            | Work::GroupByMerge { .. }
            | Work::ShuffleSend { .. }
            | Work::SendPartitions { .. } => {
                Err("internal: a delivering task was run without its deliveries".into())
            }
            // Kept by the state machine (all or none, under the limit).
            Work::Adopt { parts } => {
                compute(move || load_each(parts).map(Computed::LoadedMany)).await
            }
        }
    }

    /// Hand held partitions over to a peer, one delivery each, as they are
    /// (no compute: the batches are encoded straight from the store).
    async fn send_partitions(
        &self,
        parts: Vec<(u32, Vec<RecordBatch>)>,
        to: stratus_protocol::messages::PeerRef,
        job: u64,
        me: u64,
    ) -> Result<Computed, TaskError> {
        let (mut rows, mut bytes) = (0u64, 0u64);
        let mut sends = tokio::task::JoinSet::new();
        for (tag, batches) in parts {
            rows += batches.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            let to = Destination::of(me, to.clone(), MailboxKey { job, tag });
            let this = self.clone();
            sends.spawn(async move { this.deliver(to, batches).await });
        }
        while let Some(sent) = sends.join_next().await {
            bytes += sent.map_err(|e| format!("delivery panicked: {e}"))??;
        }
        Ok(Computed::Output(TaskOutput::Delivered { rows, bytes }))
    }

    /// Deliver one computed batch; the task reports `Delivered` once the
    /// receiver holds it (bytes sent: 0 for our own mailbox).
    async fn deliver_one(
        &self,
        to: Destination,
        batch: RecordBatch,
    ) -> Result<Computed, TaskError> {
        let rows = batch.num_rows() as u64;
        let bytes = self.deliver(to, vec![batch]).await?;
        Ok(Computed::Output(TaskOutput::Delivered { rows, bytes }))
    }

    /// Deliver batches; returns the bytes sent over the network.
    async fn deliver(&self, to: Destination, batches: Vec<RecordBatch>) -> Result<u64, TaskError> {
        match to {
            Destination::Local(push) => {
                (self.local)(push.mailbox, push.from_worker, batches).await?;
                Ok(0)
            }
            Destination::Peer { to, push } => {
                let Some(schema) = batches.first().map(|b| b.schema()) else {
                    return Ok(0);
                };
                self.peers.send(&to, push, &schema, &batches).await
            }
        }
    }

    /// Deliver each range to its owner: the ranges for one peer in one
    /// stream (at most [`MAX_PUSH_PARTS`] each), sent concurrently, each
    /// waiting for its acknowledgement; ours are handed to the actor in turn.
    async fn shuffle_send(
        &self,
        ranges: Vec<Vec<RecordBatch>>,
        to: Owners<'_>,
    ) -> Result<Computed, TaskError> {
        let mut rows = 0u64;
        let mut by_peer: Vec<Vec<(u32, Vec<RecordBatch>)>> =
            (0..to.peers.len()).map(|_| Vec::new()).collect();
        for (r, range) in ranges.into_iter().enumerate() {
            if range.is_empty() {
                continue;
            }
            if to.peers.is_empty() {
                return Err("sort: the ranges have no owners".into());
            }
            let peer = r % to.peers.len();
            rows += range.iter().map(|b| b.num_rows() as u64).sum::<u64>();
            by_peer[peer].push((to.tag_base + r as u32, range));
        }
        let mut sends = tokio::task::JoinSet::new();
        let mut ours = Vec::new();
        for (peer, mut parts) in to.peers.iter().zip(by_peer) {
            if peer.worker == to.me {
                ours = parts;
                continue;
            }
            while !parts.is_empty() {
                let rest = parts.split_off(parts.len().min(MAX_PUSH_PARTS));
                let (this, peer, job, me) = (self.clone(), peer.clone(), to.job, to.me);
                sends.spawn(async move { this.peers.send_parts(&peer, job, me, parts).await });
                parts = rest;
            }
        }
        if let Some(me) = to.peers.iter().find(|p| p.worker == to.me) {
            for (tag, range) in ours {
                let mailbox = MailboxKey { job: to.job, tag };
                self.deliver(Destination::of(to.me, me.clone(), mailbox), range)
                    .await?;
            }
        }
        let mut bytes = 0u64;
        while let Some(sent) = sends.join_next().await {
            bytes += sent.map_err(|e| format!("delivery panicked: {e}"))??;
        }
        Ok(Computed::Output(TaskOutput::Delivered { rows, bytes }))
    }
}

/// Who owns a shuffle's ranges, as a [`Work::ShuffleSend`] names them:
/// range `r` is `peers[r % peers.len()]`'s.
struct Owners<'a> {
    peers: &'a [stratus_protocol::messages::PeerRef],
    job: u64,
    tag_base: u32,
    me: u64,
}

/// Input bytes a shuffle splits and sends at a time (at least one
/// partition): what the sender holds beyond its partitions while it sends
/// (setting `shuffle_chunk_bytes`, default 128 MiB).
static SHUFFLE_CHUNK_BYTES: AtomicU64 = AtomicU64::new(128 << 20);

/// Set the input a shuffle splits and sends at a time.
pub fn set_shuffle_chunk_bytes(bytes: u64) {
    SHUFFLE_CHUNK_BYTES.store(bytes.max(1), Ordering::Relaxed);
}

/// `parts` in consecutive chunks of about `limit` bytes (in RAM, or of Arrow
/// data for spilled ones: [`crate::spill::SpillFile::arrow_bytes`]), each at
/// least one part.
pub fn shuffle_chunks(parts: Vec<Part>, limit: u64) -> Vec<Vec<Part>> {
    let mut chunks: Vec<Vec<Part>> = Vec::new();
    let mut size = 0u64;
    for part in parts {
        let bytes = match &part {
            Part::Batches(b) => stratus_engine::memory::batches_memory_bytes(b) as u64,
            Part::Spilled(file) => file.arrow_bytes(),
        };
        match chunks.last_mut() {
            Some(chunk) if size + bytes <= limit => chunk.push(part),
            _ => {
                chunks.push(vec![part]);
                size = 0;
            }
        }
        size += bytes;
    }
    chunks
}

/// Run a task body on a blocking compute thread.
async fn compute<T, F>(body: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, String> + Send + 'static,
{
    let (result, peak) = tokio::task::spawn_blocking(move || {
        // A panic in a task body fails the task, not the worker.
        let _recoverable = crate::panics::Recoverable::enter();
        let window = crate::working::Window::open();
        let result = body();
        (result, window.peak())
    })
    .await
    .map_err(|e| format!("task panicked: {e}"))?;
    // Outside a task (a test calling a body directly) there is no peak to keep.
    let _ = TASK_PEAK.try_with(|p| p.set(p.get().max(peak)));
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;

    fn part(rows: i64) -> Part {
        let column = Arc::new(Int64Array::from_iter_values(0..rows));
        Part::Batches(vec![
            RecordBatch::try_from_iter([("x", column as _)]).unwrap()
        ])
    }

    #[test]
    fn a_shuffle_splits_its_partitions_in_chunks_of_about_the_limit_each_at_least_one() {
        let one = match &part(1000) {
            Part::Batches(b) => stratus_engine::memory::batches_memory_bytes(b) as u64,
            Part::Spilled(_) => unreachable!(),
        };
        let sizes = |chunks: Vec<Vec<Part>>| chunks.iter().map(Vec::len).collect::<Vec<_>>();
        let parts = || (0..5).map(|_| part(1000)).collect::<Vec<_>>();
        assert_eq!(sizes(shuffle_chunks(parts(), 2 * one)), vec![2, 2, 1]);
        assert_eq!(sizes(shuffle_chunks(parts(), 100 * one)), vec![5]);
        // A partition bigger than the limit is a chunk of its own.
        assert_eq!(sizes(shuffle_chunks(parts(), one / 2)), vec![1, 1, 1, 1, 1]);
        assert!(shuffle_chunks(Vec::new(), one).is_empty());
    }
}
