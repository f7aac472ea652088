//! Sorting a persisted frame: in place when its partitions already range
//! the key (a derived persist, no data moves), by a shuffle otherwise (the
//! sorted frame's ranges held by their owners, with lineage to rebuild a
//! lost range), and frame names reserved while a sort runs.

mod common;

use arrow_array::{ArrayRef, Float64Array, RecordBatch};
use common::*;
use stratus_protocol::messages::{PartitionBoundsWire, ReduceOp, Step};

fn ipc_of(columns: Vec<(&str, Vec<f64>)>) -> Vec<u8> {
    let batch = RecordBatch::try_from_iter(
        columns
            .into_iter()
            .map(|(name, values)| (name, Arc::new(Float64Array::from(values)) as ArrayRef)),
    )
    .unwrap();
    stratus_protocol::ipc::encode_batches(&batch.schema(), &[batch]).unwrap()
}

/// Partition `index` holds temperatures in `bounds(index)`.
fn sample_answer(kind: &TaskKind, bounds: &dyn Fn(u32) -> (f64, f64)) -> TaskOutput {
    let TaskKind::Reduce {
        partitions,
        op: ReduceOp::SortSample { key, .. },
    } = kind
    else {
        panic!("not a sort sample: {kind:?}")
    };
    assert_eq!(key, "temperature");
    let mut sample = Vec::new();
    let partitions = partitions
        .iter()
        .map(|k| {
            let (lo, hi) = bounds(k.index);
            sample.extend([lo, (lo + hi) / 2.0, hi]);
            PartitionBoundsWire {
                index: k.index,
                bounds_ipc: Some(ipc_of(vec![("min", vec![lo]), ("max", vec![hi])])),
                invalid: 0,
            }
        })
        .collect();
    TaskOutput::SortSample {
        partitions,
        sample_ipc: ipc_of(vec![("sample", sample)]),
    }
}

fn is_sample(kind: &TaskKind) -> bool {
    matches!(
        kind,
        TaskKind::Reduce {
            op: ReduceOp::SortSample { .. },
            ..
        }
    )
}

fn sort(into: Option<&str>) -> ClientRequest {
    sort_of("t", into)
}

fn sort_of(source: &str, into: Option<&str>) -> ClientRequest {
    ClientRequest::Sort {
        source: source.into(),
        by: "temperature".into(),
        into: into.map(str::to_string),
    }
}

/// Finish every running derived load (next to a persisted parent).
fn finish_derived_loads(sim: &mut Sim) -> Vec<Command> {
    sim.answer_running(
        |k| {
            matches!(
                k,
                TaskKind::Load {
                    input: LoadInput::Persisted(_),
                    ..
                }
            )
        },
        |_, kind| match kind {
            TaskKind::Load { key, .. } => TaskOutput::Loaded {
                key: *key,
                rows: 10,
                bytes: 1000,
                fetched: 0,
            },
            _ => unreachable!(),
        },
    )
}

