//! `memory_usage()`: one round in which every holder sums the capacity of
//! the distinct Arrow buffers of its partitions per column; the scheduler
//! adds the workers' sums up, column by column.

use std::sync::Arc;

use arrow_array::{ArrayRef, RecordBatch, StringArray, UInt64Array};
use stratus_protocol::messages::{ReduceOp, TaskKind, TaskOutput};

use super::rounds::{per_holder, table_answer, Holders, PeerOf, Reduction, Rounds};
use super::{Flow, Job, JobCx, Planning};
use crate::ids::{FrameId, JobId, WorkerId};

/// The job for `memory_usage` of a persisted frame.
pub fn plan(at: &Planning, source: String) -> Result<Box<dyn Job>, String> {
    let frame = at.persisted(&source)?;
    Ok(Rounds::job(frame, MemoryUsage::default()))
}

/// Bytes per column summed over workers.
#[derive(Debug, Default)]
pub struct MemoryUsage {
    bytes: Vec<(String, u64)>,
    done: bool,
}

impl MemoryUsage {
    /// Add one worker's bytes per column. Every worker reports the frame's
    /// columns in the frame's order; anything else is an error, never a
    /// silently dropped column.
    fn add(&mut self, columns: Vec<(String, u64)>) -> Result<(), String> {
        if self.bytes.is_empty() {
            self.bytes = columns;
            return Ok(());
        }
        if columns.len() != self.bytes.len() {
            return Err(format!(
                "memory usage: a worker reported {} columns, another {}",
                columns.len(),
                self.bytes.len()
            ));
        }
        for (acc, (name, b)) in self.bytes.iter_mut().zip(columns) {
            if acc.0 != name {
                return Err(format!(
                    "memory usage: a worker reported column '{name}' where another reported '{}'",
                    acc.0
                ));
            }
            acc.1 += b;
        }
        Ok(())
    }

    fn result(&self) -> Result<RecordBatch, String> {
        let mut names: Vec<&str> = self.bytes.iter().map(|(n, _)| n.as_str()).collect();
        let mut values: Vec<u64> = self.bytes.iter().map(|(_, b)| *b).collect();
        names.push("total");
        values.push(values.iter().sum());
        RecordBatch::try_from_iter([
            ("column", Arc::new(StringArray::from(names)) as ArrayRef),
            ("bytes", Arc::new(UInt64Array::from(values)) as ArrayRef),
        ])
        .map_err(|e| e.to_string())
    }
}

impl Reduction for MemoryUsage {
    fn kind(&self) -> &'static str {
        "memory_usage"
    }

    fn done(&self) -> bool {
        self.done
    }

    fn round_tasks(
        &mut self,
        _job: JobId,
        holders: &Holders,
        _peer: PeerOf,
    ) -> Option<Vec<(WorkerId, TaskKind)>> {
        Some(per_holder(holders, |partitions| TaskKind::Reduce {
            partitions: partitions.clone(),
            op: ReduceOp::MemoryUsage,
        }))
    }

    fn absorb(&mut self, output: TaskOutput) -> Result<(), String> {
        match output {
            TaskOutput::ColumnBytes(columns) => self.add(columns),
            other => Err(format!("memory usage: unexpected task output {other:?}")),
        }
    }

    fn end_round(&mut self) -> Result<(), String> {
        self.done = true;
        Ok(())
    }

    fn reset_round(&mut self) {
        self.bytes.clear();
    }

    fn finish(&mut self, _cx: &mut JobCx, _frame: FrameId) -> Flow {
        table_answer(self.result())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn column_bytes_add_up_over_workers_with_a_total() {
        let mut m = MemoryUsage::default();
        m.add(vec![("a".into(), 10), ("b".into(), 5)]).unwrap();
        m.add(vec![("a".into(), 1), ("b".into(), 2)]).unwrap();
        let batch = m.result().unwrap();
        let bytes = batch
            .column(1)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .unwrap();
        assert_eq!(bytes.values(), &[11, 7, 18]);
    }

    #[test]
    fn a_column_that_does_not_match_fails_instead_of_being_dropped() {
        let mut m = MemoryUsage::default();
        m.add(vec![("a".into(), 10), ("b".into(), 5)]).unwrap();
        let err = m.add(vec![("a".into(), 1), ("c".into(), 2)]).unwrap_err();
        assert!(err.contains("'c'") && err.contains("'b'"), "{err}");
        let err = m.add(vec![("a".into(), 1)]).unwrap_err();
        assert!(err.contains("1 columns"), "{err}");
    }
}
