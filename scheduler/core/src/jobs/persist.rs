//! `persist`: load a frame into the workers' RAM, one `Load` task per
//! partition. From Parquet, after the scan: each partition remembers its
//! Parquet input (its lineage). Derived from a persisted frame: each new
//! partition is computed next to its parent partition, moving no data, and
//! inherits the parent's lineage plus the new steps. The frame becomes
//! visible (complete) only when every partition is held; a failed persist
//! drops what it loaded, so no partial frame ever looks complete.
//!
//! A derived frame that replaces its own parent (an in-place sort, `persist
//! NAME --as NAME --replace`) frees each parent partition as soon as its
//! replacement is held, so the old and the new frame never both fill
//! memory: peak memory is the frame plus what the running tasks make, not
//! twice the frame. Only when every parent partition can be rebuilt from its
//! lineage, and not under another running job that reads the parent; new
//! requests on the parent are refused until the job ends. If it fails, the
//! freed parent partitions are rebuilt from their lineage.

use stratus_protocol::messages::{LoadInput, PartitionKey, Step, TaskKind, TaskOutput, ToClient};

use super::scan::{ScanStep, SourceScan};
use super::{Flow, Job, JobCx, Planning};
use crate::frames::{Frame, Origin, PersistedPartition};
use crate::ids::FrameId;
use crate::requests::{check_frame_name, frame_schema};

/// The job for `persist SOURCE --as NAME`: from a persisted frame when
/// `source` names one, else from Parquet.
pub fn plan(
    at: &Planning,
    source: String,
    name: String,
    replace: bool,
    columns: Option<Vec<String>>,
    steps: Vec<Step>,
) -> Result<Box<dyn Job>, String> {
    check_frame_name(&name)?;
    if at.frames.by_name(&name).is_some() && !replace {
        return Err(format!(
            "a frame named '{name}' is already persisted (use --replace, or replace=True from Python, to replace it)"
        ));
    }
    at.check_not_reserved(&name)?;
    if let Some(parent) = at.frame_named(&source)? {
        let mut own = Vec::new();
        if let Some(columns) = columns {
            own.push(Step::Select(columns));
        }
        own.extend(steps);
        return Ok(PersistJob::derived(parent, name, replace, own, None));
    }
    Ok(Box::new(PersistJob {
        name,
        replace,
        input: Input::Parquet {
            source,
            columns,
            steps,
            scan: None,
        },
        frame: None,
        consume: None,
        held_upto: 0,
    }))
}

#[derive(Debug)]
enum Input {
    Parquet {
        source: String,
        columns: Option<Vec<String>>,
        steps: Vec<Step>,
        scan: Option<SourceScan>,
    },
    Derived {
        parent: FrameId,
        /// Steps applied to each parent partition.
        steps: Vec<Step>,
        /// Parent partitions in the new frame's order (default: same order).
        order: Option<Vec<usize>>,
    },
}

#[derive(Debug)]
pub struct PersistJob {
    name: String,
    replace: bool,
    input: Input,
    /// The frame being loaded, once its partitions are planned.
    frame: Option<FrameId>,
    /// Replacing its own parent: what of it to free as the job goes.
    consume: Option<Consume>,
    /// Partitions below this index were held when last looked at: each
    /// load's report looks on from here instead of at every partition.
    held_upto: usize,
}

/// The parent a derived persist replaces in place, partition by partition.
#[derive(Debug)]
struct Consume {
    parent: FrameId,
    /// Parent partition of each new partition.
    source_of: Vec<usize>,
    /// Parent partitions freed so far.
    freed: Vec<PartitionKey>,
}

impl PersistJob {
    /// A frame derived from `parent` by `steps`, partition by partition
    /// (in `order`, by default the parent's).
    pub fn derived(
        parent: FrameId,
        name: String,
        replace: bool,
        steps: Vec<Step>,
        order: Option<Vec<usize>>,
    ) -> Box<dyn Job> {
        Box::new(PersistJob {
            name,
            replace,
            input: Input::Derived {
                parent,
                steps,
                order,
            },
            frame: None,
            consume: None,
            held_upto: 0,
        })
    }