#[test]
fn a_frame_ranged_by_the_key_is_sorted_in_place_in_range_order_moving_no_data() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let (parent, holders) = sim.persisted_frame(1, "t", 4);
    sim.request(2, sort(None));
    // Partition i holds [100 - 10i - 5, 100 - 10i]: ranged, in reverse order.
    let bounds = |i: u32| (95.0 - 10.0 * i as f64, 100.0 - 10.0 * i as f64);
    let cmds = sim.answer_running(is_sample, |_, kind| sample_answer(kind, &bounds));
    let loads: Vec<(WorkerId, TaskAssignment)> = run_tasks(&cmds);
    assert_eq!(loads.len(), 2, "one derived load per thread");
    let mut all_loads = sim.assignments.clone();
    all_loads.retain(|(_, t)| {
        matches!(
            t.kind,
            TaskKind::Load {
                input: LoadInput::Persisted(_),
                ..
            }
        )
    });
    let cmds = finish_derived_loads(&mut sim);
    let mut seen = cmds;
    seen.extend(finish_derived_loads(&mut sim));
    let answer = final_reply(&seen, 2).expect("answered");
    let ToClient::Persisted(summary) = answer else {
        panic!("{answer:?}")
    };
    assert_eq!((summary.name.as_str(), summary.partitions), ("t", 4));
    // New partition j is parent partition 3 - j, sorted where it was held.
    let mut derived: Vec<(WorkerId, TaskAssignment)> = sim
        .assignments
        .iter()
        .filter(|(_, t)| {
            matches!(
                t.kind,
                TaskKind::Load {
                    input: LoadInput::Persisted(_),
                    ..
                }
            )
        })
        .cloned()
        .collect();
    derived.sort_by_key(|(_, t)| match &t.kind {
        TaskKind::Load { key, .. } => key.index,
        _ => unreachable!(),
    });
    for (j, (worker, task)) in derived.iter().enumerate() {
        let TaskKind::Load {
            input: LoadInput::Persisted(from),
            steps,
            ..
        } = &task.kind
        else {
            unreachable!()
        };
        assert_eq!(from.frame, parent);
        assert_eq!(from.index, 3 - j as u32);
        assert!(holders[worker].contains(from), "loaded next to its parent");
        assert_eq!(steps, &vec![Step::SortWithin("temperature".into())]);
    }
    // The old frame is gone from the workers; one frame named t remains.
    let dropped: BTreeSet<PartitionKey> = drops(&seen).into_values().flatten().collect();
    assert_eq!(dropped.len(), 4);
    assert!(dropped.iter().all(|k| k.frame == parent));
    let frames = sim.list(3);
    assert_eq!(frames.len(), 1);
    sim.assert_idle();
}

/// What a rebuild of `parts` (range, index) of `frame` answers: 10 rows,
/// 1000 bytes each.
fn ranges_loaded(frame: u64, parts: &[(u32, u32)]) -> TaskOutput {
    TaskOutput::LoadedMany(
        parts
            .iter()
            .map(|&(_, index)| (PartitionKey { frame, index }, 10, 1000))
            .collect(),
    )
}

/// What a collect of its ranges answers: each range kept as the partition
/// of the same index.
fn collected(kind: &TaskKind) -> TaskOutput {
    let TaskKind::ShuffleCollect { ranges, frame, .. } = kind else {
        panic!("not a collect: {kind:?}")
    };
    let parts: Vec<(u32, u32)> = ranges.iter().map(|r| (*r, *r)).collect();
    ranges_loaded(*frame, &parts)
}

/// Sort `t` by a shuffle into `into`; returns the sorted frame's id on the
/// wire and the owner of each range.
fn shuffle_sort(sim: &mut Sim, request: u64, into: &str) -> (u64, BTreeMap<u32, WorkerId>) {
    shuffle_sort_of(sim, request, "t", into)
}

/// [`shuffle_sort`] of the frame `source`.
fn shuffle_sort_of(
    sim: &mut Sim,
    request: u64,
    source: &str,
    into: &str,
) -> (u64, BTreeMap<u32, WorkerId>) {
    sim.request(request, sort_of(source, Some(into)));
    // Every partition spans the same values: not ranged.
    let cmds = sim.answer_running(is_sample, |_, kind| sample_answer(kind, &|_| (0.0, 100.0)));
    let sends = sim.running_where(|k| matches!(k, TaskKind::ShuffleSend { .. }));
    assert_eq!(sends.len(), 2, "every holder sends: {cmds:?}");
    for (_, _, kind) in &sends {
        let TaskKind::ShuffleSend { peers, .. } = kind else {
            unreachable!()
        };
        assert_eq!(peers.len(), 2, "each owner once");
    }
    sim.answer_running(
        |k| matches!(k, TaskKind::ShuffleSend { .. }),
        |_, _| TaskOutput::Delivered {
            rows: 20,
            bytes: 2000,
        },
    );
    let collects = sim.running_where(|k| matches!(k, TaskKind::ShuffleCollect { .. }));
    assert_eq!(collects.len(), 2, "every owner collects its ranges");
    let mut owners = BTreeMap::new();
    let mut frame = 0;
    let seen = sim.answer_running(
        |k| matches!(k, TaskKind::ShuffleCollect { .. }),
        |_, kind| collected(kind),
    );
    for (worker, task) in &sim.assignments {
        if let TaskKind::ShuffleCollect {
            ranges, frame: f, ..
        } = &task.kind
        {
            frame = *f;
            for r in ranges {
                owners.insert(*r, *worker);
            }
        }
    }
    match final_reply(&seen, request) {
        Some(ToClient::Persisted(summary)) => {
            assert_eq!(summary.name, into);
            assert_eq!((summary.partitions, summary.partitions_held), (4, 4));
            assert_eq!(summary.rows, 40);
        }
        other => panic!("expected Persisted, got {other:?}"),
    }
    (frame, owners)
}

