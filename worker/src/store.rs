//! What this worker holds, counted against its memory limit: persisted
//! partitions, and the mailboxes where peers deliver data for a job (shuffle
//! ranges, partial group-bys) until a task takes it.
//!
//! With a spill directory, the store keeps the bytes of partitions in RAM
//! under a *target* fraction of the limit: past it, the least recently used
//! partitions are handed out to be written to disk ([`Store::plan_spills`];
//! the writing is the I/O edge's), and once written they live on disk only
//! ([`Residence::Disk`]) and are read back by the tasks that use them. Past
//! the *pause* fraction, tasks that would add data wait for the spills in
//! flight ([`Store::paused`]). A partition is refused only when it would go
//! past the limit and spilling cannot make room (no spill directory, or the
//! last spill failed: the error says why). Deliveries waiting in mailboxes
//! (a shuffle's ranges) spill too, after every persisted partition that can:
//! the task that takes a mailbox reads them back, and their files are
//! deleted when it ends. A delivery that would take the deliveries in RAM
//! past the limit while spilling can make room is *parked*: it waits, in
//! arrival order, for the spills of older ones, and is answered (so its
//! sender's task goes on) once it fits: the sender is held back, never
//! refused for a spill that lags. What waits is capped too: past the limit
//! of parked bytes (peers with many streams open), a delivery is refused.

use std::collections::{HashMap, HashSet, VecDeque};

use arrow_array::RecordBatch;
use stratus_protocol::messages::{MailboxKey, PartitionKey};
use stratus_protocol::units::format_bytes;

use crate::spill::SpillFile;

/// Where a persisted partition's batches are.
#[derive(Debug, Clone)]
pub enum Residence {
    /// In RAM.
    Memory(Vec<RecordBatch>),
    /// In RAM, being written to disk (still counted in RAM until written).
    Spilling(Vec<RecordBatch>),
    /// On disk only.
    Disk(SpillFile),
}

/// One persisted partition.
#[derive(Debug, Clone)]
pub struct StoredPartition {
    pub residence: Residence,
    pub rows: u64,
    /// Bytes of its Arrow buffers (in RAM, or once read back).
    pub bytes: u64,
    /// When it was last kept or used (the store's clock): spilling goes
    /// least recently used first.
    last_use: u64,
}

/// What a spill file holds: a persisted partition, or a delivery waiting
/// in a mailbox (numbered in arrival order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpillTarget {
    Partition(PartitionKey),
    Delivery(MailboxKey, u64),
}

impl SpillTarget {
    /// A file name stem for it.
    pub fn stem(&self) -> String {
        match self {
            SpillTarget::Partition(k) => format!("p{}-{}", k.frame, k.index),
            SpillTarget::Delivery(m, n) => format!("d{}-{}-{n}", m.job, m.tag),
        }
    }

    /// What it is, in messages.
    pub fn describe(&self) -> String {
        match self {
            SpillTarget::Partition(k) => format!("partition {}/{}", k.frame, k.index),
            SpillTarget::Delivery(m, _) => format!("a delivery for mailbox {}/{}", m.job, m.tag),
        }
    }
}

/// A held partition or delivery as a task gets it: its batches, or the file
/// it was spilled to (read back by the task body, on its compute thread).
#[derive(Debug, Clone)]
pub enum Part {
    Batches(Vec<RecordBatch>),
    Spilled(SpillFile),
}

/// One delivery waiting in a mailbox.
#[derive(Debug)]
struct Delivered {
    serial: u64,
    residence: Residence,
    bytes: u64,
}

/// A delivery waiting for room in RAM (see [`Store::deliver`]).
#[derive(Debug)]
struct Parked {
    ticket: u64,
    mailbox: MailboxKey,
    batches: Vec<RecordBatch>,
    bytes: u64,
}

/// When to spill and when to pause, as fractions of the memory limit
/// (Dask's worker memory `target` and `pause`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpillPolicy {
    pub target: f64,
    pub pause: f64,
}

impl Default for SpillPolicy {
    fn default() -> Self {
        SpillPolicy {
            target: 0.6,
            pause: 0.8,
        }
    }
}

