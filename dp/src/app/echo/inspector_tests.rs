//! Echo recognition through the whole [`Inspector`]: corpus sessions re-sent over a handshake,
//! with tiny payloads riding on ACKs before their first data (the false echoes of issue 11),
//! and real echo sessions, which stay echo however their first bytes are segmented.

use crate::app::testutil::{corpus_flows, interleaved, Flow};
use crate::app::Dir;
use crate::inspect::{FrameMeta, Inspector, MalformedPolicy, Verdict};
use crate::session::Timeouts;
use crate::wire::tcpflag::{ACK, PSH, SYN};

const ISN: [u32; 2] = [1000, 5000];

/// A TCP frame 198.18.0.1:40000 -> 198.18.0.2:`port` (client to server) or back.
fn frame(dir: Dir, port: u16, flags: u8, seq: u32, ack: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = crate::wire::tests::tcp4(&[], flags, payload);
    let (mut src, mut dst) = ([198, 18, 0, 1], [198, 18, 0, 2]);
    let (mut sport, mut dport) = (40000u16, port);
    if dir == Dir::ToClient {
        std::mem::swap(&mut src, &mut dst);
        std::mem::swap(&mut sport, &mut dport);
    }
    f[26..30].copy_from_slice(&src);
    f[30..34].copy_from_slice(&dst);
    f[34..36].copy_from_slice(&sport.to_be_bytes());
    f[36..38].copy_from_slice(&dport.to_be_bytes());
    f[38..42].copy_from_slice(&seq.to_be_bytes());
    f[42..46].copy_from_slice(&ack.to_be_bytes());
    f[48..50].copy_from_slice(&65535u16.to_be_bytes());
    crate::wire::tests::fix_checksums(&mut f);
    f
}

/// What rides on an ACK of each direction right after the handshake, before its first data.
#[derive(Clone, Copy)]
enum Lead<'a> {
    /// Nothing.
    None,
    /// The direction's first `n` bytes alone (its stack sent them in a segment of their own;
    /// the next segment starts at the stream's start again, overlapping them).
    Split(usize),
    /// Extra bytes before the stream's first bytes (both directions the same ones).
    Extra(&'a [u8]),
    /// A keep-alive: one byte below the next sequence number (RFC 9293 §3.8.4).
    KeepAlive,
}

/// Sends `f` (handshake, the lead, then its bytes in captured order) through an inspector and
/// returns the session's app.
fn app_of(f: &Flow, lead: Lead) -> String {
    let mut i = Inspector::new(64, Timeouts::default(), MalformedPolicy::Drop);
    let port = f.server_port;
    let mut n = 0u64;
    let mut send = |i: &mut Inspector, dir: Dir, fr: Vec<u8>| {
        n += 1;
        let iface = if dir == Dir::ToServer { 1 } else { 2 };
        let v = i.process(&fr, FrameMeta::new(0, iface, n * 1000));
        assert_eq!(v, Verdict::Forward);
    };
    let mut next = [ISN[0] + 1, ISN[1] + 1];
    send(&mut i, Dir::ToServer, frame(Dir::ToServer, port, SYN, ISN[0], 0, b""));
    send(&mut i, Dir::ToClient, frame(Dir::ToClient, port, SYN | ACK, ISN[1], next[0], b""));
    send(&mut i, Dir::ToServer, frame(Dir::ToServer, port, ACK, next[0], next[1], b""));
    let chunks = interleaved(f);
    for dir in [Dir::ToServer, Dir::ToClient] {
        let d = dir as usize;
        let first = chunks.iter().find(|(cd, _)| *cd == dir).map(|(_, b)| b.as_slice()).unwrap_or(&[]);
        let ack = next[1 - d];
        match lead {
            Lead::None => {}
            Lead::Split(k) => send(&mut i, dir, frame(dir, port, ACK, next[d], ack, &first[..k.min(first.len())])),
            Lead::Extra(b) => {
                send(&mut i, dir, frame(dir, port, ACK, next[d], ack, b));
                next[d] += b.len() as u32;
            }
            Lead::KeepAlive => send(&mut i, dir, frame(dir, port, ACK, next[d] - 1, ack, b"\0")),
        }
    }
    // The peers acknowledge the leads.
    send(&mut i, Dir::ToClient, frame(Dir::ToClient, port, ACK, next[1], next[0], b""));
    send(&mut i, Dir::ToServer, frame(Dir::ToServer, port, ACK, next[0], next[1], b""));
    for (dir, bytes) in &chunks {
        let d = *dir as usize;
        send(&mut i, *dir, frame(*dir, port, ACK | PSH, next[d], next[1 - d], bytes));
        next[d] += bytes.len() as u32;
    }
    let v = i.snapshot(4);
    assert_eq!(v.len(), 1, "one session");
    crate::record::to_record(&v[0], |_| String::new()).app
}

fn first_tcp(file: &str) -> Flow {
    corpus_flows(file)
        .into_iter()
        .find(|f| f.proto == 6 && !f.to_server.is_empty() && !f.to_client.is_empty())
        .unwrap_or_else(|| panic!("a TCP flow with data both ways in {file}"))
}

/// Tiny payloads riding on ACKs do not make a TLS or HTTP session an echo: 1 and 2 bytes
/// split from each direction's start (TLS: `16` / `16 03` both ways, which the old rule, all
/// of a client's first message shorter than 4 bytes, called echo), keep-alive bytes, extra
/// empty lines before the request and the status line (`\n` / `\r\n` both ways).
#[test]
fn tiny_payloads_on_acks_do_not_make_an_echo() {
    let tls = first_tcp("tls.pcap");
    let http = first_tcp("http.pcap");
    assert_eq!(app_of(&tls, Lead::None), "tls");
    assert_eq!(app_of(&http, Lead::None), "http");
    for lead in [Lead::Split(1), Lead::Split(2), Lead::KeepAlive] {
        assert_eq!(app_of(&tls, lead), "tls");
        assert_eq!(app_of(&http, lead), "http");
    }
    assert_eq!(&tls.to_server[..2], &tls.to_client[..2], "the same bytes both ways");
    for extra in [&b"\n"[..], b"\r\n"] {
        // Servers skip empty lines before a request (RFC 9112 §2.2) and clients before a
        // status line (httparse), but the HTTP probe does not sniff a status line after one:
        // the session is not echo, nor HTTP.
        assert_ne!(app_of(&http, Lead::Extra(extra)), "echo", "{extra:?}");
        assert_ne!(app_of(&tls, Lead::Extra(extra)), "echo", "{extra:?}");
    }
}

/// A real echo session (corpus, ncat against socat) stays echo, however its first bytes are
/// segmented and with tiny leading bytes both ways (an echo server returns them too).
#[test]
fn real_echo_stays_echo() {
    let flows: Vec<Flow> = corpus_flows("echo.pcap").into_iter().filter(|f| f.proto == 6).collect();
    assert!(!flows.is_empty());
    for f in &flows {
        for lead in [Lead::None, Lead::Split(1), Lead::Split(2), Lead::Extra(b"\0"), Lead::KeepAlive] {
            assert_eq!(app_of(f, lead), "echo");
        }
    }
}