#[test]
fn a_shuffle_sort_keeps_each_range_on_its_owner_as_a_new_frame() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    let (frame, owners) = shuffle_sort(&mut sim, 2, "sorted");
    for (range, owner) in &owners {
        assert!(sim.partitions_of(*owner).contains(&PartitionKey {
            frame,
            index: *range
        }));
    }
    let names: BTreeSet<String> = sim.list(3).into_iter().map(|f| f.name).collect();
    assert_eq!(names, ["sorted", "t"].map(String::from).into());
    // Mailboxes of the job are forgotten on every worker.
    sim.assert_idle();
}

#[test]
fn lost_ranges_of_a_shuffled_frame_are_rebuilt_from_the_parents_parquet_inputs() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    let (frame, owners) = shuffle_sort(&mut sim, 2, "sorted");
    let lost: Vec<u32> = owners
        .iter()
        .filter(|(_, w)| **w == WorkerId(2))
        .map(|(r, _)| *r)
        .collect();
    assert!(!lost.is_empty());
    sim.leave(2);
    // The parent's lost partitions reload first (one thread), then the ranges.
    sim.finish_parquet_loads();
    let rebuilds =
        sim.running_where(|k| matches!(k, TaskKind::RebuildRanges { frame: f, .. } if *f == frame));
    let [(
        worker,
        id,
        TaskKind::RebuildRanges {
            parts,
            sources,
            key,
            boundaries_ipc,
            ..
        },
    )] = &rebuilds[..]
    else {
        panic!("one rebuild of the sorted frame's ranges: {rebuilds:?}")
    };
    assert_eq!(*worker, WorkerId(1));
    assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), lost);
    assert_eq!(sources.len(), 4, "every Parquet input of the parent");
    assert_eq!(key, "temperature");
    assert!(!boundaries_ipc.is_empty());
    let output = ranges_loaded(frame, parts);
    let (worker, id) = (*worker, *id);
    sim.finish(worker, id, output);
    let sorted = sim
        .list(3)
        .into_iter()
        .find(|f| f.name == "sorted")
        .unwrap();
    assert_eq!(sorted.partitions_held, 4);
    assert!(sim.state.counters().partitions_rebuilt >= lost.len() as u64);
    sim.assert_idle();
}

