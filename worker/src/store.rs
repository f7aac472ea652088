//! What this worker holds in RAM, counted against its memory limit: persisted
//! partitions, and the mailboxes where peers deliver data for a job (shuffle
//! ranges, partial group-bys) until a task takes it. Until spilling exists, a
//! partition or a delivery that would take the worker over its limit is
//! refused with an error naming the worker and the sizes.

use std::collections::{HashMap, HashSet, VecDeque};

use arrow_array::RecordBatch;
use stratus_protocol::messages::{MailboxKey, PartitionKey};
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
    /// Deliveries per mailbox, with their bytes.
    mailboxes: HashMap<MailboxKey, (Vec<Vec<RecordBatch>>, u64)>,
    in_flight: u64,
    /// Jobs whose mailboxes were dropped (the latest [`FORGOTTEN_JOBS`]): a
    /// late delivery for one of them is refused, not kept forever.
    forgotten: HashSet<u64>,
    forgotten_order: VecDeque<u64>,
}

/// How many ended jobs a worker remembers, to refuse their late deliveries.
const FORGOTTEN_JOBS: usize = 4096;

impl Store {
    /// A store that may hold up to `limit` bytes (0 = no limit).
    pub fn new(limit: u64) -> Self {
        Store {
            partitions: HashMap::new(),
            used: 0,
            limit,
            mailboxes: HashMap::new(),
            in_flight: 0,
            forgotten: HashSet::new(),
            forgotten_order: VecDeque::new(),
        }
    }

    /// Bytes of Arrow buffers held in persisted partitions.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Bytes of Arrow buffers waiting in mailboxes.
    pub fn in_flight(&self) -> u64 {
        self.in_flight
    }

    /// Keep what a peer (or this worker) delivered to a mailbox, or refuse it
    /// if it would take the worker over its memory limit.
    pub fn deliver(
        &mut self,
        worker: &str,
        mailbox: MailboxKey,
        batches: Vec<RecordBatch>,
    ) -> Result<(), String> {
        if self.forgotten.contains(&mailbox.job) {
            return Err(format!(
                "worker '{worker}': job {} has ended; its delivery is dropped",
                mailbox.job
            ));
        }
        let bytes = stratus_engine::memory::batches_memory_bytes(&batches) as u64;
        let after = self.used + self.in_flight + bytes;
        if self.limit > 0 && after > self.limit {
            return Err(format!(
                "worker '{worker}': memory limit exceeded: holding {} and {} in flight for jobs, a delivery for job {} needs {}, limit {} (spilling to disk is not supported yet; add workers or memory)",
                format_bytes(self.used),
                format_bytes(self.in_flight),
                mailbox.job,
                format_bytes(bytes),
                format_bytes(self.limit)
            ));
        }
        self.in_flight += bytes;
        let entry = self.mailboxes.entry(mailbox).or_default();
        entry.0.push(batches);
        entry.1 += bytes;
        Ok(())
    }

    /// Take a mailbox's deliveries (none if nothing came), freeing their count.
    pub fn take_mailbox(&mut self, mailbox: &MailboxKey) -> Vec<Vec<RecordBatch>> {
        match self.mailboxes.remove(mailbox) {
            Some((deliveries, bytes)) => {
                self.in_flight -= bytes;
                deliveries
            }
            None => Vec::new(),
        }
    }

    /// Drop every mailbox of a job, and refuse its deliveries from now on.
    pub fn forget_job(&mut self, job: u64) {
        if self.forgotten.insert(job) {
            self.forgotten_order.push_back(job);
            if self.forgotten_order.len() > FORGOTTEN_JOBS {
                if let Some(old) = self.forgotten_order.pop_front() {
                    self.forgotten.remove(&old);
                }
            }
        }
        let mut freed = 0;
        self.mailboxes.retain(|k, (_, bytes)| {
            let keep = k.job != job;
            if !keep {
                freed += *bytes;
            }
            keep
        });
        self.in_flight -= freed;
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
        if self.limit > 0 && after + self.in_flight > self.limit {
            return Err(format!(
                "worker '{worker}': memory limit exceeded: holding {} (and {} in flight for jobs), partition {}/{} needs {}, limit {} (spilling to disk is not supported yet; add workers or memory)",
                format_bytes(self.used),
                format_bytes(self.in_flight),
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

    /// Every partition held, with its rows and bytes.
    pub fn held(&self) -> Vec<(PartitionKey, u64, u64)> {
        let mut held: Vec<_> = self
            .partitions
            .iter()
            .map(|(key, p)| (*key, p.rows, p.bytes))
            .collect();
        held.sort_unstable_by_key(|h| h.0);
        held
    }

    /// Drop every mailbox (the jobs they were for are gone with the
    /// scheduler that ran them).
    pub fn clear_mailboxes(&mut self) {
        self.mailboxes.clear();
        self.in_flight = 0;
    }

    /// Free every partition.
    pub fn clear_partitions(&mut self) {
        self.partitions.clear();
        self.used = 0;
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

    #[test]
    fn deliveries_count_against_the_limit_until_taken() {
        let one = stratus_engine::memory::batches_memory_bytes(&[batch(1000)]) as u64;
        let mut store = Store::new(one * 2 + one / 2);
        let k = |index| PartitionKey { frame: 1, index };
        let mailbox = |job, tag| MailboxKey { job, tag };
        store.insert("w", k(0), vec![batch(1000)]).unwrap();
        store
            .deliver("w", mailbox(7, 0), vec![batch(1000)])
            .unwrap();
        assert_eq!(store.in_flight(), one);
        let err = store
            .deliver("w", mailbox(7, 1), vec![batch(1000)])
            .unwrap_err();
        assert!(err.contains("worker 'w': memory limit exceeded"), "{err}");
        assert!(err.contains("job 7"), "{err}");
        let err = store.insert("w", k(1), vec![batch(1000)]).unwrap_err();
        assert!(err.contains("in flight"), "{err}");
        // Taking the mailbox frees its count; forgetting a job frees the rest.
        assert_eq!(store.take_mailbox(&mailbox(7, 0)).len(), 1);
        assert_eq!(store.in_flight(), 0);
        assert!(store.take_mailbox(&mailbox(7, 0)).is_empty());
        store
            .deliver("w", mailbox(8, 0), vec![batch(1000)])
            .unwrap();
        store.forget_job(8);
        assert_eq!(store.in_flight(), 0);
        store.insert("w", k(1), vec![batch(1000)]).unwrap();
    }
}
