//! The scheduler's durable catalog: what it must remember across a restart
//! to take back the partitions its workers still hold. One file,
//! `<data-dir>/catalog`, rewritten whole (temporary name, fsync, rename)
//! before a persist is acknowledged and whenever the set of frames changes.
//!
//! It records each complete frame (name, source, columns, steps, schema,
//! and per partition its lineage, rows and bytes) and how many times a
//! scheduler started on this data directory (`starts`), from which each
//! start derives ids that never repeat an earlier start's. It never records
//! a request's object-store option values (secrets), only their keys.
//!
//! On disk: the magic [`MAGIC`], then an rkyv archive of [`Catalog`],
//! validated when read, like every frame on the wire.

use rkyv::{Archive, Deserialize, Serialize};

use crate::messages::{ParquetPartition, RangeSource, Step};

/// First bytes of a catalog file (format 2: partitions may group several files,
/// `ParquetPartition::more`).
pub const MAGIC: &[u8; 16] = b"STRATUS-CATALOG2";

/// First bytes of a catalog of format 1 (before partitions could group files), refused
/// by name.
pub const MAGIC_V1: &[u8; 16] = b"STRATUS-CATALOG1";

/// Largest catalog file read back (a catalog holds metadata only).
pub const MAX_CATALOG_BYTES: u64 = 1 << 30;

/// Everything the scheduler remembers across restarts.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Default)]
pub struct Catalog {
    /// Scheduler starts on this data directory, this one included.
    pub starts: u64,
    /// Complete frames.
    pub frames: Vec<FrameRecord>,
    /// The shuffle lineages that sorted frames' ranges point into.
    pub sort_lineages: Vec<SortLineageRecord>,
}

/// One complete frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct FrameRecord {
    pub id: u64,
    pub name: String,
    pub source: String,
    pub columns: Option<Vec<String>>,
    pub steps: Vec<Step>,
    /// The schema of its batches, as an Arrow IPC schema message.
    pub schema_ipc: Vec<u8>,
    /// Keys of the object-store options it was read with (values are
    /// secrets and are not kept: a rebuild after a restart reads with the
    /// worker's own credentials).
    pub storage_keys: Vec<String>,
    pub partitions: Vec<PartitionRecord>,
}

/// One partition of a frame.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct PartitionRecord {
    /// None: it cannot be rebuilt.
    pub origin: Option<OriginRecord>,
    pub rows: u64,
    pub bytes: u64,
}

/// A partition's lineage.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub enum OriginRecord {
    Parquet(ParquetPartition),
    /// Range `range` of the shuffle `lineage` (an index into
    /// [`Catalog::sort_lineages`]), then `steps`.
    Range {
        lineage: u32,
        range: u32,
        steps: Vec<Step>,
    },
}

/// What a shuffle sort's ranges are rebuilt from.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct SortLineageRecord {
    pub sources: Vec<RangeSource>,
    pub key: String,
    pub boundaries_ipc: Vec<u8>,
}

impl Catalog {
    /// The file's bytes: magic, then the archive.
    pub fn encode(&self) -> crate::Result<Vec<u8>> {
        let body = crate::framing::encode(self)?;
        let mut bytes = Vec::with_capacity(MAGIC.len() + body.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    /// Read a catalog file's bytes; `file` names it in errors. Every index
    /// into the lineages is checked.
    pub fn decode(bytes: &[u8], file: &str) -> crate::Result<Catalog> {
        let bad = |what: String| crate::ProtocolError::Peer {
            peer: format!("catalog {file}"),
            what,
        };
        if bytes.starts_with(MAGIC_V1) {
            return Err(bad(
                "is a catalog of format 1, written by an older Stratus (this one reads format 2)"
                    .into(),
            ));
        }
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| bad("is not a Stratus catalog (format 2): wrong magic".into()))?;
        // rkyv reads archives from aligned memory.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(body.len());
        aligned.extend_from_slice(body);
        let peer = format!("catalog {file}");
        let archived = crate::framing::access::<ArchivedCatalog>(&aligned, &peer)?;
        let catalog: Catalog = crate::framing::to_owned(archived, &peer)?;
        let lineages = catalog.sort_lineages.len();
        for frame in &catalog.frames {
            for p in &frame.partitions {
                if let Some(OriginRecord::Range { lineage, .. }) = &p.origin {
                    if *lineage as usize >= lineages {
                        return Err(bad(format!(
                            "frame '{}' points to sort lineage {lineage} of {lineages}",
                            frame.name
                        )));
                    }
                }
            }
        }
        Ok(catalog)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Catalog {
        Catalog {
            starts: 3,
            frames: vec![FrameRecord {
                id: 7,
                name: "isd".into(),
                source: "/data/isd".into(),
                columns: Some(vec!["temperature".into()]),
                steps: vec![],
                schema_ipc: vec![1, 2, 3],
                storage_keys: vec!["account_name".into()],
                partitions: vec![
                    PartitionRecord {
                        origin: None,
                        rows: 10,
                        bytes: 80,
                    },
                    PartitionRecord {
                        origin: Some(OriginRecord::Range {
                            lineage: 0,
                            range: 1,
                            steps: vec![],
                        }),
                        rows: 5,
                        bytes: 40,
                    },
                ],
            }],
            sort_lineages: vec![SortLineageRecord {
                sources: vec![],
                key: "date".into(),
                boundaries_ipc: vec![9],
            }],
        }
    }

    #[test]
    fn a_catalog_reads_back_as_written() {
        let c = sample();
        assert_eq!(Catalog::decode(&c.encode().unwrap(), "c").unwrap(), c);
    }

    #[test]
    fn a_damaged_catalog_is_refused_naming_the_file() {
        let bytes = sample().encode().unwrap();
        let e = Catalog::decode(&bytes[..bytes.len() - 7], "dir/catalog").unwrap_err();
        assert!(e.to_string().contains("dir/catalog"), "{e}");
        let e = Catalog::decode(b"not a catalog at all", "x").unwrap_err();
        assert!(e.to_string().contains("wrong magic"), "{e}");
    }

    #[test]
    fn a_catalog_of_format_1_is_refused_by_name() {
        let mut bytes = sample().encode().unwrap();
        bytes[..MAGIC_V1.len()].copy_from_slice(MAGIC_V1);
        let e = Catalog::decode(&bytes, "dir/catalog")
            .unwrap_err()
            .to_string();
        assert!(e.contains("dir/catalog") && e.contains("format 1"), "{e}");
    }

    #[test]
    fn a_lineage_index_out_of_range_is_refused() {
        let mut c = sample();
        c.sort_lineages.clear();
        let e = Catalog::decode(&c.encode().unwrap(), "c").unwrap_err();
        assert!(e.to_string().contains("sort lineage 0 of 0"), "{e}");
    }
}
