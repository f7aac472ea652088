//! `len` of a Parquet source: the sum of its footers' row counts (`len` of a
//! persisted frame is answered from the frame, with no job).

use stratus_protocol::messages::{TaskKind, TaskOutput, ToClient};

use super::scan::{ScanStep, SourceScan};
use super::{Flow, Job, JobCx};
use crate::ids::FrameId;

#[derive(Debug)]
pub struct LenJob {
    source: String,
    scan: Option<SourceScan>,
}

impl LenJob {
    pub fn new(source: String) -> LenJob {
        LenJob { source, scan: None }
    }
}

impl Job for LenJob {
    fn kind(&self) -> &'static str {
        "len"
    }

    fn reads_frames(&self) -> Option<Vec<FrameId>> {
        Some(Vec::new()) // Parquet footers only
    }

    fn start(&mut self, cx: &mut JobCx) -> Flow {
        self.scan = Some(SourceScan::start(self.source.clone(), cx));
        Flow::Continue
    }

    fn on_output(&mut self, cx: &mut JobCx, _task: &TaskKind, output: TaskOutput) -> Flow {
        let Some(scan) = &mut self.scan else {
            return Flow::Fail("len: output before start".into());
        };
        match scan.on_output(cx, output) {
            ScanStep::Pending => Flow::Continue,
            ScanStep::Ready(s) => {
                Flow::Done(ToClient::Count(s.footers.iter().map(|f| f.num_rows).sum()))
            }
            ScanStep::Failed(e) => Flow::Fail(e),
        }
    }
}
