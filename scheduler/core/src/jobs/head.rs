//! `head(n)`: read partition by partition, in order, until `n` rows; from a
//! persisted frame next to each partition, from Parquet after the scan.

use std::collections::VecDeque;

use stratus_protocol::messages::{HeadInput, PartitionKey, TaskKind, TaskOutput, ToClient};

use super::scan::{ScanStep, SourceScan};
use super::{Flow, Job, JobCx, Planning};
use crate::ids::FrameId;

#[derive(Debug)]
pub struct HeadJob {
    source: String,
    n: u64,
    columns: Option<Vec<String>>,
    /// Reading a Parquet source's metadata first (None on a persisted frame).
    scan: Option<SourceScan>,
    inputs: VecDeque<HeadInput>,
    /// One complete IPC stream per partition read.
    tables: Vec<Vec<u8>>,
    rows: u64,
    on_parquet: bool,
    /// The persisted frame it reads (None: Parquet).
    frame: Option<FrameId>,
}

impl HeadJob {
    /// The head of a persisted frame, or of a Parquet source.
    pub fn plan(
        at: &Planning,
        source: String,
        n: u64,
        columns: Option<Vec<String>>,
    ) -> Result<Box<dyn Job>, String> {
        let frame = at.frame_named(&source)?;
        let (inputs, on_parquet) = match frame {
            Some(frame) => {
                let f = at.frames.get(frame).expect("frame by name");
                let inputs = (0..f.partitions.len() as u32)
                    .map(|index| {
                        HeadInput::Persisted(PartitionKey {
                            frame: frame.0,
                            index,
                        })
                    })
                    .collect();
                (inputs, false)
            }
            None => (VecDeque::new(), true),
        };
        Ok(Box::new(HeadJob {
            source,
            n,
            columns,
            scan: None,
            inputs,
            tables: Vec::new(),
            rows: 0,
            on_parquet,
            frame,
        }))
    }

    /// Read the next partition, or answer with what was read.
    fn next(&mut self, cx: &mut JobCx) -> Flow {
        if self.rows >= self.n || self.inputs.is_empty() {
            let payload =
                stratus_protocol::ipc::encode_table_payload(self.tables.iter().map(Vec::as_slice));
            return Flow::Done(ToClient::Table(payload));
        }
        let input = self.inputs.pop_front().expect("not empty");
        cx.spawn(TaskKind::Head {
            input,
            n: self.n - self.rows,
            columns: self.columns.clone(),
        });
        Flow::Continue
    }
}

impl Job for HeadJob {
    fn kind(&self) -> &'static str {
        "head"
    }

    fn reads_frames(&self) -> Option<Vec<FrameId>> {
        Some(self.frame.into_iter().collect())
    }

    fn start(&mut self, cx: &mut JobCx) -> Flow {
        if self.on_parquet {
            self.scan = Some(SourceScan::start(self.source.clone(), cx));
            return Flow::Continue;
        }
        self.next(cx)
    }

    fn on_output(&mut self, cx: &mut JobCx, _task: &TaskKind, output: TaskOutput) -> Flow {
        if let TaskOutput::Table { rows, ipc } = output {
            // Keep one (possibly empty) table so the answer has a schema.
            if rows > 0 || self.tables.is_empty() {
                self.tables.push(ipc);
            }
            self.rows += rows;
            return self.next(cx);
        }
        let Some(scan) = &mut self.scan else {
            return Flow::Fail(format!("head: unexpected task output {output:?}"));
        };
        match scan.on_output(cx, output) {
            ScanStep::Pending => Flow::Continue,
            ScanStep::Ready(s) => {
                self.scan = None;
                self.inputs = s.partitions.into_iter().map(HeadInput::Parquet).collect();
                self.next(cx)
            }
            ScanStep::Failed(e) => Flow::Fail(e),
        }
    }
}