#[test]
fn a_frame_sorted_twice_by_shuffles_is_rebuilt_back_to_parquet() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    let (first, _) = shuffle_sort(&mut sim, 2, "once");
    let (twice, owners) = shuffle_sort_of(&mut sim, 3, "once", "twice");
    let lost: Vec<u32> = owners
        .iter()
        .filter(|(_, w)| **w == WorkerId(2))
        .map(|(r, _)| *r)
        .collect();
    assert!(!lost.is_empty());
    sim.leave(2);
    sim.finish_parquet_loads();
    // Both sorted frames lost ranges: each is rebuilt from the Parquet
    // inputs of "t" (not from the other sorted frame), in one task each.
    let rebuilds = sim.running_where(|k| matches!(k, TaskKind::RebuildRanges { .. }));
    assert_eq!(rebuilds.len(), 1, "one thread: one at a time: {rebuilds:?}");
    let mut rebuilt = BTreeSet::new();
    for _ in 0..2 {
        let rebuilds = sim.running_where(|k| matches!(k, TaskKind::RebuildRanges { .. }));
        let [(
            worker,
            id,
            TaskKind::RebuildRanges {
                frame,
                parts,
                sources,
                ..
            },
        )] = &rebuilds[..]
        else {
            panic!("one rebuild at a time: {rebuilds:?}")
        };
        assert_eq!(sources.len(), 4, "the Parquet inputs of 't', once each");
        for source in sources {
            assert!(source.partition.path.ends_with(".parquet"), "{source:?}");
        }
        rebuilt.insert(*frame);
        if *frame == twice {
            assert_eq!(parts.iter().map(|p| p.0).collect::<Vec<_>>(), lost);
        }
        let output = ranges_loaded(*frame, parts);
        let (worker, id) = (*worker, *id);
        sim.finish(worker, id, output);
    }
    assert_eq!(rebuilt, BTreeSet::from([first, twice]));
    for frame in sim.list(4) {
        assert_eq!(frame.partitions_held, frame.partitions, "{}", frame.name);
    }
    sim.assert_idle();
}

/// A worker that leaves between the send and the collect of a shuffle (it
/// runs none of the sort's tasks when it goes, but owns ranges) does not
/// leave a collect pinned to it forever: the sort runs again without it.
#[test]
fn a_range_owner_lost_between_rounds_does_not_hang_the_sort() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    sim.request(2, sort(Some("sorted")));
    sim.answer_running(is_sample, |_, kind| sample_answer(kind, &|_| (0.0, 100.0)));
    let is_send = |k: &TaskKind| matches!(k, TaskKind::ShuffleSend { .. });
    let delivered = |_: WorkerId, _: &TaskKind| TaskOutput::Delivered {
        rows: 20,
        bytes: 2000,
    };
    // Worker 2's send ends; it leaves with nothing of the sort running.
    let sends = sim.running_where(is_send);
    let (w2, id2, _) = sends.iter().find(|s| s.0 == WorkerId(2)).cloned().unwrap();
    sim.finish(w2, id2, delivered(w2, &sends[0].2));
    sim.leave(2);
    // Worker 1's send ends: the collect round must not pin a task to
    // worker 2 (the harness panics on a Run to an unknown worker).
    sim.answer_running(is_send, delivered);
    let mut answer = None;
    for _ in 0..50 {
        let mut seen = sim.finish_parquet_loads();
        seen.extend(
            sim.answer_running(is_sample, |_, kind| sample_answer(kind, &|_| (0.0, 100.0))),
        );
        seen.extend(sim.answer_running(is_send, delivered));
        seen.extend(sim.answer_running(
            |k| matches!(k, TaskKind::ShuffleCollect { .. }),
            |_, kind| collected(kind),
        ));
        if let Some(reply) = final_reply(&seen, 2) {
            answer = Some(reply);
            break;
        }
    }
    match answer {
        Some(ToClient::Persisted(summary)) => {
            assert_eq!(summary.partitions, summary.partitions_held);
        }
        other => panic!("the sort did not finish: {other:?}"),
    }
    sim.assert_idle();
}

#[test]
fn a_name_a_running_sort_will_create_is_refused_to_persist_and_to_other_sorts() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    sim.request(2, sort(Some("s")));
    assert_eq!(sim.running_where(is_sample).len(), 2);
    let cmds = sim.request(3, persist("s", false));
    let error = expect_error(&cmds, 3);
    assert!(error.contains("'s'") && error.contains("sort"), "{error}");
    let cmds = sim.request(4, persist("s", true));
    assert!(expect_error(&cmds, 4).contains("'s'"));
    let cmds = sim.request(5, sort(Some("s")));
    assert!(expect_error(&cmds, 5).contains("'s'"));
    // And a name a persist is loading is refused to a sort.
    sim.request(6, persist("p", false));
    let cmds = sim.request(7, sort(Some("p")));
    let error = expect_error(&cmds, 7);
    assert!(
        error.contains("'p'") && error.contains("persist"),
        "{error}"
    );
}

