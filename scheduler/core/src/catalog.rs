//! Frames to and from the durable catalog ([`stratus_protocol::catalog`]):
//! the snapshot the edge writes whenever the set of complete frames
//! changes, the frames a restarted scheduler restores from it (every
//! partition awaiting its worker), and the adoption of a partition a worker
//! re-registers.

use std::collections::HashMap;
use std::sync::Arc;

use stratus_protocol::catalog::{
    Catalog, FrameRecord, OriginRecord, PartitionRecord, SortLineageRecord,
};
use stratus_protocol::messages::HeldPartition;

use crate::cluster::Cluster;
use crate::frames::{Frame, Frames, Origin, PersistedPartition, SortLineage};
use crate::ids::{FrameId, WorkerId};

/// What identifies the catalog's content: a hash of the complete frames'
/// ids, names and partition counts (computed after every event, heartbeats
/// included, so it allocates nothing). A snapshot is written when it changes.
pub(crate) type CatalogSignature = u64;

impl Frames {
    pub(crate) fn catalog_signature(&self) -> CatalogSignature {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        for f in self.complete() {
            (f.id.0, f.name.as_str(), f.partitions.len()).hash(&mut hasher);
        }
        hasher.finish()
    }

    /// The catalog of the complete frames (`starts` as given).
    pub fn catalog(&self, starts: u64) -> Catalog {
        let mut sort_lineages = Vec::new();
        let mut lineage_index: HashMap<*const SortLineage, u32> = HashMap::new();
        let mut frames = Vec::new();
        for f in self.complete() {
            let Ok(schema_ipc) = stratus_protocol::ipc::encode_schema(&f.schema) else {
                continue; // a schema Arrow can not encode was never persisted
            };
            let partitions =
                f.partitions
                    .iter()
                    .map(|p| PartitionRecord {
                        origin: p.origin.as_ref().map(|origin| match origin {
                            Origin::Parquet(input) => OriginRecord::Parquet(input.clone()),
                            Origin::Range {
                                lineage,
                                range,
                                steps,
                            } => {
                                let next = sort_lineages.len() as u32;
                                let index = *lineage_index
                                    .entry(Arc::as_ptr(lineage))
                                    .or_insert_with(|| {
                                        sort_lineages.push(SortLineageRecord {
                                            sources: lineage.sources.clone(),
                                            key: lineage.key.clone(),
                                            boundaries_ipc: lineage.boundaries_ipc.clone(),
                                        });
                                        next
                                    });
                                OriginRecord::Range {
                                    lineage: index,
                                    range: *range,
                                    steps: steps.clone(),
                                }
                            }
                        }),
                        rows: p.rows,
                        bytes: p.bytes,
                    })
                    .collect();
            frames.push(FrameRecord {
                id: f.id.0,
                name: f.name.clone(),
                source: f.source.clone(),
                columns: f.columns.clone(),
                steps: f.steps.clone(),
                schema_ipc,
                storage_keys: f.storage.0.iter().map(|(key, _)| key.clone()).collect(),
                partitions,
            });
        }
        Catalog {
            starts,
            frames,
            sort_lineages,
        }
    }

    /// Register the catalog's frames as complete, every partition held
    /// nowhere and awaiting its worker. Returns how many frames were
    /// restored, and a warning for each record that could not be.
    pub fn restore(&mut self, catalog: &Catalog) -> (usize, Vec<String>) {
        let lineages: Vec<Arc<SortLineage>> = catalog
            .sort_lineages
            .iter()
            .map(|l| {
                Arc::new(SortLineage {
                    sources: l.sources.clone(),
                    key: l.key.clone(),
                    boundaries_ipc: l.boundaries_ipc.clone(),
                })
            })
            .collect();
        let mut warnings = Vec::new();
        let mut restored = 0;
        for record in &catalog.frames {
            if self.by_name(&record.name).is_some() || self.get(FrameId(record.id)).is_some() {
                warnings.push(format!(
                    "frame '{}' ({}) appears twice in the catalog: the second is skipped",
                    record.name, record.id
                ));
                continue;
            }
            let schema = match stratus_protocol::ipc::decode_batches(arrow_buffer::Buffer::from(
                record.schema_ipc.clone(),
            )) {
                Ok((schema, _)) => schema,
                Err(e) => {
                    warnings.push(format!(
                        "frame '{}': its schema in the catalog does not read ({e}); not restored",
                        record.name
                    ));
                    continue;
                }
            };
            let partitions = record
                .partitions
                .iter()
                .map(|p| PersistedPartition {
                    // A lineage index out of range (refused when the file
                    // is read) leaves the partition without lineage: it is
                    // then reported lost, never a panic.
                    origin: p.origin.as_ref().and_then(|o| match o {
                        OriginRecord::Parquet(input) => Some(Origin::Parquet(input.clone())),
                        OriginRecord::Range {
                            lineage,
                            range,
                            steps,
                        } => Some(Origin::Range {
                            lineage: lineages.get(*lineage as usize)?.clone(),
                            range: *range,
                            steps: steps.clone(),
                        }),
                    }),
                    rows: p.rows,
                    bytes: p.bytes,
                    holder: None,
                    loading: None,
                    lost: None,
                    awaiting_holder: true,
                    consumed: false,
                })
                .collect();
            if !record.storage_keys.is_empty() {
                warnings.push(format!(
                    "frame '{}' was read with object-store options ({}), which are not kept \
                     across restarts: a partition rebuilt from its source now reads with the \
                     workers' own credentials",
                    record.name,
                    record.storage_keys.join(", ")
                ));
            }
            self.insert(Frame {
                id: FrameId(record.id),
                name: record.name.clone(),
                source: record.source.clone(),
                columns: record.columns.clone(),
                steps: record.steps.clone(),
                storage: Arc::default(),
                schema,
                partitions,
                complete: true,
            });
            restored += 1;
        }
        (restored, warnings)
    }

    /// A worker re-registers a partition it kept: it is held there again if
    /// it is awaited and matches the catalog (same rows). Returns its frame,
    /// or None when the claim is refused (the worker should drop it).
    pub fn adopt(
        &mut self,
        cluster: &mut Cluster,
        worker: WorkerId,
        held: &HeldPartition,
    ) -> Option<FrameId> {
        let w = cluster.worker_mut(worker)?;
        let p = self.partition_mut(held.key)?;
        if !p.awaiting_holder || p.holder.is_some() || p.rows != held.rows {
            return None;
        }
        p.awaiting_holder = false;
        p.holder = Some(worker);
        p.bytes = held.bytes;
        w.partitions.insert(held.key);
        w.persisted_bytes += held.bytes;
        Some(FrameId(held.key.frame))
    }

    /// Partitions still awaiting a worker; they stop waiting.
    pub fn stop_awaiting(&mut self) -> Vec<stratus_protocol::messages::PartitionKey> {
        let mut keys = Vec::new();
        for f in self.all_mut() {
            let id = f.id;
            for (index, p) in f.partitions.iter_mut().enumerate() {
                if p.awaiting_holder {
                    p.awaiting_holder = false;
                    keys.push(stratus_protocol::messages::PartitionKey {
                        frame: id.0,
                        index: index as u32,
                    });
                }
            }
        }
        keys
    }

    /// Whether any partition awaits a worker.
    pub fn any_awaiting(&self) -> bool {
        self.all()
            .any(|f| f.partitions.iter().any(|p| p.awaiting_holder))
    }
}
