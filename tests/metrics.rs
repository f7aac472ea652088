//! Prometheus metrics of a real local cluster: the scheduler's `/metrics` on
//! the dashboard port and every worker's own endpoint (listed as
//! `metrics_url` in `/api/cluster`) carry the names of the metric contract
//! with values that match the work done, and `promtool check metrics` (from
//! Debian's `prometheus` package) finds nothing to complain about.

mod common;

use common::exposition::*;
use common::*;
use std::time::Duration;

#[test]
fn scheduler_and_workers_export_the_metric_contract() {
    let local = start_local(2, &[]);
    let f = local.file.as_path();
    let sf = local.scheduler_file();
    let address = sf["address"].as_str().unwrap().to_string();
    let dashboard = sf["dashboard"].as_str().unwrap().to_string();

    let out = ok(f, &["persist", &fixture(), "--as", "isd"]);
    assert!(out.starts_with("isd: 60000 rows, 144 partitions"), "{out}");
    ok(f, &["describe", "isd"]);
    // A group-by delivers partial aggregates worker to worker.
    ok(f, &["groupby", "isd", "--by", "year", "--agg", "count"]);

    // Every worker lists a metrics URL of its own.
    let cluster: serde_json::Value =
        serde_json::from_str(&http_get(&format!("{dashboard}api/cluster"))).unwrap();
    let workers: Vec<(String, String)> = cluster["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| {
            let url = w["metrics_url"]
                .as_str()
                .unwrap_or_else(|| panic!("no metrics_url in {w}"));
            (w["name"].as_str().unwrap().to_string(), url.to_string())
        })
        .collect();
    assert_eq!(workers.len(), 2, "{cluster}");
    assert_ne!(workers[0].1, workers[1].1, "workers share a metrics URL");
    for (_, url) in &workers {
        assert!(
            url.starts_with("http://127.0.0.1:") && url.ends_with("/metrics"),
            "{url}"
        );
    }

    // --- the scheduler
    // Heartbeats (every second) carry the workers' memory use.
    let text = eventually(
        Duration::from_secs(10),
        "heartbeats after the persist",
        || {
            let text = http_get(&format!("{dashboard}metrics"));
            let samples = parse_exposition(&text);
            let used = series(&samples, "stratus_cluster_worker_memory_used_bytes", &[]);
            (used.len() == 2 && used.iter().all(|s| s.value > 0.0)).then_some(text)
        },
    );
    let s = parse_exposition(&text);
    let info = series(&s, "stratus_info", &[]);
    assert_eq!(info.len(), 1, "{text}");
    assert_eq!(info[0].value, 1.0);
    assert_eq!(info[0].labels["address"], address);
    assert_eq!(info[0].labels["dashboard"], dashboard);
    assert_eq!(info[0].labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(!info[0].labels["head_node"].is_empty(), "{text}");
    assert_eq!(value(&s, "stratus_workers", &[], &text), 2.0);
    // The adaptive target: the persisted frame needs a worker to hold it;
    // the bounds are the defaults.
    let adaptive: serde_json::Value =
        serde_json::from_str(&http_get(&format!("{dashboard}api/adaptive"))).unwrap();
    assert_eq!(adaptive["workers"], 2, "{adaptive}");
    assert_eq!(
        (&adaptive["minimum"], &adaptive["maximum"]),
        (&0.into(), &100.into())
    );
    assert_eq!(adaptive["by_memory"], 1, "{adaptive}");
    let target = adaptive["target"].as_u64().unwrap();
    assert!(target >= 1, "{adaptive}");
    assert_eq!(
        value(&s, "stratus_scheduler_desired_workers", &[], &text),
        target as f64,
        "{adaptive}"
    );
    assert_eq!(value(&s, "stratus_threads", &[], &text), 2.0);
    let mut held = 0.0;
    for (name, _) in &workers {
        let w = [("worker", name.as_str())];
        assert!(value(&s, "stratus_cluster_worker_memory_limit_bytes", &w, &text) > 0.0);
        let partitions = value(&s, "stratus_cluster_worker_persisted_partitions", &w, &text);
        assert!(partitions > 0.0, "worker {name} holds nothing:\n{text}");
        held += partitions;
        assert!(value(&s, "stratus_cluster_worker_persisted_bytes", &w, &text) > 0.0);
        assert_eq!(
            value(&s, "stratus_cluster_worker_running_tasks", &w, &text),
            0.0
        );
    }
    assert_eq!(held, 144.0);
    assert_eq!(
        value(&s, "stratus_tasks", &[("state", "queued")], &text),
        0.0
    );
    assert_eq!(
        value(&s, "stratus_tasks", &[("state", "running")], &text),
        0.0
    );
    let finished = [("outcome", "finished")];
    assert!(value(&s, "stratus_tasks_completed_total", &finished, &text) >= 144.0);
    assert_eq!(value(&s, "stratus_persisted_frames", &[], &text), 1.0);
    assert_eq!(value(&s, "stratus_persisted_partitions", &[], &text), 144.0);
    assert!(value(&s, "stratus_persisted_bytes", &[], &text) > 0.0);
    assert_eq!(value(&s, "stratus_jobs_in_progress", &[], &text), 0.0);
    assert_eq!(
        value(&s, "stratus_scheduler_workers_lost_total", &[], &text),
        0.0
    );
    assert_eq!(
        value(&s, "stratus_scheduler_partitions_rebuilt_total", &[], &text),
        0.0
    );
    for kind in ["persist", "describe", "groupby"] {
        let ok = [("kind", kind), ("outcome", "ok")];
        assert_eq!(value(&s, "stratus_client_requests_total", &ok, &text), 1.0);
        let k = [("kind", kind)];
        assert_eq!(
            value(&s, "stratus_request_duration_seconds_count", &k, &text),
            1.0
        );
        assert!(value(&s, "stratus_request_duration_seconds_sum", &k, &text) > 0.0);
        let all = [("kind", kind), ("le", "+Inf")];
        assert_eq!(
            value(&s, "stratus_request_duration_seconds_bucket", &all, &text),
            1.0
        );
    }
    // QUIC: both workers connected; the clients have come and gone, and
    // their traffic stays in the totals.
    let worker_kind = [("peer_kind", "worker")];
    assert_eq!(
        value(&s, "stratus_quic_connections", &worker_kind, &text),
        2.0
    );
    for (name, _) in &workers {
        let peer = [("peer_kind", "worker"), ("peer", name.as_str())];
        assert!(value(&s, "stratus_quic_rtt_seconds", &peer, &text) > 0.0);
        value(&s, "stratus_quic_lost_packets_total", &peer, &text);
    }
    for kind in ["worker", "client"] {
        let k = [("peer_kind", kind)];
        assert!(value(&s, "stratus_network_sent_bytes_total", &k, &text) > 0.0);
        assert!(value(&s, "stratus_network_received_bytes_total", &k, &text) > 0.0);
    }
    promtool_check("scheduler", &text);

    // --- every worker
    let (mut loads, mut peer_sent) = (0.0, 0.0);
    for (name, url) in &workers {
        let text = http_get(url);
        let s = parse_exposition(&text);
        let info = series(&s, "stratus_worker_info", &[]);
        assert_eq!(info.len(), 1, "{text}");
        assert_eq!(info[0].value, 1.0);
        assert_eq!(&info[0].labels["worker"], name);
        assert_eq!(info[0].labels["scheduler"], address);
        assert_eq!(info[0].labels["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(value(&s, "stratus_worker_threads", &[], &text), 1.0);
        assert_eq!(value(&s, "stratus_worker_registered", &[], &text), 1.0);
        assert!(value(&s, "stratus_worker_memory_limit_bytes", &[], &text) > 0.0);
        // The probes beside /metrics: alive, and ready (registered).
        let base = url.trim_end_matches("metrics");
        assert_eq!(http_get(&format!("{base}health")), "ok\n");
        assert_eq!(http_get(&format!("{base}ready")), "ready\n");
        assert!(
            value(&s, "stratus_worker_memory_used_bytes", &[], &text) > 0.0,
            "worker {name} uses no memory after the persist:\n{text}"
        );
        assert!(value(&s, "stratus_worker_persisted_partitions", &[], &text) > 0.0);
        assert!(value(&s, "stratus_worker_persisted_bytes", &[], &text) > 0.0);
        for state in ["running", "waiting"] {
            let st = [("state", state)];
            assert_eq!(value(&s, "stratus_worker_tasks", &st, &text), 0.0);
        }
        let load_ok = [("kind", "load"), ("outcome", "ok")];
        let completed = value(&s, "stratus_worker_tasks_completed_total", &load_ok, &text);
        let load = [("kind", "load")];
        let timed = value(
            &s,
            "stratus_worker_task_duration_seconds_count",
            &load,
            &text,
        );
        assert!(timed > 0.0, "worker {name} timed no load:\n{text}");
        assert_eq!(completed, timed, "{text}");
        loads += timed;
        let reduce = [("kind", "reduce")];
        assert!(
            value(
                &s,
                "stratus_worker_task_duration_seconds_count",
                &reduce,
                &text
            ) > 0.0
        );
        let buckets = series(&s, "stratus_worker_task_duration_seconds_bucket", &load);
        assert!(
            buckets.len() >= 10 && buckets.iter().any(|b| b.labels["le"] == "0.001"),
            "{text}"
        );
        // QUIC: the connection to the scheduler is live and measured.
        let sched = [("peer_kind", "scheduler")];
        assert_eq!(value(&s, "stratus_quic_connections", &sched, &text), 1.0);
        let to_scheduler = [("peer_kind", "scheduler"), ("peer", "scheduler")];
        assert!(value(&s, "stratus_quic_rtt_seconds", &to_scheduler, &text) > 0.0);
        value(&s, "stratus_quic_lost_packets_total", &to_scheduler, &text);
        assert!(value(&s, "stratus_network_sent_bytes_total", &sched, &text) > 0.0);
        assert!(value(&s, "stratus_network_received_bytes_total", &sched, &text) > 0.0);
        peer_sent += value(
            &s,
            "stratus_network_sent_bytes_total",
            &[("peer_kind", "worker")],
            &text,
        );
        promtool_check(&format!("worker {name}"), &text);
    }
    assert_eq!(loads, 144.0, "one load per partition");
    assert!(
        peer_sent > 0.0,
        "the group-by sent nothing worker to worker"
    );
}

#[test]
fn a_killed_worker_is_counted_lost_and_each_partition_it_held_counted_rebuilt() {
    let local = start_local(2, &["--no-nanny"]);
    let f = local.file.as_path();
    let out = ok(f, &["persist", &fixture(), "--as", "isd"]);
    assert!(out.starts_with("isd: 60000 rows, 144 partitions"), "{out}");
    let metrics = format!("{}metrics", local.dashboard());
    let counters = |text: &str| {
        let s = parse_exposition(text);
        (
            value(&s, "stratus_scheduler_workers_lost_total", &[], text),
            value(&s, "stratus_scheduler_partitions_rebuilt_total", &[], text),
        )
    };
    assert_eq!(counters(&http_get(&metrics)), (0.0, 0.0));

    // The worker local-1, and how many partitions it holds.
    let cluster = local.json("api/cluster");
    let victim = cluster["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "local-1")
        .unwrap_or_else(|| panic!("no local-1 in /api/cluster: {cluster}"));
    let pid = victim["pid"].as_u64().expect("a worker's pid") as u32;
    let held = victim["persisted_partitions"].as_u64().unwrap();
    assert!(held > 0, "local-1 holds no partition: {cluster}");
    kill9(pid);

    // The scheduler drops it and rebuilds what it held on the survivor.
    let cluster = eventually(
        Duration::from_secs(60),
        "local-1's partitions rebuilt",
        || {
            let cluster = local.json("api/cluster");
            let workers = cluster["workers"].as_array().unwrap();
            (workers.len() == 1 && workers[0]["persisted_partitions"] == 144).then_some(cluster)
        },
    );
    assert_eq!(cluster["workers"][0]["name"], "local-0", "{cluster}");
    let text = http_get(&metrics);
    assert_eq!(
        counters(&text),
        (1.0, held as f64),
        "(workers lost, partitions rebuilt) after killing local-1, which held {held} \
         partitions:\n{text}"
    );
    let s = parse_exposition(&text);
    assert_eq!(value(&s, "stratus_persisted_partitions", &[], &text), 144.0);
    promtool_check("scheduler", &text);
}
