//! A bounded fuzz of frame decoding (a few seconds in CI): random bytes and
//! mutated valid frames of every message type go through validation
//! (`access`) and, when valid, deserialization (`to_owned`, which checks
//! flat expressions against their limits); and random node lists go through
//! the flat expression decoder. Nothing may panic or overflow the stack.
//! A longer, coverage-guided run lives in `fuzz/` (cargo-fuzz).

use std::time::{Duration, Instant};

use rkyv::util::AlignedVec;
use stratus_plan::{col, lit, wire, CastType, ExprNode, Literal, Step, TruncUnit};
use stratus_protocol::framing::{access, encode, to_owned};
use stratus_protocol::messages::*;

/// xorshift64*: tiny, deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

fn steps() -> Vec<Step> {
    vec![
        Step::WithColumn {
            name: "f".into(),
            expr: col("temperature") * lit(9.0) / lit(5.0) + lit(32.0),
        },
        Step::Filter(
            col("a")
                .gt(lit(0))
                .and(!col("b").is_null())
                .or(col("d").floor(TruncUnit::Day).eq(lit("2020-01-01"))),
        ),
        Step::WithColumn {
            name: "c".into(),
            expr: stratus_plan::Expr::Coalesce(vec![col("x").cast(CastType::Float64), -lit(1)]),
        },
        Step::Select(vec!["a".into(), "f".into()]),
        Step::FillNa(0.0),
    ]
}

fn key(i: u32) -> PartitionKey {
    PartitionKey { frame: 3, index: i }
}

/// One valid frame of every message type (and several variants).
#[allow(clippy::vec_init_then_push)]
fn corpus() -> Vec<(&'static str, AlignedVec<16>)> {
    let partition = ParquetPartition {
        file_size: 0,
        more: Vec::new(),
        path: "/data/x.parquet".into(),
        row_group_start: 0,
        row_group_end: 2,
        rows: 10,
        hive: vec![("year".into(), "2020".into())],
    };
    let info = WorkerInfo {
        name: "w".into(),
        host: "h".into(),
        pid: 1,
        nthreads: 4,
        memory_limit: 1 << 30,
        metrics_address: Some("127.0.0.1:9".into()),
        peer_address: "127.0.0.1:5".into(),
        cert_name: "node-1".into(),
    };
    let mut out = Vec::new();
    out.push((
        "hello",
        encode(&Hello {
            protocol_version: 4,
            stratus_version: "0.1.0".into(),
            role: PeerRole::Worker(info),
        })
        .unwrap(),
    ));
    out.push((
        "welcome",
        encode(&Welcome::Rejected {
            reason: "no".into(),
        })
        .unwrap(),
    ));
    out.push((
        "push",
        encode(&PeerPush {
            mailbox: MailboxKey { job: 1, tag: 2 },
            from_worker: 3,
            parts: vec![],
        })
        .unwrap(),
    ));
    out.push((
        "to_worker",
        encode(&ToWorker::Run(vec![
            TaskAssignment {
                storage: Default::default(),
                id: 1,
                kind: TaskKind::Load {
                    key: key(1),
                    input: LoadInput::Parquet(partition.clone()),
                    columns: Some(vec!["a".into()]),
                    steps: steps(),
                },
            },
            TaskAssignment {
                storage: Default::default(),
                id: 2,
                kind: TaskKind::Head {
                    input: HeadInput::Persisted(key(2)),
                    n: 5,
                    columns: None,
                },
            },
            TaskAssignment {
                storage: Default::default(),
                id: 3,
                kind: TaskKind::RebuildRanges {
                    frame: 4,
                    parts: vec![(0, 1)],
                    sources: vec![RangeSource {
                        partition,
                        columns: None,
                        steps: steps(),
                    }],
                    key: "k".into(),
                    boundaries_ipc: vec![1, 2, 3],
                    steps: steps(),
                },
            },
        ]))
        .unwrap(),
    ));
    out.push((
        "to_worker_cancel",
        encode(&ToWorker::Drop(vec![key(1), key(2)])).unwrap(),
    ));
    out.push((
        "from_worker",
        encode(&FromWorker::Reports(vec![
            TaskReport::Finished {
                id: 1,
                output: TaskOutput::LoadedMany(vec![(key(0), 1, 2)]),
            },
            TaskReport::Finished {
                id: 2,
                output: TaskOutput::Table {
                    rows: 1,
                    ipc: vec![0; 64],
                },
            },
            TaskReport::Failed {
                id: 3,
                error: "e".into(),
                unreachable_peer: Some(4),
            },
        ]))
        .unwrap(),
    ));
    out.push((
        "heartbeat",
        encode(&FromWorker::Heartbeat {
            memory_used: 1,
            running: 2,
            spilled: 3,
            paused: false,
        })
        .unwrap(),
    ));
    out.push((
        "client_persist",
        encode(&ClientRequest::Persist {
            source: "/d".into(),
            name: "t".into(),
            replace: false,
            columns: None,
            steps: steps(),
        })
        .unwrap(),
    ));
    out.push((
        "request_frame",
        encode(&RequestFrame {
            body: ClientRequest::Len {
                source: "az://c0ntainer/d/*.parquet".into(),
            },
            storage: StorageOptions(vec![("account_key".into(), "k".into())]),
        })
        .unwrap(),
    ));
    out.push((
        "client_groupby",
        encode(&ClientRequest::GroupBy {
            source: "t".into(),
            keys: vec!["k".into()],
            aggs: vec![("v".into(), AggFunc::Mean)],
            all_numeric: None,
        })
        .unwrap(),
    ));
    out.push((
        "to_client",
        encode(&ToClient::Frames(vec![FrameSummary {
            name: "t".into(),
            source: "s".into(),
            rows: 1,
            bytes: 2,
            partitions: 3,
            partitions_held: 3,
        }]))
        .unwrap(),
    ));
    out
}

