//! Frames derived from persisted frames: each partition is computed next to
//! its parent partition (no data moves), steps are checked against the
//! schema before any task runs, and a lost derived partition is rebuilt
//! from Parquet with the whole lineage of steps.

mod common;

use common::*;
use stratus_protocol::messages::Step;

fn derive(name: &str, steps: Vec<Step>) -> ClientRequest {
    ClientRequest::Persist {
        source: "t".into(),
        name: name.into(),
        replace: false,
        columns: None,
        steps,
    }
}

fn is_derived_load(kind: &TaskKind) -> bool {
    matches!(
        kind,
        TaskKind::Load {
            input: LoadInput::Persisted(_),
            ..
        }
    )
}

fn loaded(kind: &TaskKind) -> TaskOutput {
    let TaskKind::Load { key, .. } = kind else {
        unreachable!()
    };
    TaskOutput::Loaded {
        key: *key,
        rows: 10,
        bytes: 500,
        fetched: 0,
    }
}

#[test]
fn a_derived_frame_is_computed_next_to_each_parent_partition() {
    let mut sim = Sim::with_workers(&[(1, 2), (2, 2)]);
    let (parent, holders) = sim.persisted_frame(1, "t", 4);
    let select = vec![Step::Select(vec!["temperature".into()])];
    let cmds = sim.request(2, derive("d", select.clone()));
    let loads = run_tasks(&cmds);
    assert_eq!(loads.len(), 4);
    for (worker, task) in &loads {
        let TaskKind::Load {
            input: LoadInput::Persisted(from),
            steps,
            ..
        } = &task.kind
        else {
            panic!("{task:?}")
        };
        assert_eq!(from.frame, parent);
        assert!(
            holders[worker].contains(from),
            "computed where its parent is held"
        );
        assert_eq!(steps, &select);
    }
    let seen = sim.answer_running(is_derived_load, |_, kind| loaded(kind));
    match final_reply(&seen, 2) {
        Some(ToClient::Persisted(summary)) => {
            assert_eq!((summary.name.as_str(), summary.partitions), ("d", 4))
        }
        other => panic!("expected Persisted, got {other:?}"),
    }
    assert_eq!(sim.list(3).len(), 2);
    sim.assert_idle();
}

#[test]
fn a_step_that_does_not_fit_the_schema_fails_before_any_task() {
    let mut sim = Sim::with_workers(&[(1, 1)]);
    sim.persisted_frame(1, "t", 2);
    let cmds = sim.request(2, derive("d", vec![Step::Select(vec!["pressure".into()])]));
    let error = expect_error(&cmds, 2);
    assert!(error.contains("pressure"), "{error}");
    assert!(run_tasks(&cmds).is_empty());
    assert_eq!(sim.list(3).len(), 1);
    sim.assert_idle();
}

#[test]
fn a_lost_derived_partition_is_rebuilt_from_parquet_with_every_step_of_its_lineage() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    sim.persisted_frame(1, "t", 4);
    let select = vec![Step::Select(vec!["temperature".into()])];
    sim.request(2, derive("d", select.clone()));
    sim.answer_running(is_derived_load, |_, kind| loaded(kind));
    let seen = sim.answer_running(is_derived_load, |_, kind| loaded(kind));
    assert!(final_reply(&seen, 2).is_some());
    let derived_frame = sim
        .state
        .frames()
        .find(|f| f.name == "d")
        .map(|f| f.id.0)
        .unwrap();
    let lost_derived: BTreeSet<PartitionKey> = sim
        .partitions_of(2)
        .into_iter()
        .filter(|k| k.frame == derived_frame)
        .collect();
    assert!(!lost_derived.is_empty());
    // Worker 1 has one thread: the rebuilds run one at a time.
    sim.leave(2);
    let mut rebuilt = BTreeSet::new();
    for _ in 0..8 {
        let running = sim.running_where(|k| matches!(k, TaskKind::Load { .. }));
        let Some((w, id, kind)) = running.first().cloned() else {
            break;
        };
        let TaskKind::Load {
            key,
            input: LoadInput::Parquet(_),
            steps,
            ..
        } = &kind
        else {
            panic!("a rebuild reads Parquet: {kind:?}")
        };
        if key.frame == derived_frame {
            assert_eq!(steps, &select, "the derived frame's whole lineage");
            rebuilt.insert(*key);
        }
        sim.finish_load(w, id);
    }
    assert_eq!(rebuilt, lost_derived);
    let d = sim.list(3).into_iter().find(|f| f.name == "d").unwrap();
    assert_eq!(d.partitions_held, 4);
    sim.assert_idle();
}
