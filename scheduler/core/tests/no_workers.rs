//! A request never hangs for want of workers: with none registered it says
//! it is waiting for them (a progress frame, `waiting` on its activity
//! record), goes on when one joins, and fails naming the timeout once the
//! cluster has had none for `no_workers_timeout` (counted from when the
//! last worker left, or from the request's arrival if later).

mod common;

use common::*;
use stratus_scheduler_core::activity::RequestState;

const TIMEOUT: Duration = Duration::from_secs(30);

fn sim_with_timeout(workers: &[(u64, u32)]) -> Sim {
    let mut sim = Sim::new(Config {
        no_workers_timeout: TIMEOUT,
        // Workers leave only when a test says so (no heartbeats are sent).
        heartbeat_timeout: Duration::from_secs(3600),
        ..Config::default()
    });
    for &(id, threads) in workers {
        sim.join(WorkerId(id), threads);
    }
    sim
}

fn says_waiting(cmds: &[Command], request: u64) -> bool {
    replies(cmds, request)
        .iter()
        .any(|m| matches!(m, ToClient::Progress { stage, .. } if stage == "waiting for workers"))
}

fn waiting_on_dashboard(sim: &Sim, request: u64) -> Option<&'static str> {
    sim.state
        .activity()
        .requests()
        .find(|r| r.id == request)
        .and_then(|r| r.waiting)
}

#[test]
fn a_request_on_a_cluster_that_lost_every_worker_fails_after_the_timeout() {
    let mut sim = sim_with_timeout(&[(1, 1), (2, 1)]);
    let footers = dataset(4);
    sim.persist_all(1, "isd", false, &footers);

    // Both workers go; a describe arrives 10 s later.
    sim.at(Duration::from_secs(100));
    sim.leave(1);
    let cmds = sim.leave(2);
    assert!(final_reply(&cmds, 1).is_none());
    sim.at(Duration::from_secs(110));
    let cmds = sim.request(
        2,
        ClientRequest::Describe {
            source: "isd".into(),
            columns: None,
        },
    );
    assert!(final_reply(&cmds, 2).is_none(), "{cmds:?}");
    assert!(says_waiting(&cmds, 2), "the client hears why: {cmds:?}");
    assert_eq!(waiting_on_dashboard(&sim, 2), Some("workers"));

    // Said once, not on every tick.
    sim.at(Duration::from_secs(125));
    let cmds = sim.send(Event::Tick);
    assert!(!says_waiting(&cmds, 2), "{cmds:?}");
    assert!(final_reply(&cmds, 2).is_none());

    // The request arrived after the workers left: its own wait counts.
    sim.at(Duration::from_secs(139));
    assert!(final_reply(&sim.send(Event::Tick), 2).is_none());
    sim.at(Duration::from_secs(140));
    let cmds = sim.send(Event::Tick);
    let error = expect_error(&cmds, 2);
    assert!(
        error.contains("no worker to run this on for 30s"),
        "{error}"
    );
    assert!(error.contains("--no-workers-timeout"), "{error}");
    let record = sim.state.activity().requests().find(|r| r.id == 2).unwrap();
    assert!(matches!(record.state, RequestState::Error(_)));

    // The frame is still known (its partitions rebuild when workers return).
    assert_eq!(sim.list(3).len(), 1);
}

#[test]
fn a_worker_joining_in_time_lets_the_waiting_request_finish() {
    let mut sim = sim_with_timeout(&[]);
    let footers = dataset(2);
    let cmds = sim.request(1, persist("isd", false));
    assert!(says_waiting(&cmds, 1), "{cmds:?}");

    sim.at(Duration::from_secs(29));
    assert!(final_reply(&sim.send(Event::Tick), 1).is_none());
    sim.join(1, 4);
    assert_eq!(waiting_on_dashboard(&sim, 1), None, "no longer waiting");
    sim.answer_listing(&footers);
    sim.answer_footers(&footers);

    // Long past the timeout, with a worker: no error.
    sim.at(Duration::from_secs(120));
    assert!(final_reply(&sim.send(Event::Tick), 1).is_none());
    let (summary, _) = sim.persist_all_loads(1);
    assert_eq!(summary.rows, total_rows(&footers));
}

#[test]
fn the_timeout_counts_from_when_the_last_worker_left() {
    let mut sim = sim_with_timeout(&[(1, 1)]);
    let footers = dataset(2);
    sim.at(Duration::from_secs(1));
    let cmds = sim.request(1, persist("isd", false));
    assert!(!says_waiting(&cmds, 1));
    sim.answer_listing(&footers);
    sim.answer_footers(&footers);

    // The request ran for a minute; the worker dies then.
    sim.at(Duration::from_secs(61));
    let cmds = sim.leave(1);
    assert!(says_waiting(&cmds, 1), "{cmds:?}");
    sim.at(Duration::from_secs(90));
    assert!(final_reply(&sim.send(Event::Tick), 1).is_none());
    sim.at(Duration::from_secs(91));
    let error = expect_error(&sim.send(Event::Tick), 1);
    assert!(error.contains("no worker to run this on"), "{error}");
}
