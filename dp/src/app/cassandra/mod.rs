//! Cassandra CQL native protocol, versions 3 to 5 and the DataStax Enterprise versions DSE_V1
//! and DSE_V2 (0x41, 0x42: v4 framing; the DataStax drivers open with DSE_V2 by default)
//! (`native_protocol_v4.spec` §2 frame header, §2.2 flags, §2.4 opcodes, §3 notations, §4.1.1
//! STARTUP, §4.1.4 QUERY, §4.1.5 PREPARE, §4.2.1 ERROR; `native_protocol_v5.spec` §2 framing
//! with segments). See [`parser`] for the pure functions.
//!
//! Written here: the Rust CQL crates (`cdrs-tokio`, `scylla-cql`) decode whole frames into owned
//! values from a complete buffer; this module only needs the 9-byte header and the start of a
//! few bodies. Each frame is framed by its length; only its first [`HEAD`] bytes are looked at
//! and the rest is skipped by counting, so nothing larger is buffered.
//!
//! Protocol v5: STARTUP and its answer use the legacy framing; after a v5 STARTUP the client,
//! and after a v5 READY or AUTHENTICATE the server, send segments (6-byte header, or 8 bytes
//! when STARTUP asked for `COMPRESSION`; payload; CRC32). Frames inside uncompressed segments
//! are read (those that start within the first [`HEAD`] bytes of a self-contained segment, and
//! the frame starting a multi-segment frame); compressed segments are only counted. CRCs are
//! not verified. The client direction switches right after its v5 STARTUP, so a server refusing
//! that STARTUP with an ERROR (and the client retrying in legacy framing) is misread as segments.
//!
//! Detection: a frame header with version 3..=5 or 0x41..=0x42 (plus the direction bit 0x80
//! from the server), only defined flags, a stream id that is non-negative from the client and
//! a request's id or -1 (events, §2.3) from the server (so DNS responses, whose QR bit falls on
//! the stream's sign bit, do not pass for 0xc1/0xc2 frames), an opcode valid for the direction
//! and a length up to 256 MB, plus a plausible body start: OPTIONS and READY are empty; STARTUP
//! is a string map with a printable first key; QUERY and PREPARE a long string whose first
//! bytes are printable; SUPPORTED a string multimap; ERROR a defined error code; other opcodes
//! are accepted on the header. Inter-node (gossip) handshakes are not recognised.
//!
//! Every uncompressed QUERY / PREPARE text goes to the statement-level SQL injection detector
//! with CQL's quoting rules ([`crate::detect::Threats::sql_in`]).
//!
//! Extracted: protocol version and first stream id of each direction, opcode names (first
//! [`MAX_OPCODES`] distinct), frame counts, the first QUERY/PREPARE text (512 bytes) and their
//! count, STARTUP options `CQL_VERSION`, `COMPRESSION` and `DRIVER_NAME` (64 bytes each), error
//! count and first error code, v5 segment count. A gap inside a skipped frame shortens the
//! skip; any other gap stops that direction.

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{FrameHeader, Parse};

/// Bytes of each frame or segment looked at; the rest is skipped.
pub const HEAD: usize = 1024;
/// Query text kept (bytes).
pub const MAX_QUERY: usize = 512;
/// Distinct opcodes remembered.
pub const MAX_OPCODES: usize = 8;

/// Per-direction framing state.
#[derive(Debug, Clone, Copy, Default)]
struct Side {
    skip: u64,
    stopped: bool,
    /// v5 segment framing in use.
    segmented: bool,
    /// Bytes of a multi-segment frame still to come in later segments.
    cont: u64,
    frames: u64,
    version: Option<u8>,
    first_stream: Option<i16>,
}

/// Per-session CQL state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Cassandra {
    side: [Side; 2],
    opcodes: [u8; MAX_OPCODES],
    n_opcodes: usize,
    query: Option<Text<MAX_QUERY>>,
    queries: u64,
    cql_version: Option<Text<64>>,
    compression: Option<Text<64>>,
    driver_name: Option<Text<64>>,
    errors: u64,
    error_code: Option<i32>,
    segments: u64,
    violation: bool,
    gap: bool,
    threats: crate::detect::Threats,
}

impl Cassandra {
    /// Opcodes seen (first [`MAX_OPCODES`] distinct).
    pub fn opcodes(&self) -> &[u8] {
        self.opcodes.get(..self.n_opcodes).unwrap_or(&[])
    }

