//! Losing workers: tasks rerun elsewhere, persisted partitions rebuilt from
//! lineage, silent workers disconnected, stale reports ignored, and requests
//! that need a partition lost for good answered with an error.

mod common;

use common::*;
use stratus_protocol::messages::HeadInput;

// ----- 3. worker lost mid-persist --------------------------------------------

#[test]
fn worker_lost_mid_persist_reruns_its_task_and_rebuilds_its_partition() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let footers = dataset(4);

    let cmds = sim.start(1, persist("trips", false), &footers);
    let loads = load_runs(&cmds);
    assert_eq!(loads.len(), 2, "{loads:?}");
    let (w, p0_task, p0_key, p0_input) = loads[0].clone();
    assert_eq!(w, WorkerId(1));
    assert_eq!(loads[1].0, WorkerId(2));

    // Worker 1 loads its partition and starts the next one.
    let cmds = sim.finish_load(1, p0_task);
    let next = load_runs(&cmds);
    assert_eq!(next.len(), 1, "{cmds:?}");
    let (w, p2_task, p2_key, _) = next[0].clone();
    assert_eq!(w, WorkerId(1));

    // Worker 1 goes away holding one partition and running another.
    let cmds = sim.leave(1);
    assert!(no_reply_at_all(&cmds), "the job goes on: {cmds:?}");
    assert!(run_tasks(&cmds).is_empty(), "worker 2 is busy");
    assert_eq!(sim.partitions_of(1), BTreeSet::new());

    let seen = sim.run_loads_to_end(1);
    let reruns = load_runs(&seen);
    assert!(
        reruns.iter().all(|l| l.0 == WorkerId(2)),
        "only worker 2 is left"
    );
    // The running task is re-run as it was.
    assert!(
        reruns.iter().any(|l| l.1 == p2_task && l.2 == p2_key),
        "lost running task re-run: {reruns:?}"
    );
    // The loaded partition is rebuilt by a new Load of the same input.
    let rebuild: Vec<_> = reruns.iter().filter(|l| l.2 == p0_key).collect();
    assert_eq!(rebuild.len(), 1, "{reruns:?}");
    assert_ne!(rebuild[0].1, p0_task, "a rebuild is a new task");
    assert_eq!(rebuild[0].3, p0_input);

    let Some(ToClient::Persisted(summary)) = final_reply(&seen, 1) else {
        panic!("expected Persisted: {seen:?}");
    };
    assert_eq!(summary.partitions, 4);
    assert_eq!(summary.partitions_held, 4);
    assert_eq!(summary.rows, total_rows(&footers));
    let frame = p0_key.frame;
    let all: BTreeSet<PartitionKey> = (0..4).map(|index| PartitionKey { frame, index }).collect();
    assert_eq!(sim.partitions_of(2), all, "worker 2 holds everything");
    assert_eq!(sim.state.counters().workers_lost, 1);
    assert_eq!(sim.state.counters().partitions_rebuilt, 1);
    assert_eq!(sim.state.counters().tasks_retried, 1);
    sim.assert_idle();
}

// ----- 4. worker lost after persist ------------------------------------------

