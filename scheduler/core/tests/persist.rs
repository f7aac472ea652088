//! Persisting frames: balanced loads, `len`/`list`/replace, a failed task
//! failing its job without leaving a partial frame, and cancelled requests.

mod common;

use common::*;
use stratus_scheduler_core::activity::RequestState;

// ----- 2. persist ------------------------------------------------------------

/// A worker that loads fast does not take most of a frame while another
/// lags: past twice the least held per thread (plus two), loads wait.
#[test]
fn a_fast_worker_takes_at_most_twice_a_slow_ones_share_plus_two() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let footers = dataset(12);
    sim.start(1, persist("trips", false), &footers);
    // Worker 2's first load never ends; worker 1 finishes all it gets.
    for _ in 0..12 {
        let fast = sim.running_where(|k| matches!(k, TaskKind::Load { .. }));
        let Some((_, id, _)) = fast.iter().find(|(w, _, _)| *w == WorkerId(1)) else {
            break;
        };
        sim.finish_load(1, *id);
    }
    // Worker 2 holds 0 and loads 1 (1 per thread): worker 1 may reach 1 x 2
    // + 2 = 4 held or loading, and then waits.
    assert_eq!(sim.partitions_of(1).len(), 4);
    assert!(sim
        .running_where(|k| matches!(k, TaskKind::Load { .. }))
        .iter()
        .all(|(w, _, _)| *w == WorkerId(2)));
    // Once the slow worker goes on, so does the fast one, to the end.
    let seen = sim.run_loads_to_end(1);
    assert!(matches!(
        final_reply(&seen, 1),
        Some(ToClient::Persisted(_))
    ));
    let (fast, slow) = (sim.partitions_of(1).len(), sim.partitions_of(2).len());
    assert_eq!(fast + slow, 12);
    assert!(fast <= 2 * slow + 2, "fast {fast}, slow {slow}");
}

