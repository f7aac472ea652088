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

/// Every value of a describe table: numbers within a relative 1e-12 (the
/// moments merge in another order once partitions moved), the rest equal.
fn assert_same_describe(a: &arrow_array::RecordBatch, b: &arrow_array::RecordBatch) {
    use arrow_array::cast::AsArray;
    assert_eq!(a.schema(), b.schema());
    assert_eq!(a.num_rows(), b.num_rows());
    for (i, field) in a.schema().fields().iter().enumerate() {
        let (x, y) = (a.column(i), b.column(i));
        if field.data_type() == &arrow_schema::DataType::Float64 {
            let (x, y) = (
                x.as_primitive::<arrow_array::types::Float64Type>(),
                y.as_primitive::<arrow_array::types::Float64Type>(),
            );
            for (p, q) in x.iter().zip(y.iter()) {
                match (p, q) {
                    (Some(p), Some(q)) => assert!(
                        (p - q).abs() <= 1e-12 * p.abs().max(q.abs()).max(1.0),
                        "{}: {p} vs {q}",
                        field.name()
                    ),
                    (p, q) => assert_eq!(p, q, "{}", field.name()),
                }
            }
        } else {
            assert_eq!(x, y, "{}", field.name());
        }
    }
}

/// A frame sorted by a shuffle whose parent was itself sorted by a shuffle
/// (lineage is recursive): a killed worker's ranges of both are rebuilt
/// back to Parquet, and the frames answer as before.
#[tokio::test(flavor = "current_thread")]
async fn a_frame_sorted_twice_by_shuffles_is_rebuilt_after_a_killed_worker() {
    let data = TempDir::new("ft-twice");
    stratus_engine::datagen::generate_isd(&stratus_engine::datagen::DatagenOptions {
        rows: 300_000,
        out: data.path().to_path_buf(),
        seed: 5,
    })
    .unwrap();
    let src = data.path().display().to_string();
    let cluster = start_cluster(3, 4 << 30).await;
    let pids = cluster.worker_pids();
    let client = stratus::Client::connect(&cluster.target).await.unwrap();
    client
        .persist(&src, "isd", false, None, Vec::new(), &mut |_, _, _| {})
        .await
        .unwrap();
    client
        .sort("isd", "temperature", Some("once"))
        .await
        .unwrap();
    // Sorted by temperature, every range spans every time: a shuffle again.
    client
        .sort("once", "datetime", Some("twice"))
        .await
        .unwrap();
    let describe = client.describe("twice", None).await.unwrap();
    let first: Vec<_> = client
        .head("twice", 50, Some(vec!["datetime".into()]))
        .await
        .unwrap();

    kill9(pids[0]);
    let frames = eventually_async(
        Duration::from_secs(90),
        "the lost ranges rebuilt",
        || async {
            let info = client.info().await.unwrap();
            let frames = client.list().await.unwrap();
            let whole = frames.iter().all(|f| f.partitions_held == f.partitions);
            (info.workers == 2 && whole).then_some(frames)
        },
    )
    .await;
    assert_eq!(frames.len(), 3);
    let text = http_get(&format!("{}metrics", cluster.dashboard));
    let samples = common::exposition::parse_exposition(&text);
    let rebuilt = common::exposition::value(
        &samples,
        "stratus_scheduler_partitions_rebuilt_total",
        &[],
        &text,
    );
    assert!(
        rebuilt > 0.0,
        "the killed worker held partitions: {rebuilt}"
    );
    assert_eq!(client.len("twice").await.unwrap(), 300_000);
    assert_same_describe(&client.describe("twice", None).await.unwrap(), &describe);
    let again: Vec<_> = client
        .head("twice", 50, Some(vec!["datetime".into()]))
        .await
        .unwrap();
    assert_eq!(again, first, "the smallest times, in order");
    client.close().await;
}

/// Progress stages a client heard.
#[derive(Default)]
struct Stages(std::sync::Mutex<Vec<String>>);

impl stratus::client::ProgressObserver for Stages {
    fn progress(&self, _kind: &str, step: &str, _done: u64, _total: u64) {
        self.0.lock().unwrap().push(step.to_string());
    }
    fn finished(&self, _kind: &str) {}
}

/// Every worker lost (no nanny to replace it): a request does not hang. It
/// hears that it waits for workers, the dashboard shows it waiting, and it
/// fails naming the scheduler's `--no-workers-timeout` (set to 3s here
/// through the scheduler's nested variable).
#[tokio::test(flavor = "current_thread")]
async fn with_every_worker_lost_a_request_waits_then_fails_naming_the_timeout() {
    let local = start_local_env(
        1,
        &["--no-nanny"],
        &[("STRATUS_SCHEDULER__NO_WORKERS_TIMEOUT", "3s")],
    );
    local
        .client(&["persist", &fixture(), "--as", "isd"])
        .expect("persist");
    kill9(local.worker_pid("local-0"));
    eventually(Duration::from_secs(30), "the worker removed", || {
        let cluster = local.json("api/cluster");
        (cluster["workers"].as_array().map(Vec::len) == Some(0)).then_some(())
    });

    let mut client = stratus::Client::connect(&local.target()).await.unwrap();
    let stages = std::sync::Arc::new(Stages::default());
    client.set_progress(stages.clone());
    let describe = client.describe("isd", None);
    tokio::pin!(describe);
    // While it waits, the dashboard says what for.
    let waiting = loop {
        tokio::select! {
            result = &mut describe => panic!("answered before waiting was seen: {result:?}"),
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        let dashboard = local.json("api/dashboard");
        let job = dashboard["jobs"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|j| j["kind"] == "describe" && j["state"] == "running")
            .cloned();
        if let Some(job) = job.filter(|j| !j["waiting"].is_null()) {
            break job;
        }
    };
    assert_eq!(waiting["waiting"], "workers", "{waiting}");
    let error = describe
        .await
        .expect_err("no worker: the request fails")
        .to_string();
    assert!(error.contains("no worker to run this on for 3s"), "{error}");
    assert!(error.contains("--no-workers-timeout"), "{error}");
    assert_eq!(
        stratus::client::ClientError::Server(error.clone()).kind(),
        stratus::client::ErrorKind::Connection
    );
    assert!(
        stages
            .0
            .lock()
            .unwrap()
            .iter()
            .any(|s| s == "waiting for workers"),
        "the client heard why it waited: {:?}",
        stages.0.lock().unwrap()
    );
    let dashboard = local.json("api/dashboard");
    let failed = dashboard["jobs"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|j| j["id"] == waiting["id"])
        .cloned()
        .unwrap_or_default();
    assert_eq!(failed["state"], "error", "{failed}");
}
