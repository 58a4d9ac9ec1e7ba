//! Tests over the real capture `grpc.pcap` (grpcio 1.85.1 client and server, h2c prior
//! knowledge) plus edge cases the capture does not hold (CONTINUATION, padding, h2c upgrade,
//! plain HTTP/2, oversized frames).

use super::*;
use crate::app::testutil::{check_every_prefix, check_every_split, corpus_flows, feed_all, feed_segments, l7_of, Flow, check_rejects_other_corpus, Rng};
use serde_json::json;

fn grpc_flow() -> Flow {
    let mut fs: Vec<Flow> = corpus_flows("grpc.pcap").into_iter().filter(|f| f.server_port == 50051).collect();
    assert_eq!(fs.len(), 1);
    fs.remove(0)
}

/// Feeds the captured segments of both directions in capture order, as the engine would.
fn feed_interleaved<P: AppParser>(p: &mut P, f: &Flow) -> [Vec<u8>; 2] {
    let mut pending: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let mut done = [false; 2];
    for (dir, seg) in &f.segments {
        let d = *dir as usize;
        if done[d] {
            continue;
        }
        pending[d].extend_from_slice(seg);
        match p.feed(*dir, &pending[d]) {
            Feed::Consumed(n) => drop(pending[d].drain(..n)),
            Feed::Need { consumed, .. } => drop(pending[d].drain(..consumed)),
            Feed::Done => done[d] = true,
            Feed::Invalid { consumed } => panic!("{dir:?} not HTTP/2 after {consumed} bytes"),
        }
    }
    pending
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut v = len.to_be_bytes()[1..].to_vec();
    v.push(kind);
    v.push(flags);
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

/// The frames of a direction (after the preface for the client).
fn frames(mut b: &[u8]) -> Vec<(parser::FrameHeader, &[u8])> {
    let mut out = Vec::new();
    while let Parse::Ok(h, _) = parser::frame_header(b) {
        out.push((h, &b[9..h.total()]));
        b = &b[h.total()..];
    }
    out
}

fn expected_record() -> Value {
    json!({
        "http_method": "POST",
        "service": "corpus.v1.Echo",
        "method": "Ping",
        "authority": "198.18.0.2:50051",
        "path": "/corpus.v1.Echo/Ping",
        "scheme": "http",
        "content_type": "application/grpc",
        "user_agent": "grpc-python/1.85.1 grpc-c/58.0.0 (linux; chttp2)",
        "response_content_type": "application/grpc",
        "status": 200,
        "grpc_status": 0,
        "streams": 6,
        "headers_to_server": 6,
        "headers_to_client": 10,
        "frames_to_server": 34,
        "frames_to_client": 32,
    })
}

#[test]
fn grpc_corpus_record_is_exact() {
    let f = grpc_flow();
    let mut h = Http2::default();
    assert!(feed_all(&mut h, Dir::ToServer, &f.to_server).is_empty());
    assert!(feed_all(&mut h, Dir::ToClient, &f.to_client).is_empty());
    assert_eq!(h.app(), App::Grpc);
    assert_eq!(Value::Object(l7_of(&h)), expected_record());

    // Fed segment by segment in capture order, as the engine does: the same record, and the
    // frame-size checks against the advertised SETTINGS_MAX_FRAME_SIZE (4 MiB) hold.
    let mut p = Http2::default();
    let left = feed_interleaved(&mut p, &f);
    assert!(left[0].is_empty() && left[1].is_empty());
    assert_eq!(Value::Object(l7_of(&p)), expected_record());
    assert_eq!(p.side[0].max_frame, 4 << 20);
    assert_eq!(p.side[1].max_frame, 4 << 20);
}

#[test]
fn streams_are_counted_by_frame_walk() {
    // Cross-check the counts with an independent walk over the frames.
    let f = grpc_flow();
    let c = frames(&f.to_server[24..]);
    let s = frames(&f.to_client);
    assert_eq!(c.len(), 34);
    assert_eq!(s.len(), 32);
    let client_streams: std::collections::BTreeSet<u32> = c.iter().filter(|(h, _)| h.kind == Kind::Headers).map(|(h, _)| h.stream).collect();
    assert_eq!(client_streams.into_iter().collect::<Vec<_>>(), vec![1, 3, 5, 7, 9, 11]);
    // The largest DATA frame (a streamed message) is skipped, not buffered.
    let big = c.iter().map(|(h, _)| h.len).max().unwrap();
    assert!(big > 16_384, "{big}");
}

#[test]
fn every_prefix_and_every_split() {
    let f = grpc_flow();
    check_every_prefix::<Http2>(Dir::ToServer, &f.to_server[..f.to_server.len().min(4096)]);
    check_every_prefix::<Http2>(Dir::ToClient, &f.to_client[..f.to_client.len().min(4096)]);
    check_every_split::<Http2>(Dir::ToServer, &f.to_server);
    check_every_split::<Http2>(Dir::ToClient, &f.to_client);
}

#[test]
fn captured_segmentation_gives_the_same_record() {
    let f = grpc_flow();
    let mut p = Http2::default();
    for d in [Dir::ToServer, Dir::ToClient] {
        let segs: Vec<&[u8]> = f.segments.iter().filter(|(x, _)| *x == d).map(|(_, s)| s.as_slice()).collect();
        assert!(feed_segments(&mut p, d, &segs).is_empty());
    }
    assert_eq!(Value::Object(l7_of(&p)), expected_record());
}

#[test]
fn continuation_and_padding_decode_the_same_block() {
    // Re-frame the client's first HEADERS (real bytes) as a padded, prioritised HEADERS frame
    // followed by two CONTINUATION frames.
    let f = grpc_flow();
    let body = &f.to_server[24..];
    let fs = frames(body);
    let (i, (h, block)) = fs.iter().enumerate().find(|(_, (h, _))| h.kind == Kind::Headers).unwrap();
    assert_eq!(h.flags & parser::FLAG_END_HEADERS, parser::FLAG_END_HEADERS);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    for (h, p) in &fs[..i] {
        out.extend(frame(h.kind_byte(), h.flags, h.stream, p));
    }
    let (a, rest) = block.split_at(10);
    let (b, c) = rest.split_at(rest.len() / 2);
    let mut first = vec![3u8, 0, 0, 0, 0, 16];
    first.extend_from_slice(a);
    first.extend_from_slice(&[0, 0, 0]);
    out.extend(frame(1, parser::FLAG_PADDED | parser::FLAG_PRIORITY | (h.flags & 1), h.stream, &first));
    out.extend(frame(9, 0, h.stream, b));
    out.extend(frame(9, parser::FLAG_END_HEADERS, h.stream, c));
    let mut p = Http2::default();
    assert!(feed_all(&mut p, Dir::ToServer, &out).is_empty());
    let m = l7_of(&p);
    assert_eq!(m["path"], "/corpus.v1.Echo/Ping");
    assert_eq!(m["user_agent"], "grpc-python/1.85.1 grpc-c/58.0.0 (linux; chttp2)");
    assert_eq!(m["headers_to_server"], 1);
    assert!(!m.contains_key("violation"), "{m:?}");
    check_every_split::<Http2>(Dir::ToServer, &out);

    // A frame interrupting the block is a violation and stops the direction.
    let mut bad = out[..out.len() - c.len() - 9].to_vec();
    bad.extend(frame(0, 0, 1, b"x"));
    let mut p = Http2::default();
    feed_all(&mut p, Dir::ToServer, &bad);
    assert_eq!(l7_of(&p)["violation"], true);
}

impl parser::FrameHeader {
    fn kind_byte(&self) -> u8 {
        match self.kind {
            Kind::Data => 0,
            Kind::Headers => 1,
            Kind::Priority => 2,
            Kind::RstStream => 3,
            Kind::Settings => 4,
            Kind::PushPromise => 5,
            Kind::Ping => 6,
            Kind::Goaway => 7,
            Kind::WindowUpdate => 8,
            Kind::Continuation => 9,
            Kind::Other(t) => t,
        }
    }
}

#[test]
fn plain_http2_stays_http2() {
    // RFC 7541 C.4.1 (Huffman-coded GET for www.example.com) and C.6.1 (a 302 response).
    let req = [0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90, 0xf4, 0xff];
    let mut c = parser::PREFACE.to_vec();
    c.extend(frame(4, 0, 0, &[]));
    c.extend(frame(1, 0x5, 1, &req));
    let mut s = frame(4, 0, 0, &[0, 5, 0, 0, 0x40, 0]);
    s.extend(frame(1, 0x4, 1, &[0x48, 0x82, 0x64, 0x02]));
    s.extend(frame(0, 0x1, 1, &[b'x'; 100]));
    s.extend(frame(7, 0, 0, &[0, 0, 0, 1, 0, 0, 0, 2, b'd', b'b', b'g']));
    let mut p = Http2::default();
    assert!(feed_all(&mut p, Dir::ToServer, &c).is_empty());
    assert!(feed_all(&mut p, Dir::ToClient, &s).is_empty());
    assert_eq!(p.app(), App::Http2);
    let m = l7_of(&p);
    assert_eq!(m["method"], "GET");
    assert_eq!(m["authority"], "www.example.com");
    assert_eq!(m["path"], "/");
    assert_eq!(m["status"], 302);
    assert_eq!(m["goaway_error"], 2);
    assert!(!m.contains_key("service") && !m.contains_key("violation"), "{m:?}");
}

#[test]
fn large_data_frames_are_skipped_not_buffered() {
    let mut c = parser::PREFACE.to_vec();
    c.extend(frame(4, 0, 0, &[0, 5, 0, 0xff, 0xff, 0xff]));
    let mut s = frame(4, 0, 0, &[]);
    s.extend(frame(1, 0x4, 1, &[0x88]));
    s.extend(frame(0, 0, 1, &vec![7u8; 1 << 20]));
    s.extend(frame(3, 0, 1, &[0, 0, 0, 8]));
    let mut p = Http2::default();
    feed_all(&mut p, Dir::ToServer, &c); // the client allows frames up to 2^24-1
    let mut pending: Vec<u8> = Vec::new();
    let mut held = 0;
    for seg in s.chunks(1448) {
        pending.extend_from_slice(seg);
        match p.feed(Dir::ToClient, &pending) {
            Feed::Consumed(n) => drop(pending.drain(..n)),
            Feed::Need { consumed, .. } => drop(pending.drain(..consumed)),
            Feed::Done | Feed::Invalid { .. } => panic!("done"),
        }
        held = held.max(pending.len());
    }
    assert!(pending.is_empty());
    assert!(held < 64, "{held}");
    let m = l7_of(&p);
    assert_eq!(m["status"], 200);
    assert_eq!(m["rst_streams"], 1);
    assert_eq!(m["frames_to_client"], 4);
    assert!(!m.contains_key("violation"), "{m:?}");
}

#[test]
fn frames_above_the_advertised_size_are_violations() {
    let mut c = parser::PREFACE.to_vec();
    c.extend(frame(4, 0, 0, &[])); // default 16384
    let mut p = Http2::default();
    feed_all(&mut p, Dir::ToServer, &c);
    feed_all(&mut p, Dir::ToClient, &frame(4, 0, 0, &[]));
    feed_all(&mut p, Dir::ToClient, &frame(0, 0, 1, &vec![0; 16_385]));
    assert_eq!(l7_of(&p)["violation"], true);
    // CONTINUATION without a header block, invalid SETTINGS values.
    for bad in [frame(9, 4, 1, b"\x82"), frame(4, 0, 0, &[0, 2, 0, 0, 0, 2]), frame(4, 0, 0, &[0, 2, 0])] {
        let mut p = Http2::default();
        feed_all(&mut p, Dir::ToClient, &bad);
        assert_eq!(l7_of(&p)["violation"], true, "{bad:?}");
    }
}

#[test]
fn gaps() {
    let mut c = parser::PREFACE.to_vec();
    c.extend(frame(4, 0, 0, &[0, 5, 0, 0xff, 0xff, 0xff]));
    let mut s = frame(4, 0, 0, &[0, 5, 0, 0xff, 0xff, 0xff]);
    s.extend(frame(1, 0x4, 1, &[0x88]));
    let data = frame(0, 0, 1, &vec![7u8; 50_000]);
    let mut p = Http2::default();
    feed_all(&mut p, Dir::ToServer, &c);
    feed_all(&mut p, Dir::ToClient, &s);
    feed_all(&mut p, Dir::ToClient, &data[..1000]);
    p.gap(Dir::ToClient, 20_000); // inside the DATA payload: framing kept
    feed_all(&mut p, Dir::ToClient, &data[21_000..]);
    feed_all(&mut p, Dir::ToClient, &frame(3, 0, 1, &[0, 0, 0, 8]));
    let m = l7_of(&p);
    assert_eq!(m["rst_streams"], 1);
    assert!(!m.contains_key("gap"));
    // At a frame boundary the next header is lost: stop.
    p.gap(Dir::ToClient, 10);
    assert_eq!(p.feed(Dir::ToClient, &frame(3, 0, 1, &[0, 0, 0, 8])), Feed::Done);
    assert_eq!(l7_of(&p)["gap"], true);
}

#[test]
fn h2c_upgrade_hand_over_from_http() {
    // HTTP/1.1 Upgrade: h2c (invented: the corpus holds prior knowledge only), then real
    // grpcio frames after the preface and after the server's 101.
    let f = grpc_flow();
    let req = b"GET /index.html HTTP/1.1\r\nHost: 198.18.0.2\r\nUser-Agent: curl/7.88.1\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
    let mut to_server = req.to_vec();
    to_server.extend_from_slice(&f.to_server);
    let mut to_client = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
    to_client.extend_from_slice(&f.to_client);

    // The engine: HTTP/1 first; it stops at the 101 and at the preface, unconsumed.
    let mut h1 = Http::default();
    let consumed = match h1.feed(Dir::ToServer, &to_server) {
        Feed::Consumed(n) => n,
        other => panic!("{other:?}"),
    };
    assert_eq!(consumed, req.len());
    assert_eq!(h1.feed(Dir::ToClient, &to_client), Feed::Done);
    assert!(h1.h2c_switched());
    assert_eq!(l7_of(&h1)["upgrade"], "h2c");

    // Hand-over: the unconsumed tails go to HTTP/2.
    let mut h2 = Http2::after_upgrade(&h1);
    assert!(feed_all(&mut h2, Dir::ToClient, &to_client).is_empty());
    assert!(feed_all(&mut h2, Dir::ToServer, &to_server[consumed..]).is_empty());
    let m = l7_of(&h2);
    assert_eq!(m["upgrade"], "h2c");
    // The (real) server frames answer with content-type application/grpc: gRPC, and the
    // HTTP method moves to `http_method`; "/index.html" has no gRPC service/method shape.
    assert_eq!(h2.app(), App::Grpc);
    assert_eq!(m["http_method"], "GET");
    assert!(!m.contains_key("service"));
    assert_eq!(m["path"], "/index.html");
    assert_eq!(m["authority"], "198.18.0.2");
    assert_eq!(m["user_agent"], "curl/7.88.1");
    assert_eq!(m["status"], 200);
    // Stream 1 (the upgraded request) plus the capture's streams 3..11.
    assert_eq!(m["streams"], 6);
    assert!(!m.contains_key("violation"), "{m:?}");
    check_every_split::<Http2>(Dir::ToClient, &to_client[..2000]);
}

#[test]
fn probe_is_content_based() {
    let f = grpc_flow();
    assert_eq!(Http2::probe(Dir::ToServer, &f.to_server), Probe::Match);
    assert_eq!(Http2::probe(Dir::ToClient, &f.to_client), Probe::Match);
    assert_eq!(Http2::probe(Dir::ToServer, b"PRI * HTTP/2.0\r\n"), Probe::NeedMore);
    assert_eq!(Http2::probe(Dir::ToClient, &[0, 0, 0, 4, 0, 0, 0, 0, 0]), Probe::Match);
    assert_eq!(Http2::probe(Dir::ToClient, &[0, 0, 0, 4, 1, 0, 0, 0, 0]), Probe::NoMatch); // ACK
    assert_eq!(Http2::probe(Dir::ToClient, &[0, 0, 6, 4, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 5]), Probe::NoMatch);
    for bad in [
        &b"HELLO\r\n"[..],
        b"EHLO x\r\n",
        b"+OK\r\n",
        b"{\"a\":1}\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"PRI * HTTP/1.1\r\n",
        b"\0\0\x07\x04\0\0\0\0\0",
    ] {
        for d in [Dir::ToServer, Dir::ToClient] {
            assert_eq!(Http2::probe(d, bad), Probe::NoMatch, "{:?}", String::from_utf8_lossy(bad));
        }
    }
    let mut rng = Rng(7);
    for _ in 0..2000 {
        let b: Vec<u8> = (0..rng.below(64) + 16).map(|_| rng.next() as u8).collect();
        assert_eq!(Http2::probe(Dir::ToServer, &b), Probe::NoMatch, "{b:?}");
        assert_eq!(Http2::probe(Dir::ToClient, &b), Probe::NoMatch, "{b:?}");
    }
}

#[test]
fn probe_never_matches_other_corpus_protocols() {
    check_rejects_other_corpus::<Http2>(&["grpc", "http2"]);
}

#[test]
fn mutated_real_bytes_never_panic() {
    let f = grpc_flow();
    let mut rng = Rng(42);
    for i in 0..4000 {
        let (dir, src) = if i % 2 == 0 { (Dir::ToServer, &f.to_server) } else { (Dir::ToClient, &f.to_client) };
        let start = if i % 4 < 2 { 0 } else { rng.below(src.len()) };
        let mut b = src[start..(start + 3000).min(src.len())].to_vec();
        for _ in 0..rng.below(8) + 1 {
            if b.is_empty() {
                break;
            }
            let at = rng.below(b.len());
            match rng.below(5) {
                0 => b[at] = rng.next() as u8,
                1 => b[at] ^= 1 << rng.below(8),
                2 => b.insert(at, rng.next() as u8),
                3 => b[at] = 0xff,
                _ => b.truncate(at),
            }
        }
        let _ = Http2::probe(dir, &b);
        let mut p = if i % 8 == 7 { Http2::after_upgrade(&Http::default()) } else { Http2::default() };
        if start > 0 {
            p.side[dir as usize].phase = Phase::Frames;
        }
        let cut = rng.below(b.len() + 1);
        feed_segments(&mut p, dir, &[&b[..cut], &b[cut..]]);
        p.gap(dir, rng.below(100));
        feed_all(&mut p, dir, &b);
        let _ = l7_of(&p);
        let _ = p.app();
    }
    // Random header blocks through the HPACK decoder.
    for _ in 0..4000 {
        let b: Vec<u8> = (0..rng.below(64)).map(|_| rng.next() as u8).collect();
        let _ = hpack::decode(hpack::Frags::one(&b), |_, _| {});
    }
}

#[test]
fn state_is_small_and_fixed() {
    let n = std::mem::size_of::<Http2>();
    // Parser state plus its threat state (`detect::Threats`: first detection with evidence, further kinds).
    assert!(n <= 1152, "{n}");
}

/// After a real gRPC exchange, bytes that are a connection error (a frame larger than the
/// receiver allows, a header block the decoder rejects, a CONTINUATION with no block open) end
/// the stream's HTTP/2; an unknown frame type does not (§4.1: ignored).
#[test]
fn connection_errors_after_detection_are_invalid() {
    let f = grpc_flow();
    let setup = || {
        let mut p = Http2::default();
        let left = feed_interleaved(&mut p, &f);
        assert!(left.iter().all(|l| l.is_empty()));
        p
    };
    // (grpcio allows 4 MiB frames: a request line reads as one larger than that.)
    for bad in [&frame(9, 0, 1, b"x")[..], b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"] {
        let mut p = setup();
        assert_eq!(p.feed(Dir::ToServer, bad), Feed::Invalid { consumed: 0 }, "{bad:?}");
    }
    let mut p = setup();
    let unknown = frame(0xfa, 0, 0, b"abc");
    assert_eq!(p.feed(Dir::ToServer, &unknown), Feed::Consumed(unknown.len()));
    // With the default frame size (16 KiB), RESP reads as a frame of 2.7 MB.
    let mut p = Http2::default();
    let mut c = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    c.extend_from_slice(&frame(4, 0, 0, b""));
    assert_eq!(p.feed(Dir::ToServer, &c), Feed::Consumed(c.len()));
    assert_eq!(p.feed(Dir::ToClient, &frame(4, 0, 0, b"")), Feed::Consumed(9));
    assert_eq!(p.feed(Dir::ToServer, b"*1\r\n$4\r\nPING\r\n"), Feed::Invalid { consumed: 0 });
}

#[test]
fn a_trickled_upgrade_head_is_searched_once() {
    // A server's `HTTP/1.1 101` head with long fields (close to MAX_UPGRADE_HEAD), trickled one
    // byte per segment: the same record as whole, and the search for its end examines each byte
    // a bounded number of times (it was n²/2).
    let f = grpc_flow();
    for n in [512usize, 2048, parser::MAX_UPGRADE_HEAD - 64] {
        let mut to_client = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nX-Pad: ".to_vec();
        to_client.resize(n - 4, b'p');
        to_client.extend_from_slice(b"\r\n\r\n");
        let head = to_client.len();
        to_client.extend_from_slice(&f.to_client[..f.to_client.len().min(3000)]);
        let mut whole = Http2::after_upgrade(&Http::default());
        feed_all(&mut whole, Dir::ToClient, &to_client);
        let mut t = Http2::after_upgrade(&Http::default());
        let segs: Vec<&[u8]> = to_client.chunks(1).collect();
        feed_segments(&mut t, Dir::ToClient, &segs);
        let m = l7_of(&t);
        assert_eq!(m, l7_of(&whole));
        assert_eq!(m["status"], 200, "{m:?}");
        assert!(t.examined() <= 4 * head as u64, "{n}: {} for {head}", t.examined());
    }
}
