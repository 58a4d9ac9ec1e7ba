//! Tests over the real captures in `http.pcap` (curl, wget and urllib against nginx) plus
//! edge cases the capture does not hold.

use super::*;
use crate::app::testutil::{check_every_prefix, check_every_split, corpus_flows, feed_all, feed_segments, l7_of, Flow, check_rejects_other_corpus, Rng};

fn flows() -> Vec<Flow> {
    corpus_flows("http.pcap").into_iter().filter(|f| f.server_port == 80 && !f.to_server.is_empty()).collect()
}

fn flow(client_port: u16) -> Flow {
    flows().into_iter().find(|f| f.client_port == client_port).unwrap()
}

fn record(to_server: &[u8], to_client: &[u8]) -> (Http, Map<String, Value>) {
    let mut h = Http::default();
    assert!(feed_all(&mut h, Dir::ToServer, to_server).is_empty());
    assert!(feed_all(&mut h, Dir::ToClient, to_client).is_empty());
    let m = l7_of(&h);
    (h, m)
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
            Feed::Invalid { consumed } => panic!("{dir:?} not HTTP after {consumed} bytes"),
        }
    }
    pending
}

#[test]
fn corpus_records_are_exact() {
    // (client port, method, host, path, user agent, status, requests, responses)
    let want: &[(u16, &str, &str, &str, &str, u16, u32)] = &[
        (56818, "GET", "198.18.0.2", "/", "curl/7.88.1", 200, 4),
        (56830, "GET", "www.example.test", "/static/site.css", "Mozilla/5.0 (X11; Linux x86_64) corpus", 200, 1),
        (56832, "HEAD", "198.18.0.2", "/api.json", "curl/7.88.1", 200, 1),
        (56846, "POST", "198.18.0.2", "/api/orders", "curl/7.88.1", 200, 1),
        (56854, "PUT", "198.18.0.2", "/upload", "curl/7.88.1", 201, 1),
        (56866, "POST", "198.18.0.2", "/upload", "curl/7.88.1", 201, 1),
        (56872, "GET", "198.18.0.2", "/static/blob.bin", "curl/7.88.1", 206, 1),
        (56874, "GET", "198.18.0.2", "/old", "curl/7.88.1", 301, 2),
        (56880, "GET", "198.18.0.2", "/index.html", "Wget", 200, 1),
        (56892, "GET", "198.18.0.2", "/api/status", "Python-urllib/3.11", 200, 1),
    ];
    let fs = flows();
    assert_eq!(fs.len(), want.len());
    for &(port, method, host, path, ua, status, n) in want {
        let f = fs.iter().find(|f| f.client_port == port).unwrap();
        let (h, m) = record(&f.to_server, &f.to_client);
        assert_eq!(m["method"], method, "{port}");
        assert_eq!(m["host"], host);
        assert_eq!(m["path"], path);
        assert_eq!(m["user_agent"], ua);
        assert_eq!(m["version"], "1.1");
        assert_eq!(m["status"], status);
        assert_eq!(m["requests"], n);
        assert_eq!(m["responses"], n);
        assert!(!m.contains_key("violation") && !m.contains_key("upgrade"), "{port}: {m:?}");
        assert_eq!(h.app(), App::Http);
        // The same record when fed segment by segment in capture order.
        let mut p = Http::default();
        let left = feed_interleaved(&mut p, f);
        assert!(left[0].is_empty() && left[1].is_empty());
        assert_eq!(l7_of(&p), m, "{port}");
    }
}

#[test]
fn sqlmap_flows_parse_without_violation() {
    let mut n = 0;
    for f in corpus_flows("sqlinjection-http.pcap").iter().filter(|f| !f.to_server.is_empty()) {
        let (_, m) = record(&f.to_server, &f.to_client);
        assert!(!m.contains_key("violation"), "{}: {m:?}", f.client_port);
        assert_eq!(m["requests"], m["responses"]);
        assert_eq!(m["user_agent"], "sqlmap/1.7.2#stable (https://sqlmap.org)");
        n += 1;
    }
    assert!(n > 500);
}

#[test]
fn pipelined_requests_and_responses_are_all_counted() {
    // Four keep-alive requests of curl, and a HEAD whose response announces a body it does
    // not carry, all sent back to back in one segment each way.
    let a = flow(56818);
    let head = flow(56832);
    let mut req = a.to_server.clone();
    req.extend_from_slice(&head.to_server);
    req.extend_from_slice(&a.to_server);
    let mut resp = a.to_client.clone();
    resp.extend_from_slice(&head.to_client);
    resp.extend_from_slice(&a.to_client);
    let (_, m) = record(&req, &resp);
    assert_eq!(m["requests"], 9);
    assert_eq!(m["responses"], 9);
    assert_eq!(m["method"], "GET");
    assert_eq!(m["status"], 200);
    assert!(!m.contains_key("violation"));
}

#[test]
fn chunked_bodies_both_ways() {
    // 56830: nginx answers with Transfer-Encoding: chunked; 56866: curl uploads chunked.
    for port in [56830, 56866] {
        let f = flow(port);
        let (_, m) = record(&f.to_server, &f.to_client);
        assert_eq!(m["responses"], 1);
        // Twice in a row: the chunked body must end exactly where the next message starts.
        let mut s = f.to_server.clone();
        s.extend_from_slice(&f.to_server);
        let mut c = f.to_client.clone();
        c.extend_from_slice(&f.to_client);
        let (_, m) = record(&s, &c);
        assert_eq!((m["requests"].as_u64(), m["responses"].as_u64()), (Some(2), Some(2)), "{port}");
    }
}

#[test]
fn large_bodies_are_skipped_not_buffered() {
    // 60000-byte blob: present the response in 1000-byte pieces; every piece is consumed.
    let f = flow(56818);
    let mut h = Http::default();
    feed_all(&mut h, Dir::ToServer, &f.to_server);
    let segs: Vec<&[u8]> = f.to_client.chunks(1000).collect();
    let mut max_pending = 0;
    let mut pending: Vec<u8> = Vec::new();
    for s in segs {
        pending.extend_from_slice(s);
        match h.feed(Dir::ToClient, &pending) {
            Feed::Consumed(n) => drop(pending.drain(..n)),
            Feed::Need { consumed, .. } => drop(pending.drain(..consumed)),
            Feed::Done | Feed::Invalid { .. } => panic!("done"),
        }
        max_pending = max_pending.max(pending.len());
    }
    assert!(pending.is_empty());
    assert!(max_pending < 1000, "held {max_pending} bytes");
    assert_eq!(l7_of(&h)["responses"], 4);
}

#[test]
fn every_prefix_and_every_split() {
    for f in flows() {
        let c = &f.to_client[..f.to_client.len().min(3000)];
        check_every_prefix::<Http>(Dir::ToServer, &f.to_server);
        check_every_prefix::<Http>(Dir::ToClient, c);
        check_every_split::<Http>(Dir::ToServer, &f.to_server);
        check_every_split::<Http>(Dir::ToClient, c);
    }
}

#[test]
fn captured_segmentation_gives_the_same_record() {
    for f in flows() {
        let segs = |d: Dir| -> Vec<Vec<u8>> { f.segments.iter().filter(|(x, _)| *x == d).map(|(_, s)| s.clone()).collect() };
        let mut p = Http::default();
        for d in [Dir::ToServer, Dir::ToClient] {
            let s = segs(d);
            let refs: Vec<&[u8]> = s.iter().map(|v| v.as_slice()).collect();
            assert!(feed_segments(&mut p, d, &refs).is_empty());
        }
        assert_eq!(l7_of(&p), record(&f.to_server, &f.to_client).1);
    }
}

#[test]
fn responses_without_body_or_length() {
    // 1xx interim, 204 and 304 carry no body even with a Content-Length; a response without
    // length is read until close.
    let req = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\n\r\n";
    let resp = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n\
HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\nHTTP/1.0 200 OK\r\n\r\nanything HTTP/1.1 200 OK\r\n";
    let (_, m) = record(req, resp);
    assert_eq!(m["requests"], 3);
    assert_eq!(m["responses"], 3);
    assert_eq!(m["status"], 204);
    assert!(!m.contains_key("violation"));
}