    /// Plan the derived frame: one load next to each parent partition.
    fn start_derived(
        &mut self,
        cx: &mut JobCx,
        parent: FrameId,
        own: Vec<Step>,
        order: Option<Vec<usize>>,
    ) -> Flow {
        let Some(p) = cx.frames.get(parent) else {
            return Flow::Fail(
                "the frame was unpersisted or replaced while this request ran".into(),
            );
        };
        let schema = match stratus_plan::steps_schema(&p.schema, &own) {
            Ok(schema) => schema,
            Err(e) => return Flow::Fail(e.to_string()),
        };
        let mut lineage = p.steps.clone();
        lineage.extend(own.iter().cloned());
        let (columns, parents) = (p.columns.clone(), p.partitions.clone());
        let source = p.name.clone();
        // Rebuilt from the parent's Parquet source, with its options.
        let storage = p.storage.clone();
        let frame = cx.new_frame_id();
        let order = order.unwrap_or_else(|| (0..parents.len()).collect());
        // In place (same name, replaced) and every parent partition
        // rebuildable: free the parent as the new frame is made.
        if self.replace && source == self.name && parents.iter().all(|p| p.origin.is_some()) {
            self.consume = Some(Consume {
                parent,
                source_of: order.clone(),
                freed: Vec::new(),
            });
        }
        let mut partitions = Vec::with_capacity(parents.len());
        for (index, parent_index) in order.into_iter().enumerate() {
            let parent_part = parents[parent_index].clone();
            let task = cx.spawn(TaskKind::Load {
                key: PartitionKey {
                    frame: frame.0,
                    index: index as u32,
                },
                input: LoadInput::Persisted(PartitionKey {
                    frame: parent.0,
                    index: parent_index as u32,
                }),
                columns: None,
                steps: own.clone(),
            });
            let origin = parent_part.origin.map(|origin| match origin {
                Origin::Range {
                    lineage,
                    range,
                    mut steps,
                } => {
                    steps.extend(own.iter().cloned());
                    Origin::Range {
                        lineage,
                        range,
                        steps,
                    }
                }
                parquet @ Origin::Parquet(_) => parquet,
            });
            partitions.push(PersistedPartition::loading(origin, parent_part.rows, task));
        }
        self.frame = Some(frame);
        cx.frames.insert(Frame {
            id: frame,
            name: self.name.clone(),
            source,
            columns,
            steps: lineage,
            storage,
            schema,
            partitions,
            complete: false,
        });
        self.check_done(cx)
    }

    /// New partition `key` is held: when replacing the parent in place, free
    /// the parent partition it was made from (unless another running job
    /// reads the parent: then the parent goes whole at the end).
    fn free_replaced(&mut self, cx: &mut JobCx, key: PartitionKey) {
        let (Some(consume), Some(frame)) = (self.consume.as_mut(), self.frame) else {
            return;
        };
        if key.frame != frame.0 || cx.others_read.reads(consume.parent) {
            return;
        }
        let Some(&index) = consume.source_of.get(key.index as usize) else {
            return;
        };
        let parent_key = PartitionKey {
            frame: consume.parent.0,
            index: index as u32,
        };
        if cx.frames.consume_partition(cx.cluster, parent_key, cx.out) {
            consume.freed.push(parent_key);
        }
    }

    /// Every partition held: the frame is complete (replacing the old one of
    /// the same name, if asked).
    fn check_done(&mut self, cx: &mut JobCx) -> Flow {
        let Some(frame) = self.frame else {
            return Flow::Continue;
        };
        if let Some(error) = cx.frames.unreachable_partition(frame) {
            return Flow::Fail(error);
        }
        let Some(f) = cx.frames.get(frame) else {
            return Flow::Continue;
        };
        // Loads end in about the order they were queued: move past the
        // held prefix (each partition once), and look at every partition
        // only when the prefix reaches the end (one lost behind it since
        // is found then, and the search starts over).
        let n = f.partitions.len();
        while self.held_upto < n && f.partitions[self.held_upto].holder.is_some() {
            self.held_upto += 1;
        }
        if self.held_upto < n {
            return Flow::Continue;
        }
        if !f.all_held() {
            self.held_upto = 0;
            return Flow::Continue;
        }
        if let Some(old) = cx.frames.by_name(&self.name) {
            if !self.replace {
                // The name is reserved while this runs; check it again so
                // that two complete frames never share a name.
                return Flow::Fail(format!(
                    "a frame named '{}' was persisted while this ran",
                    self.name
                ));
            }
            cx.drop_frame(old);
        }
        let f = cx.frames.get_mut(frame).expect("frame present");
        f.complete = true;
        let summary = f.summary();
        self.frame = None;
        Flow::Done(ToClient::Persisted(summary))
    }
}

