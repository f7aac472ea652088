//! A scheduler restart loses no persisted data: the catalog is written
//! before a persist is acknowledged; a new start restores its frames with
//! every partition awaiting its worker; workers that reconnect re-register
//! what they kept (nothing is read again); partitions no worker brings back
//! within the restore grace are rebuilt from lineage; claims that do not
//! match the catalog are dropped; and ids never repeat an earlier start's.

mod common;

use common::*;
use stratus_protocol::catalog::Catalog;
use stratus_protocol::messages::HeldPartition;

const GRACE: Duration = Duration::from_secs(30);

fn config() -> Config {
    Config {
        restore_grace: GRACE,
        // Workers leave only when a test says so (no heartbeats are sent).
        heartbeat_timeout: Duration::from_secs(3600),
        ..Config::default()
    }
}

/// A cluster of 2 workers x 1 thread that persisted "isd" (4 partitions);
/// returns the catalog it saved, and what each worker holds.
fn before_the_crash() -> (Catalog, BTreeMap<WorkerId, Vec<HeldPartition>>) {
    let mut sim = Sim::new(config());
    sim.join(WorkerId(1), 1);
    sim.join(WorkerId(2), 1);
    let (_, seen) = sim.persist_all(1, "isd", false, &dataset(4));
    // The catalog is saved before the client hears of the persist.
    let saved = seen
        .iter()
        .position(|c| matches!(c, Command::SaveCatalog(_)))
        .expect("the catalog was saved");
    let answered = seen
        .iter()
        .position(|c| {
            matches!(
                c,
                Command::Reply {
                    message: ToClient::Persisted(_),
                    ..
                }
            )
        })
        .expect("the persist was answered");
    assert!(saved < answered, "saved at {saved}, answered at {answered}");
    let Command::SaveCatalog(catalog) = &seen[saved] else {
        unreachable!()
    };
    assert_eq!(catalog.frames.len(), 1);
    assert_eq!(**catalog, sim.state.catalog());
    let mut held = BTreeMap::new();
    for w in sim.state.workers() {
        let frame = sim.state.frames().next().expect("the frame");
        let parts = w
            .partitions
            .iter()
            .map(|key| {
                let p = &frame.partitions[key.index as usize];
                HeldPartition {
                    key: *key,
                    rows: p.rows,
                    bytes: p.bytes,
                }
            })
            .collect();
        held.insert(w.id, parts);
    }
    (sim.state.catalog(), held)
}

/// A new start from `catalog` (its second start).
fn restarted(catalog: &Catalog) -> Sim {
    let mut sim = Sim::new(config());
    let mut catalog = catalog.clone();
    catalog.starts += 1;
    let (restored, warnings) = sim.state.start_from(sim.now, &catalog);
    assert_eq!((restored, warnings), (1, Vec::<String>::new()));
    sim
}

fn describe() -> ClientRequest {
    ClientRequest::Describe {
        source: "isd".into(),
        columns: None,
    }
}

fn loads(sim: &Sim) -> usize {
    sim.assignments
        .iter()
        .filter(|(_, t)| matches!(t.kind, TaskKind::Load { .. }))
        .count()
}

#[test]
fn workers_that_come_back_make_the_frame_usable_without_reading_anything() {
    let (catalog, held) = before_the_crash();
    let mut sim = restarted(&catalog);
    assert!(sim.state.restoring());
    // len is answered from the catalog at once.
    let cmds = sim.request(
        1,
        ClientRequest::Len {
            source: "isd".into(),
        },
    );
    assert_eq!(
        final_reply(&cmds, 1),
        Some(ToClient::Count(total_rows(&dataset(4))))
    );
    // A describe waits for the partitions.
    let cmds = sim.request(2, describe());
    assert!(run_tasks(&cmds).is_empty(), "{cmds:?}");
    // The workers reconnect (new connection ids) and say what they kept.
    for (i, (_, parts)) in held.iter().enumerate() {
        let worker = WorkerId(11 + i as u64);
        sim.join(worker, 1);
        let cmds = sim.send(Event::WorkerHeld {
            worker,
            partitions: parts.clone(),
        });
        assert!(drops(&cmds).is_empty(), "{cmds:?}");
    }
    assert!(
        !sim.state.restoring(),
        "every partition came back: restored"
    );
    assert_eq!(sim.state.counters().partitions_restored, 4);
    let frames = sim.list(3);
    assert_eq!(frames[0].partitions_held, 4);
    // The describe ran on the holders; nothing was loaded from Parquet.
    assert!(!sim.running.values().all(BTreeMap::is_empty));
    assert_eq!(loads(&sim), 0);
    // New ids are above every id of the first start.
    let first = sim.assignments.first().expect("describe's tasks").1.id;
    assert!(first >= 2 << 32, "task id {first}");
}

