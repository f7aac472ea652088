//! Jobs on a Parquet source before any data moves: `len` from footers
//! spread over the workers, and schema checks that name the file at fault.

mod common;

use common::*;

// ----- 1. len over Parquet ---------------------------------------------------

#[test]
fn len_over_parquet_lists_spreads_footers_and_sums_rows() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let footers = dataset(4);

    let cmds = sim.request(
        7,
        ClientRequest::Len {
            source: SOURCE.into(),
        },
    );
    let runs = run_tasks(&cmds);
    assert_eq!(runs.len(), 1, "{cmds:?}");
    assert!(
        matches!(&runs[0].1.kind, TaskKind::ListFiles { source } if source == SOURCE),
        "{runs:?}"
    );
    assert!(no_reply_at_all(&cmds));

    let cmds = sim.answer_listing(&footers);
    let runs = run_tasks(&cmds);
    assert_eq!(runs.len(), 2, "two footer tasks for two threads: {runs:?}");
    let workers: BTreeSet<WorkerId> = runs.iter().map(|(w, _)| *w).collect();
    assert_eq!(
        workers,
        BTreeSet::from([WorkerId(1), WorkerId(2)]),
        "footers on both workers"
    );
    let mut paths = Vec::new();
    for (_, t) in &runs {
        let TaskKind::ReadFooters { files } = &t.kind else {
            panic!("expected ReadFooters, got {:?}", t.kind);
        };
        assert_eq!(files.len(), 2, "4 files over 2 tasks");
        paths.extend(files.iter().map(|f| f.path.clone()));
    }
    paths.sort();
    let expected: Vec<String> = footers.iter().map(|f| f.file.path.clone()).collect();
    assert_eq!(paths, expected, "every file read exactly once");

    // The first footer task alone does not answer.
    let (w, id, TaskKind::ReadFooters { files }) = sim
        .running_where(|k| matches!(k, TaskKind::ReadFooters { .. }))
        .remove(0)
    else {
        unreachable!()
    };
    let metas = files
        .iter()
        .map(|f| footers.iter().find(|m| m.file == *f).unwrap().clone())
        .collect();
    let cmds = sim.finish(w, id, TaskOutput::Footers(metas));
    assert!(no_reply_at_all(&cmds), "{cmds:?}");

    let cmds = sim.answer_footers(&footers);
    assert_eq!(final_reply(&cmds, 7), Some(ToClient::Count(100)));
    assert!(run_tasks(&cmds).is_empty(), "len needs no partition tasks");
    sim.assert_idle();
    assert!(sim.list(8).is_empty(), "len persists nothing");
}

// ----- 7. schema disagreement ------------------------------------------------

#[test]
fn footers_that_disagree_on_the_schema_fail_naming_file_and_field() {
    let mut sim = Sim::with_workers(&[(1, 1)]);
    let footers = vec![
        footer_with("/data/a.parquet", 10, DataType::Float64),
        footer_with("/data/b.parquet", 10, DataType::Int32),
    ];
    let cmds = sim.start(1, persist("weather", false), &footers);
    let error = expect_error(&cmds, 1);
    assert!(error.contains("/data/b.parquet"), "{error}");
    assert!(error.contains("temperature"), "{error}");
    assert!(
        error.contains("Int32") && error.contains("Float64"),
        "{error}"
    );
    assert!(load_runs(&cmds).is_empty(), "nothing loaded");
    sim.assert_idle();
    assert!(sim.list(2).is_empty());

    // The order in which workers return footers does not matter.
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let reversed: Vec<FooterMeta> = footers.iter().rev().cloned().collect();
    let cmds = sim.start(
        1,
        ClientRequest::Len {
            source: "/data/*.parquet".into(),
        },
        &reversed,
    );
    let error = expect_error(&cmds, 1);
    assert!(error.contains("/data/b.parquet"), "{error}");
    assert!(error.contains("temperature"), "{error}");
    sim.assert_idle();
}