    /// One frame of direction `d`; `body` is its start (possibly truncated).
    fn on_frame(&mut self, d: usize, h: &FrameHeader, body: &[u8]) {
        let s = &mut self.side[d];
        s.frames = s.frames.saturating_add(1);
        s.version.get_or_insert(h.version);
        s.first_stream.get_or_insert(h.stream);
        if self.n_opcodes < MAX_OPCODES && !self.opcodes().contains(&h.opcode) {
            self.opcodes[self.n_opcodes] = h.opcode;
            self.n_opcodes += 1;
        }
        let compressed = h.flags & parser::FLAG_COMPRESSION != 0;
        match h.opcode {
            parser::STARTUP if d == 0 => {
                if !compressed {
                    let opt = |k: &[u8]| parser::string_map_get(body, k).map(text::<64>);
                    self.cql_version = self.cql_version.or(opt(b"CQL_VERSION"));
                    self.compression = self.compression.or(opt(b"COMPRESSION"));
                    self.driver_name = self.driver_name.or(opt(b"DRIVER_NAME"));
                }
                if parser::uses_segments(h.version) {
                    self.side[0].segmented = true;
                }
            }
            parser::READY | parser::AUTHENTICATE if d == 1 && parser::uses_segments(h.version) => {
                self.side[1].segmented = true
            }
            parser::QUERY | parser::PREPARE if d == 0 => {
                self.queries = self.queries.saturating_add(1);
                if !compressed {
                    if let Some(len) = parser::be32(body, 0).and_then(|l| usize::try_from(l).ok()) {
                        let q = body.get(4..).unwrap_or_default();
                        let q = &q[..q.len().min(len)];
                        self.threats.sql_in(Dir::ToServer, crate::detect::sql::Dialect::Cql, q.len() < len, q);
                    }
                }
                if self.query.is_none() && !compressed {
                    self.query = parser::long_string(body, MAX_QUERY).map(text);
                }
            }
            parser::ERROR if d == 1 => {
                self.errors = self.errors.saturating_add(1);
                if !compressed {
                    self.error_code = self.error_code.or(parser::be32(body, 0));
                }
            }
            _ => {}
        }
    }

    /// Frames inside a segment payload (`p`, possibly truncated; `len` its full length).
    fn on_segment(&mut self, d: usize, seg: &parser::Segment, p: &[u8]) {
        self.segments = self.segments.saturating_add(1);
        if self.compression.is_some() {
            return;
        }
        if !seg.self_contained && self.side[d].cont > 0 {
            self.side[d].cont = self.side[d].cont.saturating_sub(seg.payload as u64);
            return;
        }
        let mut off = 0;
        while let Parse::Ok(h, n) = parser::frame_header(p.get(off..).unwrap_or(&[])) {
            let start = off + n;
            let body = p.get(start..start.saturating_add(h.length).min(p.len())).unwrap_or(&[]);
            self.on_frame(d, &h, body);
            let end = start.saturating_add(h.length);
            if !seg.self_contained {
                self.side[d].cont = end.saturating_sub(seg.payload) as u64;
                return;
            }
            off = end;
        }
    }

    fn stop(&mut self, d: usize) {
        self.violation = true;
        self.side[d].stopped = true;
    }
}

/// Known error codes (§9).
fn error_code(c: i32) -> bool {
    matches!(c, 0x0000 | 0x000a | 0x0100 | 0x1000..=0x1003 | 0x1100 | 0x1200 | 0x1300 | 0x1400 | 0x1500)
        || matches!(c, 0x2000 | 0x2100 | 0x2200 | 0x2300 | 0x2400 | 0x2500)
}

/// Whether a `[string]` at `off` (key of a map) is there and printable: `Some(true/false)`, or
/// `None` when cut short.
fn printable_key(b: &[u8], off: usize) -> Option<bool> {
    let len = usize::from(parser::be16(b, off)?);
    if !(1..=64).contains(&len) {
        return Some(false);
    }
    let k = b.get(off + 2..off + 2 + len)?;
    Some(k.iter().all(|c| c.is_ascii_graphic()))
}

fn probe_frame(b: &[u8], client: bool) -> Probe {
    let ok = |i: usize, f: &dyn Fn(u8) -> bool| b.get(i).is_none_or(|&c| f(c));
    let version_ok = |c: u8| (c & 0x80 == 0) == client && parser::known_version(c & 0x7f);
    let op_ok: fn(u8) -> bool = if client { parser::request_op } else { parser::response_op };
    if !ok(0, &version_ok)
        || !ok(1, &|c| c & !parser::FLAGS == 0)
        || !ok(2, &|c| c & 0x80 == 0 || (!client && c == 0xff))
        || !ok(4, &op_ok)
        || !ok(5, &|c| c <= 0x10)
    {
        return Probe::NoMatch;
    }
    let h = match parser::frame_header(b) {
        Parse::Ok(h, _) => h,
        Parse::Incomplete(_) => return Probe::NeedMore,
        Parse::Invalid => return Probe::NoMatch,
    };
    if h.stream < -1 {
        return Probe::NoMatch;
    }
    let body = &b[parser::FRAME_HEADER..b.len().min(parser::FRAME_HEADER + h.length)];
    if h.flags & parser::FLAG_COMPRESSION != 0 {
        return if h.length > 0 { Probe::Match } else { Probe::NoMatch };
    }
    let verdict = |v: Option<bool>| match v {
        Some(true) => Probe::Match,
        Some(false) => Probe::NoMatch,
        None => Probe::NeedMore,
    };
    match h.opcode {
        parser::OPTIONS | parser::READY => verdict(Some(h.length == 0)),
        // [string map] / [string multimap]: 1..=64 entries, printable first key.
        parser::STARTUP | 0x06 => {
            let Some(n) = parser::be16(body, 0) else { return verdict((h.length < 2).then_some(false)) };
            if !(1..=64).contains(&n) {
                return Probe::NoMatch;
            }
            verdict(printable_key(body, 2))
        }
        parser::QUERY | parser::PREPARE => {
            let Some(len) = parser::be32(body, 0) else { return verdict((h.length < 4).then_some(false)) };
            let Ok(len) = usize::try_from(len) else { return Probe::NoMatch };
            if len == 0 || len > h.length - 4 {
                return Probe::NoMatch;
            }
            let want = len.min(16);
            match body.get(4..4 + want) {
                Some(q) => verdict(Some(q.iter().all(|&c| c.is_ascii_graphic() || c.is_ascii_whitespace() || c >= 0x80))),
                None => Probe::NeedMore,
            }
        }
        parser::ERROR => match parser::be32(body, 0) {
            Some(c) => verdict(Some(error_code(c))),
            None => verdict((h.length < 4).then_some(false)),
        },
        _ => verdict(Some(h.length > 0)),
    }
}

