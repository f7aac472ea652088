//! Worker outputs are input: one that does not answer its task (another
//! output kind, files or partitions the task did not ask for, too many
//! rows, counts no sum can hold) disconnects the worker with a reason that
//! names it and the field, its tasks run elsewhere, and the job still
//! answers correctly on the workers that remain. And a worker's claims at
//! registration are checked against the scheduler's ceilings.

mod common;

use common::*;
use stratus_protocol::messages::HeadInput;
use stratus_scheduler_core::outputs::{check_worker_info, WorkerCeilings};

fn disconnected(cmds: &[Command]) -> Vec<(WorkerId, String)> {
    cmds.iter()
        .filter_map(|c| match c {
            Command::DisconnectWorker { worker, reason } => Some((*worker, reason.clone())),
            _ => None,
        })
        .collect()
}

fn len_request() -> ClientRequest {
    ClientRequest::Len {
        source: SOURCE.into(),
    }
}

/// Answer footer tasks until `request` is answered.
fn footers_to_end(sim: &mut Sim, footers: &[FooterMeta], request: u64) -> Vec<Command> {
    let mut seen = Vec::new();
    for _ in 0..10 {
        let cmds = sim.answer_footers(footers);
        let done = final_reply(&cmds, request).is_some();
        seen.extend(cmds);
        if done {
            return seen;
        }
    }
    panic!("len never answered: {seen:?}");
}

#[test]
fn an_output_of_the_wrong_kind_disconnects_the_worker_and_its_task_runs_elsewhere() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let footers = dataset(4);
    sim.request(7, len_request());
    let (w, id, _) = sim.running_where(|k| matches!(k, TaskKind::ListFiles { .. }))[0].clone();
    let cmds = sim.finish(w, id, TaskOutput::Ok);
    let gone = disconnected(&cmds);
    assert_eq!(gone.len(), 1, "{cmds:?}");
    assert_eq!(gone[0].0, w);
    assert!(
        gone[0].1.contains(&format!("w{w}")) && gone[0].1.contains("output Ok"),
        "{}",
        gone[0].1
    );
    assert!(
        final_reply(&cmds, 7).is_none(),
        "the request goes on: {cmds:?}"
    );
    assert_eq!(sim.state.workers().count(), 1);
    // The listing runs again on the other worker; len answers right.
    let (other, _, _) = sim.running_where(|k| matches!(k, TaskKind::ListFiles { .. }))[0].clone();
    assert_ne!(other, w);
    sim.answer_listing(&footers);
    let seen = footers_to_end(&mut sim, &footers, 7);
    assert_eq!(
        final_reply(&seen, 7),
        Some(ToClient::Count(total_rows(&footers)))
    );
    sim.assert_idle();
}

#[test]
fn footers_of_a_file_the_task_did_not_read_disconnect_the_worker() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let footers = dataset(4);
    sim.request(7, len_request());
    sim.answer_listing(&footers);
    let (w, id, TaskKind::ReadFooters { files }) =
        sim.running_where(|k| matches!(k, TaskKind::ReadFooters { .. }))[0].clone()
    else {
        unreachable!()
    };
    // The right number of footers, but one names a file of the other task.
    let mut forged: Vec<FooterMeta> = files
        .iter()
        .map(|f| footers.iter().find(|m| m.file == *f).unwrap().clone())
        .collect();
    let stranger = footers.iter().find(|m| !files.contains(&m.file)).unwrap();
    forged[0] = stranger.clone();
    let cmds = sim.finish(w, id, TaskOutput::Footers(forged));
    let gone = disconnected(&cmds);
    assert_eq!(gone.len(), 1, "{cmds:?}");
    assert!(gone[0].1.contains("Footers[0].file"), "{}", gone[0].1);
    let seen = footers_to_end(&mut sim, &footers, 7);
    assert_eq!(
        final_reply(&seen, 7),
        Some(ToClient::Count(total_rows(&footers)))
    );
    sim.assert_idle();
}

