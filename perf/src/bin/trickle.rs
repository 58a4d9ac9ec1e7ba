//! Work per byte when a request trickles in (perf/RESULTS.md, "Work per byte: trickled
//! requests and long query strings", issue 9 item 7).
//!
//! Each case is a byte stream of one direction fed through Warden's real TCP stream tracking
//! (`stream::Stream` with a `BufPool`, which keeps the bytes a parser did not consume and
//! presents them again with the next segment appended) to one app parser, either **whole** (one
//! segment) or **trickled** (one-byte segments, as an attacker sends them). For each size it
//! prints the time per byte of both (the best of several rounds, release build) and the bytes
//! the parser and its detectors examined per byte (`examined()` counters). Linear work shows as
//! a trickled column that does not grow with the size.
//!
//! Cases: HTTP/1 heads (a long `Cookie`, a long query string of plain words); pipelined HTTP
//! requests with long chunk extensions, trailers and form bodies; query strings that the SQL
//! injection detector checks value by value (many tiny values, long values of unbalanced
//! quotes or comments); Redis inline commands; a TLS ClientHello cut into one-byte records.
//!
//! `cargo run --release -p warden-perf --bin trickle` (`--quick`: fewer rounds).
use std::hint::black_box;
use std::time::{Duration, Instant};

use warden_dp::app::http::Http;
use warden_dp::app::redis::Redis;
use warden_dp::app::tls::Tls;
use warden_dp::app::{AppParser, Dir, Feed};
use warden_dp::stream::{BufPool, Sink, Stream};

/// Feeds one direction of one parser from a [`Stream`].
struct To<P: AppParser> {
    p: P,
    done: bool,
}

impl<P: AppParser> Sink for To<P> {
    fn data(&mut self, bytes: &[u8]) -> Feed {
        let r = self.p.feed(Dir::ToServer, bytes);
        self.done |= r == Feed::Done;
        r
    }

    fn gap(&mut self, len: usize) {
        self.p.gap(Dir::ToServer, len);
    }
}

/// A parser with a work counter.
trait Counted: AppParser {
    fn work(&self) -> u64;
}

impl Counted for Http {
    fn work(&self) -> u64 {
        self.examined()
    }
}

impl Counted for Redis {
    fn work(&self) -> u64 {
        self.examined()
    }
}

impl Counted for Tls {
    fn work(&self) -> u64 {
        self.examined()
    }
}

/// Feeds `bytes` in segments of `seg` bytes; returns the parser and whether inspection went on
/// to the end (no bypass).
fn run<P: Counted>(bytes: &[u8], seg: usize) -> (P, bool) {
    let mut pool = BufPool::new(64 << 20, 64 * 1024);
    let mut s = Stream::default();
    s.start(1);
    let mut sink = To { p: P::default(), done: false };
    let mut seq = 1u32;
    for piece in bytes.chunks(seg) {
        s.segment(seq, piece, &mut pool, &mut sink);
        seq = seq.wrapping_add(piece.len() as u32);
    }
    let ok = s.bypass.is_none();
    s.release(&mut pool);
    (sink.p, ok)
}

/// Best time per byte over `rounds` rounds of at least `min` each.
fn ns_per_byte<P: Counted>(bytes: &[u8], seg: usize, rounds: usize, min: Duration) -> f64 {
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let t = Instant::now();
        let mut n = 0u64;
        while t.elapsed() < min || n == 0 {
            black_box(run::<P>(black_box(bytes), seg));
            n += 1;
        }
        best = best.min(t.elapsed().as_nanos() as f64 / n as f64 / bytes.len() as f64);
    }
    best
}

/// One row: case, size, time per byte whole and trickled, work per byte whole and trickled.
fn row<P: Counted>(case: &str, bytes: &[u8], rounds: usize, min: Duration) {
    let (whole, ok_w) = run::<P>(bytes, bytes.len());
    let (trickled, ok_t) = run::<P>(bytes, 1);
    assert!(ok_w && ok_t, "{case}: inspection bypassed");
    let mut a = serde_json::Map::new();
    let mut b = serde_json::Map::new();
    whole.l7(&mut a);
    trickled.l7(&mut b);
    assert_eq!(a, b, "{case}: trickled and whole records differ");
    let w = ns_per_byte::<P>(bytes, bytes.len(), rounds, min);
    let t = ns_per_byte::<P>(bytes, 1, rounds, min);
    let n = bytes.len() as f64;
    println!(
        "| {case} | {} | {w:.1} | {t:.1} | {:.1} | {:.1} | {:.1} |",
        bytes.len(),
        t / w,
        whole.work() as f64 / n,
        trickled.work() as f64 / n
    );
}

/// A GET whose head is about `n` bytes: a query of plain words or a long cookie.
fn head(n: usize, query: bool) -> Vec<u8> {
    let mut req = b"GET /search?".to_vec();
    while query && req.len() < n - 40 {
        req.extend_from_slice(b"q=apple&");
    }
    req.extend_from_slice(b"x=1 HTTP/1.1\r\nHost: a\r\nCookie: ");
    req.resize(n - 4, b'c');
    req.extend_from_slice(b"\r\n\r\n");
    req
}

