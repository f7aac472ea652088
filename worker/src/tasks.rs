//! What each task computes: pure functions over `stratus-engine`, run on a
//! compute thread. Errors are strings for the client, naming the file at fault.

use arrow_array::RecordBatch;
use stratus_engine::scan::{self, PartitionSpec, SourceFile};
use stratus_protocol::messages::{FileRef, FooterMeta, ParquetPartition, RowGroupMeta, TaskOutput};

fn to_spec(p: &ParquetPartition) -> PartitionSpec {
    PartitionSpec {
        path: p.path.clone(),
        row_group_start: p.row_group_start,
        row_group_end: p.row_group_end,
        rows: p.rows,
        hive: p.hive.clone(),
    }
}

/// Expand a source into its files.
pub fn list_files(source: &str) -> Result<TaskOutput, String> {
    let files = scan::list_files(source).map_err(|e| e.to_string())?;
    Ok(TaskOutput::Files(
        files
            .into_iter()
            .map(|f| FileRef {
                path: f.path,
                size: f.size,
                hive: f.hive,
            })
            .collect(),
    ))
}

/// Read the footers of these files.
pub fn read_footers(files: &[FileRef]) -> Result<TaskOutput, String> {
    let mut out = Vec::with_capacity(files.len());
    for f in files {
        let footer = scan::read_footer(&SourceFile {
            path: f.path.clone(),
            size: f.size,
            hive: f.hive.clone(),
        })
        .map_err(|e| e.to_string())?;
        let schema_ipc = stratus_protocol::ipc::encode_schema(&footer.schema)
            .map_err(|e| format!("file {}: {e}", f.path))?;
        out.push(FooterMeta {
            file: f.clone(),
            num_rows: footer.num_rows,
            row_groups: footer
                .row_groups
                .iter()
                .map(|g| RowGroupMeta {
                    rows: g.rows,
                    uncompressed_bytes: g.uncompressed_bytes,
                })
                .collect(),
            schema_ipc,
        });
    }
    Ok(TaskOutput::Footers(out))
}

/// Read a partition into batches.
pub fn load(
    input: &ParquetPartition,
    columns: Option<&[String]>,
) -> Result<Vec<RecordBatch>, String> {
    scan::read_partition(&to_spec(input), columns, None).map_err(|e| e.to_string())
}

/// The first `n` rows of batches, as an Arrow IPC stream.
pub fn head_of(
    batches: &[RecordBatch],
    n: u64,
    columns: Option<&[String]>,
) -> Result<TaskOutput, String> {
    let mut taken = Vec::new();
    let mut rows = 0u64;
    let mut schema = None;
    for batch in batches {
        let batch = match columns {
            Some(cols) => {
                let indices = cols
                    .iter()
                    .map(|c| {
                        batch
                            .schema()
                            .index_of(c)
                            .map_err(|_| format!("no column named '{c}'"))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                batch.project(&indices).map_err(|e| e.to_string())?
            }
            None => batch.clone(),
        };
        schema.get_or_insert_with(|| batch.schema());
        if rows >= n {
            break;
        }
        let want = (n - rows).min(batch.num_rows() as u64) as usize;
        rows += want as u64;
        taken.push(batch.slice(0, want));
    }
    let Some(schema) = schema else {
        return Ok(TaskOutput::Table {
            rows: 0,
            ipc: Vec::new(),
        });
    };
    let ipc = stratus_protocol::ipc::encode_batches(&schema, &taken).map_err(|e| e.to_string())?;
    Ok(TaskOutput::Table { rows, ipc })
}

/// The first `n` rows of a Parquet partition.
pub fn head_parquet(
    input: &ParquetPartition,
    n: u64,
    columns: Option<&[String]>,
) -> Result<TaskOutput, String> {
    let batches = scan::read_partition(&to_spec(input), columns, Some(n as usize))
        .map_err(|e| e.to_string())?;
    head_of(&batches, n, None)
}
