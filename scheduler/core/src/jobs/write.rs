//! `to_parquet(dest, partition_by)` as rounds: one worker checks the
//! destination, every holder stages the files of its partitions under
//! `dest/_temporary/<job>`, then one worker commits (renames into place,
//! `_SUCCESS` last). A failed job's staged files are removed by a cleanup
//! task; nothing half-written looks complete.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use stratus_protocol::messages::{StagedFile, TaskKind, TaskOutput, WriteSpec};

use super::rebuild::CleanupJob;
use super::rounds::{per_holder, table_answer, Holders, PeerOf, Reduction, Rounds};
use super::{Flow, Job, JobCx, Planning};
use crate::ids::{FrameId, JobId, WorkerId};
use crate::requests::check_partition_by;

/// The job for writing a persisted frame as a Parquet dataset.
pub fn plan(
    at: &Planning,
    source: String,
    dest: String,
    partition_by: Vec<String>,
    overwrite: bool,
) -> Result<Box<dyn Job>, String> {
    let frame = at.persisted(&source)?;
    let schema = &at.frames.get(frame).expect("frame by name").schema;
    check_partition_by(schema, &source, &partition_by)?;
    Ok(Rounds::job(
        frame,
        Write::new(WriteSpec {
            dest,
            partition_by,
            // Set to the job's id when the first round starts.
            job_id: String::new(),
            overwrite,
        }),
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteStage {
    Prepare,
    Write,
    Commit,
    Done,
}

/// `to_parquet(dest, partition_by)`: one worker checks the destination, every
/// holder stages the files of its partitions under `dest/_temporary/<job>`,
/// then one worker commits (renames into place, `_SUCCESS` last). A failed
/// job's staged files are removed; nothing half-written looks complete.
#[derive(Debug)]
pub struct Write {
    spec: WriteSpec,
    stage: WriteStage,
    staged: Vec<StagedFile>,
    committed: (u64, u64),
}

impl Write {
    /// A write of a frame.
    pub fn new(spec: WriteSpec) -> Write {
        Write {
            spec,
            stage: WriteStage::Prepare,
            staged: Vec::new(),
            committed: (0, 0),
        }
    }

    fn tasks(&self, holders: &Holders) -> Option<Vec<(WorkerId, TaskKind)>> {
        let first = *holders.keys().next()?;
        let spec = self.spec.clone();
        match self.stage {
            WriteStage::Prepare => Some(vec![(first, TaskKind::PrepareWrite { spec })]),
            WriteStage::Write => Some(per_holder(holders, |partitions| TaskKind::WriteParts {
                partitions: partitions.clone(),
                spec: spec.clone(),
            })),
            WriteStage::Commit => Some(vec![(
                first,
                TaskKind::CommitWrite {
                    spec,
                    staged: self.staged.clone(),
                },
            )]),
            WriteStage::Done => None,
        }
    }

    fn take(&mut self, output: TaskOutput) -> Result<(), String> {
        match (self.stage, output) {
            (WriteStage::Prepare, TaskOutput::Ok) => Ok(()),
            (WriteStage::Write, TaskOutput::Staged(mut files)) => {
                self.staged.append(&mut files);
                Ok(())
            }
            (WriteStage::Commit, TaskOutput::Committed { rows, files }) => {
                self.committed = (rows, files);
                Ok(())
            }
            (_, other) => Err(format!("write: unexpected task output {other:?}")),
        }
    }

    fn result(&self) -> Result<RecordBatch, String> {
        RecordBatch::try_from_iter([
            (
                "dest",
                Arc::new(StringArray::from(vec![self.spec.dest.as_str()])) as ArrayRef,
            ),
            (
                "rows",
                Arc::new(UInt64Array::from(vec![self.committed.0])) as ArrayRef,
            ),
            (
                "files",
                Arc::new(UInt64Array::from(vec![self.committed.1])) as ArrayRef,
            ),
        ])
        .map_err(|e| e.to_string())
    }
}

impl Reduction for Write {
    fn kind(&self) -> &'static str {
        "write"
    }

    fn done(&self) -> bool {
        self.stage == WriteStage::Done
    }

    fn round_tasks(
        &mut self,
        job: JobId,
        holders: &Holders,
        _peer: PeerOf,
    ) -> Option<Vec<(WorkerId, TaskKind)>> {
        // Staged files live under a directory named after the job.
        self.spec.job_id = format!("job-{job}");
        self.tasks(holders)
    }

    fn absorb(&mut self, output: TaskOutput) -> Result<(), String> {
        self.take(output)
    }

    fn end_round(&mut self) -> Result<(), String> {
        self.stage = match self.stage {
            WriteStage::Prepare => WriteStage::Write,
            WriteStage::Write => WriteStage::Commit,
            _ => WriteStage::Done,
        };
        Ok(())
    }

    fn reset_round(&mut self) {
        // Staged files are rewritten under the same names on a rerun of the
        // write round. A rerun commit keeps them: it must commit the same
        // files (an empty list would commit an empty dataset over the old).
        if self.stage == WriteStage::Write {
            self.staged.clear();
        }
    }

    fn finish(&mut self, _cx: &mut JobCx, _frame: FrameId) -> Flow {
        table_answer(self.result())
    }

    /// Staged files are removed by a background task of their own.
    fn undo(&mut self, cx: &mut JobCx) {
        if self.stage != WriteStage::Prepare {
            cx.start_background(Box::new(CleanupJob::new(TaskKind::AbortWrite {
                spec: self.spec.clone(),
            })));
        }
    }
}
