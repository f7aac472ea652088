//! A worker killed with SIGKILL: the job still finishes on the others with the
//! right answer; persisted partitions it held are rebuilt from their lineage.

mod common;

use common::cluster::start_cluster;
use common::*;
use std::time::Duration;

const ROWS: u64 = 1_000_000;

#[tokio::test(flavor = "current_thread")]
async fn a_persist_survives_a_killed_worker_and_its_partitions_are_rebuilt_with_the_same_rows() {
    let data = TempDir::new("ft-data");
    stratus_engine::datagen::generate_isd(&stratus_engine::datagen::DatagenOptions {
        rows: ROWS,
        out: data.path().to_path_buf(),
        seed: 3,
    })
    .unwrap();
    let src = data.path().display().to_string();
    let cluster = start_cluster(3, 4 << 30).await;
    let pids = cluster.worker_pids();
    let client = stratus::Client::connect(&cluster.target).await.unwrap();
    assert_eq!(client.len(&src).await.unwrap(), ROWS);

    // Kill a worker in the middle of a persist.
    let mut killed = false;
    let summary = client
        .persist(
            &src,
            "isd",
            false,
            None,
            Vec::new(),
            &mut |_, done, total| {
                if !killed && done >= total / 4 {
                    kill9(pids[0]);
                    killed = true;
                }
            },
        )
        .await
        .expect("persist survives a lost worker");
    assert!(
        killed,
        "the persist finished before a worker could be killed"
    );
    assert_eq!(summary.rows, ROWS);
    assert_eq!(summary.partitions_held, summary.partitions);
    assert_eq!(client.len("isd").await.unwrap(), ROWS);
    let info = client.info().await.unwrap();
    assert_eq!(info.workers, 2, "the killed worker is removed");
    let before = client.head("isd", 20, None).await.unwrap();

    // Kill another worker after the persist: its partitions are rebuilt on
    // the survivor, and the frame answers as before.
    kill9(pids[1]);
    let frames = eventually_async(
        Duration::from_secs(60),
        "the lost partitions rebuilt",
        || async {
            let info = client.info().await.unwrap();
            let frames = client.list().await.unwrap();
            let whole = frames[0].partitions_held == frames[0].partitions;
            (info.workers == 1 && whole).then_some(frames)
        },
    )
    .await;
    assert_eq!(frames[0].rows, ROWS);
    assert_eq!(client.len("isd").await.unwrap(), ROWS);
    let after = client.head("isd", 20, None).await.unwrap();
    assert_eq!(before, after, "rebuilt partitions hold the same rows");
    client.close().await;
}