#[test]
fn persist_balances_partitions_then_serves_len_list_and_replace() {
    let mut sim = Sim::with_workers(&[(1, 2), (2, 2)]);
    let footers = dataset(8);

    let cmds = sim.start(1, persist("trips", false), &footers);
    let first_loads = load_runs(&cmds);
    assert_eq!(first_loads.len(), 4, "one Load per thread at first");
    let (summary, seen) = {
        let (summary, mut rest) = sim.persist_all_loads(1);
        let mut all = cmds;
        all.append(&mut rest);
        (summary, all)
    };

    // Balance: every partition was loaded once, about half on each worker.
    let loads = load_runs(&seen);
    assert_eq!(loads.len(), 8);
    let frame = loads[0].2.frame;
    let keys: BTreeSet<PartitionKey> = loads.iter().map(|l| l.2).collect();
    let expected_keys: BTreeSet<PartitionKey> =
        (0..8).map(|index| PartitionKey { frame, index }).collect();
    assert_eq!(keys, expected_keys);
    for worker in [1, 2] {
        let n = loads.iter().filter(|l| l.0 == WorkerId(worker)).count();
        assert!((3..=5).contains(&n), "worker {worker} loaded {n} of 8");
        assert_eq!(sim.partitions_of(worker).len(), n);
    }
    // Progress of the load step came before the answer, counting up to 8.
    let progress: Vec<u64> = replies(&seen, 1)
        .iter()
        .filter_map(|m| match m {
            ToClient::Progress {
                stage, done, total, ..
            } if stage == "load partitions" => {
                assert_eq!(*total, 8);
                Some(*done)
            }
            _ => None,
        })
        .collect();
    assert!(!progress.is_empty());
    assert!(progress.windows(2).all(|w| w[0] <= w[1]), "{progress:?}");
    assert_eq!(
        progress.last(),
        Some(&7),
        "the last load is answered by the result"
    );
    // Steps are reported in order: list files, read footers, load partitions.
    let mut stages: Vec<String> = replies(&seen, 1)
        .iter()
        .filter_map(|m| match m {
            ToClient::Progress { stage, .. } => Some(stage.clone()),
            _ => None,
        })
        .collect();
    stages.dedup();
    let order = ["list files", "read footers", "load partitions"];
    let ranks: Vec<usize> = stages
        .iter()
        .map(|s| order.iter().position(|o| o == s).expect("a known step"))
        .collect();
    assert!(ranks.windows(2).all(|w| w[0] < w[1]), "{stages:?}");
    assert_eq!(stages.last().map(String::as_str), Some("load partitions"));
    // The dashboard's record of the request: ended ok, every step complete.
    let record = sim
        .state
        .activity()
        .requests()
        .find(|r| r.id == 1)
        .expect("request recorded");
    assert_eq!(record.kind, "persist");
    assert_eq!(record.state, RequestState::Ok);
    let steps: Vec<(&str, u64, u64)> = record
        .steps
        .iter()
        .map(|s| (s.name, s.done, s.total))
        .collect();
    assert_eq!(
        steps,
        [
            ("list files", 1, 1),
            ("read footers", 4, 4),
            ("load partitions", 8, 8)
        ]
    );
    let stream: Vec<&str> = sim.state.activity().tasks().map(|t| t.kind).collect();
    assert_eq!(
        stream.iter().filter(|k| **k == "load").count(),
        8,
        "{stream:?}"
    );

    let rows = total_rows(&footers);
    let expected = FrameSummary {
        name: "trips".into(),
        source: SOURCE.into(),
        rows,
        bytes: loaded_bytes(rows),
        partitions: 8,
        partitions_held: 8,
    };
    assert_eq!(summary, expected);
    sim.assert_idle();

    // Len of the frame: from metadata, no task.
    let cmds = sim.request(
        2,
        ClientRequest::Len {
            source: "trips".into(),
        },
    );
    assert_eq!(
        cmds,
        vec![Command::Reply {
            request: RequestId(2),
            message: ToClient::Count(rows)
        }]
    );
    sim.assert_idle();

    assert_eq!(sim.list(3), vec![expected.clone()]);

    // Same name without replace: refused, nothing started.
    let cmds = sim.request(4, persist("trips", false));
    let error = expect_error(&cmds, 4);
    assert!(error.contains("--replace"), "{error}");
    assert!(error.contains("trips"), "{error}");
    assert!(run_tasks(&cmds).is_empty());
    sim.assert_idle();

    // With replace: the old frame stays until the new one is complete.
    let smaller = dataset(4);
    let old_keys = keys;
    let mut seen = sim.start(5, persist("trips", true), &smaller);
    loop {
        let loads = sim.running_where(|k| matches!(k, TaskKind::Load { .. }));
        let (w, id, _) = loads.first().cloned().expect("a Load task running");
        let cmds = sim.finish_load(w, id);
        let done = final_reply(&cmds, 5).is_some();
        if !done {
            assert!(
                drops(&cmds).is_empty(),
                "dropped before completion: {cmds:?}"
            );
            assert_eq!(
                sim.list(100 + id),
                vec![expected.clone()],
                "old frame listed meanwhile"
            );
        } else {
            let dropped: BTreeSet<PartitionKey> = drops(&cmds).into_values().flatten().collect();
            assert_eq!(dropped, old_keys, "old partitions dropped on completion");
            for (worker, keys) in drops(&cmds) {
                assert!(keys.iter().all(|k| k.frame == frame));
                assert!(sim.partitions_of(worker).iter().all(|k| k.frame != frame));
            }
        }
        seen.extend(cmds);
        if done {
            break;
        }
    }
    let Some(ToClient::Persisted(new)) = final_reply(&seen, 5) else {
        panic!("expected Persisted");
    };
    let new_rows = total_rows(&smaller);
    assert_eq!(new.rows, new_rows);
    assert_eq!((new.partitions, new.partitions_held), (4, 4));
    assert_eq!(sim.list(6), vec![new]);
    let cmds = sim.request(
        7,
        ClientRequest::Len {
            source: "trips".into(),
        },
    );
    assert_eq!(final_reply(&cmds, 7), Some(ToClient::Count(new_rows)));
    sim.assert_idle();
}

// ----- 6. task failure -------------------------------------------------------

