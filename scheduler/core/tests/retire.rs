//! Retiring workers (`stratus retire`, SIGTERM): partitions move to other
//! workers over peer links (send, then adopt), nothing is loaded again,
//! the worker is told to exit once it holds and runs nothing; refused
//! without room, forced with drops and rebuilds, and robust to a receiver
//! or the retiring worker going away.

mod common;

use common::*;

/// Join worker `id` with a memory limit of `memory_limit` bytes.
fn join_limited(sim: &mut Sim, id: u64, memory_limit: u64) {
    let worker = WorkerId(id);
    sim.threads.insert(worker, 1);
    sim.running.insert(worker, BTreeMap::new());
    let mut info = worker_info(&format!("w{id}"), 1);
    info.memory_limit = memory_limit;
    let cmds = sim.send(Event::WorkerJoined { worker, info });
    assert!(cmds.is_empty(), "{cmds:?}");
}

fn retire(names: &[&str], force: bool) -> ClientRequest {
    ClientRequest::Retire {
        workers: names.iter().map(|n| n.to_string()).collect(),
        force,
    }
}

fn exits(cmds: &[Command]) -> Vec<WorkerId> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::ToWorker {
                worker,
                message: ToWorker::Exit { .. },
            } => Some(*worker),
            _ => None,
        })
        .collect()
}

/// Answer every running send with `Delivered` and every running adopt by
/// keeping its partitions (each at `bytes`), until none runs; returns every
/// command seen.
fn run_moves(sim: &mut Sim, bytes: impl Fn(PartitionKey) -> u64) -> Vec<Command> {
    let mut seen = Vec::new();
    for _ in 0..100 {
        let moves = sim.running_where(|k| {
            matches!(
                k,
                TaskKind::SendPartitions { .. } | TaskKind::AdoptPartitions { .. }
            )
        });
        let Some((worker, id, kind)) = moves.first().cloned() else {
            return seen;
        };
        let output = match kind {
            TaskKind::SendPartitions { partitions, .. } => TaskOutput::Delivered {
                rows: partitions.len() as u64,
                bytes: 1,
            },
            TaskKind::AdoptPartitions { partitions, .. } => TaskOutput::LoadedMany(
                partitions
                    .iter()
                    .map(|&(_, key)| (key, 10, bytes(key)))
                    .collect(),
            ),
            _ => unreachable!(),
        };
        seen.extend(sim.finish(worker, id, output));
    }
    panic!("moves never ended");
}

fn no_loads_since(sim: &Sim, from: usize) {
    let loads: Vec<_> = sim.assignments[from..]
        .iter()
        .filter(|(_, t)| matches!(t.kind, TaskKind::Load { .. }))
        .collect();
    assert!(loads.is_empty(), "nothing is loaded again: {loads:?}");
}

#[test]
fn retire_moves_every_partition_to_the_others_then_lets_the_worker_exit() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1), (3, 1)]);
    let (frame, holders) = sim.persisted_frame(1, "trips", 6);
    let mine: BTreeSet<PartitionKey> = holders[&WorkerId(1)].iter().copied().collect();
    assert!(!mine.is_empty(), "{holders:?}");
    let before = sim.assignments.len();

    let cmds = sim.request(2, retire(&["w1"], false));
    assert!(no_reply_at_all(&cmds), "{cmds:?}");
    let sends: Vec<_> = run_tasks(&cmds)
        .into_iter()
        .filter(|(_, t)| matches!(t.kind, TaskKind::SendPartitions { .. }))
        .collect();
    assert!(!sends.is_empty(), "{cmds:?}");
    assert!(sends.iter().all(|(w, _)| *w == WorkerId(1)), "{sends:?}");

    let seen = run_moves(&mut sim, |k| loaded_bytes(10 * (k.index as u64 + 1)));
    assert_eq!(exits(&seen), vec![WorkerId(1)], "{seen:#?}");
    let Some(ToClient::Retired(retired)) = final_reply(&seen, 2) else {
        panic!("expected Retired: {seen:#?}");
    };
    assert_eq!(retired.len(), 1);
    assert_eq!(retired[0].name, "w1");
    let moved: u64 = retired[0].moved.iter().map(|m| m.1).sum();
    assert_eq!(moved, mine.len() as u64);
    assert_eq!(retired[0].dropped_partitions, 0);
    // The retiring worker was told to free every partition it handed over.
    assert_eq!(drops(&seen).get(&WorkerId(1)), Some(&mine));
    assert!(sim.partitions_of(1).is_empty());
    let held: BTreeSet<PartitionKey> = sim
        .partitions_of(2)
        .union(&sim.partitions_of(3))
        .copied()
        .collect();
    assert_eq!(held.len(), 6);
    assert!(held.iter().all(|k| k.frame == frame));
    no_loads_since(&sim, before);
    assert_eq!(sim.state.counters().partitions_rebuilt, 0);

    // The frame answers as before; the worker leaves without a rebuild.
    let frames = sim.list(3);
    assert_eq!(frames[0].partitions_held, 6);
    let cmds = sim.leave(1);
    assert!(run_tasks(&cmds).is_empty(), "{cmds:?}");
    assert_eq!(sim.state.counters().partitions_rebuilt, 0);
    sim.assert_idle();
}