/// The worker's store.
#[derive(Debug)]
pub struct Store {
    partitions: HashMap<PartitionKey, StoredPartition>,
    /// Bytes of partitions in RAM (spilling ones included).
    used: u64,
    /// Bytes of partitions being written to disk.
    spilling: u64,
    /// Bytes (in RAM terms) of partitions on disk only.
    spilled: u64,
    limit: u64,
    /// None: no spill directory (a partition past the limit is refused).
    spill: Option<SpillPolicy>,
    /// Why the last spill failed, until one succeeds or disk space is freed.
    spill_error: Option<String>,
    /// Ticks since the last spill failed: past [`SPILL_RETRY_TICKS`],
    /// spilling is tried again (the disk may be writable again).
    spill_error_ticks: u32,
    /// Spill files whose partitions are gone, for the I/O edge to delete.
    doomed: Vec<SpillFile>,
    clock: u64,
    /// Deliveries per mailbox, in arrival order.
    mailboxes: HashMap<MailboxKey, Vec<Delivered>>,
    /// Bytes of deliveries in RAM (spilling ones included).
    in_flight: u64,
    /// Bytes of deliveries being written to disk.
    in_flight_spilling: u64,
    /// Spill files of deliveries a task took: deleted when it ends.
    taken: Vec<SpillFile>,
    /// Working memory reserved by running tasks.
    working: u64,
    /// Deliveries waiting for room, oldest first, and their bytes.
    parked: VecDeque<Parked>,
    parked_bytes: u64,
    /// Answers to parked deliveries decided outside [`Store::admit_parked`]
    /// (their job ended, or the scheduler connection did).
    parked_answers: Vec<(u64, Result<(), String>)>,
    /// Jobs whose mailboxes were dropped (the latest [`FORGOTTEN_JOBS`]): a
    /// late delivery for one of them is refused, not kept forever.
    forgotten: HashSet<u64>,
    forgotten_order: VecDeque<u64>,
}

/// Ticks (heartbeats) after a failed spill before spilling is tried again.
pub const SPILL_RETRY_TICKS: u32 = 5;

/// The refusal of a delivery for a job that has ended.
fn job_ended(worker: &str, job: u64) -> String {
    format!("worker '{worker}': job {job} has ended; its delivery is dropped")
}

/// How many ended jobs a worker remembers, to refuse their late deliveries.
const FORGOTTEN_JOBS: usize = 4096;

impl Store {
    /// A store that may hold up to `limit` bytes in RAM (0 = no limit), and
    /// spills past `spill`'s target when given.
    pub fn new(limit: u64, spill: Option<SpillPolicy>) -> Self {
        Store {
            partitions: HashMap::new(),
            used: 0,
            spilling: 0,
            spilled: 0,
            limit,
            spill,
            spill_error: None,
            spill_error_ticks: 0,
            doomed: Vec::new(),
            clock: 0,
            mailboxes: HashMap::new(),
            in_flight: 0,
            in_flight_spilling: 0,
            taken: Vec::new(),
            working: 0,
            parked: VecDeque::new(),
            parked_bytes: 0,
            parked_answers: Vec::new(),
            forgotten: HashSet::new(),
            forgotten_order: VecDeque::new(),
        }
    }

    /// Bytes of Arrow buffers of persisted partitions in RAM.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// Bytes of Arrow buffers of deliveries in RAM: in mailboxes, or
    /// parked until there is room.
    pub fn in_flight(&self) -> u64 {
        self.in_flight + self.parked_bytes
    }

    /// Working memory reserved by running tasks.
    pub fn working(&self) -> u64 {
        self.working
    }

    /// Reserve working memory for a task that starts.
    pub fn reserve_working(&mut self, bytes: u64) {
        self.working += bytes;
    }

    /// Give back a task's working memory.
    pub fn release_working(&mut self, bytes: u64) {
        self.working = self.working.saturating_sub(bytes);
    }

    /// Whether a task needing `bytes` of working memory fits now: next to
    /// the deliveries in RAM, the other tasks' working memory and, when
    /// spilling can not make room, the partitions in RAM (when it can, they
    /// go to disk for it, as Spark's execution memory evicts storage).
    pub fn has_room_for(&self, bytes: u64) -> bool {
        let resident = if self.can_spill() { 0 } else { self.used };
        self.limit == 0 || resident + self.in_flight() + self.working + bytes <= self.limit
    }

    /// Deliveries parked until there is room.
    pub fn parked(&self) -> usize {
        self.parked.len()
    }

    /// Bytes (as Arrow buffers) of partitions on disk only.
    pub fn spilled(&self) -> u64 {
        self.spilled
    }

