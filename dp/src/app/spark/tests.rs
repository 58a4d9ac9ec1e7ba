use super::*;
use crate::app::testutil::{
    check_every_prefix, check_every_split, check_rejects_other_corpus, check_rejects_random, corpus_flows, feed_all,
    feed_segments, l7_of, Flow, Rng,
};
use serde_json::json;

fn flow(port: u16) -> Flow {
    corpus_flows("spark.pcap").into_iter().find(|f| f.client_port == port).unwrap()
}

/// Both directions fed whole, client first.
fn parse(f: &Flow) -> Spark {
    let mut s = Spark::default();
    assert!(feed_all(&mut s, Dir::ToServer, &f.to_server).is_empty());
    assert!(feed_all(&mut s, Dir::ToClient, &f.to_client).is_empty());
    s
}

/// A frame: length (counting itself), type, `header`, `body`.
fn frame(ty: u8, header: &[u8], body: &[u8]) -> Vec<u8> {
    let len = 9 + header.len() + body.len();
    let mut b = (len as u64).to_be_bytes().to_vec();
    b.push(ty);
    b.extend_from_slice(header);
    b.extend_from_slice(body);
    b
}

fn rpc_request(id: i64, body: &[u8]) -> Vec<u8> {
    let mut h = id.to_be_bytes().to_vec();
    h.extend_from_slice(&(body.len() as i32).to_be_bytes());
    frame(parser::RPC_REQUEST, &h, body)
}

fn string(s: &[u8]) -> Vec<u8> {
    let mut b = (s.len() as i32).to_be_bytes().to_vec();
    b.extend_from_slice(s);
    b
}

/// The driver registering an application with the standalone Master (port 7077).
#[test]
fn driver_and_master() {
    let f = flow(50172);
    assert_eq!(f.server_port, 7077);
    let m = l7_of(&parse(&f));
    assert_eq!(m["frames_to_server"], 3);
    assert_eq!(m["frames_to_client"], 4);
    assert_eq!(m["messages_to_server"], json!({"RpcRequest": 1, "OneWayMessage": 2}));
    assert_eq!(m["messages_to_client"], json!({"RpcResponse": 1, "OneWayMessage": 3}));
    assert_eq!(m["endpoints"], json!(["endpoint-verifier", "Master", "AppClient"]));
    assert_eq!(m["lookups"], json!(["Master"]));
    assert_eq!(
        m["rpc_messages"],
        json!([
            "CheckExistence",
            "RegisterApplication",
            "UnregisterApplication",
            "RegisteredApplication",
            "ExecutorAdded",
            "ExecutorUpdated"
        ])
    );
    assert_eq!(m["client_address"], "198.18.0.1:7078");
    assert_eq!(m["server_address"], "198.18.0.2:7077");
    // Two frames are longer than HEAD: 5197 and 1129 bytes.
    assert_eq!(m["bytes_skipped"], (5197 - HEAD) + (1129 - HEAD));
    assert_eq!(m["failures"], 0);
    for k in ["auth", "encrypted", "violation", "gap", "block_messages", "app_id", "failure"] {
        assert!(m.get(k).is_none(), "{k}: {m:?}");
    }
}

/// The executor (a client-mode RpcEnv: no sender address) talking to the driver (port 7078).
#[test]
fn executor_and_driver() {
    let m = l7_of(&parse(&flow(53790)));
    assert_eq!(m["messages_to_server"], json!({"RpcRequest": 2}));
    assert_eq!(m["messages_to_client"], json!({"RpcResponse": 2}));
    assert_eq!(m["endpoints"], json!(["endpoint-verifier", "CoarseGrainedScheduler"]));
    assert_eq!(m["lookups"], json!(["CoarseGrainedScheduler"]));
    assert_eq!(m["rpc_messages"], json!(["CheckExistence", "RetrieveSparkAppConfig"]));
    assert!(m.get("client_address").is_none());
    assert!(m.get("server_address").is_none());
    assert_eq!(m["bytes_skipped"], 4634 - HEAD);

    let m = l7_of(&parse(&flow(53802)));
    assert_eq!(m["frames_to_server"], 16);
    assert_eq!(m["frames_to_client"], 14);
    assert_eq!(m["messages_to_server"], json!({"RpcRequest": 11, "OneWayMessage": 5}));
    assert_eq!(m["messages_to_client"], json!({"RpcResponse": 11, "OneWayMessage": 3}));
    assert_eq!(
        m["endpoints"],
        json!(["endpoint-verifier", "CoarseGrainedScheduler", "BlockManagerMaster", "Executor"])
    );
    assert_eq!(
        m["lookups"],
        json!([
            "MapOutputTracker",
            "BlockManagerMaster",
            "BlockManagerMasterHeartbeat",
            "OutputCommitCoordinator",
            "CoarseGrainedScheduler",
            "HeartbeatReceiver",
            "StreamingShuffleOutputTracker"
        ])
    );
    // `StopExecutor` is a Scala object, serialised through ModuleSerializationProxy.
    assert_eq!(
        m["rpc_messages"],
        json!([
            "CheckExistence",
            "RegisterExecutor",
            "RegisterBlockManager",
            "LaunchedExecutor",
            "StatusUpdate",
            "GetLocationsAndStatus",
            "UpdateBlockInfo",
            "LaunchTask",
            "StopExecutor"
        ])
    );
    // The driver's messages to the executor carry the driver's address.
    assert_eq!(m["server_address"], "198.18.0.1:7078");
    assert_eq!(m["bytes_skipped"], 25959);
    assert!(m.get("violation").is_none());
}

