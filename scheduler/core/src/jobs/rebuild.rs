//! Background jobs, with no request behind them: [`RebuildJob`] reloads the
//! partitions a lost worker held from their lineage (a Parquet input each;
//! the ranges of a sorted frame together, in one pass over its sources), and
//! [`CleanupJob`] runs one task that undoes what a failed job left behind.
//! A background job ends when its last task has reported.

use std::collections::BTreeMap;

use stratus_protocol::messages::{LoadInput, PartitionKey, TaskKind, TaskOutput};

use super::{Flow, Job, JobCx};
use crate::frames::Origin;
use crate::ids::FrameId;

/// Reload lost partitions from their lineage.
#[derive(Debug)]
pub struct RebuildJob {
    keys: Vec<PartitionKey>,
}

impl RebuildJob {
    /// Rebuild these partitions (no longer held anywhere).
    pub fn new(mut keys: Vec<PartitionKey>) -> RebuildJob {
        keys.sort_unstable();
        RebuildJob { keys }
    }

    /// Keys a rebuild task loads.
    fn keys_of(task: &TaskKind) -> Vec<PartitionKey> {
        match task {
            TaskKind::Load { key, .. } => vec![*key],
            TaskKind::RebuildRanges { frame, parts, .. } => parts
                .iter()
                .map(|&(_, index)| PartitionKey {
                    frame: *frame,
                    index,
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}

impl Job for RebuildJob {
    fn kind(&self) -> &'static str {
        "rebuild"
    }

    fn start(&mut self, cx: &mut JobCx) -> Flow {
        let mut ranges: BTreeMap<FrameId, Vec<(u32, u32)>> = BTreeMap::new();
        for key in std::mem::take(&mut self.keys) {
            let Some(frame) = cx.frames.get_mut(FrameId(key.frame)) else {
                continue;
            };
            let (columns, steps, name, storage) = (
                frame.columns.clone(),
                frame.steps.clone(),
                frame.name.clone(),
                frame.storage.clone(),
            );
            let Some(p) = frame.partitions.get_mut(key.index as usize) else {
                continue;
            };
            if p.loading.is_some() || p.lost.is_some() || p.holder.is_some() {
                continue;
            }
            let input = match &p.origin {
                Some(Origin::Parquet(input)) => input.clone(),
                Some(Origin::Range { range, .. }) => {
                    ranges
                        .entry(FrameId(key.frame))
                        .or_default()
                        .push((*range, key.index));
                    continue;
                }
                None => {
                    let error = format!(
                        "partition {} of '{name}' has no lineage to rebuild it from and \
                         was lost with its worker; persist or sort the frame again",
                        key.index
                    );
                    cx.frames.mark_lost(key, error);
                    cx.frame_changed(FrameId(key.frame));
                    continue;
                }
            };
            let task = cx.spawn_with_storage(
                TaskKind::Load {
                    key,
                    input: LoadInput::Parquet(input),
                    columns,
                    steps,
                },
                storage,
            );
            cx.counters.partitions_rebuilt += 1;
            if let Some(p) = cx.frames.partition_mut(key) {
                p.loading = Some(task);
            }
        }
        for (frame_id, parts) in ranges {
            let Some(frame) = cx.frames.get(frame_id) else {
                continue;
            };
            let Some(Origin::Range { lineage, steps, .. }) = parts
                .first()
                .and_then(|&(_, index)| frame.partitions.get(index as usize))
                .and_then(|p| p.origin.clone())
            else {
                continue;
            };
            let task = cx.spawn_with_storage(
                TaskKind::RebuildRanges {
                    frame: frame_id.0,
                    parts: parts.clone(),
                    sources: lineage.sources.clone(),
                    key: lineage.key.clone(),
                    boundaries_ipc: lineage.boundaries_ipc.clone(),
                    steps,
                },
                frame.storage.clone(),
            );
            cx.counters.partitions_rebuilt += parts.len() as u64;
            for (_, index) in parts {
                if let Some(p) = cx.frames.partition_mut(PartitionKey {
                    frame: frame_id.0,
                    index,
                }) {
                    p.loading = Some(task);
                }
            }
        }
        Flow::Continue
    }

    fn on_output(&mut self, _cx: &mut JobCx, _task: &TaskKind, _output: TaskOutput) -> Flow {
        // The partitions are already held (the state records loads).
        Flow::Continue
    }

    /// The partitions are lost for good; requests that need them get `error`.
    fn on_task_failed(&mut self, cx: &mut JobCx, task: &TaskKind, error: String) -> Flow {
        for key in Self::keys_of(task) {
            if cx.frames.mark_lost(key, error.clone()) {
                cx.frame_changed(FrameId(key.frame));
            }
        }
        Flow::Continue
    }
}

/// One task that undoes what a failed job left behind (a write's staged
/// files). Its outcome changes nothing else.
#[derive(Debug)]
pub struct CleanupJob {
    task: Option<TaskKind>,
}

impl CleanupJob {
    pub fn new(task: TaskKind) -> CleanupJob {
        CleanupJob { task: Some(task) }
    }
}

impl Job for CleanupJob {
    fn kind(&self) -> &'static str {
        "cleanup"
    }

    fn start(&mut self, cx: &mut JobCx) -> Flow {
        if let Some(task) = self.task.take() {
            cx.spawn(task);
        }
        Flow::Continue
    }

    fn on_output(&mut self, _cx: &mut JobCx, _task: &TaskKind, _output: TaskOutput) -> Flow {
        Flow::Continue
    }

    fn on_task_failed(&mut self, _cx: &mut JobCx, _task: &TaskKind, _error: String) -> Flow {
        Flow::Continue
    }
}