#[test]
fn a_retiring_worker_gets_no_new_tasks_and_a_head_waits_for_the_move() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 2)]);
    let (_, holders) = sim.persisted_frame(1, "trips", 2);
    let key = holders[&WorkerId(1)][0];
    let cmds = sim.request(2, retire(&["w1"], false));
    assert_eq!(run_tasks(&cmds).len(), 1, "one send: {cmds:?}");
    // A head of w1's partition does not run on w1 while it retires.
    let cmds = sim.request(
        3,
        ClientRequest::Head {
            source: "trips".into(),
            n: 1,
            columns: None,
        },
    );
    let heads: Vec<_> = run_tasks(&cmds)
        .into_iter()
        .filter(|(_, t)| matches!(t.kind, TaskKind::Head { .. }))
        .collect();
    assert!(heads.iter().all(|(w, _)| *w != WorkerId(1)), "{heads:?}");
    let seen = run_moves(&mut sim, |_| 100);
    assert!(sim.partitions_of(2).contains(&key));
    assert_eq!(exits(&seen), vec![WorkerId(1)]);
}

#[test]
fn retire_waits_for_the_workers_running_tasks() {
    let mut sim = Sim::with_workers(&[(1, 2), (2, 1)]);
    let (_, holders) = sim.persisted_frame(1, "trips", 2);
    assert!(!holders[&WorkerId(1)].is_empty());
    // A listing of another request runs on w1 (the most free threads).
    let cmds = sim.request(
        2,
        ClientRequest::Len {
            source: SOURCE.into(),
        },
    );
    let (listing_worker, listing) = run_tasks(&cmds)[0].clone();
    assert_eq!(listing_worker, WorkerId(1));
    let cmds = sim.request(3, retire(&["w1"], false));
    assert!(no_reply_at_all(&cmds));
    let seen = run_moves(&mut sim, |_| 100);
    assert!(exits(&seen).is_empty(), "a task still runs there: {seen:?}");
    assert!(final_reply(&seen, 3).is_none());
    // Its task ends; the next tick lets the worker go.
    let cmds = sim.finish(1, listing.id, TaskOutput::Files(Vec::new()));
    let mut seen = cmds;
    sim.at(Duration::from_millis(500));
    seen.extend(sim.send(Event::Tick));
    assert_eq!(exits(&seen), vec![WorkerId(1)], "{seen:#?}");
    assert!(matches!(final_reply(&seen, 3), Some(ToClient::Retired(_))));
}

#[test]
fn retire_without_room_is_refused_naming_the_bytes() {
    let mut sim = Sim::new(Config::default());
    join_limited(&mut sim, 1, 1 << 20);
    join_limited(&mut sim, 2, 1 << 20);
    sim.persisted_frame(1, "trips", 4);
    // Worker 2 is nearly full: its heartbeat says so.
    sim.send(Event::Heartbeat {
        worker: WorkerId(2),
        memory_used: (1 << 20) - 100,
        spilled: 0,
        paused: false,
    });
    let cmds = sim.request(2, retire(&["w1"], false));
    let error = expect_error(&cmds, 2);
    assert!(
        error.contains("cannot retire 'w1'")
            && error.contains("bytes")
            && error.contains("--force"),
        "{error}"
    );
    assert!(run_tasks(&cmds).is_empty());
    // Not retiring: it takes work again.
    assert!(sim.state.workers().all(|w| w.retiring.is_none()));
    let error = expect_error(&sim.request(3, retire(&["nobody"], false)), 3);
    assert!(
        error.contains("no worker named 'nobody'") && error.contains("w1"),
        "{error}"
    );
}