/// Pipelined requests, about `n` bytes: a form POST with a long header, a chunked POST with a
/// long chunk extension and a long trailer.
fn pipelined(n: usize) -> Vec<u8> {
    let mut u = b"POST /f?a=1&b=2 HTTP/1.1\r\nHost: h\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 23\r\nX-Long: ".to_vec();
    u.extend(std::iter::repeat_n(b'v', 300));
    u.extend_from_slice(b"\r\n\r\nname=O%27Reilly&n=2&z\n");
    u.extend_from_slice(b"POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=");
    u.extend(std::iter::repeat_n(b'e', 500));
    u.extend_from_slice(b"\r\nhello\r\n0\r\nX-Trailer: ");
    u.extend(std::iter::repeat_n(b't', 400));
    u.extend_from_slice(b"\r\n\r\n");
    let mut out = Vec::new();
    while out.len() + u.len() <= n.max(u.len()) {
        out.extend_from_slice(&u);
    }
    out
}

/// A GET whose query string (about `n` bytes) repeats `pair`.
fn query(pair: &[u8], n: usize) -> Vec<u8> {
    let mut req = b"GET /item?".to_vec();
    while req.len() + pair.len() + 32 <= n {
        req.extend_from_slice(pair);
    }
    req.extend_from_slice(b"z=1 HTTP/1.1\r\nHost: a\r\n\r\n");
    req
}

/// A chunked form POST of about `n` bytes whose chunks (4 KiB each, all checked) repeat `pair`.
fn form(pair: &[u8], n: usize) -> Vec<u8> {
    let mut req =
        b"POST /f HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    let mut chunk = Vec::new();
    while chunk.len() + pair.len() <= 4096 {
        chunk.extend_from_slice(pair);
    }
    let target = n.max(req.len() + chunk.len() + 16);
    while req.len() + chunk.len() + 16 <= target {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    req
}

/// Redis inline commands of about 4 KiB, `n` bytes in all.
fn redis_inline(n: usize) -> Vec<u8> {
    let mut cmd = b"SET k ".to_vec();
    cmd.resize(n.min(4096) - 4, b'v');
    cmd.extend_from_slice(b"\r\n");
    let mut out = Vec::new();
    while out.len() + cmd.len() <= n {
        out.extend_from_slice(&cmd);
    }
    out
}

/// A TLS 1.2 ClientHello with a padding extension, cut into records of one handshake byte:
/// about `n` bytes of records.
fn tls_one_byte_records(n: usize) -> Vec<u8> {
    let pad = (n / 6).saturating_sub(60).max(4);
    let mut h = vec![1u8, 0, 0, 0, 3, 3];
    h.extend_from_slice(&[7; 32]); // random
    h.push(0); // session id
    h.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    h.extend_from_slice(&[1, 0]); // null compression
    let ext_len = (4 + pad) as u16;
    h.extend_from_slice(&ext_len.to_be_bytes());
    h.extend_from_slice(&[0, 21]);
    h.extend_from_slice(&(pad as u16).to_be_bytes());
    h.extend(std::iter::repeat_n(0u8, pad));
    let body = (h.len() - 4) as u32;
    h[1..4].copy_from_slice(&body.to_be_bytes()[1..]);
    let mut out = Vec::new();
    for b in h {
        out.extend_from_slice(&[22, 3, 1, 0, 1, b]);
    }
    out
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, min) = if quick { (2, Duration::from_millis(30)) } else { (5, Duration::from_millis(150)) };
    println!("| case | bytes | whole ns/byte | trickled ns/byte | trickled / whole | examined/byte whole | examined/byte trickled |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
    for n in [1024, 4096, 8192, 15 * 1024] {
        row::<Http>("HTTP head, long Cookie", &head(n, false), rounds, min);
    }
    for n in [1024, 4096, 8192, 15 * 1024] {
        row::<Http>("HTTP head, query of plain words", &head(n, true), rounds, min);
    }
    for n in [4096, 16 * 1024, 60 * 1024] {
        row::<Http>("HTTP pipelined: form, chunk ext., trailer", &pipelined(n), rounds, min);
    }
    for (name, pair) in [
        ("query `a=%27&` (tiny values)", &b"a=%27&"[..]),
        ("query `q=apple&` (plain)", b"q=apple&"),
        ("query `v=%27%5C…` (600x)", &[b"v=".as_slice(), &b"%27%5C".repeat(600), b"&"].concat()),
        ("query `v=/*+…` (1200x)", &[b"v=".as_slice(), &b"/*+".repeat(1200), b"&"].concat()),
    ] {
        for n in [4096, 15 * 1024] {
            row::<Http>(&format!("HTTP {name}"), &query(pair, n), rounds, min);
        }
    }
    for (name, unit) in [("`%27%5C`", &b"%27%5C"[..]), ("`/*+`", b"/*+"), ("`1+(`", b"1+("), ("`%27+OR+`", b"%27+OR+")] {
        for n in [1024, 4096, 12 * 1024] {
            let v: Vec<u8> = unit.iter().copied().cycle().take(n).collect();
            let pair = [b"v=".as_slice(), &v, b"&"].concat();
            row::<Http>(&format!("HTTP query, one value of {name}"), &query(&pair, pair.len() + 48), rounds, min);
        }
    }
    for (name, pair) in [("`a=%27&`", &b"a=%27&"[..]), ("`v=%27%5C…`", &[b"v=".as_slice(), &b"%27%5C".repeat(600), b"&"].concat())] {
        for n in [16 * 1024, 60 * 1024] {
            row::<Http>(&format!("HTTP chunked form {name}"), &form(pair, n), rounds, min);
        }
    }
    for n in [4096, 16 * 1024, 60 * 1024] {
        row::<Redis>("Redis inline commands of 4 KiB", &redis_inline(n), rounds, min);
    }
    for n in [4096, 16 * 1024, 60 * 1024] {
        row::<Tls>("TLS ClientHello in 1-byte records", &tls_one_byte_records(n), rounds, min);
    }
}
