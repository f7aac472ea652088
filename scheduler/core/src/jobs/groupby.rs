//! Group-by as rounds: every holder computes the partial aggregate of its
//! partitions and delivers it worker to worker, merged in a tree of bounded
//! fan-in (as Dask's tree reductions), finalized on the root.

use stratus_protocol::messages::{
    AggFunc, GroupBySpec, MailboxKey, TaskKind, TaskOutput, ToClient,
};

use super::rounds::{Holders, PeerOf, Reduction, Rounds};
use super::{Flow, Job, JobCx, Planning};
use crate::ids::{FrameId, JobId, WorkerId};
use crate::requests::groupby_spec;

/// The job for a group-by of a persisted frame.
pub fn plan(
    at: &Planning,
    source: String,
    keys: Vec<String>,
    aggs: Vec<(String, AggFunc)>,
    all_numeric: Option<AggFunc>,
) -> Result<Box<dyn Job>, String> {
    let frame = at.persisted(&source)?;
    let schema = &at.frames.get(frame).expect("frame by name").schema;
    let spec = groupby_spec(schema, &source, keys, aggs, all_numeric)?;
    Ok(Rounds::job(frame, GroupBy::new(spec)))
}

/// Most partials one worker merges in a group-by (Dask's `split_every` of
/// its tree reductions). With at most this many holders, every holder
/// delivers to the root; with more, intermediate mergers each merge at most
/// this many, level by level, until at most this many partials remain for
/// the root. 8 keeps every merger's input small while a few levels cover
/// many workers (up to 8 holders: a star; 64: one intermediate level; 512: two).
pub const GROUPBY_FAN_IN: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum GroupByStage {
    /// Every holder computes its partial and delivers it.
    Partials,
    /// The intermediate mergers of level `i` (0: the one nearest the holders).
    Merge(usize),
    /// The root merges and finalizes.
    Final,
    Done,
}

/// A mailbox of a group-by's merge tree: where it is and its tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TreeMailbox {
    worker: WorkerId,
    tag: u32,
}

/// One merge of the tree: the mailbox its inputs go to (on the merging
/// worker), how many inputs it waits for, and where its result goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TreeNode {
    at: TreeMailbox,
    expect: u32,
    /// The next level's mailbox, or the root's.
    to: TreeMailbox,
}

/// The merge tree over one round of partials.
#[derive(Debug, Clone, PartialEq, Eq)]
struct MergeTree {
    /// Where each holder (in worker order) delivers its partial.
    leaves: Vec<TreeMailbox>,
    /// Intermediate levels, from the holders up; empty with at most fan-in holders.
    levels: Vec<Vec<TreeNode>>,
    /// The root's mailbox.
    root: TreeMailbox,
    /// How many partials the root merges (at most fan-in).
    root_expect: u32,
}

impl MergeTree {
    /// The tree over `sources` (worker, partitions held), in worker order.
    /// While more than `fan_in` partials are in play they are split, in
    /// order, into ceil(n / fan_in) groups of near-equal size; each group
    /// merges on its member holding the most partitions (lowest id on ties),
    /// so one input of every merge is local. Every mailbox takes a fresh tag
    /// from `next_tag`.
    fn plan(sources: &[(WorkerId, usize)], fan_in: usize, next_tag: &mut u32) -> Option<MergeTree> {
        if sources.is_empty() {
            return None;
        }
        let mut tag = || {
            let t = *next_tag;
            *next_tag += 1;
            t
        };
        // Where a group merges: its heaviest member.
        let heaviest = |group: &[(WorkerId, usize)]| {
            group
                .iter()
                .max_by_key(|(w, weight)| (*weight, std::cmp::Reverse(*w)))
                .copied()
                .expect("groups are not empty")
        };
        // Inputs in play at each level: the holders, then the previous
        // level's merges, in order.
        let mut in_play: Vec<(WorkerId, usize)> = sources.to_vec();
        let mut leaves: Vec<TreeMailbox> = Vec::with_capacity(sources.len());
        let mut levels: Vec<Vec<TreeNode>> = Vec::new();
        while in_play.len() > fan_in {
            let n = in_play.len();
            let groups = n.div_ceil(fan_in);
            let mut nodes = Vec::with_capacity(groups);
            let mut next = Vec::with_capacity(groups);
            for g in 0..groups {
                let inputs = g * n / groups..(g + 1) * n / groups;
                let members = &in_play[inputs.clone()];
                let (worker, _) = heaviest(members);
                let at = TreeMailbox { worker, tag: tag() };
                // Point this group's inputs at its mailbox.
                match levels.last_mut() {
                    None => leaves.extend(std::iter::repeat_n(at, members.len())),
                    Some(below) => below[inputs].iter_mut().for_each(|node| node.to = at),
                }
                nodes.push(TreeNode {
                    at,
                    expect: members.len() as u32,
                    to: at, // set by the next level (or the root)
                });
                next.push((worker, members.iter().map(|(_, weight)| weight).sum()));
            }
            levels.push(nodes);
            in_play = next;
        }
        let root = TreeMailbox {
            worker: heaviest(&in_play).0,
            tag: tag(),
        };
        match levels.last_mut() {
            None => leaves = vec![root; sources.len()],
            Some(top) => top.iter_mut().for_each(|node| node.to = root),
        }
        Some(MergeTree {
            leaves,
            levels,
            root,
            root_expect: in_play.len() as u32,
        })
    }
}