#[test]
fn worker_lost_after_persist_rebuilds_and_head_waits_for_the_new_holder() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let footers = dataset(2);
    let columns = Some(vec!["temperature".to_string()]);

    let mut seen = sim.start(
        1,
        ClientRequest::Persist {
            source: SOURCE.into(),
            name: "trips".into(),
            replace: false,
            columns: columns.clone(),
            steps: Vec::new(),
        },
        &footers,
    );
    let original = load_runs(&seen);
    seen.extend(sim.run_loads_to_end(1));
    assert!(matches!(
        final_reply(&seen, 1),
        Some(ToClient::Persisted(_))
    ));
    let by_worker: BTreeMap<WorkerId, PartitionKey> = original.iter().map(|l| (l.0, l.2)).collect();
    assert_eq!(by_worker.len(), 2, "one partition per worker: {original:?}");
    let lost_key = by_worker[&WorkerId(1)];
    let kept_key = by_worker[&WorkerId(2)];
    let lost_input = original.iter().find(|l| l.2 == lost_key).unwrap().3.clone();

    // Worker 1 leaves: its partition is rebuilt on worker 2 from the same input.
    let cmds = sim.leave(1);
    let runs = run_tasks(&cmds);
    assert_eq!(runs.len(), 1, "{cmds:?}");
    let (w, rebuild) = runs[0].clone();
    assert_eq!(w, WorkerId(2));
    assert_eq!(
        rebuild.kind,
        TaskKind::Load {
            key: lost_key,
            input: LoadInput::Parquet(lost_input),
            columns: columns.clone(),
            steps: Vec::new(),
        }
    );
    assert!(no_reply_at_all(&cmds));
    let frames = sim.list(2);
    assert_eq!(frames.len(), 1);
    assert_eq!((frames[0].partitions, frames[0].partitions_held), (2, 1));
    assert_eq!(
        frames[0].rows,
        total_rows(&footers),
        "rows kept from lineage"
    );

    // A fresh worker with plenty of threads joins: it must not get the head of a
    // partition it does not hold.
    let cmds = sim.join(3, 4);
    assert!(cmds.is_empty(), "{cmds:?}");
    let cmds = sim.request(
        3,
        ClientRequest::Head {
            source: "trips".into(),
            n: 15,
            columns: None,
        },
    );
    assert!(
        run_tasks(&cmds).is_empty(),
        "head waits for the rebuild: {cmds:?}"
    );
    assert!(no_reply_at_all(&cmds));

    // The rebuild lands: the head runs on the partition's new holder.
    let cmds = sim.finish_load(2, rebuild.id);
    let runs = run_tasks(&cmds);
    assert_eq!(runs.len(), 1, "{cmds:?}");
    assert_eq!(
        runs[0].0,
        WorkerId(2),
        "pinned to the holder, not the idle worker"
    );
    assert_eq!(
        runs[0].1.kind,
        TaskKind::Head {
            input: HeadInput::Persisted(lost_key),
            n: 15,
            columns: None,
        }
    );
    let frames = sim.list(4);
    assert_eq!((frames[0].partitions, frames[0].partitions_held), (2, 2));
    assert_eq!(sim.partitions_of(2), BTreeSet::from([lost_key, kept_key]));

    // Not enough rows yet: the next partition's head, again on its holder.
    let first_table = vec![1u8, 2, 3];
    let cmds = sim.finish(
        2,
        runs[0].1.id,
        TaskOutput::Table {
            rows: 10,
            ipc: first_table.clone(),
        },
    );
    let runs = run_tasks(&cmds);
    assert_eq!(runs.len(), 1, "{cmds:?}");
    assert_eq!(runs[0].0, WorkerId(2));
    assert_eq!(
        runs[0].1.kind,
        TaskKind::Head {
            input: HeadInput::Persisted(kept_key),
            n: 5,
            columns: None,
        }
    );
    let second_table = vec![4u8, 5];
    let cmds = sim.finish(
        2,
        runs[0].1.id,
        TaskOutput::Table {
            rows: 5,
            ipc: second_table.clone(),
        },
    );
    let mut expected = Vec::new();
    for t in [&first_table, &second_table] {
        expected.extend_from_slice(&(t.len() as u64).to_le_bytes());
        expected.extend_from_slice(t);
    }
    assert_eq!(final_reply(&cmds, 3), Some(ToClient::Table(expected)));
    sim.assert_idle();
}

// ----- 5. heartbeat timeout --------------------------------------------------