#[test]
fn footer_counts_that_do_not_add_up_disconnect_the_worker() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let footers = dataset(2);
    sim.request(7, len_request());
    sim.answer_listing(&footers);
    let (w, id, TaskKind::ReadFooters { files }) =
        sim.running_where(|k| matches!(k, TaskKind::ReadFooters { .. }))[0].clone()
    else {
        unreachable!()
    };
    let mut forged: Vec<FooterMeta> = files
        .iter()
        .map(|f| footers.iter().find(|m| m.file == *f).unwrap().clone())
        .collect();
    // Counts that would overflow a sum (a panic in a debug build).
    forged[0].num_rows = u64::MAX;
    forged[0].row_groups[0].rows = u64::MAX;
    let cmds = sim.finish(w, id, TaskOutput::Footers(forged));
    let gone = disconnected(&cmds);
    assert!(gone[0].1.contains("num_rows"), "{}", gone[0].1);
    let seen = footers_to_end(&mut sim, &footers, 7);
    assert_eq!(
        final_reply(&seen, 7),
        Some(ToClient::Count(total_rows(&footers)))
    );
}

#[test]
fn a_load_reporting_another_partition_disconnects_the_worker_and_the_persist_completes() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let footers = dataset(4);
    let cmds = sim.start(1, persist("t", false), &footers);
    let loads = load_runs(&cmds);
    let (w, id, key, input) = loads[0].clone();
    let forged = TaskOutput::Loaded {
        key: PartitionKey {
            frame: key.frame,
            index: key.index + 1000,
        },
        rows: input.rows,
        bytes: loaded_bytes(input.rows),
        fetched: 0,
    };
    let cmds = sim.finish(w, id, forged);
    let gone = disconnected(&cmds);
    assert_eq!(gone.len(), 1, "{cmds:?}");
    assert!(gone[0].1.contains("Loaded.key"), "{}", gone[0].1);
    let (summary, _) = sim.persist_all_loads(1);
    assert_eq!(summary.partitions, 4);
    assert_eq!(summary.rows, total_rows(&footers));
    let survivor = sim.state.workers().next().unwrap().id;
    assert_ne!(survivor, w);
    assert_eq!(sim.partitions_of(survivor).len(), 4);
    sim.assert_idle();
}

#[test]
fn a_head_answering_more_rows_than_asked_disconnects_the_worker() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 2);
    sim.request(
        2,
        ClientRequest::Head {
            source: "t".into(),
            n: 3,
            columns: None,
        },
    );
    let (w, id, kind) = sim.running_where(|k| matches!(k, TaskKind::Head { .. }))[0].clone();
    assert!(matches!(
        kind,
        TaskKind::Head {
            input: HeadInput::Persisted(_),
            ..
        }
    ));
    let cmds = sim.finish(
        w,
        id,
        TaskOutput::Table {
            rows: 1_000_000,
            ipc: vec![1, 2, 3],
        },
    );
    let gone = disconnected(&cmds);
    assert_eq!(gone.len(), 1, "{cmds:?}");
    assert!(gone[0].1.contains("Table.rows"), "{}", gone[0].1);
    assert!(
        !matches!(final_reply(&cmds, 2), Some(ToClient::Table(_))),
        "no forged rows reach the client"
    );
}

#[test]
fn a_batch_of_reports_stops_at_the_first_malformed_one() {
    let mut sim = Sim::with_workers(&[(1, 2), (2, 1)]);
    let footers = dataset(4);
    let cmds = sim.start(1, persist("t", false), &footers);
    let on_1: Vec<_> = load_runs(&cmds)
        .into_iter()
        .filter(|l| l.0 == WorkerId(1))
        .collect();
    assert_eq!(on_1.len(), 2, "{cmds:?}");
    let reports = vec![
        TaskReport::Finished {
            id: on_1[0].1,
            output: TaskOutput::Files(Vec::new()),
        },
        TaskReport::Finished {
            id: on_1[1].1,
            output: TaskOutput::Loaded {
                key: on_1[1].2,
                rows: on_1[1].3.rows,
                bytes: 1,
                fetched: 0,
            },
        },
    ];
    sim.running.remove(&WorkerId(1));
    let cmds = sim.send(Event::TaskReports {
        worker: WorkerId(1),
        reports,
    });
    assert_eq!(disconnected(&cmds).len(), 1);
    assert!(sim.partitions_of(1).is_empty());
    let (summary, _) = sim.persist_all_loads(1);
    assert_eq!(summary.partitions, 4);
    assert_eq!(sim.partitions_of(2).len(), 4);
}