/// A group-by, merged in a tree on the workers (as Dask's tree reductions):
/// each holder computes the partial aggregate of its partitions and delivers
/// it, worker to worker, to a mailbox. With at most [`GROUPBY_FAN_IN`]
/// holders, that is the root's mailbox (the root: the holder with the most
/// partitions), and the root merges all the partials and finalizes: two
/// rounds. With more, holders are split into ceil(N / F) groups; each
/// group's partials go to a mailbox on one of its members (an intermediate
/// merger), which merges them without finalizing and delivers one merged
/// partial to the next level: one round per level, until at most F partials
/// reach the root. No worker ever receives more than F deliveries, and N
/// holders take 2 + L rounds with L = ceil(log_F N) - 1 intermediate levels
/// (N <= F: 2 rounds, the star of a single root; N <= F^2: 3).
///
/// Every mailbox of the job, in any attempt, level or group, has its own tag.
/// A lost worker restarts the whole tree from the partials under new tags
/// (the round restarts, or the next round finds a merger or the root gone);
/// stale deliveries of an earlier attempt never mix with new ones, and the
/// job's end forgets every mailbox.
#[derive(Debug)]
pub struct GroupBy {
    spec: GroupBySpec,
    fan_in: usize,
    stage: GroupByStage,
    /// The next mailbox tag to hand out.
    next_tag: u32,
    tree: Option<MergeTree>,
    table: Option<Vec<u8>>,
}

impl GroupBy {
    /// A group-by of a frame, merged with fan-in [`GROUPBY_FAN_IN`].
    pub fn new(spec: GroupBySpec) -> GroupBy {
        GroupBy::with_fan_in(spec, GROUPBY_FAN_IN)
    }

    /// A group-by with another fan-in (at least 2); tests use small ones to
    /// build deep trees over few workers.
    fn with_fan_in(spec: GroupBySpec, fan_in: usize) -> GroupBy {
        assert!(fan_in >= 2, "a merge tree needs a fan-in of at least 2");
        GroupBy {
            spec,
            fan_in,
            stage: GroupByStage::Partials,
            next_tag: 0,
            tree: None,
            table: None,
        }
    }

