//! Test helpers for app parsers: a miniature stream engine (buffering exactly as the real one
//! does), prefix and segmentation checks, and flow extraction from the corpus pcaps.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Map;

use super::{AppParser, Dir, Feed, Probe};
use crate::flow::{End, FlowKey};
use crate::wire::{self, tcpflag, L4};

/// Feeds `segments` of one direction the way the stream engine does: unconsumed bytes are kept
/// and presented again with the next segment appended. Returns the bytes never consumed.
pub fn feed_segments<P: AppParser>(p: &mut P, dir: Dir, segments: &[&[u8]]) -> Vec<u8> {
    let mut pending: Vec<u8> = Vec::new();
    let mut need = 0usize;
    for seg in segments {
        pending.extend_from_slice(seg);
        if pending.len() < need {
            continue;
        }
        match p.feed(dir, &pending) {
            Feed::Consumed(n) => {
                pending.drain(..n.min(pending.len()));
                need = 0;
            }
            Feed::Need { consumed, at_least } => {
                pending.drain(..consumed.min(pending.len()));
                need = at_least;
            }
            Feed::Done => return Vec::new(),
            // The stream stopped being the protocol: what was not consumed is returned.
            Feed::Invalid { consumed } => {
                pending.drain(..consumed.min(pending.len()));
                return pending;
            }
        }
    }
    pending
}

/// Feeds all of `bytes` as one segment.
pub fn feed_all<P: AppParser>(p: &mut P, dir: Dir, bytes: &[u8]) -> Vec<u8> {
    feed_segments(p, dir, &[bytes])
}

/// The `l7` object of a parser.
pub fn l7_of<P: AppParser>(p: &P) -> Map<String, serde_json::Value> {
    let mut m = Map::new();
    p.l7(&mut m);
    m
}

/// Asserts that `bytes` (a real first message and what follows in `dir`) is recognised on the
/// whole, that no prefix of it is rejected, and that feeding any prefix never panics.
pub fn check_every_prefix<P: AppParser>(dir: Dir, bytes: &[u8]) {
    assert_eq!(P::probe(dir, bytes), Probe::Match, "{:?} does not match its own bytes", P::APP);
    for cut in 0..bytes.len() {
        let prefix = &bytes[..cut];
        assert_ne!(P::probe(dir, prefix), Probe::NoMatch, "{:?}: prefix of {cut} bytes rejected", P::APP);
        let mut p = P::default();
        let _ = feed_all(&mut p, dir, prefix);
        let _ = l7_of(&p);
    }
}

/// Asserts that splitting `bytes` into two segments at every boundary yields the same `l7` as
/// feeding it whole.
pub fn check_every_split<P: AppParser>(dir: Dir, bytes: &[u8]) {
    let mut whole = P::default();
    feed_all(&mut whole, dir, bytes);
    let want = l7_of(&whole);
    for cut in 1..bytes.len() {
        let mut p = P::default();
        feed_segments(&mut p, dir, &[&bytes[..cut], &bytes[cut..]]);
        assert_eq!(l7_of(&p), want, "{:?}: split at {cut} changes the result", P::APP);
    }
}

/// One flow of a capture, reassembled.
#[derive(Debug, Clone, Default)]
pub struct Flow {
    /// IP protocol.
    pub proto: u8,
    /// Client port.
    pub client_port: u16,
    /// Server port.
    pub server_port: u16,
    /// TCP: client-to-server bytes in sequence order (retransmissions removed).
    pub to_server: Vec<u8>,
    /// TCP: server-to-client bytes.
    pub to_client: Vec<u8>,
    /// UDP: datagram payloads with their direction, in capture order.
    pub datagrams: Vec<(Dir, Vec<u8>)>,
    /// TCP: the payload of each segment as captured, with its direction (segmentation tests).
    pub segments: Vec<(Dir, Vec<u8>)>,
}

/// Path of a corpus file (`corpus/NAME` in the repository).
pub fn corpus(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpus").join(name)
}

/// Reads a corpus pcap and returns its flows in order of first frame.
pub fn corpus_flows(name: &str) -> Vec<Flow> {
    pcap_flows(&corpus(name))
}