/// Decode `bytes` as every message type; errors are fine, panics are not.
fn decode_all(bytes: &[u8]) {
    let mut frame = AlignedVec::<16>::new();
    frame.extend_from_slice(bytes);
    macro_rules! try_as {
        ($archived:ty, $owned:ty) => {
            if let Ok(a) = access::<$archived>(&frame, "fuzz") {
                let _ = to_owned::<_, $owned>(a, "fuzz");
            }
        };
    }
    try_as!(ArchivedHello, Hello);
    try_as!(ArchivedWelcome, Welcome);
    try_as!(ArchivedPeerPush, PeerPush);
    try_as!(ArchivedToWorker, ToWorker);
    try_as!(ArchivedFromWorker, FromWorker);
    try_as!(ArchivedClientRequest, ClientRequest);
    try_as!(ArchivedRequestFrame, RequestFrame);
    try_as!(ArchivedToClient, ToClient);
}

fn mutate(rng: &mut Rng, frame: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    for _ in 0..=rng.below(8) {
        match rng.below(5) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= 1 << rng.below(8);
            }
            1 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] = rng.next() as u8;
            }
            2 if !out.is_empty() => {
                // An interesting 32-bit value (lengths, offsets, indices).
                let i = rng.below(out.len().saturating_sub(3).max(1));
                let v: u32 = [0, 1, 0x7fff_ffff, 0xffff_ffff, 0x8000_0000, 10_000][rng.below(6)];
                for (j, b) in v.to_le_bytes().iter().enumerate() {
                    if let Some(slot) = out.get_mut(i + j) {
                        *slot = *b;
                    }
                }
            }
            3 => {
                let n = rng.below(out.len() + 1);
                out.truncate(n);
            }
            _ => {
                for _ in 0..rng.below(16) {
                    out.push(rng.next() as u8);
                }
            }
        }
    }
    out
}

fn random_nodes(rng: &mut Rng) -> Vec<ExprNode> {
    let n = rng.below(64);
    let idx = |rng: &mut Rng, i: usize| (rng.below(i + 2)) as u32;
    (0..n)
        .map(|i| match rng.below(8) {
            0 => ExprNode::Column("c".into()),
            1 => ExprNode::Literal(Literal::Int(rng.next() as i64)),
            2 => ExprNode::Binary {
                op: stratus_plan::BinaryOp::Add,
                left: idx(rng, i),
                right: idx(rng, i),
            },
            3 => ExprNode::Negate(idx(rng, i)),
            4 => ExprNode::Not(idx(rng, i)),
            5 => ExprNode::Coalesce((0..rng.below(4)).map(|_| idx(rng, i)).collect()),
            6 => ExprNode::Cast {
                expr: idx(rng, i),
                to: CastType::Int64,
            },
            _ => ExprNode::IsNull(idx(rng, i)),
        })
        .collect()
}

#[test]
fn random_and_mutated_frames_never_panic() {
    let budget = Duration::from_secs(3);
    let started = Instant::now();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let corpus = corpus();
    // Every valid frame decodes as its own type at least.
    for (_, frame) in &corpus {
        decode_all(frame);
    }
    let mut rounds = 0u64;
    while started.elapsed() < budget {
        for _ in 0..64 {
            let (_, frame) = &corpus[rng.below(corpus.len())];
            decode_all(&mutate(&mut rng, frame));
            let random: Vec<u8> = (0..rng.below(512)).map(|_| rng.next() as u8).collect();
            decode_all(&random);
            let nodes = random_nodes(&mut rng);
            if let Ok(e) = wire::unflatten(&nodes) {
                // A decoded expression is within the limits and round-trips.
                wire::check_expr(&e).unwrap();
                assert_eq!(wire::unflatten(&wire::flatten(&e)).unwrap(), e);
            }
            rounds += 1;
        }
    }
    assert!(rounds > 100, "only {rounds} rounds in {budget:?}");
}

#[test]
fn a_deep_expression_on_the_wire_is_a_clear_error_not_a_stack_overflow() {
    // 100,000 nested Negate, encoded flat (as a forged client would).
    let mut e = col("x");
    for _ in 0..100_000 {
        e = -e;
    }
    let request = ClientRequest::Persist {
        source: "/d".into(),
        name: "t".into(),
        replace: false,
        columns: None,
        steps: vec![Step::Filter(e)],
    };
    let frame = encode(&request).unwrap();
    // Dropping a 100,000-deep Box chain recurses: leak it.
    std::mem::forget(request);
    let archived = access::<ArchivedClientRequest>(&frame, "client x").unwrap();
    let error = to_owned::<_, ClientRequest>(archived, "client x")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("client x") && error.contains("10000 nodes"),
        "{error}"
    );
}