    fn plan_round(
        &mut self,
        job: JobId,
        holders: &Holders,
        peer: PeerOf,
    ) -> Option<Vec<(WorkerId, TaskKind)>> {
        let mailbox = |m: TreeMailbox| MailboxKey {
            job: job.0,
            tag: m.tag,
        };
        match self.stage {
            GroupByStage::Partials => {
                let sources: Vec<(WorkerId, usize)> =
                    holders.iter().map(|(w, p)| (*w, p.len())).collect();
                let tree = MergeTree::plan(&sources, self.fan_in, &mut self.next_tag)?;
                let mut tasks = Vec::with_capacity(holders.len());
                for ((worker, partitions), to) in holders.iter().zip(&tree.leaves) {
                    tasks.push((
                        *worker,
                        TaskKind::GroupByPartial {
                            partitions: partitions.clone(),
                            spec: self.spec.clone(),
                            mailbox: mailbox(*to),
                            deliver_to: peer(to.worker)?,
                        },
                    ));
                }
                self.tree = Some(tree);
                Some(tasks)
            }
            GroupByStage::Merge(level) => {
                let nodes = self.tree.as_ref()?.levels.get(level)?;
                let mut tasks = Vec::with_capacity(nodes.len());
                for node in nodes {
                    // A merger lost since the last round took its mailbox with
                    // it (or the next one's): start the tree again.
                    let (Some(_), Some(deliver_to)) = (peer(node.at.worker), peer(node.to.worker))
                    else {
                        return self.restart(job, holders, peer);
                    };
                    tasks.push((
                        node.at.worker,
                        TaskKind::GroupByMerge {
                            spec: self.spec.clone(),
                            mailbox: mailbox(node.at),
                            expect: node.expect,
                            deliver_to,
                            out: mailbox(node.to),
                        },
                    ));
                }
                Some(tasks)
            }
            GroupByStage::Final => {
                let tree = self.tree.as_ref()?;
                let (root, expect) = (tree.root, tree.root_expect);
                if peer(root.worker).is_none() {
                    // The root was lost since the last round, with its mailbox.
                    return self.restart(job, holders, peer);
                }
                Some(vec![(
                    root.worker,
                    TaskKind::GroupByFinal {
                        spec: self.spec.clone(),
                        mailbox: mailbox(root),
                        expect,
                    },
                )])
            }
            GroupByStage::Done => None,
        }
    }

    /// Run the tree again from the partials, under new tags.
    fn restart(
        &mut self,
        job: JobId,
        holders: &Holders,
        peer: PeerOf,
    ) -> Option<Vec<(WorkerId, TaskKind)>> {
        self.reset();
        self.plan_round(job, holders, peer)
    }

    fn take(&mut self, output: TaskOutput) -> Result<(), String> {
        match (self.stage, output) {
            (GroupByStage::Partials | GroupByStage::Merge(_), TaskOutput::Delivered { .. }) => {
                Ok(())
            }
            (GroupByStage::Final, TaskOutput::Table { ipc, .. }) => {
                self.table = Some(ipc);
                Ok(())
            }
            (_, other) => Err(format!("group-by: unexpected task output {other:?}")),
        }
    }

    fn advance(&mut self) {
        let levels = self.tree.as_ref().map_or(0, |t| t.levels.len());
        let next_level = |level: usize| {
            if level < levels {
                GroupByStage::Merge(level)
            } else {
                GroupByStage::Final
            }
        };
        self.stage = match self.stage {
            GroupByStage::Partials => next_level(0),
            GroupByStage::Merge(level) => next_level(level + 1),
            GroupByStage::Final | GroupByStage::Done => GroupByStage::Done,
        };
    }

    fn reset(&mut self) {
        self.stage = GroupByStage::Partials;
        self.tree = None;
        self.table = None;
    }
}