    /// Partitions on disk only.
    pub fn spilled_partitions(&self) -> usize {
        self.partitions
            .values()
            .filter(|p| matches!(p.residence, Residence::Disk(_)))
            .count()
    }

    /// Why spilling does not work now, if it does not.
    pub fn spill_error(&self) -> Option<&str> {
        self.spill_error.as_deref()
    }

    /// Whether tasks that add data should wait: RAM past the pause fraction
    /// while spills that will free some are being written.
    pub fn paused(&self) -> bool {
        match self.spill {
            Some(policy) if self.limit > 0 && self.spilling + self.in_flight_spilling > 0 => {
                (self.used + self.in_flight() + self.working) as f64
                    > policy.pause * self.limit as f64
            }
            _ => false,
        }
    }

    /// Time passed (a heartbeat): a spill that failed is tried again after
    /// [`SPILL_RETRY_TICKS`] (a disk that was full or read-only may be
    /// writable again); until then, what spilling would make room for is
    /// refused, naming the error.
    pub fn tick(&mut self) {
        if self.spill_error.is_some() {
            self.spill_error_ticks += 1;
            if self.spill_error_ticks >= SPILL_RETRY_TICKS {
                self.spill_error = None;
            }
        }
    }

    /// Whether spilling can make room now.
    fn can_spill(&self) -> bool {
        self.spill.is_some() && self.spill_error.is_none()
    }

    /// Why a store past its limit can not make room.
    fn no_room_reason(&self) -> String {
        match (&self.spill, &self.spill_error) {
            (None, _) => "no spill directory; add workers or memory, or give --spill-dir".into(),
            (Some(_), Some(error)) => format!("spilling failed: {error}"),
            (Some(_), None) => "add workers or memory".into(),
        }
    }

    /// Keep what a peer (or this worker) delivered to a mailbox, or refuse it
    /// if it would take the worker over its memory limit. What can be
    /// spilled does not count against a delivery: only deliveries in RAM
    /// do, and when they would go past the limit while spilling can make
    /// room, the delivery is parked (`None`) and answered by a later
    /// [`Store::admit_parked`] under the same `ticket`.
    pub fn deliver(
        &mut self,
        worker: &str,
        ticket: u64,
        mailbox: MailboxKey,
        batches: Vec<RecordBatch>,
    ) -> Option<Result<(), String>> {
        if self.forgotten.contains(&mailbox.job) {
            return Some(Err(job_ended(worker, mailbox.job)));
        }
        let bytes = stratus_engine::memory::batches_memory_bytes(&batches) as u64;
        if self.limit > 0 && self.can_spill() && bytes <= self.limit {
            if !self.parked.is_empty() || self.in_flight + bytes > self.limit {
                // What waits is held in RAM too: at most the limit of it,
                // so senders with many streams can not grow it without end.
                if self.parked_bytes + bytes > self.limit {
                    return Some(Err(self.parked_refusal(worker, mailbox.job, bytes)));
                }
                self.parked.push_back(Parked {
                    ticket,
                    mailbox,
                    batches,
                    bytes,
                });
                self.parked_bytes += bytes;
                return None;
            }
        } else if self.limit > 0 {
            let resident = if self.can_spill() { 0 } else { self.used };
            if resident + self.in_flight + bytes > self.limit {
                return Some(Err(self.delivery_refusal(worker, mailbox.job, bytes)));
            }
        }
        self.keep_delivery(mailbox, batches, bytes);
        Some(Ok(()))
    }

    /// Why a delivery of `bytes` for `job` is refused.
    fn delivery_refusal(&self, worker: &str, job: u64, bytes: u64) -> String {
        format!(
            "worker '{worker}': memory limit exceeded: holding {} and {} in flight for jobs, a delivery for job {} needs {}, limit {} ({})",
            format_bytes(self.used),
            format_bytes(self.in_flight),
            job,
            format_bytes(bytes),
            format_bytes(self.limit),
            self.no_room_reason()
        )
    }

    /// Why a delivery is refused when the deliveries waiting for room
    /// already hold as much as the limit.
    fn parked_refusal(&self, worker: &str, job: u64, bytes: u64) -> String {
        format!(
            "worker '{worker}': memory limit exceeded: {} deliveries holding {} already wait for spills to make room, a delivery for job {} needs {}, limit {} (the senders outpace spilling; send smaller chunks with shuffle_chunk_bytes or add memory)",
            self.parked.len(),
            format_bytes(self.parked_bytes),
            job,
            format_bytes(bytes),
            format_bytes(self.limit),
        )
    }