#[test]
fn partitions_no_worker_brings_back_are_rebuilt_when_the_grace_ends() {
    let (catalog, held) = before_the_crash();
    let mut sim = restarted(&catalog);
    let (&first, parts) = held.iter().next().expect("a holder");
    let missing: BTreeSet<PartitionKey> = held
        .iter()
        .filter(|(w, _)| **w != first)
        .flat_map(|(_, p)| p.iter().map(|h| h.key))
        .collect();
    sim.join(WorkerId(11), 1);
    sim.join(WorkerId(12), 1);
    sim.send(Event::WorkerHeld {
        worker: WorkerId(11),
        partitions: parts.clone(),
    });
    let cmds = sim.request(1, describe());
    assert!(run_tasks(&cmds).is_empty());
    // Within the grace nothing is rebuilt.
    sim.at(GRACE - Duration::from_secs(1));
    assert!(run_tasks(&sim.send(Event::Tick)).is_empty());
    assert!(sim.state.restoring());
    // Then exactly the missing partitions are loaded again.
    sim.at(GRACE);
    let cmds = sim.send(Event::Tick);
    assert!(!sim.state.restoring());
    let rebuilt: BTreeSet<PartitionKey> = load_runs(&cmds).iter().map(|r| r.2).collect();
    assert_eq!(rebuilt, missing);
    // Once they are, the describe runs.
    let cmds = sim.finish_parquet_loads();
    assert!(!run_tasks(&cmds).is_empty(), "{cmds:?}");
}

#[test]
fn claims_that_do_not_match_the_catalog_are_dropped() {
    let (catalog, held) = before_the_crash();
    let mut sim = restarted(&catalog);
    let parts = held.values().next().expect("a holder").clone();
    sim.join(WorkerId(11), 1);
    sim.join(WorkerId(12), 1);
    sim.send(Event::WorkerHeld {
        worker: WorkerId(11),
        partitions: parts.clone(),
    });
    let mut claims = parts.clone(); // already held by worker 11
    let mut wrong_rows = held.values().nth(1).expect("a second holder")[0];
    wrong_rows.rows += 1;
    claims.push(wrong_rows);
    let unknown = HeldPartition {
        key: PartitionKey {
            frame: 999,
            index: 0,
        },
        rows: 1,
        bytes: 8,
    };
    claims.push(unknown);
    let cmds = sim.send(Event::WorkerHeld {
        worker: WorkerId(12),
        partitions: claims.clone(),
    });
    let dropped = drops(&cmds).remove(&WorkerId(12)).unwrap_or_default();
    let expected: BTreeSet<PartitionKey> = claims.iter().map(|h| h.key).collect();
    assert_eq!(dropped, expected);
    assert!(sim.partitions_of(12).is_empty());
    assert_eq!(sim.partitions_of(11).len(), parts.len());
}

#[test]
fn an_unpersist_after_a_restart_is_saved_too() {
    let (catalog, _) = before_the_crash();
    let mut sim = restarted(&catalog);
    let cmds = sim.request(1, ClientRequest::Unpersist { name: "isd".into() });
    let Some(Command::SaveCatalog(saved)) = cmds.first() else {
        panic!("the catalog is saved first: {cmds:?}");
    };
    assert!(saved.frames.is_empty());
    assert_eq!(saved.starts, catalog.starts + 1);
    // Nothing awaits a frame that is gone.
    assert!(
        !sim.state.restoring() || {
            sim.at(GRACE);
            sim.send(Event::Tick);
            !sim.state.restoring()
        }
    );
    sim.assert_idle();
}
