//! A task with its inputs resolved: what [`super::WorkerState`] hands to the
//! executor, and how a [`TaskKind`] becomes one. Resolving reads the store
//! (held partitions: cheap `Arc` clones of their batches, or the spill file
//! of a partition on disk, which the task body reads: see [`Part`]) or
//! empties a mailbox (its batches move out), and fails with an error naming
//! the worker and the missing input.

use arrow_array::RecordBatch;
use stratus_protocol::messages::{
    FileRef, GroupBySpec, HeadInput, LoadInput, MailboxKey, ParquetPartition, PartitionKey,
    PeerPush, PeerRef, RangeSource, ReduceOp, StagedFile, Step, TaskKind, WriteSpec,
};

pub use crate::store::Part;
use crate::store::{Residence, Store};

/// Held partitions, in order.
pub type Parts = Vec<Part>;

/// The batches of `parts`, in order (spilled ones read back).
pub fn load(parts: Parts) -> Result<Vec<RecordBatch>, String> {
    let mut out = Vec::new();
    for part in parts {
        match part {
            Part::Batches(batches) => out.extend(batches),
            Part::Spilled(file) => out.extend(crate::spill::read(&file)?),
        }
    }
    Ok(out)
}

/// [`load`] of each keyed group of parts.
pub fn load_each<K>(parts: Vec<(K, Parts)>) -> Result<Vec<(K, Vec<RecordBatch>)>, String> {
    parts.into_iter().map(|(k, p)| Ok((k, load(p)?))).collect()
}

/// Where a computed batch goes: a mailbox of this worker, or a peer's.
#[derive(Debug, Clone, PartialEq)]
pub enum Destination {
    /// Our own mailbox: handed back to this worker's state as a delivery.
    Local(PeerPush),
    /// A peer's mailbox, over the peer endpoint.
    Peer { to: PeerRef, push: PeerPush },
}

impl Destination {
    /// Mailbox `mailbox` on worker `to`, as seen by worker `me`.
    pub fn of(me: u64, to: PeerRef, mailbox: MailboxKey) -> Destination {
        let push = PeerPush {
            mailbox,
            from_worker: me,
            parts: Vec::new(),
        };
        if to.worker == me {
            Destination::Local(push)
        } else {
            Destination::Peer { to, push }
        }
    }
}

/// A task body with everything it reads: the executor runs it without
/// looking at the store.
#[derive(Debug)]
pub enum Work {
    ListFiles {
        source: String,
    },
    ReadFooters {
        files: Vec<FileRef>,
    },
    /// Read a Parquet partition and keep it as `key`.
    Load {
        key: PartitionKey,
        input: ParquetPartition,
        columns: Option<Vec<String>>,
        steps: Vec<Step>,
    },
    /// Derive a partition from a held one and keep it as `key`.
    Derive {
        key: PartitionKey,
        batches: Parts,
        steps: Vec<Step>,
    },
    GroupByPartial {
        batches: Parts,
        spec: GroupBySpec,
        to: Destination,
    },
    GroupByMerge {
        partials: Parts,
        spec: GroupBySpec,
        to: Destination,
    },
    GroupByFinal {
        partials: Parts,
        spec: GroupBySpec,
    },
    PrepareWrite {
        spec: WriteSpec,
    },
    WriteParts {
        parts: Vec<(PartitionKey, Parts)>,
        spec: WriteSpec,
    },
    CommitWrite {
        spec: WriteSpec,
        staged: Vec<StagedFile>,
    },
    AbortWrite {
        spec: WriteSpec,
    },
    SortSample {
        parts: Vec<(PartitionKey, Parts)>,
        key: String,
        sample: usize,
    },
    /// Split by key ranges; range `r` goes to `peers[r % peers.len()]`,
    /// mailbox `(job, tag_base + r)` (our own mailbox when that is `me`).
    ShuffleSend {
        batches: Parts,
        key: String,
        boundaries_ipc: Vec<u8>,
        peers: Vec<PeerRef>,
        job: u64,
        tag_base: u32,
        me: u64,
    },
    /// Sort each range's delivered batches and keep range `r` as `(frame, r)`.
    ShuffleCollect {
        received: Vec<(u32, Parts)>,
        key: String,
        frame: u64,
    },
    RebuildRanges {
        frame: u64,
        parts: Vec<(u32, u32)>,
        sources: Vec<RangeSource>,
        key: String,
        boundaries_ipc: Vec<u8>,
        steps: Vec<Step>,
    },
    Reduce {
        batches: Parts,
        op: ReduceOp,
    },
    HeadParquet {
        input: ParquetPartition,
        n: u64,
        columns: Option<Vec<String>>,
    },
    HeadOf {
        batches: Parts,
        n: u64,
        columns: Option<Vec<String>>,
    },
    /// Deliver each held partition as it is to mailbox `(job, tag)` on `to`
    /// (a retiring worker handing its partitions over).
    SendPartitions {
        parts: Vec<(u32, Parts)>,
        to: PeerRef,
        job: u64,
        me: u64,
    },
    /// Keep what was delivered as these partitions.
    Adopt {
        parts: Vec<(PartitionKey, Parts)>,
    },
}

