//! Limits on every input, against real processes: each attack fails
//! clearly, and the cluster still answers a `len` with the right count
//! afterwards. (Frame decoding itself is fuzzed in
//! `protocol/tests/fuzz_frames.rs`; worker outputs are checked in the
//! scheduler core's `tests/malformed_outputs.rs`.)

mod common;

use std::time::Duration;

use common::raw::{raw_client, raw_connection, raw_hello};
use common::*;
use stratus_plan::{col, Step};
use stratus_protocol::framing::{access, read_frame, send_message};
use stratus_protocol::messages::{ArchivedToClient, ClientRequest, PeerRole, WorkerInfo};
use stratus_protocol::tls::Credentials;

struct Target {
    address: String,
    /// The scheduler file's client credential.
    ca: Credentials,
    /// Its worker credential.
    worker: Credentials,
    pid: u32,
}

fn target(local: &Local) -> Target {
    let sf = local.scheduler_file();
    Target {
        address: sf["address"].as_str().unwrap().to_string(),
        ca: common::raw::file_credentials(&sf, false),
        worker: common::raw::file_credentials(&sf, true),
        pid: sf["pid"].as_u64().unwrap() as u32,
    }
}

/// The cluster still answers, with the right count.
fn still_serves(local: &Local) {
    let out = local
        .client(&["len", &fixture()])
        .unwrap_or_else(|e| panic!("{e}\n{}", local.log_tail()));
    assert_eq!(out, format!("{FIXTURE_ROWS}\n"));
}

/// Resident memory of a process, in bytes (VmRSS).
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/PID/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS in kB");
    kib * 1024
}

/// A client request whose filter nests `depth` negations.
fn nested_negations(depth: usize) -> ClientRequest {
    let mut e = col("temperature");
    for _ in 0..depth {
        e = -e;
    }
    ClientRequest::Persist {
        source: fixture(),
        name: "deep".into(),
        replace: false,
        columns: None,
        steps: vec![Step::Filter(e)],
    }
}

/// Send one request on its own stream of `conn`; the final answer's error.
async fn request_error(conn: &quinn::Connection, request: ClientRequest) -> String {
    let (mut send, mut recv) = conn.open_bi().await.unwrap();
    let frame = stratus_protocol::messages::RequestFrame {
        body: request,
        storage: Default::default(),
    };
    send_message(&mut send, &frame, "scheduler").await.unwrap();
    // Dropping a 100,000-deep Box chain would recurse: leak it.
    std::mem::forget(frame);
    let _ = send.finish();
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(30), read_frame(&mut recv, "s"))
            .await
            .expect("an answer in time")
            .unwrap()
            .expect("an answer before the stream ends");
        match access::<ArchivedToClient>(&frame, "scheduler").unwrap() {
            ArchivedToClient::Progress { .. } => continue,
            ArchivedToClient::Error(e) => return e.to_string(),
            _ => panic!("the request was not refused"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_length_announcements_on_many_streams_do_not_grow_the_scheduler() {
    let local = start_local(1, &[]);
    let t = target(&local);
    still_serves(&local);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let baseline = rss_bytes(t.pid);
    let mut held = Vec::new();
    let mut connections = Vec::new();
    for _ in 0..2 {
        let (endpoint, conn) = raw_client(&t.address, &t.ca).await;
        for i in 0..100 {
            let (mut send, recv) = conn.open_bi().await.unwrap();
            // A request announcing 256 MiB (over the request limit: refused
            // at once) or 48 MiB (the largest request: its buffer grows only
            // as bytes arrive), then a few bytes, then nothing.
            let len = match i % 2 {
                0 => stratus_protocol::framing::MAX_FRAME_BYTES as u32,
                _ => 48 << 20,
            };
            // The scheduler may stop a refused stream before the second
            // write lands (Stopped): that is the refusal, not a failure.
            let _ = send.write_all(&len.to_le_bytes()).await;
            let _ = send.write_all(&[7u8; 16]).await;
            held.push((send, recv));
        }
        connections.push((endpoint, conn));
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let grown = rss_bytes(t.pid).saturating_sub(baseline);
    assert!(
        grown < 32 << 20,
        "200 announcements of 48 and 256 MiB grew the scheduler by {grown} bytes"
    );
    drop(held);
    drop(connections);
    still_serves(&local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_says_hello_is_closed() {
    let local = start_local(1, &[]);
    let t = target(&local);
    let (_endpoint, conn) = raw_connection(&t.address, &t.ca).await;
    let timeout = stratus_protocol::handshake::HELLO_TIMEOUT;
    let reason = tokio::time::timeout(timeout + Duration::from_secs(10), conn.closed())
        .await
        .expect("the scheduler closes a silent connection");
    assert!(reason.to_string().contains("no Hello in time"), "{reason}");
    still_serves(&local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_expression_is_refused_clearly_and_the_scheduler_serves_on() {
    let local = start_local(1, &[]);
    let t = target(&local);
    let (_endpoint, conn) = raw_client(&t.address, &t.ca).await;
    // 100,000 nested negations: over the node limit.
    let error = request_error(&conn, nested_negations(100_000)).await;
    assert!(
        error.contains("10000 nodes") && error.contains("limit"),
        "{error}"
    );
    // 500 nested negations: within the node limit, over the depth limit.
    let error = request_error(&conn, nested_negations(500)).await;
    assert!(error.contains("128 levels deep"), "{error}");
    still_serves(&local);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_claiming_huge_nthreads_is_refused_at_registration() {
    let local = start_local(1, &[]);
    let t = target(&local);
    let (_endpoint, conn) = raw_connection(&t.address, &t.worker).await;
    let greedy = WorkerInfo {
        name: "greedy".into(),
        host: "elsewhere".into(),
        pid: 1,
        nthreads: 100_000,
        memory_limit: 1 << 30,
        metrics_address: None,
        peer_address: "127.0.0.1:9".into(),
        cert_name: String::new(),
    };
    let reason = raw_hello(&conn, PeerRole::Worker(greedy))
        .await
        .expect_err("the worker is refused");
    assert!(
        reason.contains("nthreads = 100000") && reason.contains("max_worker_threads"),
        "{reason}"
    );
    let info = local.json("api/cluster");
    let workers = info["workers"].as_array().unwrap();
    assert!(workers.iter().all(|w| w["name"] != "greedy"), "{info}");
    still_serves(&local);
}
