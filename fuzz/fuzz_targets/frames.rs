//! Coverage-guided fuzzing of frame decoding: any bytes, validated and
//! deserialized as every message type (flat expressions included). The
//! bounded CI version is `protocol/tests/fuzz_frames.rs`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rkyv::util::AlignedVec;
use stratus_protocol::framing::{access, to_owned};
use stratus_protocol::messages::*;

fuzz_target!(|data: &[u8]| {
    let mut frame = AlignedVec::<16>::new();
    frame.extend_from_slice(data);
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
});
