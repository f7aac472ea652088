//! Unit tests of the worker's state machine: events in, commands out, no
//! sockets, threads or sleeps.

use std::sync::Arc;

use arrow_array::{ArrayRef, Int64Array, RecordBatch};
use stratus_protocol::messages::{
    GroupBySpec, LoadInput, MailboxKey, ParquetPartition, PartitionKey, PeerRef, ReduceOp,
    TaskAssignment, TaskKind, TaskOutput, TaskReport,
};

use super::*;

fn batch(n: i64) -> RecordBatch {
    RecordBatch::try_from_iter([(
        "x",
        Arc::new(Int64Array::from_iter_values(0..n)) as ArrayRef,
    )])
    .unwrap()
}

/// Bytes one `batch(1000)` counts for.
fn one() -> u64 {
    stratus_engine::memory::batches_memory_bytes(&[batch(1000)]) as u64
}

fn worker(nthreads: u32, memory_limit: u64) -> WorkerState {
    WorkerState::new(Config {
        name: "w".into(),
        id: 7,
        nthreads,
        memory_limit,
        spill: None,
    })
}

/// A worker that spills past 60% of `memory_limit` and pauses past 80%.
fn spilling_worker(nthreads: u32, memory_limit: u64) -> WorkerState {
    WorkerState::new(Config {
        name: "w".into(),
        id: 7,
        nthreads,
        memory_limit,
        spill: Some(crate::store::SpillPolicy::default()),
    })
}

fn key(frame: u64, index: u32) -> PartitionKey {
    PartitionKey { frame, index }
}

fn mailbox(job: u64, tag: u32) -> MailboxKey {
    MailboxKey { job, tag }
}

fn list(id: u64) -> TaskAssignment {
    TaskAssignment {
        storage: Default::default(),
        id,
        kind: TaskKind::ListFiles {
            source: format!("/data/{id}"),
        },
    }
}

fn load(id: u64, key: PartitionKey) -> TaskAssignment {
    TaskAssignment {
        storage: Default::default(),
        id,
        kind: TaskKind::Load {
            key,
            input: LoadInput::Parquet(ParquetPartition {
                file_size: 0,
                more: Vec::new(),
                path: "/data/a.parquet".into(),
                row_group_start: 0,
                row_group_end: 1,
                rows: 1000,
                hive: vec![],
            }),
            columns: None,
            steps: vec![],
        },
    }
}

fn reduce(id: u64, partitions: Vec<PartitionKey>) -> TaskAssignment {
    TaskAssignment {
        storage: Default::default(),
        id,
        kind: TaskKind::Reduce {
            partitions,
            op: ReduceOp::MemoryUsage,
        },
    }
}

fn spec() -> GroupBySpec {
    GroupBySpec {
        keys: vec!["x".into()],
        aggs: vec![],
    }
}

fn peer(worker: u64) -> PeerRef {
    PeerRef {
        worker,
        address: format!("127.0.0.1:{}", 4000 + worker),
        cert_name: String::new(),
    }
}

/// The ids of the tasks the commands start, in order.
fn executed(commands: &[Command]) -> Vec<TaskId> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Execute(ready) => Some(ready.id),
            _ => None,
        })
        .collect()
}

/// The reports among the commands.
fn reports(commands: &[Command]) -> Vec<&TaskReport> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Report(report) => Some(report),
            _ => None,
        })
        .collect()
}

/// The one failure reported for task `id`.
fn failure(commands: &[Command], id: TaskId) -> String {
    match reports(commands).as_slice() {
        [TaskReport::Failed {
            id: failed, error, ..
        }] if *failed == id => error.clone(),
        other => panic!("expected task {id} to fail, got {other:?}"),
    }
}

/// Run a load to completion, keeping `batches` as `key`.
fn hold(state: &mut WorkerState, id: TaskId, key: PartitionKey, batches: Vec<RecordBatch>) {
    let started = state.handle(Event::Run(vec![load(id, key)]));
    assert_eq!(executed(&started), vec![id]);
    let done = state.handle(Event::TaskDone {
        working: 0,
        id,
        result: Ok(Computed::Loaded {
            key,
            batches,
            fetched: 0,
        }),
    });
    assert!(
        matches!(reports(&done).as_slice(), [TaskReport::Finished { .. }]),
        "{done:?}"
    );
}

fn heartbeat(state: &mut WorkerState) -> (u64, u32) {
    match state.handle(Event::Tick).as_slice() {
        [Command::Heartbeat {
            memory_used,
            running,
            ..
        }] => (*memory_used, *running),
        other => panic!("expected one heartbeat, got {other:?}"),
    }
}

fn answer(commands: Vec<Command>) -> Result<(), String> {
    match commands.as_slice() {
        [Command::Answer { result, .. }] => result.clone(),
        other => panic!("expected one answer, got {other:?}"),
    }
}

fn finished(id: TaskId) -> Event {
    Event::TaskDone {
        working: 0,
        id,
        result: Ok(Computed::Output(TaskOutput::Ok)),
    }
}