impl Work {
    /// The kind of work, for what it is learned to need.
    pub fn label(&self) -> &'static str {
        match self {
            Work::ListFiles { .. } => "list_files",
            Work::ReadFooters { .. } => "read_footers",
            Work::Load { .. } => "load",
            Work::Derive { .. } => "derive",
            Work::GroupByPartial { .. } => "groupby_partial",
            Work::GroupByMerge { .. } => "groupby_merge",
            Work::GroupByFinal { .. } => "groupby_final",
            Work::PrepareWrite { .. } => "prepare_write",
            Work::WriteParts { .. } => "write_parts",
            Work::CommitWrite { .. } => "commit_write",
            Work::AbortWrite { .. } => "abort_write",
            Work::SortSample { .. } => "sort_sample",
            Work::ShuffleSend { .. } => "shuffle_send",
            Work::ShuffleCollect { .. } => "shuffle_collect",
            Work::RebuildRanges { .. } => "rebuild_ranges",
            // Each computation its own: a summary works in far more than a
            // memory count.
            Work::Reduce { op, .. } => match op {
                ReduceOp::Summary { .. } => "reduce_summary",
                ReduceOp::Histograms { .. } => "reduce_histograms",
                ReduceOp::MemoryUsage => "reduce_memory_usage",
                ReduceOp::SortSample { .. } => "reduce_sort_sample",
            },
            Work::HeadParquet { .. } => "head_parquet",
            Work::HeadOf { .. } => "head",
            Work::SendPartitions { .. } => "send_partitions",
            Work::Adopt { .. } => "adopt",
        }
    }

    /// How much input the task has, in the unit its working memory scales
    /// with: rows for what reads Parquet, else bytes of the held input (in
    /// RAM, or the Arrow bytes a spilled one reads back to).
    pub fn input_size(&self) -> u64 {
        fn parts(parts: &[Part]) -> u64 {
            parts
                .iter()
                .map(|p| match p {
                    Part::Batches(b) => stratus_engine::memory::batches_memory_bytes(b) as u64,
                    Part::Spilled(file) => file.arrow_bytes(),
                })
                .sum()
        }
        fn keyed<K>(each: &[(K, Parts)]) -> u64 {
            each.iter().map(|(_, p)| parts(p)).sum()
        }
        match self {
            Work::Load { input, .. } | Work::HeadParquet { input, .. } => input.rows,
            Work::RebuildRanges { sources, .. } => sources.iter().map(|s| s.partition.rows).sum(),
            Work::Derive { batches, .. }
            | Work::GroupByPartial { batches, .. }
            | Work::ShuffleSend { batches, .. }
            | Work::Reduce { batches, .. }
            | Work::HeadOf { batches, .. } => parts(batches),
            Work::GroupByMerge { partials, .. } | Work::GroupByFinal { partials, .. } => {
                parts(partials)
            }
            Work::WriteParts { parts: each, .. }
            | Work::SortSample { parts: each, .. }
            | Work::Adopt { parts: each } => keyed(each),
            Work::SendPartitions { parts: each, .. } => keyed(each),
            Work::ShuffleCollect { received, .. } => keyed(received),
            Work::ListFiles { .. }
            | Work::ReadFooters { .. }
            | Work::PrepareWrite { .. }
            | Work::CommitWrite { .. }
            | Work::AbortWrite { .. } => 0,
        }
    }

    /// Whether the task keeps new partitions (it waits while the store is
    /// paused for spilling).
    pub fn adds_data(&self) -> bool {
        matches!(
            self,
            Work::Load { .. } | Work::Derive { .. } | Work::RebuildRanges { .. }
        )
    }
}