/// Block manager: OpenBlocks, its StreamHandle, one chunk fetched (port 7079).
#[test]
fn block_manager_fetch() {
    let m = l7_of(&parse(&flow(40494)));
    assert_eq!(m["messages_to_server"], json!({"RpcRequest": 1, "ChunkFetchRequest": 1}));
    assert_eq!(m["messages_to_client"], json!({"RpcResponse": 1, "ChunkFetchSuccess": 1}));
    assert_eq!(m["block_messages"], json!(["OpenBlocks", "StreamHandle"]));
    assert_eq!(m["app_id"], "app-20261122010326-0000");
    assert!(m.get("endpoints").is_none());
    assert_eq!(m["bytes_skipped"], 5720 - HEAD);
}

#[test]
fn corpus_segments_as_captured() {
    for f in corpus_flows("spark.pcap") {
        assert_eq!(Spark::probe(Dir::ToServer, &f.to_server), Probe::Match);
        assert_eq!(Spark::probe(Dir::ToClient, &f.to_client), Probe::Match);
        let mut s = Spark::default();
        for d in [Dir::ToServer, Dir::ToClient] {
            // Segments in capture order, retransmissions (bytes already delivered) left out.
            let whole = if d == Dir::ToServer { &f.to_server } else { &f.to_client };
            let mut pos = 0;
            let mut segs: Vec<&[u8]> = Vec::new();
            for (_, seg) in f.segments.iter().filter(|(x, _)| *x == d) {
                if whole[pos..].starts_with(seg) {
                    segs.push(seg);
                    pos += seg.len();
                }
            }
            assert_eq!(pos, whole.len());
            assert!(feed_segments(&mut s, d, &segs).is_empty());
        }
        assert_eq!(l7_of(&s), l7_of(&parse(&f)), "{}", f.client_port);
    }
}

#[test]
fn every_prefix_and_every_split() {
    for f in corpus_flows("spark.pcap") {
        for (d, b) in [(Dir::ToServer, &f.to_server), (Dir::ToClient, &f.to_client)] {
            // The first messages (several frames, one longer than HEAD where there is one).
            let head = &b[..b.len().min(6000)];
            check_every_prefix::<Spark>(d, &head[..head.len().min(1200)]);
            check_every_split::<Spark>(d, head);
        }
    }
}

#[test]
fn probe_rejects_others() {
    for junk in [&b"GET / HTTP/1.1\r\n"[..], b"\0\0\0\0\0\0\0\0\0\0\0\0", b"SSH-2.0-x\r\n", b"*1\r\n$4\r\nPING\r\n"] {
        assert_eq!(Spark::probe(Dir::ToServer, junk), Probe::NoMatch, "{junk:?}");
        assert_eq!(Spark::probe(Dir::ToClient, junk), Probe::NoMatch, "{junk:?}");
    }
    let good = rpc_request(7, b"\x00\x00\x00\x01xyz");
    assert_eq!(Spark::probe(Dir::ToServer, &good), Probe::Match);
    // Body size disagreeing with the frame length, negative request id, unknown type, a
    // response opening the client side, a frame above 2^31.
    let mut bad = good.clone();
    bad[20] ^= 1;
    assert_eq!(Spark::probe(Dir::ToServer, &bad), Probe::NoMatch);
    assert_eq!(Spark::probe(Dir::ToServer, &rpc_request(-7, b"abc")), Probe::NoMatch);
    let mut bad = good.clone();
    bad[8] = 13;
    assert_eq!(Spark::probe(Dir::ToServer, &bad), Probe::NoMatch);
    let mut resp = good.clone();
    resp[8] = parser::RPC_RESPONSE;
    assert_eq!(Spark::probe(Dir::ToServer, &resp), Probe::NoMatch);
    assert_eq!(Spark::probe(Dir::ToClient, &resp), Probe::Match);
    // MAX_FRAME is 2^31 + 6.
    assert_eq!(Spark::probe(Dir::ToServer, &[0, 0, 0, 0, 0x80, 0, 0, 7, 3]), Probe::NoMatch);
    assert_eq!(Spark::probe(Dir::ToServer, &[0, 0, 0, 0, 0x80, 0, 0, 7]), Probe::NoMatch);
    assert_eq!(Spark::probe(Dir::ToServer, &[0, 0, 0, 0, 0x80, 0, 0, 6]), Probe::NeedMore);
    // ChunkFetchRequest is exactly 21 bytes.
    let mut cfr = frame(parser::CHUNK_FETCH_REQUEST, &[0; 12], &[]);
    assert_eq!(Spark::probe(Dir::ToServer, &cfr), Probe::Match);
    cfr[7] = 22;
    cfr.push(0);
    assert_eq!(Spark::probe(Dir::ToServer, &cfr), Probe::NoMatch);
    check_rejects_random::<Spark>(20_000, 64);
    check_rejects_other_corpus::<Spark>(&["spark"]);
}

