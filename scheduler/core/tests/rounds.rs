//! Round-based jobs over a persisted frame, driven with workers that answer
//! with the engine's real kernels: `describe` (one summary round, or
//! quantile histogram rounds for columns with many distinct values, exact
//! either way), `memory_usage`, and `write` (prepare, stage, commit; a
//! failure cleans up, a lost worker reruns the round).

mod common;

use arrow_array::{ArrayRef, Float64Array, RecordBatch, StringArray, UInt64Array};
use common::*;
use stratus_engine::describe;
use stratus_protocol::messages::{ReduceOp, StagedFile};

/// The temperatures of partition `index`: `per` values. With `step` 0.1
/// they repeat (few distinct keys); with an irrational step every value is
/// distinct.
fn temperatures(index: u32, per: usize, step: f64) -> Vec<f64> {
    (0..per)
        .map(|i| {
            let n = index as usize * per + i;
            ((n * 7919) % 1000) as f64 * step - 20.0
        })
        .collect()
}

fn batch_of(values: &[f64]) -> RecordBatch {
    let cities: Vec<&str> = values.iter().map(|_| "x").collect();
    RecordBatch::try_from_iter([
        (
            "city",
            std::sync::Arc::new(StringArray::from(cities)) as ArrayRef,
        ),
        (
            "temperature",
            std::sync::Arc::new(Float64Array::from(values.to_vec())) as ArrayRef,
        ),
    ])
    .unwrap()
}

/// What a worker answers to a describe round, over the partitions it holds.
fn reduce_answer(kind: &TaskKind, data: &dyn Fn(u32) -> Vec<f64>) -> TaskOutput {
    let TaskKind::Reduce { partitions, op } = kind else {
        panic!("not a reduce: {kind:?}")
    };
    let batches: Vec<RecordBatch> = partitions
        .iter()
        .map(|k| batch_of(&data(k.index)))
        .collect();
    // The same driver the workers run.
    match op {
        ReduceOp::Summary {
            columns,
            max_distinct,
        } => TaskOutput::Summaries(
            describe::summaries(&batches, columns, *max_distinct as usize).unwrap(),
        ),
        ReduceOp::Histograms { columns } => {
            TaskOutput::Histograms(describe::range_histograms(&batches, columns).unwrap())
        }
        other => panic!("unexpected op {other:?}"),
    }
}

/// pandas' quantile (linear interpolation) of all values.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn table_of(answer: &ToClient) -> RecordBatch {
    let ToClient::Table(payload) = answer else {
        panic!("expected a table, got {answer:?}")
    };
    let mut batches = stratus_protocol::ipc::decode_table_payload(payload).unwrap();
    assert_eq!(batches.len(), 1);
    batches.pop().unwrap()
}

fn is_reduce(kind: &TaskKind) -> bool {
    matches!(kind, TaskKind::Reduce { .. })
}

/// Run a describe of `temperature` to its answer; returns the answer and
/// the number of rounds it took.
fn describe_to_end(
    sim: &mut Sim,
    request: u64,
    data: &dyn Fn(u32) -> Vec<f64>,
) -> (ToClient, usize) {
    let cmds = sim.request(
        request,
        ClientRequest::Describe {
            source: "t".into(),
            columns: Some(vec!["temperature".into()]),
        },
    );
    assert!(final_reply(&cmds, request).is_none());
    for round in 1..=6 {
        let holders = sim.running_where(is_reduce).len();
        assert_eq!(holders, 2, "round {round}: one task per holder");
        let seen = sim.answer_running(is_reduce, |_, kind| reduce_answer(kind, data));
        if let Some(answer) = final_reply(&seen, request) {
            return (answer, round);
        }
    }
    panic!("describe did not finish in 6 rounds");
}