#[test]
fn a_range_the_sort_did_not_ask_for_disconnects_the_worker() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    sim.request(2, sort(Some("s")));
    sim.answer_running(is_sample, |_, kind| sample_answer(kind, &|_| (0.0, 100.0)));
    sim.answer_running(
        |k| matches!(k, TaskKind::ShuffleSend { .. }),
        |_, _| TaskOutput::Delivered {
            rows: 20,
            bytes: 2000,
        },
    );
    // A worker answers its collect with a range index far past the ranges.
    let collects = sim.running_where(|k| matches!(k, TaskKind::ShuffleCollect { .. }));
    let (w, id, TaskKind::ShuffleCollect { frame, .. }) = collects[0].clone() else {
        unreachable!()
    };
    let bogus = TaskOutput::LoadedMany(vec![(PartitionKey { frame, index: 9999 }, 1, 1)]);
    let cmds = sim.finish(w, id, bogus);
    // The output is checked against its task before the sort reads it.
    let reason = cmds
        .iter()
        .find_map(|c| match c {
            Command::DisconnectWorker { worker, reason } if *worker == w => Some(reason.clone()),
            _ => None,
        })
        .expect("the worker is disconnected");
    assert!(
        reason.contains("not a partition the task asked for"),
        "{reason}"
    );
    assert!(sim.state.workers().all(|x| x.id != w));
    assert!(sim.list(3).iter().all(|f| f.name != "s"));
}

#[test]
fn sample_bounds_without_a_max_column_fail_the_sort_without_a_panic() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    sim.request(2, sort(Some("s")));
    let mut seen = Vec::new();
    for (w, id, kind) in sim.running_where(is_sample) {
        let TaskOutput::SortSample {
            mut partitions,
            sample_ipc,
        } = sample_answer(&kind, &|_| (0.0, 100.0))
        else {
            unreachable!()
        };
        for p in &mut partitions {
            p.bounds_ipc = Some(ipc_of(vec![("min", vec![0.0])]));
        }
        seen.extend(sim.finish(
            w,
            id,
            TaskOutput::SortSample {
                partitions,
                sample_ipc,
            },
        ));
    }
    let error = expect_error(&seen, 2);
    assert!(error.contains("not min and max"), "{error}");
    assert!(sim.list(3).iter().all(|f| f.name != "s"));
}

/// A shuffle sort's send that could not reach its receiver: (the sim, the
/// sender, its task, the receiver). The receiver is still a member.
fn a_send_fails_unreachable() -> (Sim, WorkerId, u64, WorkerId) {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    sim.request(2, sort(Some("sorted")));
    sim.answer_running(is_sample, |_, kind| sample_answer(kind, &|_| (0.0, 100.0)));
    let sends = sim.running_where(|k| matches!(k, TaskKind::ShuffleSend { .. }));
    let (sender, id, _) = sends.iter().find(|s| s.0 == WorkerId(1)).cloned().unwrap();
    let cmds = sim.fail_unreachable(sender, id, 2);
    assert_eq!(
        final_reply(&cmds, 2),
        None,
        "a failure blamed on a member waits for the verdict on it: {cmds:?}"
    );
    (sim, sender, id, WorkerId(2))
}

#[test]
fn a_send_whose_receiver_died_runs_the_round_again_once_the_receiver_is_removed() {
    let (mut sim, _, _, receiver) = a_send_fails_unreachable();
    // The receiver's heartbeats stopped: it is removed; the sort goes on
    // without it and ends as it would have without the fault.
    sim.leave(receiver);
    let delivered = |_: WorkerId, _: &TaskKind| TaskOutput::Delivered {
        rows: 20,
        bytes: 2000,
    };
    let mut answer = None;
    for _ in 0..50 {
        let mut seen = sim.finish_parquet_loads();
        seen.extend(
            sim.answer_running(is_sample, |_, kind| sample_answer(kind, &|_| (0.0, 100.0))),
        );
        seen.extend(sim.answer_running(|k| matches!(k, TaskKind::ShuffleSend { .. }), delivered));
        seen.extend(sim.answer_running(
            |k| matches!(k, TaskKind::ShuffleCollect { .. }),
            |_, kind| collected(kind),
        ));
        if let Some(reply) = final_reply(&seen, 2) {
            answer = Some(reply);
            break;
        }
    }
    match answer {
        Some(ToClient::Persisted(summary)) => {
            assert_eq!(summary.partitions, summary.partitions_held);
            assert_eq!(summary.rows, 40, "every row once, as without the fault");
        }
        other => panic!("the sort did not finish: {other:?}"),
    }
    sim.assert_idle();
}