#[test]
fn runs_at_most_nthreads_and_queues_the_rest_in_order() {
    let mut state = worker(2, 0);
    let out = state.handle(Event::Run((1..=4).map(list).collect()));
    assert_eq!(executed(&out), vec![1, 2]);
    assert!(reports(&out).is_empty());
    assert_eq!((state.running(), state.waiting()), (2, 2));
    // The heartbeat counts tasks running and waiting.
    assert_eq!(heartbeat(&mut state), (0, 4));

    // Each task that ends frees a thread for the next in line.
    let out = state.handle(finished(2));
    assert_eq!(
        reports(&out),
        vec![&TaskReport::Finished {
            id: 2,
            output: TaskOutput::Ok
        }]
    );
    assert_eq!(executed(&out), vec![3]);
    let out = state.handle(Event::TaskDone {
        working: 0,
        id: 1,
        result: Err("disk on fire".into()),
    });
    assert_eq!(failure(&out, 1), "disk on fire");
    assert!(
        matches!(
            reports(&out).as_slice(),
            [TaskReport::Failed {
                unreachable_peer: None,
                ..
            }]
        ),
        "a failure of its own blames no peer"
    );
    assert_eq!(executed(&out), vec![4]);
    // Later arrivals wait behind nobody once threads are free.
    state.handle(finished(3));
    let out = state.handle(Event::Run(vec![list(5)]));
    assert_eq!(executed(&out), vec![5]);
    state.handle(finished(4));
    state.handle(finished(5));
    assert_eq!(heartbeat(&mut state), (0, 0));
}

#[test]
fn zero_threads_still_runs_one_task() {
    let mut state = worker(0, 0);
    let out = state.handle(Event::Run(vec![list(1), list(2)]));
    assert_eq!(executed(&out), vec![1]);
}

#[test]
fn ends_of_unknown_tasks_and_repeated_assignments_are_ignored() {
    let mut state = worker(1, 0);
    assert!(state.handle(finished(9)).is_empty());
    let out = state.handle(Event::Run(vec![list(1), list(1)]));
    assert_eq!(executed(&out), vec![1]);
    assert_eq!(state.waiting(), 0);
    let out = state.handle(finished(1));
    assert_eq!(reports(&out).len(), 1);
    assert!(state.handle(finished(1)).is_empty(), "reported once");
}

#[test]
fn a_cancelled_waiting_task_never_starts() {
    let mut state = worker(1, 0);
    state.handle(Event::Run(vec![list(1), list(2), list(3)]));
    let out = state.handle(Event::Cancel(vec![2, 99]));
    assert!(
        matches!(out.as_slice(), [Command::Cancelled { id: 2 }]),
        "{out:?}"
    );
    assert_eq!(state.waiting(), 1);
    let out = state.handle(finished(1));
    assert_eq!(executed(&out), vec![3]);
    assert_eq!(reports(&out).len(), 1);
    let out = state.handle(finished(3));
    assert!(executed(&out).is_empty());
    assert_eq!(heartbeat(&mut state), (0, 0));
}

#[test]
fn a_cancelled_running_task_is_not_reported_and_keeps_nothing() {
    let mut state = worker(1, 0);
    let out = state.handle(Event::Run(vec![load(1, key(1, 0)), list(2)]));
    assert_eq!(executed(&out), vec![1]);
    // It runs on: cancelling it says nothing yet.
    assert!(state.handle(Event::Cancel(vec![1])).is_empty());
    assert_eq!(heartbeat(&mut state), (0, 2));
    let out = state.handle(Event::TaskDone {
        working: 0,
        id: 1,
        result: Ok(Computed::Loaded {
            fetched: 0,
            key: key(1, 0),
            batches: vec![batch(1000)],
        }),
    });
    assert!(reports(&out).is_empty(), "{out:?}");
    assert!(out
        .iter()
        .any(|c| matches!(c, Command::Cancelled { id: 1 })));
    // Its thread goes to the next task; its partition was not kept.
    assert_eq!(executed(&out), vec![2]);
    assert!(state.store().is_empty());
    assert_eq!(state.store().used(), 0);
    // A failure of a cancelled task is not reported either.
    let mut state = worker(1, 0);
    state.handle(Event::Run(vec![list(3)]));
    state.handle(Event::Cancel(vec![3]));
    let out = state.handle(Event::TaskDone {
        working: 0,
        id: 3,
        result: Err("gone".into()),
    });
    assert!(
        matches!(out.as_slice(), [Command::Cancelled { id: 3 }]),
        "{out:?}"
    );
}

#[test]
fn loads_over_the_memory_limit_are_refused() {
    let one = one();
    let mut state = worker(4, one * 2 + one / 2);
    hold(&mut state, 1, key(1, 0), vec![batch(1000)]);
    hold(&mut state, 2, key(1, 1), vec![batch(1000)]);
    state.handle(Event::Run(vec![load(3, key(1, 2))]));
    let out = state.handle(Event::TaskDone {
        working: 0,
        id: 3,
        result: Ok(Computed::Loaded {
            fetched: 0,
            key: key(1, 2),
            batches: vec![batch(1000)],
        }),
    });
    let error = failure(&out, 3);
    assert!(
        error.contains("worker 'w': memory limit exceeded"),
        "{error}"
    );
    assert_eq!(state.store().len(), 2);
    assert_eq!(heartbeat(&mut state), (2 * one, 0));

    // Dropping a partition makes room.
    state.handle(Event::Drop(vec![key(1, 0)]));
    assert_eq!(heartbeat(&mut state), (one, 0));
    hold(&mut state, 4, key(1, 2), vec![batch(1000)]);
}