fn check_describe(answer: &ToClient, all: &mut [f64]) {
    all.sort_by(f64::total_cmp);
    let table = table_of(answer);
    let stats = table
        .column(1)
        .as_any()
        .downcast_ref::<Float64Array>()
        .unwrap();
    assert_eq!(stats.value(0), all.len() as f64, "count");
    assert_eq!(stats.value(3), all[0], "min");
    assert_eq!(stats.value(7), *all.last().unwrap(), "max");
    for (row, q) in [(4, 0.25), (5, 0.5), (6, 0.75)] {
        assert_eq!(stats.value(row), quantile(all, q), "quantile {q}");
    }
}

#[test]
fn describe_of_few_distinct_values_answers_exactly_after_one_summary_round() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    let data = |i| temperatures(i, 500, 0.1);
    let (answer, rounds) = describe_to_end(&mut sim, 2, &data);
    assert_eq!(rounds, 1);
    let mut all: Vec<f64> = (0..4).flat_map(data).collect();
    check_describe(&answer, &mut all);
    sim.assert_idle();
}

#[test]
fn describe_of_many_distinct_values_narrows_by_histograms_to_exact_quartiles() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    // More distinct values per worker than a summary round counts.
    let data = |i: u32| -> Vec<f64> {
        (0..10_000)
            .map(|n| ((i as usize * 10_000 + n) as f64 * std::f64::consts::E).sin() * 50.0)
            .collect()
    };
    let (answer, rounds) = describe_to_end(&mut sim, 2, &data);
    assert!((2..=5).contains(&rounds), "took {rounds} rounds");
    let mut all: Vec<f64> = (0..4).flat_map(data).collect();
    check_describe(&answer, &mut all);
    sim.assert_idle();
}

#[test]
fn describe_round_reruns_when_a_holder_is_lost_and_its_partitions_are_rebuilt() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1), (3, 1)]);
    let (frame, holders) = sim.persisted_frame(1, "t", 6);
    let data = |i| temperatures(i, 200, 0.1);
    let request = 2;
    sim.request(
        request,
        ClientRequest::Describe {
            source: "t".into(),
            columns: None,
        },
    );
    // Worker 1 answers, then worker 3 is lost before answering.
    let first = sim.running_where(is_reduce);
    assert_eq!(first.len(), 3);
    let (w, id, kind) = first.iter().find(|t| t.0 == WorkerId(1)).cloned().unwrap();
    sim.finish(w, id, reduce_answer(&kind, &data));
    let cmds = sim.leave(3);
    assert!(no_reply_at_all(&cmds));
    // The round's other task is cancelled; the lost partitions reload.
    let lost = &holders[&WorkerId(3)];
    let reloads = load_runs(&cmds);
    let reloaded: BTreeSet<PartitionKey> = reloads.iter().map(|l| l.2).collect();
    assert_eq!(reloaded, lost.iter().copied().collect::<BTreeSet<_>>());
    assert!(
        sim.running_where(is_reduce).is_empty(),
        "round waits for the rebuild"
    );
    let mut seen = Vec::new();
    for (w, id, _, _) in reloads {
        seen.extend(sim.finish_load(w, id));
    }
    assert!(seen
        .iter()
        .all(|c| !matches!(c, Command::Reply { message, .. } if message.is_final())));
    // The round runs again over every partition, on the two live workers.
    let rerun = sim.running_where(is_reduce);
    assert_eq!(rerun.len(), 2);
    let covered: usize = rerun
        .iter()
        .map(|(_, _, k)| match k {
            TaskKind::Reduce { partitions, .. } => partitions.len(),
            _ => 0,
        })
        .sum();
    assert_eq!(covered, 6);
    let seen = sim.answer_running(is_reduce, |_, kind| reduce_answer(kind, &data));
    let answer = final_reply(&seen, request).expect("answered");
    let mut all: Vec<f64> = (0..6).flat_map(data).collect();
    check_describe(&answer, &mut all);
    assert_eq!(sim.state.counters().partitions_rebuilt, lost.len() as u64);
    let _ = frame;
    sim.assert_idle();
}