#[test]
fn a_send_blamed_on_a_receiver_that_stays_fails_the_sort_after_the_hold() {
    let (mut sim, _, _, receiver) = a_send_fails_unreachable();
    let timeout = Config::default().heartbeat_timeout;
    // The receiver keeps beating: it is alive, the failure stands.
    let mut reply = None;
    for step in 1..=12u32 {
        sim.at(timeout * step / 4);
        sim.send(Event::Heartbeat {
            worker: receiver,
            memory_used: 0,
            spilled: 0,
            paused: false,
        });
        sim.send(Event::Heartbeat {
            worker: WorkerId(1),
            memory_used: 0,
            spilled: 0,
            paused: false,
        });
        let cmds = sim.send(Event::Tick);
        if let Some(r) = final_reply(&cmds, 2) {
            assert!(step >= 8, "held for twice the heartbeat timeout: {step}");
            reply = Some(r);
            break;
        }
    }
    match reply {
        Some(ToClient::Error(e)) => assert!(e.contains("did not acknowledge"), "{e}"),
        other => panic!("expected the send's error: {other:?}"),
    }
}

/// Running derived loads (next to a persisted parent): (worker, task, the
/// parent partition it reads, the new key).
fn derived_loads(sim: &Sim) -> Vec<(WorkerId, TaskId, PartitionKey, PartitionKey)> {
    sim.running_where(|k| {
        matches!(
            k,
            TaskKind::Load {
                input: LoadInput::Persisted(_),
                ..
            }
        )
    })
    .into_iter()
    .map(|(w, id, kind)| match kind {
        TaskKind::Load {
            key,
            input: LoadInput::Persisted(from),
            ..
        } => (w, id, from, key),
        _ => unreachable!(),
    })
    .collect()
}

fn loaded(key: PartitionKey) -> TaskOutput {
    TaskOutput::Loaded {
        key,
        rows: 10,
        bytes: 1000,
        fetched: 0,
    }
}

/// Sort `t` (4 partitions ranged in reverse) in place, up to its derived
/// loads; returns the parent frame.
fn ranged_sort_in_place(sim: &mut Sim, request: u64) -> u64 {
    let (parent, _) = sim.persisted_frame(1, "t", 4);
    sim.request(request, sort(None));
    let bounds = |i: u32| (95.0 - 10.0 * i as f64, 100.0 - 10.0 * i as f64);
    sim.answer_running(is_sample, |_, kind| sample_answer(kind, &bounds));
    assert!(!derived_loads(sim).is_empty(), "the derived loads run");
    parent
}