/// Path of a small capture kept in the repository (`dp/tests/captures/NAME`; what made each is
/// in `dp/tests/captures/README.md`).
pub fn capture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures").join(name)
}

/// Reads a repository capture ([`capture`]) and returns its flows in order of first frame.
pub fn capture_flows(name: &str) -> Vec<Flow> {
    pcap_flows(&capture(name))
}

/// Reads the pcap at `path` and returns its TCP and UDP flows in order of first frame.
pub fn pcap_flows(path: &std::path::Path) -> Vec<Flow> {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = pcap_file::pcap::PcapReader::new(file).unwrap();
    struct Acc {
        flow: Flow,
        client: End,
        isn: [Option<u32>; 2],
        segs: [BTreeMap<u32, Vec<u8>>; 2],
    }
    let mut flows: Vec<Acc> = Vec::new();
    let mut index: BTreeMap<(u8, [u8; 16], [u8; 16], u16, u16), usize> = BTreeMap::new();
    while let Some(Ok(pkt)) = r.next_packet() {
        let Ok(f) = wire::decode(&pkt.data) else { continue };
        let Some(ip) = f.ip else { continue };
        if !matches!(ip.l4, L4::Tcp { .. } | L4::Udp) {
            continue;
        }
        let (k, end): (FlowKey, End) = FlowKey::new(0, ip.proto, ip.src, ip.sport, ip.dst, ip.dport);
        let id = (k.proto, k.lo.0, k.hi.0, k.lo_port, k.hi_port);
        let i = *index.entry(id).or_insert_with(|| {
            let client = match ip.l4 {
                L4::Tcp { flags, .. } if flags & (tcpflag::SYN | tcpflag::ACK) == tcpflag::SYN | tcpflag::ACK => {
                    if end == End::Lo { End::Hi } else { End::Lo }
                }
                _ => end,
            };
            let (cp, sp) = if client == end { (ip.sport, ip.dport) } else { (ip.dport, ip.sport) };
            flows.push(Acc {
                flow: Flow { proto: ip.proto, client_port: cp, server_port: sp, ..Flow::default() },
                client,
                isn: [None, None],
                segs: [BTreeMap::new(), BTreeMap::new()],
            });
            flows.len() - 1
        });
        let a = &mut flows[i];
        let dir = if end == a.client { Dir::ToServer } else { Dir::ToClient };
        match ip.l4 {
            L4::Tcp { seq, flags, .. } => {
                let d = dir as usize;
                if flags & tcpflag::SYN != 0 {
                    a.isn[d] = Some(seq.wrapping_add(1));
                }
                if !ip.payload.is_empty() {
                    let base = *a.isn[d].get_or_insert(seq);
                    let off = seq.wrapping_sub(base);
                    a.segs[d].entry(off).or_insert_with(|| ip.payload.to_vec());
                    a.flow.segments.push((dir, ip.payload.to_vec()));
                }
            }
            _ => a.flow.datagrams.push((dir, ip.payload.to_vec())),
        }
    }
    flows
        .into_iter()
        .map(|mut a| {
            for d in 0..2 {
                let mut out: Vec<u8> = Vec::new();
                for (off, data) in &a.segs[d] {
                    let off = *off as usize;
                    if off + data.len() <= out.len() {
                        continue;
                    }
                    if off > out.len() {
                        break; // a hole: stop at the first gap
                    }
                    out.extend_from_slice(&data[out.len() - off..]);
                }
                if d == 0 {
                    a.flow.to_server = out;
                } else {
                    a.flow.to_client = out;
                }
            }
            a.flow
        })
        .collect()
}

/// The bytes of both directions of a TCP flow in the order they were captured: each captured
/// segment contributes what it adds to its direction's reassembled stream (retransmitted bytes
/// are left out; a segment that arrived early brings the bytes before it along).
pub fn interleaved(f: &Flow) -> Vec<(Dir, Vec<u8>)> {
    let mut at = [0usize; 2];
    let mut out = Vec::new();
    for (d, seg) in &f.segments {
        let stream = if *d == Dir::ToServer { &f.to_server } else { &f.to_client };
        let i = *d as usize;
        let Some(pos) = stream[at[i]..].windows(seg.len()).position(|w| w == seg.as_slice()) else { continue };
        let end = at[i] + pos + seg.len();
        out.push((*d, stream[at[i]..end].to_vec()));
        at[i] = end;
    }
    out
}