/// Authentication: SASL keeps the framing (the RPCs that follow are read); the auth engine
/// encrypts what follows, which is reported as `encrypted`, not as a violation.
#[test]
fn auth_bootstraps() {
    // SaslMessage: tag, app id, body size, SASL token.
    let token = b"charset=utf-8,username=\"x\",realm=\"default\"";
    let mut sasl = vec![parser::TAG_SASL];
    sasl.extend(string(b"sparkSaslUser"));
    sasl.extend_from_slice(&(token.len() as i32).to_be_bytes());
    sasl.extend_from_slice(token);
    let first = rpc_request(1, &sasl);
    check_every_prefix::<Spark>(Dir::ToServer, &first);
    let bytes = [first, flow(50172).to_server].concat();
    let mut s = Spark::default();
    assert!(feed_all(&mut s, Dir::ToServer, &bytes).is_empty());
    let m = l7_of(&s);
    assert_eq!(m["auth"], true);
    assert_eq!(m["auth_protocol"], "sasl");
    assert_eq!(m["auth_app_id"], "sparkSaslUser");
    assert_eq!(m["messages_to_server"], json!({"RpcRequest": 2, "OneWayMessage": 2}));
    assert_eq!(m["endpoints"], json!(["endpoint-verifier", "Master"]));
    assert!(m.get("encrypted").is_none());

    // AuthMessage (tag, app id, salt, ciphertext), then ciphertext on the wire.
    let mut am = vec![parser::TAG_AUTH_MESSAGE];
    am.extend(string(b"sparkSaslUser"));
    am.extend(string(&[7; 16]));
    am.extend(string(&[9; 48]));
    let mut cipher = vec![0x5a; 300];
    cipher[8] = 0x99;
    let bytes = [rpc_request(2, &am), cipher].concat();
    let mut s = Spark::default();
    feed_all(&mut s, Dir::ToServer, &bytes);
    let m = l7_of(&s);
    assert_eq!(m["auth_protocol"], "spark");
    assert_eq!(m["encrypted"], true);
    assert!(m.get("violation").is_none());
    assert_eq!(m["frames_to_server"], 1);
}

#[test]
fn failures_and_streams() {
    // RpcFailure with its error text; StreamResponse whose data follows the frame.
    let err = b"org.apache.spark.SparkException: Could not find CoarseGrainedScheduler.";
    let mut h = 5i64.to_be_bytes().to_vec();
    h.extend(string(err));
    let fail = frame(parser::RPC_FAILURE, &h, &[]);
    let mut h = string(b"/jars/app.jar");
    h.extend_from_slice(&5000i64.to_be_bytes());
    let resp = frame(parser::STREAM_RESPONSE, &h, &[]);
    let data = vec![0xabu8; 5000];
    let mut sf = string(b"/files/x");
    sf.extend(string(b"Stream /files/x not found"));
    let sfail = frame(parser::STREAM_FAILURE, &sf, &[]);
    let all = [fail.clone(), resp.clone(), data, sfail.clone()].concat();
    check_every_prefix::<Spark>(Dir::ToClient, &fail);
    check_every_prefix::<Spark>(Dir::ToClient, &resp);
    check_every_prefix::<Spark>(Dir::ToClient, &sfail);
    check_every_split::<Spark>(Dir::ToClient, &all);
    let mut s = Spark::default();
    assert!(feed_all(&mut s, Dir::ToClient, &all).is_empty());
    let m = l7_of(&s);
    assert_eq!(m["messages_to_client"], json!({"RpcFailure": 1, "StreamResponse": 1, "StreamFailure": 1}));
    assert_eq!(m["failures"], 2);
    assert_eq!(m["failure"], std::str::from_utf8(err).unwrap());
    assert_eq!(m["bytes_skipped"], 5000);
    // Client side: StreamRequest and UploadStream (meta in the frame, data after it).
    let sreq = frame(parser::STREAM_REQUEST, &string(b"/jars/app.jar"), &[]);
    let mut up = 9i64.to_be_bytes().to_vec();
    up.extend(string(b"\x06meta"));
    up.extend_from_slice(&3000i64.to_be_bytes());
    let up = frame(parser::UPLOAD_STREAM, &up, &[]);
    check_every_prefix::<Spark>(Dir::ToServer, &sreq);
    check_every_prefix::<Spark>(Dir::ToServer, &up);
    let all = [sreq, up, vec![1; 3000], flow(40494).to_server].concat();
    check_every_split::<Spark>(Dir::ToServer, &all);
    let m = l7_of(&{
        let mut s = Spark::default();
        assert!(feed_all(&mut s, Dir::ToServer, &all).is_empty());
        s
    });
    assert_eq!(m["frames_to_server"], 4);
    assert_eq!(m["bytes_skipped"], 3000);
    assert_eq!(m["app_id"], "app-20261122010326-0000");
}