/// Resolve the inputs of a task of worker `name` (peer id `me`).
pub(super) fn resolve(
    store: &mut Store,
    name: &str,
    me: u64,
    kind: TaskKind,
) -> Result<Work, String> {
    Ok(match kind {
        TaskKind::ListFiles { source } => Work::ListFiles { source },
        TaskKind::ReadFooters { files } => Work::ReadFooters { files },
        TaskKind::Load {
            key,
            input: LoadInput::Parquet(input),
            columns,
            steps,
        } => Work::Load {
            key,
            input,
            columns,
            steps,
        },
        TaskKind::Load {
            key,
            input: LoadInput::Persisted(parent),
            steps,
            ..
        } => Work::Derive {
            key,
            batches: held(store, name, &[parent])?,
            steps,
        },
        TaskKind::GroupByPartial {
            partitions,
            spec,
            mailbox,
            deliver_to,
        } => Work::GroupByPartial {
            batches: held(store, name, &partitions)?,
            spec,
            to: Destination::of(me, deliver_to, mailbox),
        },
        TaskKind::GroupByMerge {
            spec,
            mailbox,
            expect,
            deliver_to,
            out,
        } => Work::GroupByMerge {
            partials: take_partials(store, name, &mailbox, expect)?,
            spec,
            to: Destination::of(me, deliver_to, out),
        },
        TaskKind::GroupByFinal {
            spec,
            mailbox,
            expect,
        } => Work::GroupByFinal {
            partials: take_partials(store, name, &mailbox, expect)?,
            spec,
        },
        TaskKind::PrepareWrite { spec } => Work::PrepareWrite { spec },
        TaskKind::WriteParts { partitions, spec } => Work::WriteParts {
            parts: held_each(store, name, &partitions)?,
            spec,
        },
        TaskKind::CommitWrite { spec, staged } => Work::CommitWrite { spec, staged },
        TaskKind::AbortWrite { spec } => Work::AbortWrite { spec },
        TaskKind::Reduce {
            partitions,
            op: ReduceOp::SortSample { key, sample },
        } => Work::SortSample {
            parts: held_each(store, name, &partitions)?,
            key,
            sample: sample as usize,
        },
        TaskKind::Reduce { partitions, op } => Work::Reduce {
            batches: held(store, name, &partitions)?,
            op,
        },
        TaskKind::ShuffleSend {
            partitions,
            key,
            boundaries_ipc,
            peers,
            job,
            tag_base,
        } => Work::ShuffleSend {
            batches: held(store, name, &partitions)?,
            key,
            boundaries_ipc,
            peers,
            job,
            tag_base,
            me,
        },
        // A range nothing was delivered to is empty, not missing.
        TaskKind::ShuffleCollect {
            ranges,
            key,
            job,
            tag_base,
            frame,
        } => Work::ShuffleCollect {
            received: ranges
                .iter()
                .map(|&r| {
                    let mailbox = MailboxKey {
                        job,
                        tag: tag_base + r,
                    };
                    (r, store.take_mailbox(&mailbox))
                })
                .collect(),
            key,
            frame,
        },
        TaskKind::RebuildRanges {
            frame,
            parts,
            sources,
            key,
            boundaries_ipc,
            steps,
        } => Work::RebuildRanges {
            frame,
            parts,
            sources,
            key,
            boundaries_ipc,
            steps,
        },
        TaskKind::Head {
            input: HeadInput::Parquet(input),
            n,
            columns,
        } => Work::HeadParquet { input, n, columns },
        TaskKind::Head {
            input: HeadInput::Persisted(key),
            n,
            columns,
        } => Work::HeadOf {
            batches: held(store, name, &[key])?,
            n,
            columns,
        },
        TaskKind::SendPartitions {
            partitions,
            deliver_to,
            job,
        } => Work::SendPartitions {
            parts: partitions
                .iter()
                .map(|(key, tag)| Ok((*tag, held(store, name, std::slice::from_ref(key))?)))
                .collect::<Result<_, String>>()?,
            to: deliver_to,
            job,
            me,
        },
        // A partition with no rows was sent as nothing: an empty mailbox.
        TaskKind::AdoptPartitions { partitions, job } => Work::Adopt {
            parts: partitions
                .iter()
                .map(|&(tag, key)| (key, store.take_mailbox(&MailboxKey { job, tag })))
                .collect(),
        },
    })
}

/// These held partitions, in order (cheap clones of batches in RAM), each
/// marked used now.
fn held(store: &mut Store, name: &str, keys: &[PartitionKey]) -> Result<Parts, String> {
    let mut out = Vec::with_capacity(keys.len());
    for key in keys {
        match store.touch(key) {
            Some(p) => out.push(match &p.residence {
                Residence::Memory(b) | Residence::Spilling(b) => Part::Batches(b.clone()),
                Residence::Disk(file) => Part::Spilled(file.clone()),
            }),
            None => {
                return Err(format!(
                    "worker '{name}' does not hold partition {}/{}",
                    key.frame, key.index
                ))
            }
        }
    }
    Ok(out)
}

/// Each held partition, by key.
fn held_each(
    store: &mut Store,
    name: &str,
    keys: &[PartitionKey],
) -> Result<Vec<(PartitionKey, Parts)>, String> {
    keys.iter()
        .map(|key| Ok((*key, held(store, name, std::slice::from_ref(key))?)))
        .collect()
}

/// The partial group-bys delivered to a mailbox: exactly `expect` of them.
/// The mailbox is emptied either way.
fn take_partials(
    store: &mut Store,
    name: &str,
    mailbox: &MailboxKey,
    expect: u32,
) -> Result<Parts, String> {
    let parts = store.take_mailbox(mailbox);
    if parts.len() != expect as usize {
        return Err(format!(
            "worker '{name}': expected {expect} partial group-bys in mailbox {}/{}, received {}",
            mailbox.job,
            mailbox.tag,
            parts.len()
        ));
    }
    Ok(parts)
}
