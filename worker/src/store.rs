//! Persisted partitions held in this worker's RAM, counted against its memory
//! limit. Until spilling exists, a partition that would take the worker over
//! its limit is refused with an error naming the worker and the sizes.

use std::collections::HashMap;

use arrow_array::RecordBatch;
use stratus_protocol::messages::PartitionKey;
use stratus_protocol::units::format_bytes;

/// One persisted partition.
#[derive(Debug, Clone)]
pub struct StoredPartition {
    pub batches: Vec<RecordBatch>,
    pub rows: u64,
    pub bytes: u64,
}

/// The worker's in-memory store.
#[derive(Debug)]
pub struct Store {
    partitions: HashMap<PartitionKey, StoredPartition>,
    used: u64,
    limit: u64,
}

impl Store {
    /// A store that may hold up to `limit` bytes (0 = no limit).
    pub fn new(limit: u64) -> Self {
        Store {
            partitions: HashMap::new(),
            used: 0,
            limit,
        }
    }

    /// Bytes of Arrow buffers held.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Partitions held.
    pub fn len(&self) -> usize {
        self.partitions.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// The partition's batches (cheap: Arrow arrays are reference counted).
    pub fn get(&self, key: &PartitionKey) -> Option<&StoredPartition> {
        self.partitions.get(key)
    }

    /// Keep a partition, or refuse if it would exceed the memory limit.
    pub fn insert(
        &mut self,
        worker: &str,
        key: PartitionKey,
        batches: Vec<RecordBatch>,
    ) -> Result<(u64, u64), String> {
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let bytes = stratus_engine::memory::batches_memory_bytes(&batches) as u64;
        let replaced = self.partitions.get(&key).map_or(0, |p| p.bytes);
        let after = self.used - replaced + bytes;
        if self.limit > 0 && after > self.limit {
            return Err(format!(
                "worker '{worker}': memory limit exceeded: holding {}, partition {}/{} needs {}, limit {} (spilling to disk is not supported yet; add workers or memory)",
                format_bytes(self.used),
                key.frame,
                key.index,
                format_bytes(bytes),
                format_bytes(self.limit)
            ));
        }
        self.used = after;
        self.partitions.insert(
            key,
            StoredPartition {
                batches,
                rows,
                bytes,
            },
        );
        Ok((rows, bytes))
    }

    /// Free a partition.
    pub fn remove(&mut self, key: &PartitionKey) {
        if let Some(p) = self.partitions.remove(key) {
            self.used -= p.bytes;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::Int64Array;
    use std::sync::Arc;

    fn batch(n: i64) -> RecordBatch {
        RecordBatch::try_from_iter([(
            "x",
            Arc::new(Int64Array::from_iter_values(0..n)) as arrow_array::ArrayRef,
        )])
        .unwrap()
    }

    #[test]
    fn refuses_beyond_limit_and_frees() {
        let one = stratus_engine::memory::batches_memory_bytes(&[batch(1000)]) as u64;
        let mut store = Store::new(one * 2 + one / 2);
        let k = |index| PartitionKey { frame: 1, index };
        store.insert("w", k(0), vec![batch(1000)]).unwrap();
        store.insert("w", k(1), vec![batch(1000)]).unwrap();
        let err = store.insert("w", k(2), vec![batch(1000)]).unwrap_err();
        assert!(err.contains("worker 'w': memory limit exceeded"), "{err}");
        assert_eq!(store.len(), 2);
        store.remove(&k(0));
        assert_eq!(store.used(), one);
        store.insert("w", k(2), vec![batch(1000)]).unwrap();
    }
}