    fn keep_delivery(&mut self, mailbox: MailboxKey, batches: Vec<RecordBatch>, bytes: u64) {
        self.clock += 1;
        self.mailboxes.entry(mailbox).or_default().push(Delivered {
            serial: self.clock,
            residence: Residence::Memory(batches),
            bytes,
        });
        self.in_flight += bytes;
    }

    /// Answer the parked deliveries that can be answered now, oldest first:
    /// kept once they fit, refused once spilling can not make room (or
    /// their job ended). Returns (ticket, answer) pairs.
    pub fn admit_parked(&mut self, worker: &str) -> Vec<(u64, Result<(), String>)> {
        let mut answers = std::mem::take(&mut self.parked_answers);
        while let Some(next) = self.parked.front() {
            let (job, bytes) = (next.mailbox.job, next.bytes);
            let answer = if self.forgotten.contains(&job) {
                Err(job_ended(worker, job))
            } else if self.in_flight + bytes <= self.limit {
                Ok(())
            } else if !self.can_spill() {
                Err(self.delivery_refusal(worker, job, bytes))
            } else {
                break;
            };
            let parked = self.parked.pop_front().expect("front exists");
            self.parked_bytes -= parked.bytes;
            if answer.is_ok() {
                self.keep_delivery(parked.mailbox, parked.batches, parked.bytes);
            }
            answers.push((parked.ticket, answer));
        }
        answers
    }

    /// Refuse every parked delivery with `reason` (or only a job's).
    fn refuse_parked(&mut self, job: Option<u64>, reason: &str) {
        let (gone, staying): (VecDeque<Parked>, VecDeque<Parked>) =
            std::mem::take(&mut self.parked)
                .into_iter()
                .partition(|p| job.is_none_or(|job| p.mailbox.job == job));
        self.parked = staying;
        for p in gone {
            self.parked_bytes -= p.bytes;
            self.parked_answers
                .push((p.ticket, Err(reason.to_string())));
        }
    }

    /// Forget a delivery's count (it leaves the store); its file, if any.
    fn release_delivery(&mut self, d: Delivered) -> Option<SpillFile> {
        match d.residence {
            Residence::Memory(_) => {
                self.in_flight -= d.bytes;
                None
            }
            Residence::Spilling(_) => {
                self.in_flight -= d.bytes;
                self.in_flight_spilling -= d.bytes;
                None
            }
            Residence::Disk(file) => Some(file),
        }
    }

    /// Take a mailbox's deliveries (none if nothing came), freeing their
    /// count. Spilled ones come as their files, which are deleted once the
    /// task that took them ends ([`Store::take_taken`]).
    pub fn take_mailbox(&mut self, mailbox: &MailboxKey) -> Vec<Part> {
        let Some(deliveries) = self.mailboxes.remove(mailbox) else {
            return Vec::new();
        };
        let mut parts = Vec::with_capacity(deliveries.len());
        for d in deliveries {
            let part = match &d.residence {
                Residence::Memory(b) | Residence::Spilling(b) => Part::Batches(b.clone()),
                Residence::Disk(file) => Part::Spilled(file.clone()),
            };
            if let Some(file) = self.release_delivery(d) {
                self.taken.push(file);
            }
            parts.push(part);
        }
        parts
    }

    /// The spill files of the deliveries taken since the last call: the
    /// caller deletes them when the task that took them ends.
    pub fn take_taken(&mut self) -> Vec<SpillFile> {
        std::mem::take(&mut self.taken)
    }

    /// Files to delete once a task ended.
    pub fn discard(&mut self, files: Vec<SpillFile>) {
        self.doomed.extend(files);
    }

    /// Drop every mailbox of a job, and refuse its deliveries from now on.
    pub fn forget_job(&mut self, job: u64) {
        self.refuse_parked(
            Some(job),
            &format!("job {job} has ended; its delivery is dropped"),
        );
        if self.forgotten.insert(job) {
            self.forgotten_order.push_back(job);
            if self.forgotten_order.len() > FORGOTTEN_JOBS {
                if let Some(old) = self.forgotten_order.pop_front() {
                    self.forgotten.remove(&old);
                }
            }
        }
        let gone: Vec<MailboxKey> = self
            .mailboxes
            .keys()
            .filter(|k| k.job == job)
            .copied()
            .collect();
        for key in gone {
            for d in self.mailboxes.remove(&key).unwrap_or_default() {
                if let Some(file) = self.release_delivery(d) {
                    self.doomed.push(file);
                }
            }
        }
    }