#[test]
fn task_failure_fails_the_job_cancels_its_tasks_and_drops_its_partitions() {
    let mut sim = Sim::with_workers(&[(1, 2), (2, 2)]);
    let footers = dataset(4);

    let cmds = sim.start(1, persist("trips", false), &footers);
    let loads = load_runs(&cmds);
    assert_eq!(loads.len(), 4, "{loads:?}");
    let on = |w: WorkerId| -> Vec<_> { loads.iter().filter(|l| l.0 == w).cloned().collect() };
    let (w1, w2) = (on(WorkerId(1)), on(WorkerId(2)));
    assert_eq!((w1.len(), w2.len()), (2, 2));

    // Worker 1 loads one partition.
    let cmds = sim.finish_load(1, w1[0].1);
    assert!(final_reply(&cmds, 1).is_none(), "progress only: {cmds:?}");
    let loaded_key = w1[0].2;

    // Worker 2 fails on a file.
    let error = "file /data/trips/part-3.parquet: corrupt page header";
    let cmds = sim.fail(2, w2[1].1, error);
    let got = expect_error(&cmds, 1);
    assert!(got.contains("/data/trips/part-3.parquet"), "{got}");
    assert_eq!(
        cancels(&cmds),
        BTreeMap::from([
            (WorkerId(1), BTreeSet::from([w1[1].1])),
            (WorkerId(2), BTreeSet::from([w2[0].1])),
        ]),
        "the other running tasks are cancelled"
    );
    assert_eq!(
        drops(&cmds),
        BTreeMap::from([(WorkerId(1), BTreeSet::from([loaded_key]))]),
        "the loaded partition is released"
    );
    assert!(run_tasks(&cmds).is_empty());
    assert_eq!(sim.running_count(), 0);
    sim.assert_idle();
    assert!(sim.list(2).is_empty(), "no half-persisted frame");
    assert!(sim.partitions_of(1).is_empty());
    assert_eq!(sim.state.counters().tasks_failed, 1);

    // A late report of a cancelled load is released, not counted.
    let cmds = sim.finish_load(1, w1[1].1);
    assert_eq!(
        cmds,
        vec![Command::ToWorker {
            worker: WorkerId(1),
            message: ToWorker::Drop(vec![w1[1].2]),
        }]
    );

    // The machine serves the next requests normally.
    let cmds = sim.start(
        3,
        ClientRequest::Len {
            source: SOURCE.into(),
        },
        &footers,
    );
    assert_eq!(final_reply(&cmds, 3), Some(ToClient::Count(100)));
    let (summary, _) = sim.persist_all(4, "trips", false, &footers);
    assert_eq!((summary.partitions, summary.partitions_held), (4, 4));
    sim.assert_idle();
}

// ----- 8. request cancelled --------------------------------------------------

#[test]
fn cancelled_request_stops_its_job_silently() {
    let mut sim = Sim::with_workers(&[(1, 2)]);
    let footers = dataset(4);

    let cmds = sim.start(1, persist("trips", false), &footers);
    let loads = load_runs(&cmds);
    assert_eq!(loads.len(), 2, "two threads: {loads:?}");
    assert_eq!(sim.state.task_counts(), (2, 2), "two queued, two running");
    let cmds = sim.finish_load(1, loads[0].1);
    let third = load_runs(&cmds);
    assert_eq!(third.len(), 1);

    let cmds = sim.send(Event::RequestCancelled {
        request: RequestId(1),
    });
    assert!(no_reply_at_all(&cmds), "nobody to answer: {cmds:?}");
    assert_eq!(
        cancels(&cmds),
        BTreeMap::from([(WorkerId(1), BTreeSet::from([loads[1].1, third[0].1]))])
    );
    assert_eq!(
        drops(&cmds),
        BTreeMap::from([(WorkerId(1), BTreeSet::from([loads[0].2]))]),
        "the partition loaded so far is released"
    );
    assert!(run_tasks(&cmds).is_empty(), "the queue is emptied");
    assert_eq!(sim.running_count(), 0);
    sim.assert_idle();
    assert!(sim.list(2).is_empty());

    // A report that crossed the cancel is released; nothing is answered.
    let cmds = sim.finish_load(1, loads[1].1);
    assert_eq!(
        cmds,
        vec![Command::ToWorker {
            worker: WorkerId(1),
            message: ToWorker::Drop(vec![loads[1].2]),
        }]
    );
    // Cancelling again, or an unknown request, does nothing.
    assert!(sim
        .send(Event::RequestCancelled {
            request: RequestId(1)
        })
        .is_empty());

    // The name is free again.
    let (summary, _) = sim.persist_all(3, "trips", false, &footers);
    assert_eq!(summary.partitions_held, 4);
}