/// The chunks of [`interleaved`] with the first `skip[d]` bytes of direction `d` left out: the
/// flow as Warden sees it when it starts in the middle (mid-stream pickup), a chunk cut where
/// the skipped bytes end.
pub fn picked_up(f: &Flow, skip: [usize; 2]) -> Vec<(Dir, Vec<u8>)> {
    let mut left = skip;
    let mut out = Vec::new();
    for (d, b) in interleaved(f) {
        let l = &mut left[d as usize];
        let k = (*l).min(b.len());
        *l -= k;
        if k < b.len() {
            out.push((d, b[k..].to_vec()));
        }
    }
    out
}

/// The chunks of [`interleaved`] without the first `skip[d]` captured segments of direction
/// `d`: a mid-stream pickup as Warden sees one, starting at a segment.
pub fn picked_up_at_segments(f: &Flow, skip: [usize; 2]) -> Vec<(Dir, Vec<u8>)> {
    let mut left = skip;
    interleaved(f)
        .into_iter()
        .filter(|(d, _)| {
            let l = &mut left[*d as usize];
            let keep = *l == 0;
            *l = l.saturating_sub(1);
            keep
        })
        .collect()
}

/// Runs `chunks` through a mid-stream session of a real [`super::engine::Engine`] on
/// `server_port` (segments of at most `piece` bytes), the directions of the chunks taken as the
/// session's (`swap`: the other way round, a wrong guess of the client). Swaps the engine's
/// directions when it asks ([`super::engine::Engine::take_flip`]), as the inspector does.
/// Returns the engine, the context and whether the ends were swapped.
pub fn run_midstream(chunks: &[(Dir, Vec<u8>)], server_port: u16, piece: usize, swap: bool) -> (super::engine::Engine, u32, bool) {
    use super::engine::{Engine, EngineConfig};
    let mut e = Engine::new(EngineConfig { max_sessions: 1, ..EngineConfig::default() });
    let i = e.open_midstream(wire::ipproto::TCP, server_port).unwrap();
    let mut seq = [7000u32, 900_000u32];
    let mut flipped = swap;
    let mut n = 0u32;
    for (d, b) in chunks {
        for part in b.chunks(piece.max(1)) {
            n += 1;
            let sdir = if flipped { d.flip() } else { *d };
            e.tcp_segment(i, sdir, seq[*d as usize], part, server_port, n);
            seq[*d as usize] = seq[*d as usize].wrapping_add(part.len() as u32);
            if e.take_flip(i) {
                flipped = !flipped;
            }
        }
    }
    (e, i, flipped != swap)
}

/// Feeds `chunks` (both directions, in order) to `p` as the stream engine does, each chunk in
/// pieces of at most `piece` bytes (1: trickled byte by byte); a direction the parser answered
/// `Done` or `Invalid` is not fed again.
pub fn feed_interleaved<P: AppParser>(p: &mut P, chunks: &[(Dir, Vec<u8>)], piece: usize) {
    let mut pending: [Vec<u8>; 2] = Default::default();
    let mut need = [0usize; 2];
    let mut stopped = [false; 2];
    for (d, bytes) in chunks {
        let i = *d as usize;
        for part in bytes.chunks(piece.max(1)) {
            if stopped[i] {
                break;
            }
            pending[i].extend_from_slice(part);
            if pending[i].len() < need[i] {
                continue;
            }
            match p.feed(*d, &pending[i]) {
                Feed::Consumed(n) => {
                    pending[i].drain(..n.min(pending[i].len()));
                    need[i] = 0;
                }
                Feed::Need { consumed, at_least } => {
                    pending[i].drain(..consumed.min(pending[i].len()));
                    need[i] = at_least;
                }
                Feed::Done | Feed::Invalid { .. } => stopped[i] = true,
            }
        }
    }
}

