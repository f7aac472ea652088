//! Group-by merged in a tree of bounded fan-in, over many holders, and
//! restarted under new mailbox tags when a merger is lost.

mod common;

use common::*;
use stratus_protocol::messages::{AggFunc, MailboxKey};

// ----- 11. group-by merge tree -----------------------------------------------

fn groupby_mean(source: &str) -> ClientRequest {
    ClientRequest::GroupBy {
        source: source.to_string(),
        keys: vec!["city".into()],
        aggs: vec![("temperature".into(), AggFunc::Mean)],
        all_numeric: None,
    }
}

fn is_groupby_task(kind: &TaskKind) -> bool {
    matches!(
        kind,
        TaskKind::GroupByPartial { .. }
            | TaskKind::GroupByMerge { .. }
            | TaskKind::GroupByFinal { .. }
    )
}

/// A mailbox on a worker: (worker, job, tag).
type Target = (WorkerId, u64, u32);

fn target(worker: WorkerId, m: MailboxKey) -> Target {
    (worker, m.job, m.tag)
}

/// Where a task delivers, for partials and merges.
fn delivery_of(kind: &TaskKind) -> Option<Target> {
    match kind {
        TaskKind::GroupByPartial {
            mailbox,
            deliver_to,
            ..
        } => Some(target(WorkerId(deliver_to.worker), *mailbox)),
        TaskKind::GroupByMerge {
            deliver_to, out, ..
        } => Some(target(WorkerId(deliver_to.worker), *out)),
        _ => None,
    }
}

/// The mailbox a merge or final on `worker` reads and how many deliveries
/// it expects.
fn reads_of(worker: WorkerId, kind: &TaskKind) -> Option<(Target, u32)> {
    match kind {
        TaskKind::GroupByMerge {
            mailbox, expect, ..
        }
        | TaskKind::GroupByFinal {
            mailbox, expect, ..
        } => Some((target(worker, *mailbox), *expect)),
        _ => None,
    }
}

/// Finish a group-by's running tasks round by round, as workers would:
/// partials and merges report a delivery, the final a table. Checks that
/// each merge and the final expect exactly what their mailbox received, that
/// no mailbox receives more than the fan-in (8), and that nothing is left
/// undelivered. Returns every round's tasks and the commands of the last step.
fn run_groupby_tree(
    sim: &mut Sim,
    request: RequestId,
) -> (Vec<Vec<(WorkerId, TaskKind)>>, Vec<Command>) {
    let mut mailboxes: BTreeMap<Target, u32> = BTreeMap::new();
    let mut rounds = Vec::new();
    for _ in 0..10 {
        let tasks = sim.running_where(is_groupby_task);
        assert!(!tasks.is_empty(), "no group-by task running, no answer");
        let mut last = Vec::new();
        for (worker, id, kind) in &tasks {
            if let Some((at, expect)) = reads_of(*worker, kind) {
                assert_eq!(mailboxes.remove(&at), Some(expect), "merge at {at:?}");
            }
            let output = match delivery_of(kind) {
                Some(to) => {
                    let got = mailboxes.entry(to).or_default();
                    *got += 1;
                    assert!(*got <= 8, "mailbox {to:?} received more than 8 partials");
                    TaskOutput::Delivered {
                        rows: 3,
                        bytes: 100,
                    }
                }
                None => TaskOutput::Table {
                    rows: 3,
                    ipc: vec![1, 2, 3],
                },
            };
            last = sim.finish(*worker, *id, output);
        }
        rounds.push(tasks.into_iter().map(|(w, _, k)| (w, k)).collect());
        if final_reply(&last, request).is_some() {
            assert!(mailboxes.is_empty(), "undelivered partials: {mailboxes:?}");
            return (rounds, last);
        }
    }
    panic!("the group-by did not end in 10 rounds");
}

/// Senders of these delivering tasks, by target.
fn targets(tasks: &[(WorkerId, TaskKind)]) -> BTreeMap<Target, Vec<WorkerId>> {
    let mut out: BTreeMap<Target, Vec<WorkerId>> = BTreeMap::new();
    for (worker, kind) in tasks {
        let to = delivery_of(kind).expect("a delivering task");
        out.entry(to).or_default().push(*worker);
    }
    out
}

/// 20 workers x 1 thread holding one partition each of a persisted "trips".
fn twenty_holders() -> Sim {
    let workers: Vec<(u64, u32)> = (1..=20).map(|w| (w, 1)).collect();
    let mut sim = Sim::with_workers(&workers);
    sim.persist_all(1, "trips", false, &dataset(20));
    for w in 1..=20 {
        assert_eq!(sim.partitions_of(w).len(), 1, "worker {w}");
    }
    sim
}