#[test]
fn an_in_place_sort_frees_each_old_partition_once_its_sorted_one_is_held_and_refuses_readers_meanwhile(
) {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let parent = ranged_sort_in_place(&mut sim, 2);
    let mut freed = BTreeSet::new();
    let mut request = 10;
    while let Some((worker, id, from, key)) = derived_loads(&sim).into_iter().next() {
        assert_eq!(from.frame, parent);
        let held_before = sim.partitions_of(worker);
        assert!(
            held_before.contains(&from),
            "the old partition is held until then"
        );
        let cmds = sim.finish(worker, id, loaded(key));
        // Exactly the old partition this one replaces goes, from its holder.
        let dropped = drops(&cmds);
        if final_reply(&cmds, 2).is_none() {
            assert_eq!(
                dropped,
                BTreeMap::from([(worker, BTreeSet::from([from]))]),
                "{cmds:#?}"
            );
            assert!(!sim.partitions_of(worker).contains(&from));
            // Meanwhile the frame can not be read: its old partitions are going.
            for body in [
                ClientRequest::Describe {
                    source: "t".into(),
                    columns: None,
                },
                ClientRequest::Head {
                    source: "t".into(),
                    n: 5,
                    columns: None,
                },
            ] {
                request += 1;
                let error = expect_error(&sim.request(request, body), request);
                assert!(error.contains("being replaced in place"), "{error}");
            }
        }
        freed.extend(
            dropped
                .into_values()
                .flatten()
                .filter(|k| k.frame == parent),
        );
    }
    assert_eq!(freed.len(), 4, "every old partition freed once");
    let frames = sim.list(99);
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].name.as_str(), frames[0].partitions), ("t", 4));
    sim.assert_idle();
}

#[test]
fn an_in_place_sort_under_another_job_reading_the_frame_frees_the_old_one_only_at_the_end() {
    let mut sim = Sim::with_workers(&[(1, 2), (2, 2)]);
    let (parent, _) = sim.persisted_frame(1, "t", 4);
    // A head reads t, one partition at a time (its task is left running).
    sim.request(
        5,
        ClientRequest::Head {
            source: "t".into(),
            n: 5,
            columns: None,
        },
    );
    let heads = sim.running_where(|k| matches!(k, TaskKind::Head { .. }));
    assert_eq!(heads.len(), 1);
    sim.request(2, sort(None));
    let bounds = |i: u32| (95.0 - 10.0 * i as f64, 100.0 - 10.0 * i as f64);
    sim.answer_running(is_sample, |_, kind| sample_answer(kind, &bounds));
    let mut seen = Vec::new();
    while let Some((worker, id, _, key)) = derived_loads(&sim).into_iter().next() {
        let cmds = sim.finish(worker, id, loaded(key));
        if final_reply(&cmds, 2).is_none() {
            assert!(
                drops(&cmds).is_empty(),
                "nothing freed under the head: {cmds:#?}"
            );
        }
        seen.extend(cmds);
    }
    assert!(final_reply(&seen, 2).is_some());
    let freed: BTreeSet<PartitionKey> = drops(&seen).into_values().flatten().collect();
    assert_eq!(freed.len(), 4);
    assert!(freed.iter().all(|k| k.frame == parent));
    let (worker, id, _) = heads[0].clone();
    sim.fail(worker, id, "worker 'w1' does not hold partition");
    sim.assert_idle();
}

#[test]
fn a_failed_in_place_sort_rebuilds_the_old_partitions_it_freed() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let parent = ranged_sort_in_place(&mut sim, 2);
    let loads = derived_loads(&sim);
    let (worker, id, freed, key) = loads[0];
    let cmds = sim.finish(worker, id, loaded(key));
    assert_eq!(drops(&cmds)[&worker], BTreeSet::from([freed]));
    // The next derived load fails: the sort fails, the new frame goes, and
    // the freed old partition is loaded again from its Parquet input.
    let (worker, id, _, _) = derived_loads(&sim)[0];
    let cmds = sim.fail(worker, id, "sorting failed: out of memory");
    let error = expect_error(&cmds, 2);
    assert!(error.contains("out of memory"), "{error}");
    let rebuilds = load_runs(&cmds);
    assert_eq!(rebuilds.len(), 1, "{cmds:#?}");
    assert_eq!(rebuilds[0].2, freed);
    sim.finish_parquet_loads();
    // The old frame is whole again and answers.
    let frames = sim.list(3);
    assert_eq!(frames.len(), 1);
    assert_eq!(frames[0].partitions, 4);
    let held: usize = [1u64, 2]
        .iter()
        .map(|w| {
            sim.partitions_of(*w)
                .iter()
                .filter(|k| k.frame == parent)
                .count()
        })
        .sum();
    assert_eq!(held, 4);
    sim.assert_idle();
}