impl Reduction for GroupBy {
    fn kind(&self) -> &'static str {
        "groupby"
    }

    fn done(&self) -> bool {
        self.stage == GroupByStage::Done
    }

    fn round_tasks(
        &mut self,
        job: JobId,
        holders: &Holders,
        peer: PeerOf,
    ) -> Option<Vec<(WorkerId, TaskKind)>> {
        self.plan_round(job, holders, peer)
    }

    fn absorb(&mut self, output: TaskOutput) -> Result<(), String> {
        self.take(output)
    }

    fn end_round(&mut self) -> Result<(), String> {
        self.advance();
        Ok(())
    }

    fn reset_round(&mut self) {
        self.reset();
    }

    fn finish(&mut self, _cx: &mut JobCx, _frame: FrameId) -> Flow {
        match self.table.take() {
            // The root's final table is one IPC stream: the client's payload.
            Some(ipc) => Flow::Done(ToClient::Table(
                stratus_protocol::ipc::encode_table_payload([ipc.as_slice()]),
            )),
            None => Flow::Fail("group-by: no result".into()),
        }
    }

    fn uses_mailboxes(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeSet, HashMap};
    use stratus_protocol::messages::{PartitionKey, PeerRef};

    fn spec() -> GroupBySpec {
        GroupBySpec {
            keys: vec!["city".into()],
            aggs: vec![(
                "temperature".into(),
                stratus_protocol::messages::AggFunc::Mean,
            )],
        }
    }

    /// `n` holders with ids 1..=n; holder `i` holds `i % 3 + 1` partitions.
    fn holders(n: u64) -> Holders {
        (1..=n)
            .map(|w| {
                let parts = (0..w % 3 + 1)
                    .map(|i| PartitionKey {
                        frame: 1,
                        index: (w * 10 + i) as u32,
                    })
                    .collect();
                (WorkerId(w), parts)
            })
            .collect()
    }

    fn peer_of(alive: &BTreeSet<WorkerId>) -> impl Fn(WorkerId) -> Option<PeerRef> + '_ {
        move |w| {
            alive.contains(&w).then(|| PeerRef {
                worker: w.0,
                address: format!("10.0.0.{w}:1"),
                cert_name: String::new(),
            })
        }
    }

    /// Play a group-by's rounds the way workers would, checking that every
    /// merge finds exactly the deliveries it expects in its mailbox and that
    /// no mailbox receives more than `fan_in`. Returns the rounds' tasks.
    fn play(job: &mut GroupBy, holders: &Holders, fan_in: usize) -> Vec<Vec<(WorkerId, TaskKind)>> {
        let alive: BTreeSet<WorkerId> = holders.keys().copied().collect();
        let peer = peer_of(&alive);
        let mut mailboxes: HashMap<(WorkerId, MailboxKey), usize> = HashMap::new();
        let mut rounds = Vec::new();
        fn deliver(
            mailboxes: &mut HashMap<(WorkerId, MailboxKey), usize>,
            to: &PeerRef,
            mailbox: MailboxKey,
            fan_in: usize,
        ) {
            let n = mailboxes.entry((WorkerId(to.worker), mailbox)).or_default();
            *n += 1;
            assert!(*n <= fan_in, "mailbox {mailbox:?} got more than {fan_in}");
        }
        while let Some(tasks) = job.plan_round(JobId(7), holders, &peer) {
            assert!(rounds.len() < 20, "too many rounds");
            for (worker, kind) in &tasks {
                match kind {
                    TaskKind::GroupByPartial {
                        mailbox,
                        deliver_to,
                        ..
                    } => {
                        deliver(&mut mailboxes, deliver_to, *mailbox, fan_in);
                        job.take(TaskOutput::Delivered { rows: 1, bytes: 1 })
                            .unwrap();
                    }
                    TaskKind::GroupByMerge {
                        mailbox,
                        expect,
                        deliver_to,
                        out,
                        ..
                    } => {
                        let got = mailboxes.remove(&(*worker, *mailbox));
                        assert_eq!(got, Some(*expect as usize), "merge on {worker}");
                        deliver(&mut mailboxes, deliver_to, *out, fan_in);
                        job.take(TaskOutput::Delivered { rows: 1, bytes: 1 })
                            .unwrap();
                    }
                    TaskKind::GroupByFinal {
                        mailbox, expect, ..
                    } => {
                        let got = mailboxes.remove(&(*worker, *mailbox));
                        assert_eq!(got, Some(*expect as usize), "final on {worker}");
                        job.take(TaskOutput::Table {
                            rows: 1,
                            ipc: vec![1],
                        })
                        .unwrap();
                    }
                    other => panic!("unexpected task {other:?}"),
                }
            }
            job.advance();
            rounds.push(tasks);
        }
        assert_eq!(job.stage, GroupByStage::Done);
        assert!(mailboxes.is_empty(), "undelivered: {mailboxes:?}");
        rounds
    }

    #[test]
    fn up_to_fan_in_holders_deliver_to_the_heaviest_holder_in_two_rounds() {
        for n in 1..=GROUPBY_FAN_IN as u64 {
            let holders = holders(n);
            let mut job = GroupBy::new(spec());
            let rounds = play(&mut job, &holders, GROUPBY_FAN_IN);
            assert_eq!(rounds.len(), 2, "{n} holders");
            // The root: most partitions, lowest id on ties (as before the tree).
            let root = holders
                .iter()
                .max_by_key(|(w, p)| (p.len(), std::cmp::Reverse(**w)))
                .map(|(w, _)| *w)
                .unwrap();
            for (_, kind) in &rounds[0] {
                let TaskKind::GroupByPartial {
                    mailbox,
                    deliver_to,
                    ..
                } = kind
                else {
                    panic!("{kind:?}")
                };
                assert_eq!(deliver_to.worker, root.0);
                assert_eq!(*mailbox, MailboxKey { job: 7, tag: 0 });
            }
            assert_eq!(rounds[1].len(), 1);
            assert!(matches!(
                &rounds[1][0],
                (w, TaskKind::GroupByFinal { expect, mailbox, .. })
                    if *w == root && *expect == n as u32 && mailbox.tag == 0
            ));
        }
    }

    #[test]
    fn trees_bound_every_merge_by_the_fan_in_level_by_level() {
        for fan_in in [2usize, 3, 8] {
            for n in 1..=200u64 {
                let holders = holders(n);
                let mut job = GroupBy::with_fan_in(spec(), fan_in);
                let rounds = play(&mut job, &holders, fan_in);
                // ceil(log_F n) - 1 intermediate levels, never fewer than none.
                let mut levels = 0;
                let mut reach = fan_in as u64;
                while reach < n {
                    reach *= fan_in as u64;
                    levels += 1;
                }
                assert_eq!(rounds.len(), 2 + levels, "n = {n}, F = {fan_in}");
                // Every mailbox has its own tag; every merge has a local input.
                let tree = job.tree.as_ref().unwrap();
                let mut tags: Vec<u32> = tree
                    .levels
                    .iter()
                    .flatten()
                    .map(|node| node.at.tag)
                    .chain([tree.root.tag])
                    .collect();
                let count = tags.len();
                tags.sort_unstable();
                tags.dedup();
                assert_eq!(tags.len(), count);
                for (i, level) in tree.levels.iter().enumerate() {
                    for node in level {
                        let local = if i == 0 {
                            tree.leaves
                                .iter()
                                .zip(holders.keys())
                                .any(|(to, w)| *to == node.at && *w == node.at.worker)
                        } else {
                            tree.levels[i - 1].iter().any(|below| {
                                below.to == node.at && below.at.worker == node.at.worker
                            })
                        };
                        assert!(local, "n = {n}, F = {fan_in}: {node:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn twenty_holders_merge_in_three_groups_then_at_the_root() {
        let holders = holders(20);
        let mut job = GroupBy::new(spec());
        let rounds = play(&mut job, &holders, GROUPBY_FAN_IN);
        assert_eq!(rounds.len(), 3);
        let merges: Vec<u32> = rounds[1]
            .iter()
            .map(|(_, k)| match k {
                TaskKind::GroupByMerge { expect, .. } => *expect,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(merges, vec![6, 7, 7]);
        assert!(matches!(
            rounds[2][..],
            [(_, TaskKind::GroupByFinal { expect: 3, .. })]
        ));
    }

    #[test]
    fn a_merger_lost_between_rounds_restarts_the_tree_under_new_tags() {
        let holders = holders(5);
        let mut job = GroupBy::with_fan_in(spec(), 2);
        let all: BTreeSet<WorkerId> = holders.keys().copied().collect();
        let tasks = job.plan_round(JobId(7), &holders, &peer_of(&all)).unwrap();
        let first_tags: BTreeSet<u32> = tasks
            .iter()
            .map(|(_, k)| match k {
                TaskKind::GroupByPartial { mailbox, .. } => mailbox.tag,
                other => panic!("{other:?}"),
            })
            .collect();
        for _ in &tasks {
            job.take(TaskOutput::Delivered { rows: 1, bytes: 1 })
                .unwrap();
        }
        job.advance();
        assert_eq!(job.stage, GroupByStage::Merge(0));
        // A merger of the first level is gone (its partitions now held by 1).
        let merger = job.tree.as_ref().unwrap().levels[0][1].at.worker;
        let alive: BTreeSet<WorkerId> = all.iter().copied().filter(|w| *w != merger).collect();
        let mut moved = holders.clone();
        let parts = moved.remove(&merger).unwrap();
        moved.get_mut(&WorkerId(1)).unwrap().extend(parts);
        let tasks = job.plan_round(JobId(7), &moved, &peer_of(&alive)).unwrap();
        assert_eq!(job.stage, GroupByStage::Partials);
        assert_eq!(tasks.len(), 4);
        for (_, kind) in &tasks {
            let TaskKind::GroupByPartial {
                mailbox,
                deliver_to,
                ..
            } = kind
            else {
                panic!("{kind:?}")
            };
            assert!(
                !first_tags.contains(&mailbox.tag),
                "tag {} reused",
                mailbox.tag
            );
            assert_ne!(deliver_to.worker, merger.0);
        }
    }
}