#[test]
fn connect_tunnel_and_bad_framing() {
    let mut h = Http::default();
    feed_all(&mut h, Dir::ToServer, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n");
    assert_eq!(h.feed(Dir::ToClient, b"HTTP/1.1 200 Connection established\r\n\r\n\x16\x03\x01"), Feed::Consumed(39));
    // A tunnel's bytes are not HTTP and not rejected: the CONNECT asked for them.
    assert_eq!(h.feed(Dir::ToClient, b"\x16\x03\x01"), Feed::Done);
    assert_eq!(h.feed(Dir::ToServer, b"\x16\x03\x01"), Feed::Done);
    assert_eq!(l7_of(&h)["tunnel"], true);

    for bad in [
        &b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n"[..],
        b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\naXX",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffff\r\n",
        b"GET / HTTP/1.1\r\n\x01\r\n\r\n",
    ] {
        let mut h = Http::default();
        feed_all(&mut h, Dir::ToServer, bad);
        assert_eq!(l7_of(&h)["violation"], true, "{:?}", String::from_utf8_lossy(bad));
    }
    // A head that never ends is given up at MAX_HEAD, not buffered forever.
    let mut h = Http::default();
    let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
    long.resize(parser::MAX_HEAD + 10, b'a');
    assert_eq!(h.feed(Dir::ToServer, &long), Feed::Invalid { consumed: 0 });
}

/// After detection the parser keeps validating: bytes where a request or response head must
/// start that are not one end HTTP ([`Feed::Invalid`] after the whole messages before them),
/// while bodies, whatever they hold, stay HTTP.
#[test]
fn bytes_that_stop_being_http_are_rejected_after_the_messages_before_them() {
    let req = b"GET / HTTP/1.1\r\nHost: 198.18.0.2\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi";
    for (dir, first, next) in [
        (Dir::ToServer, &req[..], &b"*1\r\n$4\r\nPING\r\n"[..]),
        (Dir::ToServer, req, b"\x16\x03\x01\x00\x05"),
        (Dir::ToServer, req, b"SSH-2.0-OpenSSH_9.2\r\n"),
        (Dir::ToClient, resp, b"+PONG\r\n"),
        (Dir::ToClient, resp, b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"),
    ] {
        let mut h = Http::default();
        if dir == Dir::ToClient {
            feed_all(&mut h, Dir::ToServer, req);
        }
        let mut bytes = first.to_vec();
        bytes.extend_from_slice(next);
        assert_eq!(h.feed(dir, &bytes), Feed::Invalid { consumed: first.len() }, "{:?}", String::from_utf8_lossy(next));
        // The same bytes in a later segment.
        let mut h = Http::default();
        if dir == Dir::ToClient {
            feed_all(&mut h, Dir::ToServer, req);
        }
        assert_eq!(h.feed(dir, first), Feed::Consumed(first.len()));
        assert_eq!(h.feed(dir, next), Feed::Invalid { consumed: 0 });
    }
    // Control: a body carrying RESP is HTTP, and the next request is parsed.
    let mut h = Http::default();
    let post = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 14\r\n\r\n*1\r\n$4\r\nPING\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    assert_eq!(h.feed(Dir::ToServer, post), Feed::Consumed(post.len()));
    assert_eq!(l7_of(&h)["requests"], 2);
    // A prefix of a head is not rejected before its end.
    let mut h = Http::default();
    assert!(matches!(h.feed(Dir::ToServer, b"GET / HT"), Feed::Need { consumed: 0, .. }));
}

#[test]
fn gaps() {
    let f = flow(56818);
    let split = 8769 + 5000; // inside the 60000-byte blob body
    let mut h = Http::default();
    feed_all(&mut h, Dir::ToServer, &f.to_server);
    feed_all(&mut h, Dir::ToClient, &f.to_client[..split]);
    h.gap(Dir::ToClient, 1000);
    feed_all(&mut h, Dir::ToClient, &f.to_client[split + 1000..]);
    let m = l7_of(&h);
    assert_eq!(m["responses"], 4);
    assert!(!m.contains_key("gap"));

    // A gap in a head loses the message boundaries: the direction stops.
    let mut h = Http::default();
    feed_all(&mut h, Dir::ToServer, &f.to_server[..10]);
    h.gap(Dir::ToServer, 5);
    assert_eq!(h.feed(Dir::ToServer, &f.to_server[15..]), Feed::Done);
    assert_eq!(l7_of(&h)["gap"], true);
}

#[test]
fn h2c_upgrade_request_is_recorded_and_left_for_http2() {
    let req = b"GET / HTTP/1.1\r\nHost: 198.18.0.2\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
    let mut to_server = req.to_vec();
    to_server.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let to_client = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n\0\0\0\x04\0\0\0\0\0";
    let mut h = Http::default();
    assert_eq!(h.feed(Dir::ToServer, &to_server), Feed::Consumed(req.len()));
    assert!(!h.h2c_switched());
    assert_eq!(h.feed(Dir::ToClient, to_client), Feed::Done);
    assert!(h.h2c_switched());
    assert_eq!(h.feed(Dir::ToServer, &to_server[req.len()..]), Feed::Done);
    let m = l7_of(&h);
    assert_eq!(m["upgrade"], "h2c");
    assert_eq!(m["status"], 101);
    assert_eq!(m["switched"], true);
    assert_eq!(m["path"], "/");
}

#[test]
fn probe_is_content_based() {
    let f = flow(56818);
    assert_eq!(Http::probe(Dir::ToServer, &f.to_server), Probe::Match);
    assert_eq!(Http::probe(Dir::ToClient, &f.to_client), Probe::Match);
    for bad in [
        &b"HELLO\r\n"[..],
        b"EHLO x\r\n",
        b"+OK\r\n",
        b"{\"jsonrpc\":\"2.0\"}\n",
        b"GET key\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"SSH-2.0-OpenSSH_9.2p1\r\n",
        b"\x16\x03\x01\x02\x00\x01",
        b"\0\0\x18\x04\0\0\0\0\0",
    ] {
        for d in [Dir::ToServer, Dir::ToClient] {
            assert_eq!(Http::probe(d, bad), Probe::NoMatch, "{:?}", String::from_utf8_lossy(bad));
        }
    }
    // A response is not a request and vice versa.
    assert_eq!(Http::probe(Dir::ToServer, &f.to_client), Probe::NoMatch);
    assert_eq!(Http::probe(Dir::ToClient, &f.to_server), Probe::NoMatch);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for _ in 0..2000 {
        let b: Vec<u8> = (0..rng.below(64) + 16).map(|_| rng.next() as u8).collect();
        assert_eq!(Http::probe(Dir::ToServer, &b), Probe::NoMatch, "{b:?}");
        assert_eq!(Http::probe(Dir::ToClient, &b), Probe::NoMatch, "{b:?}");
    }
}

#[test]
fn probe_never_matches_other_corpus_protocols() {
    check_rejects_other_corpus::<Http>(&["http"]);
}

#[test]
fn mutated_real_bytes_never_panic() {
    let fs = flows();
    let mut rng = Rng(42);
    for i in 0..4000 {
        let f = &fs[i % fs.len()];
        let src = if i % 2 == 0 { &f.to_server } else { &f.to_client };
        let mut b = src[..src.len().min(2048)].to_vec();
        for _ in 0..rng.below(8) + 1 {
            let at = rng.below(b.len());
            match rng.below(4) {
                0 => b[at] = rng.next() as u8,
                1 => b[at] ^= 1 << rng.below(8),
                2 => b.insert(at, *b"\r\n:0 ;fF".get(rng.below(8)).unwrap()),
                _ => b.truncate(at),
            }
            if b.is_empty() {
                break;
            }
        }
        let dir = if i % 2 == 0 { Dir::ToServer } else { Dir::ToClient };
        let _ = Http::probe(dir, &b);
        let mut h = Http::default();
        let cut = rng.below(b.len() + 1);
        feed_segments(&mut h, dir, &[&b[..cut], &b[cut..]]);
        h.gap(dir, rng.below(100));
        feed_all(&mut h, dir, &b);
        let _ = l7_of(&h);
    }
}

#[test]
fn state_is_small_and_fixed() {
    let n = std::mem::size_of::<Http>();
    // Parser state plus its threat state (`detect::Threats`: first detection with evidence, further kinds).
    assert!(n <= 1152, "{n}");
}

// ---- SQL injection (crate::detect) over sqlinjection-http.pcap (sqlmap 1.7.2 against a
// vulnerable app) and http.pcap.

/// The first request line's decoded parameter values and the form body's (Python's parsing, to
/// label the capture independently of the detector).
fn decoded_values(req: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(req);
    let target = text.split(' ').nth(1).unwrap_or_default().to_string();
    let mut raw: Vec<String> =
        target.split_once('?').map(|(_, q)| q.split('&').map(String::from).collect()).unwrap_or_default();
    if text.contains("application/x-www-form-urlencoded") {
        if let Some((_, body)) = text.split_once("\r\n\r\n") {
            raw.extend(body.split('&').map(String::from));
        }
    }
    raw.iter()
        .map(|p| {
            let v = p.split_once('=').map_or(p.as_str(), |(_, v)| v);
            let mut out = [0u8; 4096];
            let n = crate::detect::urlenc::decode_into(v.as_bytes(), true, &mut out);
            String::from_utf8_lossy(&out[..n]).into_owned()
        })
        .collect()
}

fn sqli_flows() -> Vec<Flow> {
    corpus_flows("sqlinjection-http.pcap")
        .into_iter()
        .filter(|f| f.server_port == 80 && !f.to_server.is_empty())
        .collect()
}

fn flagged(to_server: &[u8]) -> Option<crate::detect::Threat> {
    let mut h = Http::default();
    let _ = feed_all(&mut h, Dir::ToServer, to_server);
    h.threats().and_then(|t| t.first)
}

#[test]
fn sqlmap_requests_with_sql_in_a_value_are_flagged() {
    let mut checked = 0;
    for f in sqli_flows() {
        let vals = decoded_values(&f.to_server);
        let sql = vals.iter().any(|v| {
            let u = v.to_ascii_uppercase();
            [" AND ", " OR ", "UNION", "SLEEP", "SELECT", "ORDER BY"].iter().any(|k| u.contains(k))
        });
        let plain = vals.iter().all(|v| v.bytes().all(|c| c.is_ascii_alphanumeric()));
        let t = flagged(&f.to_server);
        if sql {
            let t = t.unwrap_or_else(|| panic!("not flagged: {vals:?}"));
            assert_eq!((t.id, t.dir), (crate::detect::ThreatId::SqlInjection, Dir::ToServer));
            checked += 1;
        }
        if plain {
            assert!(t.is_none(), "baseline request flagged: {vals:?}");
        }
    }
    assert!(checked > 0);
}

#[test]
fn form_bodies_are_checked_however_segmented() {
    // sqlmap's POST /item requests whose body carries a UNION query.
    let posts: Vec<Flow> = sqli_flows()
        .into_iter()
        .filter(|f| {
            f.to_server.starts_with(b"POST /item ")
                && decoded_values(&f.to_server).iter().any(|v| v.contains("UNION ALL SELECT"))
        })
        .collect();
    assert!(!posts.is_empty());
    for f in posts.iter().take(3) {
        let t = flagged(&f.to_server).expect("form injection flagged");
        assert_eq!(t.reason, "libinjection");
        for cut in 1..f.to_server.len() {
            let mut h = Http::default();
            let _ = feed_segments(&mut h, Dir::ToServer, &[&f.to_server[..cut], &f.to_server[cut..]]);
            assert!(h.threats().is_some_and(|t| !t.is_empty()), "split at {cut}");
        }
    }
}

#[test]
fn benign_requests_and_the_e2e_examples() {
    for f in flows() {
        let head = String::from_utf8_lossy(&f.to_server[..80.min(f.to_server.len())]).into_owned();
        assert!(flagged(&f.to_server).is_none(), "{head:?}");
    }
    let t = flagged(b"GET /item?id=1%27%20OR%20%271%27%3D%271 HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert_eq!(t.evidence.as_str(), "1' OR '1'='1");
    assert!(flagged(b"GET /search?q=O%27Reilly+books HTTP/1.1\r\nHost: x\r\n\r\n").is_none());
    // A long form: its first FORM_MAX bytes are checked, the rest skipped, the next request
    // parsed.
    let mut body = b"id=1+UNION+ALL+SELECT+NULL%2CNULL--+-&pad=".to_vec();
    body.resize(FORM_MAX * 3, b'a');
    let mut req = format!(
        "POST /item HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded; charset=UTF-8\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req.extend_from_slice(b"GET /next HTTP/1.1\r\nHost: x\r\n\r\n");
    let mut h = Http::default();
    assert!(feed_all(&mut h, Dir::ToServer, &req).is_empty());
    assert_eq!(h.threats().map(|t| t.count), Some(1));
    assert_eq!(l7_of(&h)["requests"], 2);
    // Not a form: the body is not looked at.
    let json = b"POST /api HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n{\"id\":\"1' OR 1=1\"}";
    assert!(flagged(json).is_none());
}

// ---- Work per byte (issue 9 item 7): heads and lines trickled in one-byte segments are
// scanned once, and the incremental scan decides exactly as the whole-buffer parse on the
// whole prefix (requests: `parser::request`; responses: httparse).

/// Heads to compare the incremental scan with the whole-buffer parse on: the start of every corpus flow
/// (both ways), edge cases of the grammar, and mutations of all of them.
fn head_samples() -> Vec<(Dir, Vec<u8>)> {
    let mut out: Vec<(Dir, Vec<u8>)> = Vec::new();
    for f in flows().iter().chain(corpus_flows("sqlinjection-http.pcap").iter().step_by(37)) {
        out.push((Dir::ToServer, f.to_server[..f.to_server.len().min(1200)].to_vec()));
        out.push((Dir::ToClient, f.to_client[..f.to_client.len().min(1200)].to_vec()));
    }
    let mut many = b"GET / HTTP/1.1\r\n".to_vec();
    for i in 0..100 {
        many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    for (d, b) in [
        (Dir::ToServer, &b"\r\n\nGET / HTTP/1.1\r\nHost: a\r\n\r\n"[..]),
        (Dir::ToServer, b"\r\rGET / HTTP/1.1\r\n\r\n"),
        (Dir::ToServer, b"GET  / HTTP/1.1\r\n\r\n"),
        (Dir::ToServer, b"GET / HTTP/1.2\r\n\r\n"),
        (Dir::ToServer, b"GET / HTTP/1.0\n\n"),
        (Dir::ToServer, b"GET /\xc3\xa9 HTTP/1.1\r\n\r\n"),
        (Dir::ToServer, b"GET /\xc3 HTTP/1.1\r\n\r\n"),
        (Dir::ToServer, b"GET /\x7f HTTP/1.1\r\n\r\n"),
        (Dir::ToServer, b"G@T / HTTP/1.1\r\n\r\n"),
        (Dir::ToServer, b"GET / HTTP/1.1\r\nA:\r\nB: \t x \t\r\nC:\n\r\n"),
        (Dir::ToServer, b"GET / HTTP/1.1\r\nA : b\r\n\r\n"),
        (Dir::ToServer, b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n"),
        (Dir::ToServer, b"GET / HTTP/1.1\r\nA: b\x00\r\n\r\n"),
        (Dir::ToServer, b"GET / HTTP/1.1\r\nA: \xff\x80\r\n\r\n"),
        (Dir::ToServer, b"GET / HTTP/1.1\r\nA: b\rc\r\n\r\n"),
        (Dir::ToServer, b"GET / HTTP/1.1\r\n\r\r\n"),
        (Dir::ToServer, &many),
        (Dir::ToServer, b"\r\n \rGET\t/a\x0b\rHTTP/01.1 \nX: 1\r\n\r\n"),
        (Dir::ToServer, b"GET /a?b=1\r\nHost: x\r\n\r\n"),
        (Dir::ToServer, b"GET /a \r\r\n"),
        (Dir::ToServer, b"get * HTTP/1.10\r\nA: b\r\n c\r\nJunk\r\n\r\r\nB : \x01\r\n\r\n"),
        (Dir::ToServer, b"POST /a\r\n"),
        (Dir::ToServer, &many[..many.len() - 200]),
        (Dir::ToClient, b"HTTP/1.1 200 OK\r\nA: b\r\n\r\n"),
        (Dir::ToClient, b"HTTP/1.1 200\r\n\r\n"),
        (Dir::ToClient, b"HTTP/1.1 200\n\n"),
        (Dir::ToClient, b"HTTP/1.1 200 \xff\tok\r\n\r\n"),
        (Dir::ToClient, b"HTTP/1.1 200 o\x01k\r\n\r\n"),
        (Dir::ToClient, b"HTTP/1.1 20x OK\r\n\r\n"),
        (Dir::ToClient, b"HTTP/1.1  200 OK\r\n\r\n"),
        (Dir::ToClient, b"HTTP/1.1 200 OK\rX\r\n\r\n"),
        (Dir::ToClient, b"\nHTTP/1.0 404 Not Found\r\n\r\n"),
    ] {
        out.push((d, b.to_vec()));
    }
    let mut rng = Rng(0x51ed_270b_27a4_3c11);
    let seeds = out.clone();
    for (d, seed) in &seeds {
        for _ in 0..12 {
            let mut b = seed.clone();
            for _ in 0..rng.below(4) + 1 {
                if b.is_empty() {
                    break;
                }
                let at = rng.below(b.len());
                let c = *b" \t\r\n:/H1.0\x00\x7f\x80\xc3\xffaZ".get(rng.below(17)).unwrap_or(&b'x');
                match rng.below(3) {
                    0 => b[at] = c,
                    1 => b.insert(at, c),
                    _ => drop(b.remove(at)),
                }
            }
            out.push((*d, b));
        }
    }
    out
}

#[test]
fn head_scan_decides_as_the_whole_head_parse_on_every_prefix_however_segmented() {
    let mut rng = Rng(7);
    let mut compared = 0;
    for (dir, b) in head_samples() {
        let whole = |n: usize| -> String {
            match dir {
                Dir::ToServer => format!("{:?}", parser::request(&b[..n])),
                Dir::ToClient => format!("{:?}", parser::response(&b[..n])),
            }
        };
        // One byte at a time, and in random pieces: each presentation is a longer prefix of
        // the same bytes, as the stream engine presents them after `Feed::Need`.
        for random in [false, true] {
            let mut scan = parser::HeadScan::default();
            let mut n = 0;
            while n < b.len() {
                n += if random { rng.below(40) + 1 } else { 1 };
                n = n.min(b.len());
                let got = match dir {
                    Dir::ToServer => format!("{:?}", scan.request(&b[..n])),
                    Dir::ToClient => format!("{:?}", scan.response(&b[..n])),
                };
                let want = whole(n);
                assert_eq!(got, want, "{dir:?} {:?} cut at {n}", String::from_utf8_lossy(&b));
                compared += 1;
                if !want.starts_with("Incomplete") {
                    break;
                }
            }
        }
    }
    assert!(compared > 50_000, "{compared}");
}

/// Feeds `bytes` to `h` one byte per segment through the test engine; returns what was left.
fn trickle(h: &mut Http, dir: Dir, bytes: &[u8]) -> Vec<u8> {
    let segs: Vec<&[u8]> = bytes.chunks(1).collect();
    feed_segments(h, dir, &segs)
}

#[test]
fn trickled_heads_are_scanned_once() {
    // A head of n bytes (a long `Cookie`, a long query string of benign words), trickled one
    // byte per segment: the bytes examined (scan, one read of the head and the OGNL scan of its values, detectors) stay within a
    // constant times n, and the record is the same as when it arrives whole.
    for n in [1024usize, 2048, 4096, 8192, 12 * 1024, parser::MAX_HEAD - 64] {
        for shape in ["cookie", "query"] {
            let mut req = b"GET /search?".to_vec();
            if shape == "query" {
                while req.len() < n - 40 {
                    req.extend_from_slice(b"q=apple&");
                }
            }
            req.extend_from_slice(b"x=1 HTTP/1.1\r\nHost: a\r\nCookie: ");
            while req.len() < n - 4 {
                req.push(b'c');
            }
            req.extend_from_slice(b"\r\n\r\n");
            let mut whole = Http::default();
            assert!(feed_all(&mut whole, Dir::ToServer, &req).is_empty());
            let mut t = Http::default();
            assert!(trickle(&mut t, Dir::ToServer, &req).is_empty(), "{shape} {n}");
            assert_eq!(l7_of(&t), l7_of(&whole));
            assert_eq!(l7_of(&t)["requests"], 1);
            let per_byte = t.examined() as f64 / req.len() as f64;
            assert!(per_byte <= 10.0, "{shape} {n}: {} bytes examined for {}", t.examined(), req.len());
            assert!(whole.examined() <= t.examined());
        }
    }
}

#[test]
fn trickled_requests_up_to_60k_stay_linear() {
    // Pipelined requests (long heads, chunked bodies with long chunk extensions and
    // trailers, form bodies) making n bytes in all, trickled one byte per segment: bytes
    // examined <= c * n for n from 1 KiB to 60 KiB; whole, the same record.
    let unit = {
        let mut u = b"POST /f?a=1&b=2 HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 23\r\nX-Long: ".to_vec();
        u.extend(std::iter::repeat_n(b'v', 300));
        u.extend_from_slice(b"\r\n\r\nname=O%27Reilly&n=2&z\n");
        u.extend_from_slice(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=");
        u.extend(std::iter::repeat_n(b'e', 500));
        u.extend_from_slice(b"\r\nhello\r\n0\r\nX-Trailer: ");
        u.extend(std::iter::repeat_n(b't', 400));
        u.extend_from_slice(b"\r\n\r\n");
        u
    };
    let mut ratios = Vec::new();
    for n in [1024usize, 4096, 16 * 1024, 32 * 1024, 60 * 1024] {
        let mut req = Vec::new();
        while req.len() + unit.len() <= n.max(unit.len()) {
            req.extend_from_slice(&unit);
        }
        let mut whole = Http::default();
        assert!(feed_all(&mut whole, Dir::ToServer, &req).is_empty());
        let mut t = Http::default();
        assert!(trickle(&mut t, Dir::ToServer, &req).is_empty());
        let m = l7_of(&t);
        assert_eq!(m, l7_of(&whole));
        assert_eq!(m["requests"].as_u64(), Some(2 * (req.len() / unit.len()) as u64));
        assert!(!m.contains_key("violation"));
        let ratio = t.examined() as f64 / req.len() as f64;
        assert!(ratio <= 10.0, "{n}: {} examined for {} bytes", t.examined(), req.len());
        ratios.push(ratio);
    }
    // Linear, not merely bounded: the ratio does not grow with n.
    assert!(ratios.last() <= Some(&(ratios[0] * 1.5)), "{ratios:?}");
}

// ---- Lenient where hosts are lenient (issue 10 item 3, issue 11): the forms nginx, Apache or
// python's http.server accept and act on are parsed as they parse them, recorded, and checked
// for SQL injection, whole or trickled one byte per segment.

/// An injection in a query value and its decoded form (the e2e example).
const SQLI: &str = "/item?id=1%27%20OR%20%271%27%3D%271";

/// Feeds `bytes` to the server in segments cut at `cuts` (increasing offsets) the way the
/// engine does; returns the offset up to which it was consumed and whether it was answered
/// `Invalid` there (`Done`: the offset reached).
fn consumed_at(h: &mut Http, bytes: &[u8], cuts: &[usize]) -> (usize, bool) {
    let mut base = 0;
    let mut need = 0;
    for &end in cuts.iter().chain([bytes.len()].iter()) {
        let pending = &bytes[base..end.max(base)];
        if pending.len() < need {
            continue;
        }
        match h.feed(Dir::ToServer, pending) {
            Feed::Consumed(n) => {
                base += n;
                need = 0;
            }
            Feed::Need { consumed, at_least } => {
                base += consumed;
                need = at_least;
            }
            Feed::Done => return (end, false),
            Feed::Invalid { consumed } => return (base + consumed, true),
        }
    }
    (base, false)
}

/// Feeds `to_server` whole and one byte per segment: both must stop at the same offset (and
/// the same way) and give the same record and threats. Returns the record and the threats.
fn both_ways(to_server: &[u8]) -> (Map<String, Value>, crate::detect::Threats) {
    both_ways_within(to_server, 14.0)
}

/// [`both_ways`] with `per_byte` examined bytes allowed per byte fed (plus 64).
fn both_ways_within(to_server: &[u8], per_byte: f64) -> (Map<String, Value>, crate::detect::Threats) {
    let mut whole = Http::default();
    let left = consumed_at(&mut whole, to_server, &[]);
    let mut t = Http::default();
    let left_t = consumed_at(&mut t, to_server, &(1..to_server.len()).collect::<Vec<_>>());
    assert_eq!(left, left_t, "{:?}", String::from_utf8_lossy(to_server));
    assert_eq!(l7_of(&t), l7_of(&whole), "{:?}", String::from_utf8_lossy(to_server));
    let (a, b) = (whole.threats().copied().unwrap_or_default(), t.threats().copied().unwrap_or_default());
    assert_eq!((a.first, a.count, a.kinds, a.others), (b.first, b.count, b.kinds, b.others), "{:?}", String::from_utf8_lossy(to_server));
    // Head scan and read, the OGNL scans of field values and target (raw and decoded), the
    // SQL injection checks of the target's parts.
    assert!(t.examined() as f64 <= per_byte * to_server.len() as f64 + 64.0, "{} examined for {}", t.examined(), to_server.len());
    (l7_of(&whole), a)
}

fn is_sqli(t: &crate::detect::Threats) -> bool {
    // Framing threats found in the same requests may come first.
    t.kinds.contains(crate::detect::ThreatId::SqlInjection)
}

#[test]
fn leading_empty_lines_before_requests() {
    // RFC 9112 §2.2: empty lines before the first request and between keep-alive requests
    // (nginx skips any number of CR and LF bytes; Apache up to 10 lines).
    for lead in [&b"\r\n"[..], b"\n", b"\r\n\r\n\n", b"\r"] {
        let mut first = lead.to_vec();
        first.extend_from_slice(format!("GET {SQLI} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes());
        assert_eq!(Http::probe(Dir::ToServer, &first), Probe::Match, "{lead:?}");
        let (m, t) = both_ways(&first);
        assert_eq!((m["method"].as_str(), m["path"].as_str(), m["version"].as_str()), (Some("GET"), Some(SQLI), Some("1.1")));
        assert_eq!(m["requests"], 1);
        assert!(!m.contains_key("violation"), "{m:?}");
        assert!(is_sqli(&t));
        assert_eq!(t.first.unwrap().evidence.as_str(), "1' OR '1'='1");
        // The same injection in a later request of a keep-alive connection, after empty lines.
        let mut later = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        later.extend_from_slice(&first);
        let (m, t) = both_ways(&later);
        assert_eq!((m["path"].as_str(), m["requests"].as_u64()), (Some("/a"), Some(2)));
        assert!(!m.contains_key("violation") && is_sqli(&t));
    }
    // Control: the same requests without the injection are not flagged.
    let (m, t) = both_ways(b"\r\nGET /item?id=1 HTTP/1.1\r\nHost: x\r\n\r\n\r\nGET /b HTTP/1.1\r\n\r\n");
    assert_eq!(m["requests"], 2);
    assert!(t.first.is_none());
    // Past MAX_LEAD the probe gives up, but a detected connection still skips them (nginx
    // does), consumed as they come, as a violation; whitespace lead (python) too.
    let mut many = b"GET /a HTTP/1.1\r\n\r\n".to_vec();
    many.extend(std::iter::repeat_n(b'\n', parser::MAX_LEAD + 1));
    many.extend_from_slice(format!("GET {SQLI} HTTP/1.1\r\n\r\n").as_bytes());
    let (m, t) = both_ways(&many);
    assert_eq!((m["requests"].as_u64(), m["violation"].as_bool()), (Some(2), Some(true)));
    assert!(is_sqli(&t));
    let (m, t) = both_ways(format!("GET /a HTTP/1.1\r\n\r\n  GET {SQLI} HTTP/1.0\r\n\r\n").as_bytes());
    assert_eq!((m["requests"].as_u64(), m["violation"].as_bool()), (Some(2), Some(true)));
    assert!(is_sqli(&t));
    // Nothing is held while empty lines arrive.
    let mut h = Http::default();
    feed_all(&mut h, Dir::ToServer, b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(h.feed(Dir::ToServer, &[b'\n'; 5000]), Feed::Consumed(5000));
}

#[test]
fn http09_simple_requests() {
    // nginx and python serve `GET /path` (CRLF or LF) with the body alone.
    for req in [format!("GET {SQLI}\r\n"), format!("GET {SQLI}\n"), format!("\r\nGET {SQLI}\r\n")] {
        let b = req.as_bytes();
        assert_eq!(Http::probe(Dir::ToServer, b), Probe::Match, "{req:?}");
        let (m, t) = both_ways(b);
        assert_eq!((m["method"].as_str(), m["path"].as_str(), m["version"].as_str()), (Some("GET"), Some(SQLI), Some("0.9")), "{req:?}");
        assert_eq!(m["requests"], 1);
        assert!(!m.contains_key("violation"), "{m:?}");
        assert!(is_sqli(&t), "{req:?}");
    }
    // The answer is the body alone until the connection closes.
    let mut h = Http::default();
    assert_eq!(h.feed(Dir::ToServer, b"GET /index.html\r\n"), Feed::Consumed(17));
    let body = b"<html>HTTP/1.1 200 OK</html>\n";
    assert_eq!(h.feed(Dir::ToClient, body), Feed::Consumed(body.len()));
    assert_eq!(h.feed(Dir::ToClient, b"more"), Feed::Consumed(4));
    let m = l7_of(&h);
    assert_eq!((m["requests"].as_u64(), m["responses"].as_u64()), (Some(1), Some(1)));
    assert!(!m.contains_key("status") && !m.contains_key("violation"), "{m:?}");
    // Python reads field lines after it (nginx and Apache close): walked as lines, and a
    // request after them is parsed and checked.
    let after = format!("GET /index.html\r\nHost: x\r\nUser-Agent: y\r\n\r\nGET {SQLI} HTTP/1.1\r\nHost: x\r\n\r\n");
    let (m, t) = both_ways(after.as_bytes());
    assert_eq!((m["path"].as_str(), m["requests"].as_u64()), (Some("/index.html"), Some(2)));
    assert!(is_sqli(&t) && !m.contains_key("violation"));
    // A request line among the lines after it, with something before its method, is checked
    // (a server that reads from there would act on it).
    let (_, t) = both_ways(format!("GET /a\r\nX: 1\r\n@@GET {SQLI} HTTP/1.1\r\n").as_bytes());
    assert!(is_sqli(&t));
    // Not HTTP/0.9: another method, another word than a target, trailing text.
    for no in [&b"POST /a\r\n"[..], b"GET key\r\n", b"GET /a b\r\n"] {
        assert_eq!(Http::probe(Dir::ToServer, no), Probe::NoMatch, "{:?}", String::from_utf8_lossy(no));
    }
    let mut h = Http::default();
    assert_eq!(h.feed(Dir::ToServer, b"POST /a\r\n"), Feed::Invalid { consumed: 0 });
    // Lines after an HTTP/0.9 request that never lead to a request end HTTP after a bound.
    let mut h = Http::default();
    let mut junk = b"GET /a\r\n".to_vec();
    while junk.len() < 3 * parser::MAX_HEAD {
        junk.extend_from_slice(b"not a request line\r\n");
    }
    assert!(matches!(h.feed(Dir::ToServer, &junk), Feed::Invalid { consumed } if consumed <= parser::MAX_HEAD + 100));
}

#[test]
fn odd_request_lines_servers_accept() {
    // (request, method, path, version, violation)
    let cases: &[(&[u8], &str, &str, &str, bool)] = &[
        (b"GET  /a  HTTP/1.1\r\n\r\n", "GET", "/a", "1.1", true),
        (b"GET /a HTTP/1.1   \r\n\r\n", "GET", "/a", "1.1", true),
        (b"GET\t/a\tHTTP/1.0\r\n\r\n", "GET", "/a", "1.0", true),
        (b"GET\x0b/a\x1cHTTP/1.0\r\n\r\n", "GET", "/a", "1.0", true),
        (b"GET\r/a HTTP/1.0\r\n\r\n", "GET", "/a", "1.0", true),
        (b"GET . HTTP/1.0\r\n\r\n", "GET", ".", "1.0", false),
        (b"GET http://x/a?b=1 HTTP/1.1\r\n\r\n", "GET", "http://x/a?b=1", "1.1", false),
        (b"OPTIONS * HTTP/1.1\r\n\r\n", "OPTIONS", "*", "1.1", false),
        (b"GET /a?$(id);`x`|&<> HTTP/1.0\r\n\r\n", "GET", "/a?$(id);`x`|&<>", "1.0", false),
        (b"FOO /a HTTP/1.1\r\n\r\n", "FOO", "/a", "1.1", false),
        (b"get /a HTTP/1.1\r\n\r\n", "get", "/a", "1.1", false),
        (b"GET /a HTTP/1.10\r\n\r\n", "GET", "/a", "1.10", true),
        (b"GET /a HTTP/01.1\r\n\r\n", "GET", "/a", "1.1", true),
        (b"GET /a HTTP/0.9\r\n\r\n", "GET", "/a", "0.9", true),
    ];
    for &(req, method, path, version, violation) in cases {
        assert_eq!(Http::probe(Dir::ToServer, req), Probe::Match, "{:?}", String::from_utf8_lossy(req));
        let (m, _) = both_ways(req);
        assert_eq!((m["method"].as_str(), m["path"].as_str(), m["version"].as_str()), (Some(method), Some(path), Some(version)), "{:?}", String::from_utf8_lossy(req));
        assert_eq!(m.contains_key("violation"), violation, "{:?}: {m:?}", String::from_utf8_lossy(req));
        assert_eq!(m["requests"], 1);
    }
    // Injections behind odd whitespace and methods are checked like any.
    for req in [format!("GET\t{SQLI}\tHTTP/1.0\r\n\r\n"), format!("get  {SQLI}  HTTP/1.1\r\n\r\n"), format!("XGET {SQLI} HTTP/1.1\r\n\r\n")] {
        assert!(is_sqli(&both_ways(req.as_bytes()).1), "{req:?}");
    }
    // A long target up to the head bound is still a request and checked.
    let mut long = b"GET /search?".to_vec();
    while long.len() < parser::MAX_HEAD - 100 {
        long.extend_from_slice(b"q=apple&");
    }
    long.extend_from_slice(b"id=1%27%20OR%20%271%27%3D%271 HTTP/1.1\r\nHost: x\r\n\r\n");
    let (m, t) = both_ways(&long);
    assert_eq!(m["requests"], 1);
    assert!(is_sqli(&t));
    // An HTTP/0.x answer has no head either (python).
    let mut h = Http::default();
    feed_all(&mut h, Dir::ToServer, b"GET /a HTTP/0.9\r\n\r\n");
    assert_eq!(h.feed(Dir::ToClient, b"hello\n"), Feed::Consumed(6));
    assert_eq!(l7_of(&h)["responses"], 1);
}

#[test]
fn odd_field_lines_are_violations_and_still_parsed() {
    // obs-fold (python and Apache join it, nginx answers 400), a line without colon, a space
    // before the colon, a control byte.
    for head in [
        &b"GET /a HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n 2\r\n\r\n"[..],
        b"GET /a HTTP/1.1\r\nHost: h\r\nJunk\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost : h\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: h\r\nX: \x01\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: h\r\nX@Y: 1\r\n\r\n",
    ] {
        let mut two = head.to_vec();
        two.extend_from_slice(format!("GET {SQLI} HTTP/1.1\r\n\r\n").as_bytes());
        let (m, t) = both_ways(&two);
        assert_eq!((m["path"].as_str(), m["host"].as_str(), m["requests"].as_u64()), (Some("/a"), Some("h"), Some(2)), "{:?}", String::from_utf8_lossy(head));
        assert_eq!(m["violation"], true);
        assert!(is_sqli(&t));
    }
    // Identical repeated lengths: a violation (nginx refuses duplicates), not ambiguous: the
    // body is skipped by its length and the next request parsed.
    let (m, t) = both_ways(format!("POST /a HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nGET\
GET {SQLI} HTTP/1.1\r\n\r\n").as_bytes());
    assert_eq!((m["requests"].as_u64(), m["violation"].as_bool()), (Some(2), Some(true)));
    assert!(is_sqli(&t));
}

/// Requests whose body servers can read differently hide a second request from a parser that
/// believes one length: Warden trusts no length there and walks what follows line by line, so
/// the smuggled request is parsed and checked wherever a server would find it.
#[test]
fn smuggled_requests_behind_ambiguous_framing_are_checked() {
    let smuggled = format!("GET {SQLI} HTTP/1.1\r\nHost: x\r\n\r\n");
    // (name, bytes, the smuggling form recorded)
    let cases: Vec<(&str, Vec<u8>)> = vec![
        // CL.CL: conflicting lengths (nginx and Apache: 400; python's apps read the first).
        ("cl.cl", [&b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\nContent-Length: 45\r\n\r\n"[..], smuggled.as_bytes()].concat()),
        ("cl list", [&b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 60\r\n\r\nhello"[..], smuggled.as_bytes()].concat()),
        ("cl invalid", [&b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n"[..], smuggled.as_bytes()].concat()),
        // CL.TE: the front end reads the length, the back end the chunks.
        ("cl.te", [&b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"[..], smuggled.as_bytes()].concat()),
        // TE.CL: the smuggled request inside a chunk, where a length-reading server starts.
        ("te.cl", {
            let chunk = format!("GPOST /b HTTP/1.1\r\nX: {SQLI}\r\n\r\n{smuggled}");
            [format!("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n", chunk.len()).as_bytes(), chunk.as_bytes(), b"\r\n0\r\n\r\n"].concat()
        }),
        // A smuggled line that starts inside a body line, after bytes no method has.
        ("mid-line", [&b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nContent-Length: 9\r\n\r\nhell@"[..], smuggled.as_bytes()].concat()),
        // A final coding other than chunked (RFC: 400; python ignores it).
        ("te gzip", [&b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip\r\nContent-Length: 5\r\n\r\nhello"[..], smuggled.as_bytes()].concat()),
        // A folded or malformed length field.
        ("te folded", [&b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: x,\r\n chunked\r\n\r\n0\r\n\r\n"[..], smuggled.as_bytes()].concat()),
        ("cl spaced", [&b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length : 20\r\n\r\n"[..], smuggled.as_bytes()].concat()),
    ];
    let forms = [
        "content_length_conflict",
        "content_length_list_conflict",
        "invalid_content_length",
        "content_length_with_transfer_encoding",
        "content_length_with_transfer_encoding",
        "content_length_conflict",
        "content_length_with_transfer_encoding",
        "folded_framing_field",
        "spaced_framing_field_name",
    ];
    for ((name, bytes), form) in cases.iter().zip(forms) {
        assert_eq!(Http::probe(Dir::ToServer, bytes), Probe::Match, "{name}");
        let (m, t) = both_ways(bytes);
        assert_eq!((m["method"].as_str(), m["path"].as_str(), m["host"].as_str()), (Some("POST"), Some("/a"), Some("h")), "{name}: {m:?}");
        assert_eq!(m["violation"], true, "{name}");
        assert!(is_sqli(&t), "{name}: smuggled request not checked: {m:?}");
        // The framing itself is recorded first, with its field line.
        let first = t.first.unwrap();
        assert_eq!((first.id, first.reason), (crate::detect::ThreatId::HttpRequestSmuggling, form), "{name}: {first:?}");
        // Control: the same framing with a benign smuggled request raises only the framing.
        let benign = String::from_utf8_lossy(bytes).replace(SQLI, "/item?id=1");
        let (m, t) = both_ways(benign.as_bytes());
        assert_eq!(t.kinds.iter().collect::<Vec<_>>(), [crate::detect::ThreatId::HttpRequestSmuggling], "{name}: {:?}", t.first);
        assert_eq!(m["violation"], true);
    }
    // After the walk finds the next request, parsing goes on as usual (its own framing).
    let (m, _) = both_ways(&cases[3].1);
    assert_eq!(m["requests"], 2, "cl.te: the request after the chunks");
    // A form body of an ambiguous request is still checked, line by line.
    let form = b"POST /f HTTP/1.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 22\r\nContent-Length: 5\r\n\r\nid=1+UNION+ALL+SELECT+NULL%2CNULL--+-\r\n";
    assert!(is_sqli(&both_ways(form).1));
    // The walk is bounded: lines that never become a request end HTTP after the largest
    // length plus MAX_HEAD bytes.
    let mut h = Http::default();
    let mut junk = b"POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n".to_vec();
    let head = junk.len();
    while junk.len() < head + 3 * parser::MAX_HEAD {
        junk.extend_from_slice(b"0123456789 abcdef\r\n");
    }
    match h.feed(Dir::ToServer, &junk) {
        Feed::Invalid { consumed } => assert!((head + parser::MAX_HEAD..head + parser::MAX_HEAD + 40).contains(&consumed), "{consumed}"),
        other => panic!("{other:?}"),
    }
    // Lines longer than MAX_HEAD are walked in pieces, cut before their last word.
    let mut h = Http::default();
    let mut long = b"POST /a HTTP/1.1\r\nContent-Length: 100000\r\nContent-Length: 2\r\n\r\n".to_vec();
    long.extend(std::iter::repeat_n(b'@', parser::MAX_HEAD + 10));
    long.extend_from_slice(smuggled.as_bytes());
    assert!(feed_all(&mut h, Dir::ToServer, &long).is_empty());
    assert!(is_sqli(h.threats().unwrap()));
}

/// Responses with conflicting lengths are read with the first (RFC 9112 §6.3) and recorded.
#[test]
fn responses_with_conflicting_lengths_are_violations() {
    let req = b"GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
    let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nhiHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    let (_, m) = record(req, resp);
    assert_eq!((m["responses"].as_u64(), m["violation"].as_bool()), (Some(2), Some(true)));
}

/// Streams assembled at random from pieces of lenient request lines, odd field lines,
/// conflicting lengths, chunks and smuggled lines: whole, trickled one byte per segment and
/// split at random points, each gives the same unconsumed rest, record and threats (and never
/// panics or loops).
#[test]
fn random_lenient_streams_parse_the_same_however_segmented() {
    let pieces: &[&[u8]] = &[
        b"GET", b"POST", b"get", b"X-Y", b" ", b"  ", b"\t", b"\x0b", b"\r", b"\n", b"\r\n", b"\r\n\r\n",
        b"/a", b"/item?id=1%27%20OR%20%271%27%3D%271", b".", b"*", b"http://h/p?q", b"HTTP/1.1", b"HTTP/1.0",
        b"HTTP/01.10", b"HTTP/2.0", b"Host: h", b" folded", b"Junk", b"Content-Length: 3", b"Content-Length: 40",
        b"Content-Length : 2", b"Transfer-Encoding: chunked", b"Transfer-Encoding: gzip", b"0", b"5", b"hello",
        b"@@", b"\x01", b"\xc3\xa9", b"Content-Type: application/x-www-form-urlencoded", b"a=1&b=2",
        // Issue 15's forms: smuggling, lengths, chunk lines, OGNL, XML bodies.
        b"Transfer-Encoding: xchunked", b"Transfer_Encoding: chunked", b"Content-Length: -1", b"Content-Length: 1, 2",
        b"0x5", b"fffffffffffffffff", b"80000000", b"5;a\rb", b"%{(#_memberAccess)}", b"${(1+1)}", b"%24%7B%23context%5B",
        b"Content-Type: application/xml", b"Content-Type: multipart/form-data", b"Content-Disposition: form-data; filename=\"%{#context['x']}\"",
        b"<next class=\"java.lang.ProcessBuilder\"><command>",
    ];
    let mut rng = Rng(0x0dd5_eed5);
    for round in 0..2000 {
        let mut b = Vec::new();
        if round % 3 == 0 {
            b.extend_from_slice(b"GET / HTTP/1.1\r\n\r\n");
        }
        for _ in 0..rng.below(40) + 1 {
            b.extend_from_slice(pieces[rng.below(pieces.len())]);
        }
        let mut whole = Http::default();
        let left = consumed_at(&mut whole, &b, &[]);
        let mut t = Http::default();
        let left_t = consumed_at(&mut t, &b, &(1..b.len()).collect::<Vec<_>>());
        let mut cuts: Vec<usize> = (0..rng.below(6)).map(|_| rng.below(b.len() + 1)).collect();
        cuts.sort_unstable();
        let mut s = Http::default();
        let left_s = consumed_at(&mut s, &b, &cuts);
        let what = String::from_utf8_lossy(&b).into_owned();
        for (p, l) in [(&t, &left_t), (&s, &left_s)] {
            assert_eq!(l, &left, "{what:?}");
            assert_eq!(l7_of(p), l7_of(&whole), "{what:?}");
            let (x, y) = (p.threats().copied().unwrap_or_default(), whole.threats().copied().unwrap_or_default());
            assert_eq!((x.first, x.count, x.kinds, x.others), (y.first, y.count, y.kinds, y.others), "{what:?}");
        }
    }
}

// ---- Issue 15: http_negative_body_length, http_request_smuggling, apache_struts_rce, recorded
// to the server with the offending field line (or framing line) as evidence, the same whole
// and trickled one byte per segment (`both_ways`).

use crate::detect::ThreatId;

/// The first recorded form of `id` (kind, reason, evidence) in `t`.
fn form_of(t: &crate::detect::Threats, id: ThreatId) -> Option<(&'static str, String)> {
    let first = t.first.filter(|f| f.id == id).map(|f| (f.reason, f.evidence.to_string()));
    first.or_else(|| t.others.iter().flatten().find(|o| o.0 == id).map(|o| (o.2, String::new())))
}

#[test]
fn negative_signed_and_overflowing_lengths() {
    for (v, reason) in [
        ("-1", "negative_content_length"),
        ("-0", "negative_content_length"),
        ("-4294967295", "negative_content_length"),
        ("+5", "signed_content_length"),
        ("-abc", "signed_content_length"),
        ("-", "signed_content_length"),
        ("18446744073709551616", "overflowing_content_length"),
        ("999999999999999999999999999999", "overflowing_content_length"),
        ("9007199254740993", "implausible_content_length"),
        ("18446744073709551615", "implausible_content_length"),
        ("5, -1", "negative_content_length"),
    ] {
        let head = format!("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: {v}\r\n\r\n");
        // The request after it is still found and checked (no length is trusted).
        let bytes = format!("{head}GET {SQLI} HTTP/1.1\r\n\r\n");
        let (m, t) = both_ways(bytes.as_bytes());
        let first = t.first.unwrap_or_else(|| panic!("{v}: nothing recorded"));
        assert_eq!((first.id, first.dir, first.reason), (ThreatId::HttpNegativeBodyLength, Dir::ToServer, reason), "{v}");
        assert_eq!(first.evidence.as_str(), format!("Content-Length: {v}"));
        assert_eq!((m["violation"].as_bool(), m["requests"].as_u64()), (Some(true), Some(2)), "{v}");
        assert!(is_sqli(&t), "{v}");
        assert!(!t.kinds.contains(ThreatId::HttpRequestSmuggling), "{v}: one kind per form");
    }
    // Chunk sizes: NeuVector's test (a 32-bit signed reader sees a negative size), and sizes
    // past MAX_CHUNK, after which no length is trusted.
    let chunked = |size: &str| format!("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{size}\r\nhello");
    let (_, t) = both_ways(chunked("80000000").as_bytes());
    assert_eq!(form_of(&t, ThreatId::HttpNegativeBodyLength), Some(("chunk_size_over_int32", "80000000\r\n".into())));
    let (m, t) = both_ways(format!("{}\r\nGET {SQLI} HTTP/1.1\r\n\r\n", chunked("ffffffffffff")).as_bytes());
    assert_eq!(form_of(&t, ThreatId::HttpNegativeBodyLength), Some(("implausible_chunk_size", "ffffffffffff".into())));
    assert!(is_sqli(&t) && m["violation"] == true);
    // Controls: lengths servers agree on.
    for v in ["0", "5", "00000000000000000000005", "9007199254740992", "5, 5"] {
        let (_, t) = both_ways(format!("POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: {v}\r\n\r\n").as_bytes());
        assert!(t.is_empty(), "{v}: {:?}", t.first);
    }
    let (_, t) = both_ways(chunked("7fffffff").as_bytes());
    assert!(t.is_empty(), "{:?}", t.first);
}

/// The published request smuggling forms (RFC 9112 §6.1, §6.3, §7.1; PortSwigger's "HTTP
/// request smuggling" and "TE obfuscation" forms; Kettle 2019, Kallus 2023 "chunk extensions
/// and bare LF"), each with the field or framing line that carries it.
#[test]
fn smuggling_forms_are_recorded_with_their_line() {
    let te = |v: &str| format!("POST /a HTTP/1.1\r\nHost: h\r\n{v}\r\n\r\n0\r\n\r\n");
    let cases: Vec<(String, &str, &str)> = vec![
        (te("Transfer-Encoding: xchunked"), "transfer_encoding_obfuscated", "Transfer-Encoding: xchunked"),
        (te("Transfer-Encoding: \"chunked\""), "transfer_encoding_obfuscated", "Transfer-Encoding: \"chunked\""),
        (te("Transfer-Encoding: chunked\x0b"), "transfer_encoding_obfuscated", "Transfer-Encoding: chunked\x0b"),
        (te("Transfer-Encoding: chunked;a=b"), "transfer_encoding_obfuscated", "Transfer-Encoding: chunked;a=b"),
        (te("Transfer-Encoding: chunked, identity"), "transfer_encoding_not_chunked", "Transfer-Encoding: chunked, identity"),
        (te("Transfer-Encoding: identity"), "transfer_encoding_not_chunked", "Transfer-Encoding: identity"),
        (te("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked"), "transfer_encoding_repeated", "Transfer-Encoding: chunked"),
        (te("Transfer-Encoding: chunked\r\nTransfer-Encoding: x"), "transfer_encoding_repeated", "Transfer-Encoding: x"),
        (te("Transfer-Encoding: chunked, chunked"), "chunked_repeated", "Transfer-Encoding: chunked, chunked"),
        (te("Transfer-Encoding : chunked"), "spaced_framing_field_name", "Transfer-Encoding : chunked"),
        (te("Transfer-Encoding\t: chunked"), "spaced_framing_field_name", "Transfer-Encoding\t: chunked"),
        (te("Transfer-Encoding\x0b: chunked"), "malformed_framing_field_name", "Transfer-Encoding\x0b: chunked"),
        (te("Transfer_Encoding: chunked"), "underscore_framing_field_name", "Transfer_Encoding: chunked"),
        (te("Content_Length: 5"), "underscore_framing_field_name", "Content_Length: 5"),
        (te("Transfer-Encoding:\r\n chunked"), "folded_framing_field", "Transfer-Encoding:\r\n chunked"),
        (te("X-A: 1\r\n Transfer-Encoding: chunked"), "folded_framing_field", "X-A: 1\r\n Transfer-Encoding: chunked"),
        (te("Content-Length: 4\r\nTransfer-Encoding: chunked"), "content_length_with_transfer_encoding", "Transfer-Encoding: chunked"),
        (te("Transfer-Encoding: chunked\r\nContent-Length: 4"), "content_length_with_transfer_encoding", "Transfer-Encoding: chunked"),
        (te("Content-Length: 4\r\nContent-Length: 5"), "content_length_conflict", "Content-Length: 5"),
        (te("Content-Length: 4, 5"), "content_length_list_conflict", "Content-Length: 4, 5"),
        (te("Content-Length: 4x"), "invalid_content_length", "Content-Length: 4x"),
        (te("Content-Length:"), "invalid_content_length", "Content-Length:"),
        ("POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n".into(), "transfer_encoding_in_http10", "Transfer-Encoding: chunked"),
    ];
    let chunked = |body: &str| format!("POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
    let framing: Vec<(String, &str, &str)> = vec![
        (chunked("0x5\r\nhello\r\n0\r\n\r\n"), "chunk_size_invalid", "0x"),
        (chunked(" 5\r\nhello\r\n0\r\n\r\n"), "chunk_size_invalid", " "),
        (chunked("5\rX\r\nhello\r\n0\r\n\r\n"), "chunk_size_invalid", "5\r"),
        (chunked("fffffffffffffffff\r\nhello\r\n0\r\n\r\n"), "chunk_size_overflow", "fffffffffffffffff"),
        (chunked("5 5\r\nhello\r\n0\r\n\r\n"), "chunk_extension_invalid", "5 5\r\n"),
        (chunked("5\nhello\r\n0\r\n\r\n"), "bare_lf_in_chunked", "5\n"),
        (chunked("5\r\nhello\n0\r\n\r\n"), "bare_lf_in_chunked", "\n"),
        (chunked("5;a\rb\r\nhello\r\n0\r\n\r\n"), "bare_cr_in_chunked", "5;a\rb\r\n"),
        (chunked("3\r\nhelloXX\r\n0\r\n\r\n"), "chunk_missing_crlf", "l"),
        (chunked("5\r\nhello\rX0\r\n\r\n"), "chunk_missing_crlf", "\rX"),
        (chunked("0\r\nContent-Length: 5\r\n\r\n"), "framing_field_in_trailer", "Content-Length: 5\r\n"),
        (chunked(&format!("5;{}\r\nhello\r\n0\r\n\r\n", "e".repeat(parser::MAX_LINE))), "chunk_line_too_long", "5;eeeeee"),
        (chunked(&format!("0\r\nX-T: {}\r\n\r\n", "t".repeat(parser::MAX_LINE))), "chunk_line_too_long", "X-T: ttt"),
    ];
    for (bytes, reason, evidence) in cases.iter().chain(&framing) {
        let (m, t) = both_ways(bytes.as_bytes());
        let first = t.first.unwrap_or_else(|| panic!("{bytes:?}: nothing recorded"));
        assert_eq!((first.id, first.dir, first.reason), (ThreatId::HttpRequestSmuggling, Dir::ToServer, *reason), "{bytes:?}");
        assert!(first.evidence.as_str().starts_with(&evidence[..evidence.len().min(120)]), "{bytes:?}: {:?}", first.evidence);
        assert_eq!(m["violation"], true, "{bytes:?}");
        // A request behind the form is found and checked wherever a server may start reading.
        let smuggled = format!("{bytes}GET {SQLI} HTTP/1.1\r\n\r\n");
        let (_, t) = both_ways(smuggled.as_bytes());
        assert!(is_sqli(&t), "{bytes:?}: the request behind it was not checked");
    }
    // Once per body for chunked framing forms, but per request for head forms.
    let (_, t) = both_ways(chunked("1\nx\n1\nx\n0\n\n").as_bytes());
    assert_eq!(t.count, 1);
    let two = format!("{}{}", te("Transfer-Encoding: xchunked"), te("Transfer-Encoding: xchunked"));
    let mut h = Http::default();
    let _ = feed_all(&mut h, Dir::ToServer, two.as_bytes());
    assert!(h.threats().unwrap().count >= 2);
    // Controls: framing every server reads the same way.
    for ok in [
        te("Transfer-Encoding: chunked"),
        te("Transfer-Encoding: CHUNKED"),
        te("Transfer-Encoding: gzip, chunked"),
        te("Transfer-Encoding:  chunked  "),
        te("Transfer-Encoding: chunked\r\nTransfer-Encoding:"),
        te("Content-Length: 0\r\nContent-Length: 0"),
        te("X-Transfer-Encoding-Note: chunked, identity\r\nContent-Lengthy: -1"),
        chunked("5;name=value\r\nhello\r\n5 ; a=b\r\nworld\r\n0\r\nX-Trailer: 1\r\n\r\n"),
        "GET / HTTP/1.0\r\nContent-Length: 0\r\n\r\n".into(),
    ] {
        let (_, t) = both_ways(ok.as_bytes());
        assert!(t.is_empty(), "{ok:?}: {:?}", t.first);
    }
}

/// Apache Struts OGNL injections (CVE-2017-5638 Content-Type, S2-046 multipart filename,
/// CVE-2018-11776 namespace in the path, S2-032 `method:` parameter, S2-016 `redirect:`,
/// CVE-2017-9805 XStream XML body), from the public exploits, and their controls.
#[test]
fn struts_ognl_in_headers_targets_and_bodies() {
    let s2_045 = "%{(#_='multipart/form-data').(#dm=@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS).(#_memberAccess?(#_memberAccess=#dm):((#container=#context['com.opensymphony.xwork2.ActionContext.container']).(#ognlUtil=#container.getInstance(@com.opensymphony.xwork2.ognl.OgnlUtil@class)).(#ognlUtil.getExcludedPackageNames().clear()).(#ognlUtil.getExcludedClasses().clear()).(#context.setMemberAccess(#dm)))).(#cmd='id').(#iswin=(@java.lang.System@getProperty('os.name').toLowerCase().contains('win'))).(#cmds=(#iswin?{'cmd.exe','/c',#cmd}:{'/bin/bash','-c',#cmd})).(#p=new java.lang.ProcessBuilder(#cmds)).(#p.redirectErrorStream(true)).(#process=#p.start()).(#ros=(@org.apache.struts2.ServletActionContext@getResponse().getOutputStream())).(@org.apache.commons.io.IOUtils@copy(#process.getInputStream(),#ros)).(#ros.flush())}";
    let multipart_body = "------x\r\nContent-Disposition: form-data; name=\"upload\"; filename=\"%{#context['com.opensymphony.xwork2.dispatcher.HttpServletResponse'].addHeader('X-Test','Kaboom')}\0b\"\r\nContent-Type: text/plain\r\n\r\nx\r\n------x--\r\n";
    let xml_body = r#"<map><entry><jdk.nashorn.internal.objects.NativeString><flags>0</flags><value class="com.sun.xml.internal.bind.v2.runtime.unmarshaller.Base64Data"><dataHandler><dataSource class="com.sun.xml.internal.ws.encoding.xml.XMLMessage$XmlDataSource"><is class="javax.crypto.CipherInputStream"><cipher class="javax.crypto.NullCipher"><serviceIterator class="javax.imageio.spi.FilterIterator"><iter class="javax.imageio.spi.FilterIterator"><iter class="java.util.Collections$EmptyIterator"/><next class="java.lang.ProcessBuilder"><command><string>/bin/sh</string><string>-c</string><string>id</string></command></next></iter></serviceIterator></cipher></is></dataSource></dataHandler></value></jdk.nashorn.internal.objects.NativeString></entry></map>"#;
    let post = |path: &str, ct: &str, body: &str| format!("POST {path} HTTP/1.1\r\nHost: h\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n{body}", body.len());
    let chunked = |ct: &str, body: &str| format!("POST /orders HTTP/1.1\r\nHost: h\r\nContent-Type: {ct}\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n", body.len());
    let cases: Vec<(String, &str, &str)> = vec![
        (format!("GET /index.action HTTP/1.1\r\nHost: h\r\nContent-Type: {s2_045}\r\n\r\n"), "ognl_member_access", "Content-Type: %{(#_='multipart/form-data')"),
        // Folded into the previous field (python and Apache join it).
        (format!("GET /index.action HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n {s2_045}\r\n\r\n"), "ognl_member_access", "X-A: 1\r\n %{(#_="),
        (format!("GET /index.action HTTP/1.1\r\nHost: h\r\nUser-Agent: ${{(#a=@java.lang.Runtime@getRuntime().exec('id'))}}\r\n\r\n"), "ognl_static_member", "User-Agent: ${(#a="),
        ("GET /struts2-showcase/%24%7B%28%23dm%3D%40ognl.OgnlContext%40DEFAULT_MEMBER_ACCESS%29.%28%23a%3D%40java.lang.Runtime%40getRuntime%28%29.exec%28%27id%27%29%29%7D/actionChain1.action HTTP/1.1\r\nHost: h\r\n\r\n".into(), "ognl_member_access", ""),
        ("GET /struts2-showcase/${(111+111)}/actionChain1.action HTTP/1.1\r\nHost: h\r\n\r\n".into(), "ognl_probe", "/struts2-showcase/${(111+111)}/actionChain1.action"),
        ("GET /index.action?method:%23_memberAccess%3d@ognl.OgnlContext@DEFAULT_MEMBER_ACCESS,%23res%3d%40org.apache.struts2.ServletActionContext%40getResponse(),%23w%3d%23res.getWriter(),%23w.print(1) HTTP/1.1\r\nHost: h\r\n\r\n".into(), "ognl_member_access", ""),
        (post("/login.action", "application/x-www-form-urlencoded", "redirect%3A%24%7B%23context%5B%27xwork.MethodAccessor.denyMethodExecution%27%5D%3Dfalse%7D=1"), "ognl_member_access", ""),
        (post("/upload.action", "multipart/form-data; boundary=----x", multipart_body), "ognl_expression", "Content-Disposition: form-data; name=\"upload\"; filename=\"%{#context["),
        (post("/struts2-rest-showcase/orders/3", "application/xml", xml_body), "xstream_gadget", ""),
        (post("/struts2-rest-showcase/orders/3.xml", "text/plain", xml_body), "xstream_gadget", ""),
        (chunked("application/xml", xml_body), "xstream_gadget", ""),
    ];
    // OGNL chains are dense in quotes and parentheses: the SQL injection checks of the same
    // text (statement rules in four contexts) cost more per byte than on ordinary targets.
    for (bytes, reason, evidence) in &cases {
        let (_, t) = both_ways_within(bytes.as_bytes(), 40.0);
        let first = t.first.unwrap_or_else(|| panic!("{bytes:?}: nothing recorded"));
        assert_eq!((first.id, first.dir, first.reason), (ThreatId::ApacheStrutsRce, Dir::ToServer, *reason), "{bytes:?}");
        assert!(first.evidence.as_str().starts_with(evidence), "{:?} vs {evidence:?}", first.evidence);
        // Also when the request follows a benign one on the same connection.
        let (m, t) = both_ways_within(format!("GET / HTTP/1.1\r\nHost: h\r\n\r\n{bytes}").as_bytes(), 40.0);
        assert!(t.kinds.contains(ThreatId::ApacheStrutsRce) && m["requests"] == 2, "{bytes:?}");
    }
    // Controls: real Content-Types, multipart uploads, XML documents, templates and Java text
    // in forms, JSON.
    for ok in [
        post("/upload", "multipart/form-data; boundary=----x", "------x\r\nContent-Disposition: form-data; name=\"f\"; filename=\"report ${2024} #1.pdf\"\r\n\r\n%PDF-1.4 #context\r\n------x--\r\n"),
        post("/orders/3.xml", "application/xml", "<?xml version=\"1.0\"?><order><id>3</id><note>see java.lang.ProcessBuilder docs</note></order>"),
        post("/cms/save", "application/x-www-form-urlencoded", "tpl=%3Cp+th%3Atext%3D%22%24%7B%23strings.isEmpty%28name%29%7D%22%3E&code=Runtime.getRuntime%28%29.exec%28cmd%29"),
        post("/api", "application/json", "{\"q\":\"${user.name}\",\"tags\":[\"#context\",\"#application\"]}"),
        "GET /search?q=%23context+%23application&u=a@b.example.com HTTP/1.1\r\nHost: h\r\nCookie: _ga=GA1.2.3; pref=${theme}\r\nAccept: text/html,application/xhtml+xml,application/xml;q=0.9\r\n\r\n".into(),
    ] {
        let (_, t) = both_ways_within(ok.as_bytes(), 40.0);
        assert!(t.is_empty(), "{ok:?}: {:?}", t.first);
    }
}

#[test]
fn awaiting_headers_tracks_an_open_request_head() {
    // Two keep-alive requests, the first with a body, trickled one byte per segment: the head
    // is open from its first byte to its last, closed in the body and between requests.
    let first = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\n";
    let second = b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n";
    let mut all = first.to_vec();
    all.extend_from_slice(b"abc");
    all.extend_from_slice(second);
    let mut h = Http::default();
    assert!(!h.awaiting_headers() && h.head_bytes() == 0);
    let mut pending: Vec<u8> = Vec::new();
    let mut open = Vec::new();
    for &c in &all {
        pending.push(c);
        match h.feed(Dir::ToServer, &pending) {
            Feed::Consumed(n) => drop(pending.drain(..n)),
            Feed::Need { consumed, .. } => drop(pending.drain(..consumed)),
            other => panic!("{other:?}"),
        }
        open.push((h.awaiting_headers(), h.head_bytes()));
    }
    for (i, &(o, n)) in open.iter().enumerate() {
        let in_first = i + 1 < first.len();
        let in_second = i >= first.len() + 3 && i + 1 < all.len();
        assert_eq!(o, in_first || in_second, "byte {i}");
        let expect = if in_first { i + 1 } else if in_second { i + 1 - first.len() - 3 } else { 0 };
        assert_eq!(n as usize, expect, "byte {i}");
    }
    assert_eq!(l7_of(&h)["requests"], 2);
    // Responses do not open a request head.
    let mut h = Http::default();
    assert!(feed_all(&mut h, Dir::ToServer, second).is_empty());
    let _ = h.feed(Dir::ToClient, b"HTTP/1.1 200 OK\r\nConte");
    assert!(!h.awaiting_headers());
}
