//! Reading a Parquet source's metadata, the first phase of `len`, `head`
//! and `persist` on files: one task lists the files (path, directory or
//! glob, hive values), then the footers are read by tasks spread over every
//! thread of the cluster, then [`crate::planning`] checks the schema and
//! plans partitions.

use arrow_schema::SchemaRef;
use stratus_protocol::messages::{FooterMeta, ParquetPartition, TaskKind, TaskOutput};

use super::JobCx;
use crate::planning;

/// A source's files, read and planned.
#[derive(Debug)]
pub struct Scanned {
    pub footers: Vec<FooterMeta>,
    pub schema: SchemaRef,
    pub partitions: Vec<ParquetPartition>,
}

/// Where a scan is.
#[derive(Debug)]
pub enum ScanStep {
    Pending,
    Ready(Scanned),
    Failed(String),
}

/// The metadata phase of a job on a Parquet source.
#[derive(Debug)]
pub struct SourceScan {
    source: String,
    /// Footers read so far (None while listing).
    footers: Option<Vec<FooterMeta>>,
}

impl SourceScan {
    /// Queue the listing of `source`.
    pub fn start(source: String, cx: &mut JobCx) -> SourceScan {
        cx.spawn(TaskKind::ListFiles {
            source: source.clone(),
        });
        SourceScan {
            source,
            footers: None,
        }
    }

    /// Take a task's output; the scan is ready once every footer is read.
    pub fn on_output(&mut self, cx: &mut JobCx, output: TaskOutput) -> ScanStep {
        match output {
            TaskOutput::Files(files) => {
                if files.is_empty() {
                    return ScanStep::Failed(format!("no Parquet files match '{}'", self.source));
                }
                let chunks = files.len().min(cx.cluster.threads());
                let per_chunk = files.len().div_ceil(chunks);
                for files in files.chunks(per_chunk) {
                    cx.spawn(TaskKind::ReadFooters {
                        files: files.to_vec(),
                    });
                }
                self.footers = Some(Vec::new());
                ScanStep::Pending
            }
            TaskOutput::Footers(mut footers) => {
                let Some(all) = &mut self.footers else {
                    return ScanStep::Failed("footers before the file list".into());
                };
                all.append(&mut footers);
                if cx.pending() > 0 {
                    return ScanStep::Pending;
                }
                let mut all = std::mem::take(all);
                all.sort_by(|a, b| a.file.path.cmp(&b.file.path));
                match planning::plan(&all, cx.cluster.threads()) {
                    Ok((schema, partitions)) => ScanStep::Ready(Scanned {
                        footers: all,
                        schema,
                        partitions,
                    }),
                    Err(error) => ScanStep::Failed(error),
                }
            }
            other => ScanStep::Failed(format!(
                "reading '{}': unexpected task output {other:?}",
                self.source
            )),
        }
    }
}
