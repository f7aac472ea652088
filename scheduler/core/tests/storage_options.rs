//! Object-store options travel with the request that sent them: every task
//! of its job carries them (listing, footers, loads), a frame keeps them, and
//! the rebuild of a lost partition (a background job no request started)
//! reads with its frame's options; requests without options carry none.

mod common;

use common::*;
use stratus_protocol::messages::StorageOptions;

fn options() -> StorageOptions {
    StorageOptions(vec![("account_key".into(), "SECRET".into())])
}

/// Every task a batch of commands runs, with its options.
fn tasks_with_options(cmds: &[Command]) -> Vec<(TaskKind, StorageOptions)> {
    run_tasks(cmds)
        .into_iter()
        .map(|(_, t)| (t.kind, t.storage))
        .collect()
}

#[test]
fn options_reach_every_task_of_their_request_and_the_rebuilds_of_its_frame() {
    let mut sim = Sim::with_workers(&[(1, 1), (2, 1)]);
    let footers = dataset(4);

    let mut seen = sim.request_with_storage(1, persist("isd", false), options());
    seen.extend(sim.answer_listing(&footers));
    seen.extend(sim.answer_footers(&footers));
    seen.extend(sim.run_loads_to_end(1));
    let tasks = tasks_with_options(&seen);
    for kind in ["list_files", "read_footers", "load"] {
        assert!(
            tasks.iter().any(|(k, _)| k.label() == kind),
            "no {kind} task: {tasks:?}"
        );
    }
    for (kind, storage) in &tasks {
        assert_eq!(storage, &options(), "{} without the options", kind.label());
    }
    assert!(
        matches!(final_reply(&seen, 1), Some(ToClient::Persisted(_))),
        "{seen:?}"
    );

    // A request without options carries none, even on the same source.
    let cmds = sim.request(
        2,
        ClientRequest::Len {
            source: SOURCE.into(),
        },
    );
    let tasks = tasks_with_options(&cmds);
    assert!(!tasks.is_empty(), "{cmds:?}");
    assert!(tasks.iter().all(|(_, s)| s.is_empty()), "{tasks:?}");
    sim.answer_listing(&footers);
    sim.answer_footers(&footers);

    // Worker 1 leaves: its partitions are rebuilt from Parquet, with the
    // frame's options.
    let cmds = sim.leave(1);
    let rebuilds: Vec<_> = tasks_with_options(&cmds)
        .into_iter()
        .filter(|(k, _)| matches!(k, TaskKind::Load { .. }))
        .collect();
    assert!(!rebuilds.is_empty(), "nothing rebuilt: {cmds:?}");
    for (_, storage) in &rebuilds {
        assert_eq!(storage, &options());
    }
    // The options never show in what the state machine logs about tasks.
    assert!(!format!("{cmds:?}").contains("SECRET"));
}