#[test]
fn heartbeat_timeout_disconnects_a_silent_worker_and_requeues_its_tasks() {
    let mut sim = Sim::new(Config {
        heartbeat_timeout: Duration::from_secs(5),
        ..Config::default()
    });
    sim.join(1, 1);
    sim.join(2, 1);
    let footers = dataset(2);

    let cmds = sim.request(
        1,
        ClientRequest::Len {
            source: SOURCE.into(),
        },
    );
    let runs = run_tasks(&cmds);
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].0, WorkerId(1));
    let listing = runs[0].1.clone();

    sim.at(Duration::from_secs(3));
    let cmds = sim.send(Event::Heartbeat {
        worker: WorkerId(2),
        memory_used: 1234,
        spilled: 0,
        paused: false,
    });
    assert!(cmds.is_empty());
    assert_eq!(sim.state.cluster_info().memory_used, 1234);

    // Exactly the timeout: not yet "longer than".
    sim.at(Duration::from_secs(5));
    assert!(sim.send(Event::Tick).is_empty());

    sim.at(Duration::from_secs(6));
    let cmds = sim.send(Event::Tick);
    let disconnects: Vec<_> = cmds
        .iter()
        .filter_map(|c| match c {
            Command::DisconnectWorker { worker, reason } => Some((*worker, reason.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(disconnects.len(), 1, "{cmds:?}");
    assert_eq!(disconnects[0].0, WorkerId(1), "only the silent worker goes");
    assert!(disconnects[0].1.contains("w1"), "{}", disconnects[0].1);
    // Its task runs again on the worker that kept in touch.
    assert_eq!(run_tasks(&cmds), vec![(WorkerId(2), listing)]);
    assert!(no_reply_at_all(&cmds));
    assert_eq!(
        sim.state.workers().map(|w| w.id).collect::<Vec<_>>(),
        vec![WorkerId(2)]
    );

    // The job completes on worker 2.
    let cmds = sim.answer_listing(&footers);
    assert!(run_tasks(&cmds).iter().all(|(w, _)| *w == WorkerId(2)));
    let cmds = sim.answer_footers(&footers);
    assert_eq!(final_reply(&cmds, 1), Some(ToClient::Count(30)));

    // Reports count as signs of life: worker 2 last spoke at 6s.
    sim.at(Duration::from_secs(10));
    assert!(sim.send(Event::Tick).is_empty());
    sim.at(Duration::from_secs(11) + Duration::from_millis(500));
    let cmds = sim.send(Event::Tick);
    assert!(
        matches!(
            cmds.as_slice(),
            [Command::DisconnectWorker {
                worker: WorkerId(2),
                ..
            }]
        ),
        "{cmds:?}"
    );
    assert_eq!(sim.state.workers().count(), 0);
    sim.assert_idle();
}

// ----- 9. stale reports ------------------------------------------------------

/// Two workers with one thread each persist two partitions; worker 1 is lost
/// while loading its partition, which is handed to worker 2 under the same task
/// id once worker 2 is free. Returns (task id, key) of the re-run partition.
fn lose_worker_one_mid_load(sim: &mut Sim) -> (TaskId, PartitionKey) {
    let footers = dataset(2);
    let cmds = sim.start(1, persist("trips", false), &footers);
    let loads = load_runs(&cmds);
    assert_eq!(loads.len(), 2);
    assert_eq!((loads[0].0, loads[1].0), (WorkerId(1), WorkerId(2)));
    let (task, key) = (loads[0].1, loads[0].2);

    let cmds = sim.leave(1);
    assert!(cmds.is_empty(), "worker 2 is busy: {cmds:?}");
    let cmds = sim.finish_load(2, loads[1].1);
    assert_eq!(
        run_tasks(&cmds)
            .into_iter()
            .map(|(w, t)| (w, t.id))
            .collect::<Vec<_>>(),
        vec![(WorkerId(2), task)],
        "the same task id re-run on worker 2"
    );
    (task, key)
}

#[test]
fn stale_report_after_the_rerun_is_dropped_and_the_counted_copy_kept() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let (task, key) = lose_worker_one_mid_load(&mut sim);
    let cmds = sim.finish_load(2, task);
    let Some(ToClient::Persisted(summary)) = final_reply(&cmds, 1) else {
        panic!("expected Persisted: {cmds:?}");
    };
    assert_eq!(summary.partitions_held, 2);

    // The old worker's report finally arrives.
    let cmds = sim.finish_load(1, task);
    assert_eq!(
        cmds,
        vec![Command::ToWorker {
            worker: WorkerId(1),
            message: ToWorker::Drop(vec![key]),
        }],
        "only the stale copy is released"
    );
    assert!(sim.partitions_of(2).contains(&key), "counted copy kept");
    let frames = sim.list(2);
    assert_eq!((frames[0].partitions, frames[0].partitions_held), (2, 2));
    sim.assert_idle();
}

#[test]
fn stale_report_before_the_rerun_finishes_does_not_count() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let (task, key) = lose_worker_one_mid_load(&mut sim);

    let cmds = sim.finish_load(1, task);
    assert_eq!(
        cmds,
        vec![Command::ToWorker {
            worker: WorkerId(1),
            message: ToWorker::Drop(vec![key]),
        }]
    );
    // A stale failure does not fail the job either.
    let cmds = sim.fail(1, task, "file /data/trips/part-0.parquet: gone");
    assert!(cmds.is_empty(), "{cmds:?}");
    assert!(sim.state.jobs_in_progress() == 1);

    // The re-run on worker 2 is the one that counts.
    let cmds = sim.finish_load(2, task);
    let Some(ToClient::Persisted(summary)) = final_reply(&cmds, 1) else {
        panic!("expected Persisted: {cmds:?}");
    };
    assert_eq!(summary.partitions_held, 2);
    assert!(sim.partitions_of(2).contains(&key));
    assert!(drops(&cmds).is_empty());
    sim.assert_idle();
}

// ----- 10. max attempts ------------------------------------------------------

#[test]
fn task_lost_with_max_attempts_workers_fails_its_job() {
    let mut sim = Sim::new(Config {
        max_task_attempts: 3,
        ..Config::default()
    });
    sim.join(1, 1);
    let cmds = sim.request(
        1,
        ClientRequest::Len {
            source: SOURCE.into(),
        },
    );
    let runs = run_tasks(&cmds);
    assert_eq!(runs.len(), 1);
    let task = runs[0].1.clone();

    for worker in [1, 2] {
        let cmds = sim.leave(worker);
        assert!(
            final_reply(&cmds, 1).is_none(),
            "lost {} time(s): retry",
            worker
        );
        // With no worker left, the client only hears that it waits for one.
        assert!(
            cmds.iter().all(|c| matches!(
                c,
                Command::Reply { message: ToClient::Progress { stage, .. }, .. }
                    if stage == "waiting for workers"
            )),
            "{cmds:?}"
        );
        assert_eq!(sim.state.task_counts(), (1, 0), "queued while no worker");
        let cmds = sim.join(worker + 1, 1);
        assert_eq!(run_tasks(&cmds), vec![(WorkerId(worker + 1), task.clone())]);
    }
    let cmds = sim.leave(3);
    let error = expect_error(&cmds, 1);
    assert!(error.contains("lost"), "{error}");
    assert!(error.contains('3'), "{error}");
    assert!(error.contains("w3"), "names the last worker: {error}");
    sim.assert_idle();
    assert_eq!(sim.state.counters().tasks_retried, 2);

    // Nothing is left to run on a new worker; the next request works.
    let cmds = sim.join(4, 1);
    assert!(cmds.is_empty(), "{cmds:?}");
    let footers = dataset(3);
    let cmds = sim.start(
        2,
        ClientRequest::Len {
            source: SOURCE.into(),
        },
        &footers,
    );
    assert_eq!(final_reply(&cmds, 2), Some(ToClient::Count(60)));
}

// ----- bugs found ------------------------------------------------------------

/// Whether `request` can still get an answer: it was answered, or a Load of
/// `key` (a rebuild the head could wait for) is running somewhere.
fn head_can_progress(sim: &Sim, seen: &[Command], request: RequestId, key: PartitionKey) -> bool {
    final_reply(seen, request).is_some()
        || !sim
            .running_where(|k| matches!(k, TaskKind::Load { key: k2, .. } if *k2 == key))
            .is_empty()
}

#[test]
fn head_on_old_frame_queued_during_replace_gets_an_answer() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let footers = dataset(2);
    sim.persist_all(1, "trips", false, &footers);

    // A replace keeps both workers busy...
    let cmds = sim.start(2, persist("trips", true), &dataset(2));
    let loads = load_runs(&cmds);
    assert_eq!(loads.len(), 2);
    // ...so a head on the (still current) old frame waits for worker 1.
    let mut seen = sim.request(
        3,
        ClientRequest::Head {
            source: "trips".into(),
            n: 5,
            columns: None,
        },
    );
    assert!(run_tasks(&seen).is_empty());
    let on_2 = loads.iter().find(|l| l.0 == WorkerId(2)).unwrap().1;
    let on_1 = loads.iter().find(|l| l.0 == WorkerId(1)).unwrap().1;
    seen.extend(sim.finish_load(2, on_2));
    let cmds = sim.finish_load(1, on_1);
    assert!(matches!(
        final_reply(&cmds, 2),
        Some(ToClient::Persisted(_))
    ));
    seen.extend(cmds);
    // Both workers are idle now; time passes.
    sim.at(Duration::from_secs(1));
    seen.extend(sim.send(Event::Tick));
    assert!(
        final_reply(&seen, 3).is_some() || !run_tasks(&seen).is_empty(),
        "the head request is never answered: its task is pinned to a partition of the \
         dropped frame and can never be placed (jobs in progress: {}, tasks queued/running: {:?})",
        sim.state.jobs_in_progress(),
        sim.state.task_counts()
    );
}