/// The captures threat detectors must stay silent on: every corpus file, every capture of
/// `dp/tests/captures/` outside `threats/` (attacks on protect mode, evasion forms, link
/// types), and the benign traces of `threats/` named in `benign` (README there).
pub fn benign_captures(benign: &[&str]) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = other_corpus_files(&[]).into_iter().map(|f| corpus(&f)).collect();
    for dir in ["", "attacks", "evasion", "linktypes"] {
        for e in std::fs::read_dir(capture(dir)).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "pcap") {
                files.push(p);
            }
        }
    }
    files.extend(benign.iter().map(|b| capture(&format!("threats/{b}"))));
    files
}

/// Corpus files (by name) whose labelled protocol is none of `own` (the part after the last `/`
/// counts: `sqlinjection/http` is `http`).
pub fn other_corpus_files(own: &[&str]) -> Vec<String> {
    let labels: serde_json::Value =
        serde_json::from_slice(&std::fs::read(corpus("labels.json")).unwrap()).unwrap();
    labels
        .as_object()
        .unwrap()
        .iter()
        .filter(|(_, v)| {
            let p = v["protocol"].as_str().unwrap_or("");
            !own.contains(&p.rsplit('/').next().unwrap_or(p))
        })
        .map(|(k, _)| k.clone())
        .collect()
}

/// Asserts that `P::probe` never says `Match` on the first bytes of either direction of any TCP
/// flow (cut at every length below 80, every 97th length and at 4096 bytes) nor on any datagram
/// of the corpus files of other protocols than `own`.
pub fn check_rejects_other_corpus<P: AppParser>(own: &[&str]) {
    let files = other_corpus_files(own);
    assert!(files.len() > 10, "only {} other corpus files", files.len());
    for file in files {
        for f in corpus_flows(&file) {
            for (d, b) in [(Dir::ToServer, &f.to_server), (Dir::ToClient, &f.to_client)] {
                let max = b.len().min(4096);
                for cut in (1..=max).filter(|c| *c < 80 || c % 97 == 0 || *c == max) {
                    assert_ne!(P::probe(d, &b[..cut]), Probe::Match, "{:?} matched {file} {d:?} at {cut}", P::APP);
                }
            }
            for (d, dg) in &f.datagrams {
                assert_ne!(P::probe(*d, dg), Probe::Match, "{:?} matched a datagram of {file}", P::APP);
            }
        }
    }
}

/// Asserts that `P::probe` never says `Match` on `count` pseudo-random buffers of `len` bytes in
/// either direction.
pub fn check_rejects_random<P: AppParser>(count: usize, len: usize) {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut buf = vec![0u8; len];
    for _ in 0..count {
        buf.iter_mut().for_each(|b| *b = rng.next() as u8);
        for d in [Dir::ToServer, Dir::ToClient] {
            assert_ne!(P::probe(d, &buf), Probe::Match, "{:?} matched random bytes {buf:?}", P::APP);
        }
    }
}

/// xorshift64* pseudo-random numbers (deterministic, no dependency) for mutation tests.
pub struct Rng(pub u64);

impl Rng {
    /// The next number.
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number below `n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_corpus_reassembles_requests_and_responses() {
        let flows = corpus_flows("http.pcap");
        let f = flows.iter().find(|f| f.server_port == 80 && !f.to_server.is_empty()).unwrap();
        assert!(f.to_server.starts_with(b"GET ") || f.to_server.starts_with(b"POST ") || f.to_server.starts_with(b"HEAD "));
        assert!(f.to_client.starts_with(b"HTTP/1."));
    }

    #[test]
    fn dns_corpus_has_datagrams_both_ways() {
        let flows = corpus_flows("dns.pcap");
        let f = flows.iter().find(|f| f.proto == 17 && f.server_port == 53).unwrap();
        assert!(f.datagrams.iter().any(|(d, _)| *d == Dir::ToServer));
        assert!(f.datagrams.iter().any(|(d, _)| *d == Dir::ToClient));
    }
}