#[test]
fn groupby_over_twenty_holders_merges_in_a_tree_of_fan_in_eight() {
    let mut sim = twenty_holders();
    let cmds = sim.request(2, groupby_mean("trips"));
    assert!(no_reply_at_all(&cmds));
    let (rounds, last) = run_groupby_tree(&mut sim, RequestId(2));
    assert_eq!(
        rounds.len(),
        3,
        "partials, one merge level, final: {rounds:#?}"
    );

    // (a) Every holder's partial goes to one of ceil(20/8) = 3 intermediate
    // mailboxes, on a worker of its own group, at most 8 each.
    let partials = &rounds[0];
    assert_eq!(partials.len(), 20);
    assert!(partials
        .iter()
        .all(|(_, k)| matches!(k, TaskKind::GroupByPartial { .. })));
    let level1 = targets(partials);
    assert_eq!(level1.len(), 3, "{level1:?}");
    let tags: BTreeSet<u32> = level1.keys().map(|(_, _, tag)| *tag).collect();
    assert_eq!(tags.len(), 3, "one tag per group");
    for ((merger, _, tag), senders) in &level1 {
        assert!(senders.len() <= 8, "mailbox {tag} gets {}", senders.len());
        assert!(senders.contains(merger), "the merger is one of its group");
    }

    // (b) The merge round: one merge per group, where its mailbox is, each
    // delivering one merged partial to the root.
    let merges = &rounds[1];
    assert_eq!(merges.len(), 3);
    let mut merged = BTreeSet::new();
    for (worker, kind) in merges {
        let Some((at, expect)) = reads_of(*worker, kind) else {
            panic!("expected a merge, got {kind:?}");
        };
        assert!(matches!(kind, TaskKind::GroupByMerge { .. }));
        assert_eq!(expect as usize, level1[&at].len());
        merged.insert(at);
    }
    assert_eq!(merged, level1.keys().copied().collect());
    let root = targets(merges);
    assert_eq!(root.len(), 1, "every merge delivers to the root: {root:?}");
    let (&(root_worker, _, root_tag), senders) = root.iter().next().unwrap();
    assert!(
        senders.contains(&root_worker),
        "the root merged a group itself"
    );
    assert!(
        !tags.contains(&root_tag),
        "the root's mailbox has its own tag"
    );

    // (c) The root merges at most 8 partials and finalizes.
    assert!(matches!(
        &rounds[2][..],
        [(w, TaskKind::GroupByFinal { mailbox, expect, .. })]
            if *w == root_worker && mailbox.tag == root_tag && *expect == 3
    ));
    let Some(ToClient::Table(table)) = final_reply(&last, 2) else {
        panic!("expected a table: {last:?}");
    };
    assert_eq!(&table[8..], &[1, 2, 3]);
    let forgotten: BTreeSet<WorkerId> = last
        .iter()
        .filter_map(|c| match c {
            Command::ToWorker {
                worker,
                message: ToWorker::Forget { .. },
            } => Some(*worker),
            _ => None,
        })
        .collect();
    assert_eq!(
        forgotten,
        (1..=20).map(WorkerId).collect(),
        "every mailbox forgotten"
    );
    sim.assert_idle();
}

#[test]
fn groupby_over_eight_holders_stays_a_star_of_two_rounds() {
    let workers: Vec<(u64, u32)> = (1..=8).map(|w| (w, 1)).collect();
    let mut sim = Sim::with_workers(&workers);
    sim.persist_all(1, "trips", false, &dataset(8));
    sim.request(2, groupby_mean("trips"));
    let (rounds, last) = run_groupby_tree(&mut sim, RequestId(2));
    assert_eq!(rounds.len(), 2);
    let to = targets(&rounds[0]);
    assert_eq!(to.len(), 1, "all 8 partials go to the root: {to:?}");
    let (&(root, _, tag), _) = to.iter().next().unwrap();
    assert!(matches!(
        &rounds[1][..],
        [(w, TaskKind::GroupByFinal { mailbox, expect: 8, .. })] if *w == root && mailbox.tag == tag
    ));
    assert!(matches!(final_reply(&last, 2), Some(ToClient::Table(_))));
    sim.assert_idle();
}