#[test]
fn forced_retire_drops_what_does_not_fit_and_rebuilds_it_from_lineage() {
    let mut sim = Sim::new(Config::default());
    join_limited(&mut sim, 1, 1 << 20);
    join_limited(&mut sim, 2, 1 << 20);
    let (_, holders) = sim.persisted_frame(1, "trips", 4);
    let mine = holders[&WorkerId(1)].clone();
    sim.send(Event::Heartbeat {
        worker: WorkerId(2),
        memory_used: (1 << 20) - 100,
        spilled: 0,
        paused: false,
    });
    let cmds = sim.request(2, retire(&["w1"], true));
    // Nothing fits: everything is dropped, rebuilt on w2 from Parquet.
    assert_eq!(exits(&cmds), vec![WorkerId(1)], "{cmds:#?}");
    let Some(ToClient::Retired(retired)) = final_reply(&cmds, 2) else {
        panic!("{cmds:#?}");
    };
    assert_eq!(retired[0].dropped_partitions, mine.len() as u64);
    let rebuilds = load_runs(&cmds);
    assert!(!rebuilds.is_empty());
    assert!(rebuilds.iter().all(|l| l.0 == WorkerId(2)), "{rebuilds:?}");
    assert_eq!(sim.state.counters().partitions_rebuilt, mine.len() as u64);
}

#[test]
fn a_receiver_lost_mid_retire_is_replaced_by_another() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1), (3, 1)]);
    let (_, holders) = sim.persisted_frame(1, "trips", 3);
    let mine: BTreeSet<PartitionKey> = holders[&WorkerId(1)].iter().copied().collect();
    let cmds = sim.request(2, retire(&["w1"], false));
    let sends = run_tasks(&cmds);
    let (_, send) = sends[0].clone();
    let TaskKind::SendPartitions { deliver_to, .. } = &send.kind else {
        panic!("{send:?}");
    };
    let lost = deliver_to.worker;
    let other = if lost == 2 { 3 } else { 2 };
    // The send is delivered, then its receiver goes away before adopting.
    sim.finish(1, send.id, TaskOutput::Delivered { rows: 1, bytes: 1 });
    let cmds = sim.leave(lost);
    let resend: Vec<_> = run_tasks(&cmds)
        .into_iter()
        .filter(|(_, t)| {
            matches!(&t.kind, TaskKind::SendPartitions { deliver_to, .. } if deliver_to.worker == other)
        })
        .collect();
    assert!(!resend.is_empty(), "sent to the other worker: {cmds:#?}");
    // The lost receiver's own partition is rebuilt there too (not on w1).
    let mut seen = run_moves(&mut sim, |_| 100);
    let rebuilt = sim.finish_parquet_loads();
    assert!(load_runs(&rebuilt).iter().all(|l| l.0 != WorkerId(1)));
    seen.extend(rebuilt);
    seen.extend(run_moves(&mut sim, |_| 100));
    assert_eq!(exits(&seen), vec![WorkerId(1)]);
    assert!(mine.is_subset(&sim.partitions_of(other)));
}

#[test]
fn a_send_refused_by_its_receiver_goes_to_another() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1), (3, 1)]);
    sim.persisted_frame(1, "trips", 3);
    let cmds = sim.request(2, retire(&["w1"], false));
    let (_, send) = run_tasks(&cmds)[0].clone();
    let cmds = sim.fail(1, send.id, "delivery refused: over the memory limit");
    assert!(no_reply_at_all(&cmds), "{cmds:?}");
    assert!(!run_tasks(&cmds).is_empty(), "sent elsewhere: {cmds:?}");
    let seen = run_moves(&mut sim, |_| 100);
    assert_eq!(exits(&seen), vec![WorkerId(1)]);
}

#[test]
fn the_retiring_worker_lost_fails_the_retire_and_its_partitions_are_rebuilt() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let (_, holders) = sim.persisted_frame(1, "trips", 2);
    let mine = holders[&WorkerId(1)].len() as u64;
    let cmds = sim.request(2, retire(&["w1"], false));
    assert!(!run_tasks(&cmds).is_empty());
    let cmds = sim.leave(1);
    let error = expect_error(&cmds, 2);
    assert!(error.contains("left while it was being retired"), "{error}");
    assert_eq!(sim.state.counters().partitions_rebuilt, mine);
    sim.finish_parquet_loads();
    assert_eq!(sim.partitions_of(2).len(), 2);
    sim.assert_idle();
}

#[test]
fn sigterm_retires_a_worker_in_the_background() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "trips", 2);
    let cmds = sim.send(Event::WorkerRetiring {
        worker: WorkerId(1),
    });
    assert!(!run_tasks(&cmds).is_empty(), "{cmds:?}");
    // Asking twice starts nothing more.
    let again = sim.send(Event::WorkerRetiring {
        worker: WorkerId(1),
    });
    assert!(run_tasks(&again).is_empty(), "{again:?}");
    let seen = run_moves(&mut sim, |_| 100);
    assert_eq!(exits(&seen), vec![WorkerId(1)]);
    assert_eq!(sim.partitions_of(2).len(), 2);
    sim.leave(1);
    sim.assert_idle();
}