#[test]
fn a_round_waiting_for_a_rebuild_fails_when_its_frame_is_unpersisted() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    sim.leave(2);
    // The describe waits for worker 2's partitions to be rebuilt...
    let cmds = sim.request(
        2,
        ClientRequest::Describe {
            source: "t".into(),
            columns: None,
        },
    );
    assert!(final_reply(&cmds, 2).is_none());
    assert!(sim.running_where(is_reduce).is_empty());
    // ... and is told at once when the frame goes, instead of waiting forever.
    let cmds = sim.request(3, ClientRequest::Unpersist { name: "t".into() });
    assert_eq!(final_reply(&cmds, 3), Some(ToClient::Done));
    let error = expect_error(&cmds, 2);
    assert!(error.contains("unpersisted"), "{error}");
    sim.finish_parquet_loads();
    sim.assert_idle();
}

#[test]
fn memory_usage_adds_up_columns_over_holders_and_fails_on_mismatched_columns() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    sim.request(2, ClientRequest::MemoryUsage { source: "t".into() });
    let seen = sim.answer_running(is_reduce, |w, _| {
        TaskOutput::ColumnBytes(vec![("city".into(), 10 * w.0), ("temperature".into(), 100)])
    });
    let table = table_of(&final_reply(&seen, 2).expect("answered"));
    let bytes = table
        .column(1)
        .as_any()
        .downcast_ref::<UInt64Array>()
        .unwrap();
    assert_eq!(bytes.values(), &[30, 200, 230]);

    sim.request(3, ClientRequest::MemoryUsage { source: "t".into() });
    let seen = sim.answer_running(is_reduce, |w, _| {
        let name = if w == WorkerId(1) {
            "temperature"
        } else {
            "pressure"
        };
        TaskOutput::ColumnBytes(vec![("city".into(), 1), (name.into(), 1)])
    });
    let error = expect_error(&seen, 3);
    assert!(error.contains("'pressure'"), "{error}");
    sim.assert_idle();
}

fn write_request(dest: &str) -> ClientRequest {
    ClientRequest::Write {
        source: "t".into(),
        dest: dest.into(),
        partition_by: vec!["city".into()],
        overwrite: false,
    }
}

fn staged(w: WorkerId) -> TaskOutput {
    TaskOutput::Staged(vec![StagedFile {
        temp_path: format!("/out/_temporary/x/part-{w}.parquet"),
        final_path: format!("/out/city=x/part-{w}.parquet"),
        rows: 10,
        bytes: 1000,
    }])
}

#[test]
fn write_prepares_on_one_worker_stages_on_every_holder_and_commits_once() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    let cmds = sim.request(2, write_request("/out"));
    let prepare = run_tasks(&cmds);
    assert!(matches!(&prepare[..], [(_, t)] if matches!(t.kind, TaskKind::PrepareWrite { .. })));
    sim.answer_running(
        |k| matches!(k, TaskKind::PrepareWrite { .. }),
        |_, _| TaskOutput::Ok,
    );
    let writes = sim.running_where(|k| matches!(k, TaskKind::WriteParts { .. }));
    assert_eq!(writes.len(), 2, "every holder stages its partitions");
    sim.answer_running(
        |k| matches!(k, TaskKind::WriteParts { .. }),
        |w, _| staged(w),
    );
    let commits = sim.running_where(|k| matches!(k, TaskKind::CommitWrite { .. }));
    let [(_, _, TaskKind::CommitWrite { staged, spec })] = &commits[..] else {
        panic!("one commit: {commits:?}")
    };
    assert_eq!(staged.len(), 2, "the commit renames every staged file");
    assert!(spec.job_id.starts_with("job-"));
    let seen = sim.answer_running(
        |k| matches!(k, TaskKind::CommitWrite { .. }),
        |_, _| TaskOutput::Committed { rows: 20, files: 2 },
    );
    let table = table_of(&final_reply(&seen, 2).expect("answered"));
    assert_eq!(table.num_rows(), 1);
    sim.assert_idle();
}