/// A 1 GB chunk is skipped by count: nothing past HEAD is ever asked for.
#[test]
fn huge_chunk_is_skipped_not_buffered() {
    let mut h = frame(parser::CHUNK_FETCH_SUCCESS, &[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0], &[]);
    let len = 21u64 + (1 << 30);
    h[..8].copy_from_slice(&len.to_be_bytes());
    assert_eq!(Spark::probe(Dir::ToClient, &h), Probe::Match);
    let mut s = Spark::default();
    assert_eq!(s.feed(Dir::ToClient, &h[..10]), Feed::Need { consumed: 0, at_least: HEAD });
    let mut first = h.clone();
    first.resize(HEAD, 0);
    assert_eq!(s.feed(Dir::ToClient, &first), Feed::Consumed(HEAD));
    let chunk = vec![0u8; 1 << 20];
    for _ in 0..1023 {
        assert_eq!(s.feed(Dir::ToClient, &chunk), Feed::Consumed(chunk.len()));
    }
    // The last bytes of the chunk, then a response.
    let tail = vec![0u8; (len as usize) - HEAD - 1023 * (1 << 20)];
    let resp = &flow(40494).to_client[..34];
    assert!(feed_all(&mut s, Dir::ToClient, &[tail, resp.to_vec()].concat()).is_empty());
    let m = l7_of(&s);
    assert_eq!(m["messages_to_client"], json!({"ChunkFetchSuccess": 1, "RpcResponse": 1}));
    assert_eq!(m["bytes_skipped"], len - HEAD as u64);
}

#[test]
fn gaps_and_violations() {
    let f = flow(50172);
    // A gap inside the 5197-byte OneWayMessage shortens its skip; the next frame still parses.
    let mut s = Spark::default();
    let b = &f.to_server;
    assert_eq!(s.feed(Dir::ToServer, &b[..2000]), Feed::Consumed(2000));
    s.gap(Dir::ToServer, 1000);
    assert!(feed_all(&mut s, Dir::ToServer, &b[3000..]).is_empty());
    let m = l7_of(&s);
    assert_eq!(m["frames_to_server"], 3);
    assert_eq!(m["gap"], true);
    // A gap at a frame boundary stops the direction.
    s.gap(Dir::ToServer, 10);
    feed_all(&mut s, Dir::ToServer, b);
    assert_eq!(l7_of(&s)["frames_to_server"], 3);
    // Frame above the cap, inconsistent size field: violations.
    for bad in [vec![0, 0, 0, 1, 0, 0, 0, 0, 3, 0, 0], {
        let mut r = rpc_request(1, b"\x00\x00\x00\x00");
        r[20] = 9;
        r
    }] {
        let mut s = Spark::default();
        feed_all(&mut s, Dir::ToServer, &bad);
        assert_eq!(l7_of(&s)["violation"], true, "{bad:?}");
    }
}

#[test]
fn mutated_input_never_panics() {
    let base = [flow(50172).to_server, flow(40494).to_client].concat();
    let mut rng = Rng(11);
    for _ in 0..3000 {
        let mut b = base[..base.len().min(3000)].to_vec();
        for _ in 0..1 + rng.below(4) {
            let i = rng.below(b.len());
            b[i] = rng.next() as u8;
        }
        b.truncate(rng.below(b.len() + 1));
        let _ = Spark::probe(Dir::ToServer, &b);
        let _ = Spark::probe(Dir::ToClient, &b);
        for d in [Dir::ToServer, Dir::ToClient] {
            let mut s = Spark::default();
            let cut = rng.below(b.len() + 1);
            feed_segments(&mut s, d, &[&b[..cut], &b[cut..]]);
            let _ = l7_of(&s);
        }
    }
}

#[test]
fn state_is_small() {
    // Not the largest parser state (the engine's per-session pool holds one of each kind).
    let n = std::mem::size_of::<Spark>();
    assert!(n <= 2048, "Spark state is {n} bytes");
}
