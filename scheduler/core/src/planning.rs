//! Turning what workers read from Parquet footers into partitions.
//!
//! Workers read footers (spread over the cluster); the scheduler checks that
//! every file agrees on the schema and splits files into partitions sized so
//! that every worker thread gets work. The checks and the splitting rules live
//! in `stratus-engine`; this module decodes the footers' schemas.

use arrow_schema::SchemaRef;
use stratus_engine::scan::FileFooter;
use stratus_protocol::messages::{FooterMeta, ParquetPartition};

/// Target uncompressed bytes per partition (Dask aims at ~100 MB).
pub const PARTITION_TARGET_BYTES: u64 = 128 << 20;

fn to_engine_footer(meta: &FooterMeta) -> Result<FileFooter, String> {
    let (schema, _) =
        stratus_protocol::ipc::decode_batches(arrow_buffer::Buffer::from(meta.schema_ipc.clone()))
            .map_err(|e| format!("file {}: bad schema from worker: {e}", meta.file.path))?;
    Ok(FileFooter {
        file: meta.file.clone(),
        num_rows: meta.num_rows,
        row_groups: meta.row_groups.clone(),
        schema,
    })
}

/// Check the footers agree on a schema and split the files into partitions.
/// Errors name the file at fault.
pub fn plan(
    footers: &[FooterMeta],
    min_partitions: usize,
) -> Result<(SchemaRef, Vec<ParquetPartition>), String> {
    // Files of one source mostly share a schema: decode each distinct
    // schema message once (the check below then skips equal schemas).
    let mut last: Option<(&[u8], arrow_schema::SchemaRef)> = None;
    let mut decoded = Vec::with_capacity(footers.len());
    for meta in footers {
        match &last {
            Some((bytes, schema)) if *bytes == meta.schema_ipc.as_slice() => {
                decoded.push(FileFooter {
                    file: meta.file.clone(),
                    num_rows: meta.num_rows,
                    row_groups: meta.row_groups.clone(),
                    schema: schema.clone(),
                });
            }
            _ => {
                let footer = to_engine_footer(meta)?;
                last = Some((meta.schema_ipc.as_slice(), footer.schema.clone()));
                decoded.push(footer);
            }
        }
    }
    let footers = decoded;
    let schema = stratus_engine::scan::check_schemas(&footers).map_err(|e| e.to_string())?;
    Ok((
        schema,
        stratus_engine::scan::plan_partitions(&footers, PARTITION_TARGET_BYTES, min_partitions),
    ))
}