impl Job for PersistJob {
    fn kind(&self) -> &'static str {
        "persist"
    }

    fn start(&mut self, cx: &mut JobCx) -> Flow {
        match &mut self.input {
            Input::Parquet { source, scan, .. } => {
                *scan = Some(SourceScan::start(source.clone(), cx));
                Flow::Continue
            }
            Input::Derived {
                parent,
                steps,
                order,
            } => {
                let (parent, steps, order) = (*parent, steps.clone(), order.take());
                self.start_derived(cx, parent, steps, order)
            }
        }
    }

    fn on_output(&mut self, cx: &mut JobCx, _task: &TaskKind, output: TaskOutput) -> Flow {
        if let TaskOutput::Loaded { key, .. } = output {
            self.free_replaced(cx, key);
            return self.check_done(cx);
        }
        let Input::Parquet {
            source,
            columns,
            steps,
            scan: Some(scan),
        } = &mut self.input
        else {
            return Flow::Fail(format!("persist: unexpected task output {output:?}"));
        };
        let scanned = match scan.on_output(cx, output) {
            ScanStep::Pending => return Flow::Continue,
            ScanStep::Failed(e) => return Flow::Fail(e),
            ScanStep::Ready(scanned) => scanned,
        };
        let schema = match frame_schema(&scanned.schema, columns.as_deref(), steps) {
            Ok(schema) => schema,
            Err(e) => return Flow::Fail(e),
        };
        let frame = cx.new_frame_id();
        let mut partitions = Vec::with_capacity(scanned.partitions.len());
        for (index, input) in scanned.partitions.into_iter().enumerate() {
            let task = cx.spawn(TaskKind::Load {
                key: PartitionKey {
                    frame: frame.0,
                    index: index as u32,
                },
                input: LoadInput::Parquet(input.clone()),
                columns: columns.clone(),
                steps: steps.clone(),
            });
            let rows = input.rows;
            partitions.push(PersistedPartition::loading(
                Some(Origin::Parquet(input)),
                rows,
                task,
            ));
        }
        cx.frames.insert(Frame {
            id: frame,
            name: self.name.clone(),
            source: source.clone(),
            columns: columns.clone(),
            steps: steps.clone(),
            storage: cx.storage.clone(),
            schema,
            partitions,
            complete: false,
        });
        self.frame = Some(frame);
        self.check_done(cx)
    }

    fn on_frame_changed(&mut self, cx: &mut JobCx, frame: FrameId) -> Flow {
        if self.frame == Some(frame) {
            self.check_done(cx)
        } else {
            Flow::Continue
        }
    }

    /// A failed persist drops what it loaded; parent partitions it freed
    /// are rebuilt from their lineage.
    fn abort(&mut self, cx: &mut JobCx) {
        if let Some(frame) = self.frame.take() {
            cx.drop_frame(frame);
        }
        if let Some(consume) = self.consume.take() {
            let mut rebuild = Vec::new();
            for key in consume.freed {
                if let Some(p) = cx.frames.partition_mut(key) {
                    p.consumed = false;
                    rebuild.push(key);
                }
            }
            if !rebuild.is_empty() {
                cx.frame_changed(consume.parent);
                cx.start_background(Box::new(super::rebuild::RebuildJob::new(rebuild)));
            }
        }
    }

    fn reads_frames(&self) -> Option<Vec<FrameId>> {
        Some(match &self.input {
            Input::Parquet { .. } => Vec::new(),
            Input::Derived { parent, .. } => vec![*parent],
        })
    }

    fn consumes_frame(&self) -> Option<FrameId> {
        self.consume.as_ref().map(|c| c.parent)
    }

    fn reserves(&self) -> Option<&str> {
        Some(&self.name)
    }

    fn loads_frame(&self) -> Option<FrameId> {
        self.frame
    }
}