#[test]
fn a_failed_write_removes_its_staged_files_in_a_background_task() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    sim.request(2, write_request("/out"));
    sim.answer_running(
        |k| matches!(k, TaskKind::PrepareWrite { .. }),
        |_, _| TaskOutput::Ok,
    );
    let writes = sim.running_where(|k| matches!(k, TaskKind::WriteParts { .. }));
    let (w, id, _) = writes[0].clone();
    let cmds = sim.fail(w, id, "disk full on /out");
    assert!(expect_error(&cmds, 2).contains("disk full"));
    // The other holder's write is cancelled; one AbortWrite cleans up.
    assert_eq!(cancels(&cmds).values().map(BTreeSet::len).sum::<usize>(), 1);
    let aborts = sim.running_where(|k| matches!(k, TaskKind::AbortWrite { .. }));
    assert_eq!(aborts.len(), 1);
    assert_eq!(
        sim.state.jobs_in_progress(),
        1,
        "the cleanup runs as its own job"
    );
    let cmds = sim.answer_running(
        |k| matches!(k, TaskKind::AbortWrite { .. }),
        |_, _| TaskOutput::Ok,
    );
    assert!(no_reply_at_all(&cmds));
    sim.assert_idle();
}

#[test]
fn a_commit_rerun_after_a_lost_holder_commits_the_same_staged_files() {
    // The committer lost during the commit round: the commit reruns with
    // the files staged, not with none (that committed an empty dataset over
    // the old one and answered success, as the fault matrix found).
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    sim.request(2, write_request("/out"));
    sim.answer_running(
        |k| matches!(k, TaskKind::PrepareWrite { .. }),
        |_, _| TaskOutput::Ok,
    );
    sim.answer_running(
        |k| matches!(k, TaskKind::WriteParts { .. }),
        |w, _| staged(w),
    );
    let commits = sim.running_where(|k| matches!(k, TaskKind::CommitWrite { .. }));
    let [(committer, _, _)] = commits[..] else {
        panic!("one commit: {commits:?}")
    };
    sim.leave(committer);
    sim.finish_parquet_loads();
    let again = sim.running_where(|k| matches!(k, TaskKind::CommitWrite { .. }));
    let [(rerun_on, _, TaskKind::CommitWrite { staged, .. })] = &again[..] else {
        panic!("the commit runs again: {again:?}")
    };
    assert_ne!(*rerun_on, committer);
    assert_eq!(staged.len(), 2, "the same two staged files: {staged:?}");
    let seen = sim.answer_running(
        |k| matches!(k, TaskKind::CommitWrite { .. }),
        |_, _| TaskOutput::Committed { rows: 20, files: 2 },
    );
    assert!(final_reply(&seen, 2).is_some());
    sim.finish_parquet_loads(); // the rest of the lost partitions' rebuild
    sim.assert_idle();
}

#[test]
fn a_write_round_reruns_when_a_holder_is_lost() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    sim.request(2, write_request("/out"));
    sim.answer_running(
        |k| matches!(k, TaskKind::PrepareWrite { .. }),
        |_, _| TaskOutput::Ok,
    );
    let writes = sim.running_where(|k| matches!(k, TaskKind::WriteParts { .. }));
    sim.finish(writes[0].0, writes[0].1, staged(writes[0].0));
    sim.leave(2);
    sim.finish_parquet_loads();
    // Worker 1 now holds everything and stages it all again, alone.
    let rerun = sim.running_where(|k| matches!(k, TaskKind::WriteParts { .. }));
    assert_eq!(rerun.len(), 1);
    sim.answer_running(
        |k| matches!(k, TaskKind::WriteParts { .. }),
        |w, _| staged(w),
    );
    let commits = sim.running_where(|k| matches!(k, TaskKind::CommitWrite { .. }));
    let [(_, _, TaskKind::CommitWrite { staged, .. })] = &commits[..] else {
        panic!("one commit: {commits:?}")
    };
    assert_eq!(
        staged.len(),
        1,
        "files staged before the loss are not committed twice"
    );
    let seen = sim.answer_running(
        |k| matches!(k, TaskKind::CommitWrite { .. }),
        |_, _| TaskOutput::Committed { rows: 10, files: 1 },
    );
    assert!(final_reply(&seen, 2).is_some());
    sim.assert_idle();
}