#[test]
fn groupby_tree_losing_an_intermediate_merger_restarts_under_new_tags() {
    let mut sim = twenty_holders();
    sim.request(2, groupby_mean("trips"));
    let partials = sim.running_where(|k| matches!(k, TaskKind::GroupByPartial { .. }));
    let first: Vec<(WorkerId, TaskKind)> =
        partials.iter().map(|(w, _, k)| (*w, k.clone())).collect();
    let level1 = targets(&first);
    let old_tags: BTreeSet<u32> = level1.keys().map(|(_, _, tag)| *tag).collect();

    // The first group's partials all reach its merger, which is then lost
    // while the other groups' partials still run.
    let (&group_mailbox, group) = level1.iter().next().unwrap();
    let merger = group_mailbox.0;
    let to_merger = |kind: &TaskKind| delivery_of(kind) == Some(group_mailbox);
    let delivered = TaskOutput::Delivered {
        rows: 3,
        bytes: 100,
    };
    for (worker, id, kind) in &partials {
        if to_merger(kind) {
            let cmds = sim.finish(*worker, *id, delivered.clone());
            assert!(no_reply_at_all(&cmds));
        }
    }
    let cmds = sim.leave(merger);
    let rebuild = load_runs(&cmds);
    assert_eq!(rebuild.len(), 1, "its partition is rebuilt: {cmds:?}");
    assert!(
        group.contains(&rebuild[0].0),
        "on a worker whose partial is done"
    );

    // The round ends; the merge round waits for the rebuild, then finds its
    // merger gone and starts the tree again from the partials.
    for (worker, id, kind) in &partials {
        if !to_merger(kind) {
            let cmds = sim.finish(*worker, *id, delivered.clone());
            assert!(no_reply_at_all(&cmds));
        }
    }
    assert!(
        sim.running_where(is_groupby_task).is_empty(),
        "nothing merges before the lost partition is back"
    );
    let cmds = sim.finish_load(rebuild[0].0, rebuild[0].1);
    assert!(no_reply_at_all(&cmds));
    let again = run_tasks(&cmds);
    assert_eq!(again.len(), 19, "a partial per remaining holder: {again:?}");
    let second: Vec<(WorkerId, TaskKind)> = again.into_iter().map(|(w, t)| (w, t.kind)).collect();
    let level1 = targets(&second);
    assert_eq!(level1.len(), 3);
    for ((to, _, tag), senders) in &level1 {
        assert_ne!(*to, merger);
        assert!(senders.len() <= 8);
        assert!(
            !old_tags.contains(tag),
            "tag {tag} of the first attempt reused"
        );
    }

    // The rest of the tree runs as usual and answers.
    let (rounds, last) = run_groupby_tree(&mut sim, RequestId(2));
    assert_eq!(rounds.len(), 3);
    assert!(matches!(final_reply(&last, 2), Some(ToClient::Table(_))));
    sim.assert_idle();
}

#[test]
fn groupby_tree_losing_a_merger_mid_merge_restarts_under_new_tags() {
    let mut sim = twenty_holders();
    sim.request(2, groupby_mean("trips"));
    let partials = sim.running_where(|k| matches!(k, TaskKind::GroupByPartial { .. }));
    let first: Vec<(WorkerId, TaskKind)> =
        partials.iter().map(|(w, _, k)| (*w, k.clone())).collect();
    let old_tags: BTreeSet<u32> = targets(&first).keys().map(|(_, _, tag)| *tag).collect();
    for (worker, id, _) in &partials {
        sim.finish(
            *worker,
            *id,
            TaskOutput::Delivered {
                rows: 3,
                bytes: 100,
            },
        );
    }

    // An intermediate merger (not the root) is lost while the merges run.
    let merges = sim.running_where(|k| matches!(k, TaskKind::GroupByMerge { .. }));
    assert_eq!(merges.len(), 3);
    let (merger, _, _) = merges
        .iter()
        .find(|(w, _, k)| delivery_of(k).is_some_and(|(to, _, _)| to != *w))
        .cloned()
        .expect("a merger that is not the root");
    let cmds = sim.leave(merger);
    assert!(no_reply_at_all(&cmds));
    let cancelled: BTreeSet<WorkerId> = cancels(&cmds).keys().copied().collect();
    let others: BTreeSet<WorkerId> = merges
        .iter()
        .map(|(w, _, _)| *w)
        .filter(|w| *w != merger)
        .collect();
    assert_eq!(cancelled, others, "the round's other merges are cancelled");
    let rebuild = load_runs(&cmds);
    assert_eq!(rebuild.len(), 1, "its partition is rebuilt: {cmds:?}");

    // Once the partition is back, the tree starts again under new tags.
    let cmds = sim.finish_load(rebuild[0].0, rebuild[0].1);
    let again = run_tasks(&cmds);
    assert_eq!(again.len(), 19, "a partial per remaining holder: {again:?}");
    let second: Vec<(WorkerId, TaskKind)> = again.into_iter().map(|(w, t)| (w, t.kind)).collect();
    for (to, _, tag) in targets(&second).keys() {
        assert_ne!(*to, merger);
        assert!(
            !old_tags.contains(tag),
            "tag {tag} of the first attempt reused"
        );
    }
    let (rounds, last) = run_groupby_tree(&mut sim, RequestId(2));
    assert_eq!(rounds.len(), 3);
    assert!(matches!(final_reply(&last, 2), Some(ToClient::Table(_))));
    sim.assert_idle();
}