#[test]
fn head_after_a_failed_rebuild_gets_an_answer() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let (_, seen) = sim.persist_all(1, "trips", false, &dataset(2));
    let lost_key = load_runs(&seen)
        .iter()
        .find(|l| l.0 == WorkerId(1))
        .unwrap()
        .2;

    let cmds = sim.leave(1);
    let (_, rebuild) = run_tasks(&cmds).remove(0);
    let cmds = sim.fail(
        2,
        rebuild.id,
        "file /data/trips/part-0.parquet: No such file",
    );
    assert!(cmds.is_empty(), "{cmds:?}");

    let mut seen = sim.join(3, 2);
    seen.extend(sim.request(
        2,
        ClientRequest::Head {
            source: "trips".into(),
            n: 5,
            columns: None,
        },
    ));
    sim.at(Duration::from_secs(1));
    seen.extend(sim.send(Event::Tick));
    assert!(
        head_can_progress(&sim, &seen, RequestId(2), lost_key),
        "the head request hangs: partition {lost_key:?} has no holder and no rebuild, its \
         rebuild error was swallowed (list: {:?}, tasks queued/running: {:?})",
        sim.list(99),
        sim.state.task_counts()
    );
}

#[test]
fn head_after_a_rebuild_lost_max_attempts_times_gets_an_answer() {
    let mut sim = Sim::new(Config {
        max_task_attempts: 2,
        ..Config::default()
    });
    sim.join(1, 1);
    sim.join(2, 1);
    let (_, seen) = sim.persist_all(1, "trips", false, &dataset(2));
    let lost_key = load_runs(&seen)
        .iter()
        .find(|l| l.0 == WorkerId(1))
        .unwrap()
        .2;

    // The rebuild of worker 1's partition is lost with worker 2, then worker 3.
    let cmds = sim.leave(1);
    assert_eq!(run_tasks(&cmds)[0].0, WorkerId(2));
    sim.leave(2);
    let cmds = sim.join(3, 2);
    assert_eq!(run_tasks(&cmds).len(), 2, "both partitions rebuilt on 3");
    let cmds = sim.leave(3);
    assert!(no_reply_at_all(&cmds), "no job to fail: {cmds:?}");

    let mut seen = sim.join(4, 2);
    seen.extend(sim.request(
        2,
        ClientRequest::Head {
            source: "trips".into(),
            n: 5,
            columns: None,
        },
    ));
    sim.at(Duration::from_secs(1));
    seen.extend(sim.send(Event::Tick));
    assert!(
        head_can_progress(&sim, &seen, RequestId(2), lost_key),
        "the head request hangs: the rebuild task was dropped after max attempts but the \
         partition still records it as loading, so nothing rebuilds it (list: {:?}, tasks \
         queued/running: {:?})",
        sim.list(99),
        sim.state.task_counts()
    );
}