impl AppParser for Cassandra {
    const APP: App = App::Cassandra;
    const PORTS: &'static [u16] = &[9042, 9142];
    const TRANSPORT: Transport = Transport::Tcp;

    fn probe(dir: Dir, data: &[u8]) -> Probe {
        probe_frame(data, dir == Dir::ToServer)
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        let mut off = 0;
        loop {
            let s = &mut self.side[d];
            if s.stopped {
                return Feed::Consumed(data.len());
            }
            if super::skip_body(&mut s.skip, data, &mut off) {
                return Feed::Consumed(off);
            }
            let rest = &data[off..];
            if rest.is_empty() {
                return Feed::Consumed(off);
            }
            let total = if s.segmented {
                let seg = match parser::segment(rest, self.compression.is_some()) {
                    Parse::Ok(seg, _) => seg,
                    Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                    Parse::Invalid => {
                        self.stop(d);
                        return Feed::Invalid { consumed: off };
                    }
                };
                let total = seg.total();
                let window = total.min(HEAD);
                let Some(w) = rest.get(..window) else { return Feed::Need { consumed: off, at_least: window } };
                let p = w.get(seg.header..(seg.header + seg.payload).min(window)).unwrap_or(&[]);
                self.on_segment(d, &seg, p);
                total
            } else {
                let h = match parser::frame_header(rest) {
                    Parse::Ok(h, _) => h,
                    Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                    Parse::Invalid => {
                        self.stop(d);
                        return Feed::Invalid { consumed: off };
                    }
                };
                let total = parser::FRAME_HEADER + h.length;
                let window = total.min(HEAD);
                let Some(body) = rest.get(parser::FRAME_HEADER..window) else {
                    return Feed::Need { consumed: off, at_least: window };
                };
                self.on_frame(d, &h, body);
                total
            };
            let take = total.min(rest.len());
            off += take;
            self.side[d].skip = (total - take) as u64;
        }
    }

    fn gap(&mut self, dir: Dir, len: usize) -> bool {
        let s = &mut self.side[dir as usize];
        self.gap = true;
        if s.stopped {
            return true;
        }
        if !super::skip_gap(&mut s.skip, len) {
            s.stopped = true;
            return false;
        }
        true
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        for (s, name) in self.side.iter().zip(["request", "response"]) {
            if let Some(v) = s.version {
                out.insert(format!("{name}_version"), v.into());
            }
            if let Some(st) = s.first_stream {
                out.insert(format!("{name}_first_stream"), st.into());
            }
        }
        out.insert(
            "opcodes".into(),
            self.opcodes().iter().map(|&o| Value::from(parser::opcode_name(o).unwrap_or("unknown"))).collect(),
        );
        out.insert("frames_to_server".into(), self.side[0].frames.into());
        out.insert("frames_to_client".into(), self.side[1].frames.into());
        if let Some(q) = &self.query {
            out.insert("query".into(), q.as_str().into());
        }
        out.insert("queries".into(), self.queries.into());
        for (k, v) in [("cql_version", &self.cql_version), ("compression", &self.compression), ("driver_name", &self.driver_name)] {
            if let Some(v) = v {
                out.insert(k.into(), v.as_str().into());
            }
        }
        out.insert("errors".into(), self.errors.into());
        if let Some(c) = self.error_code {
            out.insert("error_code".into(), c.into());
        }
        if self.segments > 0 {
            out.insert("segments".into(), self.segments.into());
        }
        if self.violation {
            out.insert("violation".into(), true.into());
        }
        if self.gap {
            out.insert("gap".into(), true.into());
        }
    }

    fn threats(&self) -> Option<&crate::detect::Threats> {
        Some(&self.threats)
    }
}

#[cfg(test)]
mod tests;