#[test]
fn claims_above_the_ceilings_are_refused_at_registration() {
    let ceilings = WorkerCeilings {
        max_threads: 64,
        max_memory: 1 << 40,
    };
    let mut info = worker_info("w", 8);
    assert!(check_worker_info(&info, &ceilings).is_ok());
    info.nthreads = 100_000;
    let e = check_worker_info(&info, &ceilings).unwrap_err();
    assert!(
        e.contains("nthreads = 100000") && e.contains("max_worker_threads"),
        "{e}"
    );
    info.nthreads = 0;
    assert!(check_worker_info(&info, &ceilings).is_err());
    info.nthreads = 8;
    info.memory_limit = u64::MAX;
    let e = check_worker_info(&info, &ceilings).unwrap_err();
    assert!(e.contains("max_worker_memory"), "{e}");
    assert!(check_worker_info(&worker_info("w", 1024), &WorkerCeilings::default()).is_ok());
}

// ----- the checks themselves, output kind by output kind ---------------------

mod shapes {
    use super::*;
    use stratus_protocol::messages::{
        ColumnRanges, ColumnSummary, KeyRange, Moments, PartitionBoundsWire, RangeHistogram,
        ReduceOp,
    };
    use stratus_scheduler_core::outputs::check_output;

    fn key(index: u32) -> PartitionKey {
        PartitionKey { frame: 5, index }
    }

    fn reduce(op: ReduceOp) -> TaskKind {
        TaskKind::Reduce {
            partitions: vec![key(0), key(1)],
            op,
        }
    }

    fn summary() -> ColumnSummary {
        ColumnSummary {
            moments: Moments::default(),
            distinct: None,
        }
    }

    #[test]
    fn summaries_need_one_per_column() {
        let kind = reduce(ReduceOp::Summary {
            columns: vec!["a".into(), "b".into()],
            max_distinct: 10,
        });
        assert!(check_output(&kind, &TaskOutput::Summaries(vec![summary(), summary()])).is_ok());
        let e = check_output(&kind, &TaskOutput::Summaries(vec![summary()])).unwrap_err();
        assert!(e.contains("Summaries has 1 entries"), "{e}");
    }

    #[test]
    fn histograms_need_one_per_range_of_each_column() {
        let range = KeyRange {
            prefix: 0,
            prefix_bits: 0,
        };
        let kind = reduce(ReduceOp::Histograms {
            columns: vec![ColumnRanges {
                column: "a".into(),
                ranges: vec![range, range],
                bits: 8,
                max_distinct: 10,
            }],
        });
        let h = || RangeHistogram {
            buckets: vec![(1, 2)],
            distinct: None,
        };
        assert!(check_output(&kind, &TaskOutput::Histograms(vec![vec![h(), h()]])).is_ok());
        let e = check_output(&kind, &TaskOutput::Histograms(vec![vec![h()]])).unwrap_err();
        assert!(e.contains("Histograms[0]") && e.contains("'a'"), "{e}");
        let e = check_output(&kind, &TaskOutput::Histograms(vec![])).unwrap_err();
        assert!(e.contains("Histograms has 0"), "{e}");
    }

    #[test]
    fn sort_samples_only_for_partitions_asked_for() {
        let kind = reduce(ReduceOp::SortSample {
            key: "k".into(),
            sample: 10,
        });
        let bounds = |index| PartitionBoundsWire {
            index,
            bounds_ipc: None,
            invalid: 0,
        };
        let ok = TaskOutput::SortSample {
            partitions: vec![bounds(0), bounds(1)],
            sample_ipc: Vec::new(),
        };
        assert!(check_output(&kind, &ok).is_ok());
        for bad in [vec![bounds(7)], vec![bounds(0), bounds(0)]] {
            let e = check_output(
                &kind,
                &TaskOutput::SortSample {
                    partitions: bad,
                    sample_ipc: Vec::new(),
                },
            )
            .unwrap_err();
            assert!(e.contains("SortSample.partitions"), "{e}");
        }
    }

    #[test]
    fn rebuilt_ranges_only_those_asked_for_once() {
        let kind = TaskKind::RebuildRanges {
            frame: 5,
            parts: vec![(0, 3), (1, 4)],
            sources: Vec::new(),
            key: "k".into(),
            boundaries_ipc: Vec::new(),
            steps: Vec::new(),
        };
        let ok = TaskOutput::LoadedMany(vec![(key(3), 1, 1), (key(4), 1, 1)]);
        assert!(check_output(&kind, &ok).is_ok());
        for bad in [
            vec![(key(9), 1, 1)],
            vec![(key(3), 1, 1), (key(3), 1, 1)],
            vec![(PartitionKey { frame: 6, index: 3 }, 1, 1)],
            vec![(key(3), u64::MAX, 1)],
        ] {
            assert!(check_output(&kind, &TaskOutput::LoadedMany(bad)).is_err());
        }
    }
}