    /// Partitions held.
    pub fn len(&self) -> usize {
        self.partitions.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// The partition, marked used now (for least-recently-used spilling).
    pub fn touch(&mut self, key: &PartitionKey) -> Option<&StoredPartition> {
        self.clock += 1;
        let clock = self.clock;
        let p = self.partitions.get_mut(key)?;
        p.last_use = clock;
        Some(p)
    }

    /// The partition, if held.
    pub fn get(&self, key: &PartitionKey) -> Option<&StoredPartition> {
        self.partitions.get(key)
    }

    /// Keep a partition, or refuse it if it would take the worker past its
    /// memory limit and spilling can not make room.
    pub fn insert(
        &mut self,
        worker: &str,
        key: PartitionKey,
        batches: Vec<RecordBatch>,
    ) -> Result<(u64, u64), String> {
        let rows = batches.iter().map(|b| b.num_rows() as u64).sum();
        let bytes = stratus_engine::memory::batches_memory_bytes(&batches) as u64;
        let replaced = self.partitions.get(&key).map_or(0, |p| {
            if matches!(p.residence, Residence::Disk(_)) {
                0
            } else {
                p.bytes
            }
        });
        let after = self.used - replaced + bytes;
        if self.limit > 0 && after + self.in_flight > self.limit && !self.can_spill() {
            return Err(format!(
                "worker '{worker}': memory limit exceeded: holding {} (and {} in flight for jobs), partition {}/{} needs {}, limit {} ({})",
                format_bytes(self.used),
                format_bytes(self.in_flight),
                key.frame,
                key.index,
                format_bytes(bytes),
                format_bytes(self.limit),
                self.no_room_reason()
            ));
        }
        self.remove(&key);
        self.clock += 1;
        self.used += bytes;
        self.partitions.insert(
            key,
            StoredPartition {
                residence: Residence::Memory(batches),
                rows,
                bytes,
                last_use: self.clock,
            },
        );
        Ok((rows, bytes))
    }

    /// Partitions to write to disk now, least recently used first, until
    /// what stays in RAM is under the target; they are marked spilling.
    pub fn plan_spills(&mut self) -> Vec<(SpillTarget, Vec<RecordBatch>)> {
        let Some(policy) = self.spill else {
            return Vec::new();
        };
        if self.limit == 0 || self.spill_error.is_some() {
            return Vec::new();
        }
        let target = (policy.target * self.limit as f64) as u64;
        // Parked deliveries and tasks' working memory count: room for them
        // is made by spilling.
        let staying = (self.used - self.spilling)
            + (self.in_flight - self.in_flight_spilling)
            + self.parked_bytes
            + self.working;
        if staying <= target {
            return Vec::new();
        }
        let mut candidates: Vec<(u64, PartitionKey)> = self
            .partitions
            .iter()
            .filter(|(_, p)| matches!(p.residence, Residence::Memory(_)) && p.rows > 0)
            .map(|(key, p)| (p.last_use, *key))
            .collect();
        candidates.sort_unstable();
        let mut excess = staying - target;
        let mut plan = Vec::new();
        for (_, key) in candidates {
            if excess == 0 {
                break;
            }
            let p = self.partitions.get_mut(&key).expect("candidate held");
            let Residence::Memory(batches) = &p.residence else {
                continue;
            };
            let batches = batches.clone();
            p.residence = Residence::Spilling(batches.clone());
            self.spilling += p.bytes;
            excess = excess.saturating_sub(p.bytes);
            plan.push((SpillTarget::Partition(key), batches));
        }
        // Then deliveries, oldest first.
        if excess > 0 {
            let mut waiting: Vec<(u64, MailboxKey)> = self
                .mailboxes
                .iter()
                .flat_map(|(key, ds)| {
                    ds.iter()
                        .filter(|d| matches!(d.residence, Residence::Memory(_)) && d.bytes > 0)
                        .map(|d| (d.serial, *key))
                })
                .collect();
            waiting.sort_unstable_by_key(|&(serial, _)| serial);
            for (serial, key) in waiting {
                if excess == 0 {
                    break;
                }
                let Some(d) = self
                    .mailboxes
                    .get_mut(&key)
                    .and_then(|ds| ds.iter_mut().find(|d| d.serial == serial))
                else {
                    continue;
                };
                let Residence::Memory(batches) = &d.residence else {
                    continue;
                };
                let batches = batches.clone();
                d.residence = Residence::Spilling(batches.clone());
                self.in_flight_spilling += d.bytes;
                excess = excess.saturating_sub(d.bytes);
                plan.push((SpillTarget::Delivery(key, serial), batches));
            }
        }
        plan
    }

    /// A spill planned by [`Store::plan_spills`] ended: the partition (or
    /// delivery) now lives on disk, or stays in RAM (and spilling stops until
    /// it works again). A spill of something dropped, replaced or taken
    /// meanwhile is deleted.
    pub fn spilled_to(&mut self, target: SpillTarget, result: Result<SpillFile, String>) {
        let (residence, bytes) = match target {
            SpillTarget::Partition(key) => match self.partitions.get_mut(&key) {
                Some(p) => (&mut p.residence, p.bytes),
                None => return self.doomed.extend(result.ok()),
            },
            SpillTarget::Delivery(mailbox, serial) => match self
                .mailboxes
                .get_mut(&mailbox)
                .and_then(|ds| ds.iter_mut().find(|d| d.serial == serial))
            {
                Some(d) => (&mut d.residence, d.bytes),
                None => return self.doomed.extend(result.ok()),
            },
        };
        let Residence::Spilling(batches) = residence else {
            return self.doomed.extend(result.ok());
        };
        let on_disk = match result {
            Ok(file) => {
                *residence = Residence::Disk(file);
                self.spill_error = None;
                true
            }
            Err(error) => {
                *residence = Residence::Memory(std::mem::take(batches));
                self.spill_error = Some(error);
                self.spill_error_ticks = 0;
                false
            }
        };
        let (in_ram, writing) = match target {
            SpillTarget::Partition(_) => {
                if on_disk {
                    self.spilled += bytes;
                }
                (&mut self.used, &mut self.spilling)
            }
            SpillTarget::Delivery(..) => (&mut self.in_flight, &mut self.in_flight_spilling),
        };
        *writing -= bytes;
        if on_disk {
            *in_ram -= bytes;
        }
    }

    /// Spill files to delete (their partitions are gone).
    pub fn take_doomed(&mut self) -> Vec<SpillFile> {
        if !self.doomed.is_empty() {
            // Disk space comes back: spilling may work again.
            self.spill_error = None;
        }
        std::mem::take(&mut self.doomed)
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
        self.refuse_parked(
            None,
            "the worker's scheduler connection ended; the delivery is dropped",
        );
        let all: Vec<MailboxKey> = self.mailboxes.keys().copied().collect();
        for key in all {
            for d in self.mailboxes.remove(&key).unwrap_or_default() {
                if let Some(file) = self.release_delivery(d) {
                    self.doomed.push(file);
                }
            }
        }
    }

    /// Free every partition.
    pub fn clear_partitions(&mut self) {
        let keys: Vec<PartitionKey> = self.partitions.keys().copied().collect();
        for key in keys {
            self.remove(&key);
        }
    }

    /// Free a partition (its spill file, if any, is to be deleted).
    pub fn remove(&mut self, key: &PartitionKey) {
        let Some(p) = self.partitions.remove(key) else {
            return;
        };
        match p.residence {
            Residence::Memory(_) => self.used -= p.bytes,
            Residence::Spilling(_) => {
                self.used -= p.bytes;
                self.spilling -= p.bytes;
            }
            Residence::Disk(file) => {
                self.spilled -= p.bytes;
                self.doomed.push(file);
            }
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
        let mut store = Store::new(one * 2 + one / 2, None);
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
        let mut store = Store::new(one * 2 + one / 2, None);
        let k = |index| PartitionKey { frame: 1, index };
        let mailbox = |job, tag| MailboxKey { job, tag };
        store.insert("w", k(0), vec![batch(1000)]).unwrap();
        store
            .deliver("w", 0, mailbox(7, 0), vec![batch(1000)])
            .expect("answered at once")
            .unwrap();
        assert_eq!(store.in_flight(), one);
        let err = store
            .deliver("w", 0, mailbox(7, 1), vec![batch(1000)])
            .expect("answered at once")
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
            .deliver("w", 0, mailbox(8, 0), vec![batch(1000)])
            .expect("answered at once")
            .unwrap();
        store.forget_job(8);
        assert_eq!(store.in_flight(), 0);
        store.insert("w", k(1), vec![batch(1000)]).unwrap();
    }
}