#[test]
fn a_shuffle_keeps_all_its_ranges_or_none() {
    let one = one();
    let mut state = worker(1, one * 2 + one / 2);
    let collect = |id| TaskAssignment {
        storage: Default::default(),
        id,
        kind: TaskKind::ShuffleCollect {
            ranges: vec![0, 1, 2],
            key: "x".into(),
            job: 5,
            tag_base: 0,
            frame: 2,
        },
    };
    let ranges = || {
        (0..3)
            .map(|r| (key(2, r), vec![batch(1000)]))
            .collect::<Vec<_>>()
    };
    state.handle(Event::Run(vec![collect(1)]));
    let out = state.handle(Event::TaskDone {
        working: 0,
        id: 1,
        result: Ok(Computed::LoadedMany(ranges())),
    });
    let error = failure(&out, 1);
    assert!(error.contains("memory limit exceeded"), "{error}");
    assert!(state.store().is_empty());
    assert_eq!(state.store().used(), 0);

    let mut state = worker(1, 0);
    state.handle(Event::Run(vec![collect(2)]));
    let out = state.handle(Event::TaskDone {
        working: 0,
        id: 2,
        result: Ok(Computed::LoadedMany(ranges())),
    });
    match reports(&out).as_slice() {
        [TaskReport::Finished {
            id: 2,
            output: TaskOutput::LoadedMany(kept),
        }] => {
            assert_eq!(kept.len(), 3);
            assert!(kept
                .iter()
                .all(|&(_, rows, bytes)| rows == 1000 && bytes == one));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state.store().len(), 3);
}

#[test]
fn deliveries_count_against_the_limit_and_late_ones_are_refused() {
    let one = one();
    let mut state = worker(1, one * 2 + one / 2);
    hold(&mut state, 1, key(1, 0), vec![batch(1000)]);
    let deliver = |job, tag| Event::Delivery {
        ticket: 0,
        mailbox: mailbox(job, tag),
        batches: vec![batch(1000)],
    };
    answer(state.handle(deliver(3, 0))).unwrap();
    assert_eq!(heartbeat(&mut state), (2 * one, 0));
    let error = answer(state.handle(deliver(3, 1))).unwrap_err();
    assert!(
        error.contains("worker 'w': memory limit exceeded"),
        "{error}"
    );
    assert!(error.contains("job 3"), "{error}");
    // A load that would not fit next to the mailbox is refused too.
    state.handle(Event::Run(vec![load(2, key(1, 1))]));
    let out = state.handle(Event::TaskDone {
        working: 0,
        id: 2,
        result: Ok(Computed::Loaded {
            fetched: 0,
            key: key(1, 1),
            batches: vec![batch(1000)],
        }),
    });
    assert!(failure(&out, 2).contains("in flight"));

    // Forgetting the job frees its mailboxes; its late deliveries are
    // refused instead of held forever.
    state.handle(Event::Forget { job: 3 });
    assert_eq!(heartbeat(&mut state), (one, 0));
    let error = answer(state.handle(deliver(3, 2))).unwrap_err();
    assert!(error.contains("job 3 has ended"), "{error}");
    assert_eq!(heartbeat(&mut state), (one, 0));
    // Other jobs still deliver.
    answer(state.handle(deliver(4, 0))).unwrap();
}

#[test]
fn a_task_whose_partition_is_missing_fails_at_once() {
    let mut state = worker(1, 0);
    hold(&mut state, 1, key(1, 0), vec![batch(10)]);
    let out = state.handle(Event::Run(vec![reduce(2, vec![key(1, 0), key(1, 1)])]));
    assert!(executed(&out).is_empty());
    assert_eq!(failure(&out, 2), "worker 'w' does not hold partition 1/1");
    let used = state.store().used();
    assert_eq!(heartbeat(&mut state), (used, 0));
    // A dropped partition is missing too.
    state.handle(Event::Drop(vec![key(1, 0)]));
    let out = state.handle(Event::Run(vec![TaskAssignment {
        storage: Default::default(),
        id: 3,
        kind: TaskKind::Load {
            key: key(2, 0),
            input: LoadInput::Persisted(key(1, 0)),
            columns: None,
            steps: vec![],
        },
    }]));
    assert_eq!(failure(&out, 3), "worker 'w' does not hold partition 1/0");
}

#[test]
fn a_merge_needs_every_partial_it_expects() {
    let mut state = worker(1, 0);
    answer(state.handle(Event::Delivery {
        ticket: 0,
        mailbox: mailbox(9, 1),
        batches: vec![batch(5)],
    }))
    .unwrap();
    let out = state.handle(Event::Run(vec![TaskAssignment {
        storage: Default::default(),
        id: 1,
        kind: TaskKind::GroupByFinal {
            spec: spec(),
            mailbox: mailbox(9, 1),
            expect: 2,
        },
    }]));
    assert_eq!(
        failure(&out, 1),
        "worker 'w': expected 2 partial group-bys in mailbox 9/1, received 1"
    );
    // The mailbox was emptied all the same.
    assert_eq!(state.store().in_flight(), 0);
}

#[test]
fn inputs_are_resolved_without_copying() {
    let mut state = worker(1, 0);
    let held = batch(100);
    hold(&mut state, 1, key(1, 0), vec![held.clone()]);
    let out = state.handle(Event::Run(vec![reduce(2, vec![key(1, 0)])]));
    let [Command::Execute(ready)] = out.as_slice() else {
        panic!("{out:?}");
    };
    let Work::Reduce { batches, .. } = &ready.work else {
        panic!("{:?}", ready.work);
    };
    // The same Arrow buffers as the held partition's.
    let [Part::Batches(batches)] = batches.as_slice() else {
        panic!("{batches:?}");
    };
    assert!(Arc::ptr_eq(batches[0].column(0), held.column(0)));

    // A mailbox's batches move into the task that takes them.
    let delivered = batch(10);
    for tag in [0, 1] {
        answer(state.handle(Event::Delivery {
            ticket: 0,
            mailbox: mailbox(4, tag),
            batches: vec![delivered.clone()],
        }))
        .unwrap();
    }
    state.handle(finished(2));
    let out = state.handle(Event::Run(vec![TaskAssignment {
        storage: Default::default(),
        id: 3,
        kind: TaskKind::ShuffleCollect {
            ranges: vec![0, 1, 2],
            key: "x".into(),
            job: 4,
            tag_base: 0,
            frame: 3,
        },
    }]));
    let [Command::Execute(ready)] = out.as_slice() else {
        panic!("{out:?}");
    };
    let Work::ShuffleCollect { received, .. } = &ready.work else {
        panic!("{:?}", ready.work);
    };
    assert_eq!(received.len(), 3);
    let Part::Batches(range_1) = &received[1].1[0] else {
        panic!("{received:?}");
    };
    assert!(Arc::ptr_eq(range_1[0].column(0), delivered.column(0)));
    // Range 2 received nothing: it is empty, not missing.
    assert!(received[2].1.is_empty());
    assert_eq!(state.store().in_flight(), 0);
}

#[test]
fn partials_go_to_our_own_mailbox_or_a_peers() {
    let mut state = worker(2, 0);
    hold(&mut state, 1, key(1, 0), vec![batch(10)]);
    let partial = |id, to| TaskAssignment {
        storage: Default::default(),
        id,
        kind: TaskKind::GroupByPartial {
            partitions: vec![key(1, 0)],
            spec: spec(),
            mailbox: mailbox(2, 0),
            deliver_to: peer(to),
        },
    };
    let out = state.handle(Event::Run(vec![partial(2, 7), partial(3, 8)]));
    let destinations: Vec<&Destination> = out
        .iter()
        .map(|c| match c {
            Command::Execute(ready) => match &ready.work {
                Work::GroupByPartial { to, .. } => to,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        })
        .collect();
    let push = stratus_protocol::messages::PeerPush {
        mailbox: mailbox(2, 0),
        from_worker: 7,
        parts: vec![],
    };
    assert_eq!(destinations[0], &Destination::Local(push.clone()));
    assert_eq!(destinations[1], &Destination::Peer { to: peer(8), push });
}

#[test]
fn every_task_not_cancelled_is_reported_once() {
    let mut state = worker(2, 0);
    hold(&mut state, 1, key(1, 0), vec![batch(10)]);
    let out = state.handle(Event::Run(vec![
        list(2),
        reduce(3, vec![key(5, 5)]),
        list(4),
        list(5),
    ]));
    // The failure is reported at once; the others run or wait.
    assert_eq!(failure(&out, 3), "worker 'w' does not hold partition 5/5");
    assert_eq!(executed(&out), vec![2, 4]);
    state.handle(Event::Cancel(vec![4]));
    let mut reported = Vec::new();
    for id in [2, 4, 5] {
        let out = state.handle(finished(id));
        reported.extend(reports(&out).iter().map(|r| match r {
            TaskReport::Finished { id, .. } | TaskReport::Failed { id, .. } => *id,
        }));
    }
    assert_eq!(reported, vec![2, 5]);
    let used = state.store().used();
    assert_eq!(heartbeat(&mut state), (used, 0));
}

#[test]
fn a_rejoin_to_a_new_scheduler_keeps_partitions_and_forgets_the_old_work() {
    let mut state = worker(1, 0);
    hold(&mut state, 1, key(5, 0), vec![batch(1000)]);
    hold(&mut state, 2, key(5, 1), vec![batch(10)]);
    state.handle(Event::Delivery {
        ticket: 0,
        mailbox: mailbox(9, 0),
        batches: vec![batch(1000)],
    });
    // One task runs, one waits.
    let cmds = state.handle(Event::Run(vec![list(3), list(4)]));
    assert_eq!(executed(&cmds), vec![3]);

    let cmds = state.handle(Event::Rejoin {
        id: 42,
        keep_partitions: true,
    });
    // The waiting task never starts; the partitions are re-registered.
    assert!(cmds
        .iter()
        .any(|c| matches!(c, Command::Cancelled { id: 4 })));
    let held: Vec<_> = cmds
        .iter()
        .find_map(|c| match c {
            Command::Held(held) => Some(held.clone()),
            _ => None,
        })
        .expect("a Held command");
    assert_eq!(
        held.iter().map(|h| (h.0, h.1)).collect::<Vec<_>>(),
        vec![(key(5, 0), 1000), (key(5, 1), 10)]
    );
    // The mailbox went with the old jobs: only the partitions count.
    let partitions_bytes: u64 = held.iter().map(|h| h.2).sum();
    assert_eq!(heartbeat(&mut state).0, partitions_bytes);
    // The running body ends unreported, and a new task with a new id runs.
    let cmds = state.handle(finished(3));
    assert!(reports(&cmds).is_empty(), "{cmds:?}");
    let cmds = state.handle(Event::Run(vec![reduce(5 << 32, vec![key(5, 0)])]));
    assert_eq!(executed(&cmds), vec![5 << 32]);
}

#[test]
fn a_rejoin_to_the_scheduler_that_removed_us_drops_everything() {
    let mut state = worker(2, 0);
    hold(&mut state, 1, key(5, 0), vec![batch(1000)]);
    let cmds = state.handle(Event::Rejoin {
        id: 43,
        keep_partitions: false,
    });
    assert!(!cmds.iter().any(|c| matches!(c, Command::Held(_))));
    assert!(state.store().is_empty());
    assert_eq!(heartbeat(&mut state), (0, 0));
}

#[test]
fn a_delivery_that_could_not_reach_its_peer_reports_that_peer() {
    let mut state = worker(1, 0);
    state.handle(Event::Run(vec![list(1)]));
    let out = state.handle(Event::TaskDone {
        working: 0,
        id: 1,
        result: Err(TaskError::unreachable(
            7,
            "worker 7 (127.0.0.1:9) did not acknowledge the delivery: connection lost".into(),
        )),
    });
    assert_eq!(
        reports(&out),
        vec![&TaskReport::Failed {
            id: 1,
            error: "worker 7 (127.0.0.1:9) did not acknowledge the delivery: connection lost"
                .into(),
            unreachable_peer: Some(7),
        }]
    );
}

/// The spills among the commands: (key, rows).
fn spills(commands: &[Command]) -> Vec<(PartitionKey, usize)> {
    commands
        .iter()
        .filter_map(|c| match c {
            Command::Spill {
                target: crate::store::SpillTarget::Partition(key),
                batches,
            } => Some((*key, batches.iter().map(RecordBatch::num_rows).sum())),
            _ => None,
        })
        .collect()
}

fn spill_file(name: &str) -> crate::spill::SpillFile {
    crate::spill::SpillFile {
        path: std::path::PathBuf::from(format!("/spill/{name}")),
        disk_bytes: 1234,
        compression: crate::spill::SpillCompression::None,
        inflated_bytes: 0,
    }
}

/// Keep `key` through a load task, returning the commands of its end.
fn hold_cmds(state: &mut WorkerState, id: TaskId, key: PartitionKey) -> Vec<Command> {
    state.handle(Event::Run(vec![load(id, key)]));
    state.handle(Event::TaskDone {
        working: 0,
        id,
        result: Ok(Computed::Loaded {
            key,
            batches: vec![batch(1000)],
            fetched: 0,
        }),
    })
}

#[test]
fn past_the_target_the_least_recently_used_partition_spills_and_tasks_read_its_file() {
    // Room for 2.5 partitions: the target (60%) is 1.5 of them.
    let mut state = spilling_worker(1, one() * 5 / 2);
    assert!(spills(&hold_cmds(&mut state, 1, key(1, 0))).is_empty());
    // Two partitions are past the target: the older one spills.
    let out = hold_cmds(&mut state, 2, key(1, 1));
    assert_eq!(spills(&out), vec![(key(1, 0), 1000)], "{out:?}");
    // While the spill is written, the partition still counts in RAM and
    // reads as batches.
    assert_eq!(state.store().used(), 2 * one());
    state.handle(Event::Spilled {
        target: crate::store::SpillTarget::Partition(key(1, 0)),
        result: Ok(spill_file("a")),
    });
    assert_eq!(state.store().used(), one());
    assert_eq!(state.store().spilled(), one());
    match state.handle(Event::Tick).as_slice() {
        [Command::Heartbeat {
            memory_used,
            spilled,
            paused: false,
            ..
        }] => assert_eq!((*memory_used, *spilled), (one(), one())),
        other => panic!("{other:?}"),
    }
    // A task over both partitions reads the spilled one from its file.
    let out = state.handle(Event::Run(vec![reduce(3, vec![key(1, 0), key(1, 1)])]));
    let [Command::Execute(ready)] = out.as_slice() else {
        panic!("{out:?}");
    };
    let Work::Reduce { batches, .. } = &ready.work else {
        panic!("{:?}", ready.work);
    };
    assert!(
        matches!(batches.as_slice(), [Part::Spilled(f), Part::Batches(_)] if *f == spill_file("a")),
        "{batches:?}"
    );
    // Still persisted: re-registered after a scheduler restart.
    let held = state.store().held();
    assert_eq!(held.len(), 2);
    // Dropping a spilled partition deletes its file.
    let out = state.handle(Event::Drop(vec![key(1, 0)]));
    assert!(
        matches!(out.as_slice(), [Command::DeleteSpill(f)] if *f == spill_file("a")),
        "{out:?}"
    );
    assert_eq!(state.store().spilled(), 0);
}

#[test]
fn the_least_recently_used_partition_is_the_one_that_spills() {
    let mut state = spilling_worker(1, one() * 5 / 2);
    hold_cmds(&mut state, 1, key(1, 0));
    hold_cmds(&mut state, 2, key(1, 1));
    state.handle(Event::Spilled {
        target: crate::store::SpillTarget::Partition(key(1, 0)),
        result: Ok(spill_file("a")),
    });
    // Partition 1 (in RAM) is used by a task, then partition 2 arrives: of
    // the two in RAM, 1 was used less recently, so it spills.
    state.handle(Event::Run(vec![reduce(3, vec![key(1, 1)])]));
    state.handle(finished(3));
    let out = hold_cmds(&mut state, 4, key(1, 2));
    assert_eq!(spills(&out), vec![(key(1, 1), 1000)], "{out:?}");
}

#[test]
fn a_failed_spill_keeps_the_partition_in_ram_and_later_ones_past_the_limit_are_refused_naming_it() {
    let mut state = spilling_worker(1, one() * 5 / 2);
    hold_cmds(&mut state, 1, key(1, 0));
    let out = hold_cmds(&mut state, 2, key(1, 1));
    assert_eq!(spills(&out).len(), 1);
    state.handle(Event::Spilled {
        target: crate::store::SpillTarget::Partition(key(1, 0)),
        result: Err("cannot spill partition 1/0 to /spill/w: No space left on device".into()),
    });
    assert_eq!(state.store().used(), 2 * one());
    assert_eq!(state.store().spilled(), 0);
    // No more spills are tried; a partition past the limit is refused.
    let out = hold_cmds(&mut state, 3, key(1, 2));
    assert!(spills(&out).is_empty(), "{out:?}");
    let error = failure(&out, 3);
    assert!(
        error.contains("memory limit exceeded") && error.contains("No space left on device"),
        "{error}"
    );
    // A few heartbeats later spilling is tried again (the disk may have
    // room again): the partition past the target goes out.
    for _ in 1..crate::store::SPILL_RETRY_TICKS {
        let out = state.handle(Event::Tick);
        assert!(spills(&out).is_empty(), "{out:?}");
    }
    let out = state.handle(Event::Tick);
    assert_eq!(spills(&out).len(), 1, "{out:?}");
    assert!(state.store().spill_error().is_none());
}

#[test]
fn past_the_pause_fraction_tasks_that_add_data_wait_for_the_spills_others_go_past() {
    // Limit of 2 partitions: target 1.2, pause 1.6.
    let mut state = spilling_worker(1, one() * 2);
    hold_cmds(&mut state, 1, key(1, 0));
    let out = hold_cmds(&mut state, 2, key(1, 1));
    assert_eq!(spills(&out), vec![(key(1, 0), 1000)]);
    assert!(state.store().paused());
    // A load waits; a reduce behind it runs.
    let out = state.handle(Event::Run(vec![
        load(3, key(1, 2)),
        reduce(4, vec![key(1, 1)]),
    ]));
    assert_eq!(executed(&out), vec![4]);
    state.handle(finished(4));
    assert_eq!(state.waiting(), 1);
    // The spill ends: the load starts.
    let out = state.handle(Event::Spilled {
        target: crate::store::SpillTarget::Partition(key(1, 0)),
        result: Ok(spill_file("a")),
    });
    assert!(!state.store().paused());
    assert_eq!(executed(&out), vec![3]);
}

#[test]
fn a_spill_of_a_partition_dropped_while_it_was_written_is_deleted() {
    let mut state = spilling_worker(1, one() * 5 / 2);
    hold_cmds(&mut state, 1, key(1, 0));
    hold_cmds(&mut state, 2, key(1, 1));
    state.handle(Event::Drop(vec![key(1, 0)]));
    assert_eq!(state.store().used(), one());
    let out = state.handle(Event::Spilled {
        target: crate::store::SpillTarget::Partition(key(1, 0)),
        result: Ok(spill_file("a")),
    });
    assert!(
        matches!(out.as_slice(), [Command::DeleteSpill(f)] if *f == spill_file("a")),
        "{out:?}"
    );
    assert_eq!(state.store().spilled(), 0);
}

#[test]
fn deliveries_spill_after_partitions_and_their_files_go_when_the_task_that_took_them_ends() {
    let mut state = spilling_worker(1, one() * 5 / 2);
    // Two deliveries are past the target; with no partition to spill, the
    // older delivery spills.
    let out = state.handle(Event::Delivery {
        ticket: 0,
        mailbox: mailbox(4, 0),
        batches: vec![batch(1000)],
    });
    assert!(
        matches!(out.as_slice(), [Command::Answer { result: Ok(()), .. }]),
        "{out:?}"
    );
    let out = state.handle(Event::Delivery {
        ticket: 0,
        mailbox: mailbox(4, 1),
        batches: vec![batch(1000)],
    });
    let target = out
        .iter()
        .find_map(|c| match c {
            Command::Spill { target, .. } => Some(*target),
            _ => None,
        })
        .unwrap_or_else(|| panic!("a delivery spills: {out:?}"));
    assert!(
        matches!(target, crate::store::SpillTarget::Delivery(m, _) if m == mailbox(4, 0)),
        "{target:?}"
    );
    state.handle(Event::Spilled {
        target,
        result: Ok(spill_file("d")),
    });
    assert_eq!(state.store().in_flight(), one());
    // The collect takes the spilled delivery as its file, the other as batches.
    let out = state.handle(Event::Run(vec![TaskAssignment {
        storage: Default::default(),
        id: 9,
        kind: TaskKind::ShuffleCollect {
            ranges: vec![0, 1],
            key: "x".into(),
            job: 4,
            tag_base: 0,
            frame: 3,
        },
    }]));
    let [Command::Execute(ready)] = out.as_slice() else {
        panic!("{out:?}");
    };
    let Work::ShuffleCollect { received, .. } = &ready.work else {
        panic!("{:?}", ready.work);
    };
    assert!(
        matches!(received[0].1.as_slice(), [Part::Spilled(f)] if *f == spill_file("d"))
            && matches!(received[1].1.as_slice(), [Part::Batches(_)]),
        "{received:?}"
    );
    assert_eq!(state.store().in_flight(), 0);
    // Its file goes when the task ends, not before.
    let out = state.handle(Event::TaskDone {
        working: 0,
        id: 9,
        result: Ok(Computed::LoadedMany(vec![])),
    });
    assert!(
        out.iter()
            .any(|c| matches!(c, Command::DeleteSpill(f) if *f == spill_file("d"))),
        "{out:?}"
    );
}

/// The answers among `out`, by ticket.
fn answers(out: &[Command]) -> Vec<(u64, Result<(), String>)> {
    out.iter()
        .filter_map(|c| match c {
            Command::Answer { ticket, result } => Some((*ticket, result.clone())),
            _ => None,
        })
        .collect()
}

/// What the spills among `out` write.
fn spill_targets(out: &[Command]) -> Vec<crate::store::SpillTarget> {
    out.iter()
        .filter_map(|c| match c {
            Command::Spill { target, .. } => Some(*target),
            _ => None,
        })
        .collect()
}

#[test]
fn a_delivery_past_the_limit_waits_for_the_spills_that_make_room_instead_of_being_refused() {
    let mut state = spilling_worker(1, one() * 5 / 2);
    let deliver = |ticket, tag| Event::Delivery {
        ticket,
        mailbox: mailbox(4, tag),
        batches: vec![batch(1000)],
    };
    assert_eq!(answers(&state.handle(deliver(1, 0))), vec![(1, Ok(()))]);
    let out = state.handle(deliver(2, 1));
    assert_eq!(answers(&out), vec![(2, Ok(()))]);
    let first_spill = spill_targets(&out);
    assert_eq!(first_spill.len(), 1, "{out:?}");
    // The spill lags: the third would go past the limit, so it waits, and
    // so does the fourth behind it (arrival order), though nothing is refused.
    let out = state.handle(deliver(3, 2));
    assert!(answers(&out).is_empty(), "{out:?}");
    let more = spill_targets(&out);
    assert_eq!(
        more.len(),
        1,
        "the parked bytes make the second spill: {out:?}"
    );
    assert!(answers(&state.handle(deliver(4, 3))).is_empty());
    assert_eq!(state.store().parked(), 2);
    assert_eq!(state.store().in_flight(), 4 * one());
    // The first spill ends: one fits again.
    let out = state.handle(Event::Spilled {
        target: first_spill[0],
        result: Ok(spill_file("d1")),
    });
    assert_eq!(answers(&out), vec![(3, Ok(()))]);
    // The second ends: the last one fits too.
    let out = state.handle(Event::Spilled {
        target: more[0],
        result: Ok(spill_file("d2")),
    });
    assert_eq!(answers(&out), vec![(4, Ok(()))]);
    assert_eq!(state.store().parked(), 0);
}

#[test]
fn deliveries_waiting_for_room_hold_at_most_the_limit_then_are_refused() {
    // A peer that opens stream after stream while the spills lag: the
    // parked deliveries are RAM too, so past the limit of them it is a refusal.
    let mut state = spilling_worker(1, one() * 5 / 2);
    let deliver = |ticket, tag| Event::Delivery {
        ticket,
        mailbox: mailbox(4, tag),
        batches: vec![batch(1000)],
    };
    state.handle(deliver(1, 0));
    let mut spills = spill_targets(&state.handle(deliver(2, 1)));
    let out = state.handle(deliver(3, 2));
    assert!(answers(&out).is_empty(), "{out:?}");
    spills.extend(spill_targets(&out));
    assert!(answers(&state.handle(deliver(4, 3))).is_empty());
    assert_eq!(state.store().parked(), 2);
    let got = answers(&state.handle(deliver(5, 4)));
    assert!(
        matches!(got.as_slice(), [(5, Err(e))]
            if e.contains("2 deliveries") && e.contains("wait for spills") && e.contains("job 4")),
        "{got:?}"
    );
    assert_eq!(state.store().parked(), 2, "the refused one is not kept");
    // The parked ones still go through once the spills end.
    let mut admitted = Vec::new();
    for (n, target) in spills.into_iter().enumerate() {
        admitted.extend(answers(&state.handle(Event::Spilled {
            target,
            result: Ok(spill_file(&format!("d{n}"))),
        })));
    }
    assert_eq!(admitted, vec![(3, Ok(())), (4, Ok(()))]);
    assert_eq!(state.store().parked(), 0);
}

#[test]
fn a_parked_delivery_is_refused_when_spilling_fails_its_job_ends_or_the_scheduler_goes() {
    let mut state = spilling_worker(1, one() * 5 / 2);
    let deliver = |ticket, job, tag| Event::Delivery {
        ticket,
        mailbox: mailbox(job, tag),
        batches: vec![batch(1000)],
    };
    state.handle(deliver(1, 4, 0));
    let spill = spill_targets(&state.handle(deliver(2, 4, 1)));
    assert!(answers(&state.handle(deliver(3, 4, 2))).is_empty());
    assert!(answers(&state.handle(deliver(4, 5, 0))).is_empty());
    // The job of the second parked one ends: it is refused at once.
    let out = state.handle(Event::Forget { job: 5 });
    let got = answers(&out);
    assert!(
        matches!(got.as_slice(), [(4, Err(e))] if e.contains("job 5 has ended")),
        "{got:?}"
    );
    assert!(answers(&state.handle(deliver(5, 6, 0))).is_empty());
    // The spill fails (disk full): what waits for room is refused, naming why.
    let out = state.handle(Event::Spilled {
        target: spill[0],
        result: Err("cannot spill: No space left on device".into()),
    });
    let got = answers(&out);
    assert!(
        matches!(got.as_slice(), [(3, Err(a)), (5, Err(b))]
            if a.contains("No space left on device") && b.contains("memory limit exceeded")),
        "{got:?}"
    );
    assert_eq!(state.store().parked(), 0);
    assert_eq!(state.store().in_flight(), 2 * one());

    // Parked when the scheduler connection ends: refused, not kept.
    let mut state = spilling_worker(1, one() * 5 / 2);
    state.handle(deliver(1, 4, 0));
    state.handle(deliver(2, 4, 1));
    assert!(answers(&state.handle(deliver(3, 4, 2))).is_empty());
    let out = state.handle(Event::Rejoin {
        id: 2,
        keep_partitions: true,
    });
    let got = answers(&out);
    assert!(
        matches!(got.as_slice(), [(3, Err(e))] if e.contains("connection ended")),
        "{got:?}"
    );
    assert_eq!(state.store().in_flight(), 0);
}

fn derive(id: u64, from: PartitionKey, to: PartitionKey) -> TaskAssignment {
    TaskAssignment {
        storage: Default::default(),
        id,
        kind: TaskKind::Load {
            key: to,
            input: LoadInput::Persisted(from),
            columns: None,
            steps: vec![],
        },
    }
}

fn done_working(id: TaskId, working: u64) -> Event {
    Event::TaskDone {
        id,
        result: Ok(Computed::Output(TaskOutput::Ok)),
        working,
    }
}

#[test]
fn running_tasks_reserve_working_memory_learned_from_what_earlier_ones_allocated() {
    let one = one();
    // Two threads; a limit of 3.5 partitions, 2 of them held.
    let mut state = worker(2, one * 7 / 2);
    hold(&mut state, 1, key(1, 0), vec![batch(1000)]);
    hold(&mut state, 2, key(1, 1), vec![batch(1000)]);
    // A derive copies its input (the prior): it reserves one partition, and
    // a second derive does not fit beside it, so it waits.
    let out = state.handle(Event::Run(vec![
        derive(3, key(1, 0), key(2, 0)),
        derive(4, key(1, 1), key(2, 1)),
    ]));
    assert_eq!(executed(&out), vec![3]);
    assert_eq!(state.store().working(), one);
    assert_eq!(heartbeat(&mut state), (3 * one, 2));
    // The first one worked in half a partition: its reservation goes, and
    // derives are now expected to need about that (the estimate falls
    // slowly: 0.7 x 1 + 0.3 x 0.5 of the input), so the second fits.
    let out = state.handle(done_working(3, one / 2));
    assert_eq!(executed(&out), vec![4]);
    assert_eq!(state.store().working(), one * 85 / 100);
    let out = state.handle(done_working(4, 2 * one));
    assert!(executed(&out).is_empty());
    // Bigger than expected: the estimate rises at once.
    assert_eq!(state.store().working(), 0);
    let out = state.handle(Event::Run(vec![derive(5, key(1, 0), key(2, 2))]));
    assert_eq!(executed(&out), vec![5]);
    assert_eq!(state.store().working(), 2 * one);
}

#[test]
fn a_task_alone_starts_whatever_its_estimate_and_the_reservation_makes_partitions_spill() {
    let one = one();
    let mut state = spilling_worker(1, one * 5 / 2);
    hold_cmds(&mut state, 1, key(1, 0));
    // A derive of the held partition needs 1 more: with 2 in RAM of a 2.5
    // limit (target 1.5), the least recently used partition spills for it.
    let out = state.handle(Event::Run(vec![derive(2, key(1, 0), key(2, 0))]));
    assert_eq!(executed(&out), vec![2]);
    assert_eq!(spills(&out), vec![(key(1, 0), 1000)], "{out:?}");
}
