//! HTTP/2 over cleartext (h2c) and gRPC (RFC 9113 framing, RFC 7541 HPACK, gRPC over HTTP/2).
//!
//! Detection: the client's connection preface (RFC 9113 §3.4) to the server, a SETTINGS frame
//! (§6.5) as the server's first bytes. Both h2c variants are handled:
//! - prior knowledge (RFC 9113 §3.3): the client starts with the preface;
//! - upgrade (RFC 7540 §3.2): an HTTP/1.1 request with `Upgrade: h2c` comes first. The `http`
//!   parser stops at the server's `101` (leaving it unconsumed, see its module docs); the engine
//!   then builds [`Http2::after_upgrade`] from the `Http` state and feeds it both directions'
//!   unconsumed bytes: to the client from the `HTTP/1.1 101` head on (skipped here), to the
//!   server from the connection preface on. Stream 1 is the upgraded request; its method,
//!   authority and path come from the HTTP/1 request.
//!
//! Frames (§4.1) are walked one by one; payloads that are not needed are skipped, never
//! buffered (the bytes still owed of a frame are kept in the state, so a 16 MiB DATA frame
//! costs nothing). Header blocks (HEADERS + CONTINUATION, §6.2, §6.10) up to
//! [`parser::MAX_BLOCK`] bytes are decoded with the allocation-free HPACK decoder in
//! [`hpack`] (written here; its module docs say why): the first block of each direction
//! completely (the dynamic table starts empty), later ones for their literal fields only.
//!
//! Extracted: the first request's `:method`, `:authority` (or `host`), `:path` (bounded),
//! `:scheme`, `content-type` and `user-agent`; the first response's `:status` and
//! `content-type`; the first `grpc-status`; counts of client streams, HEADERS frames and frames
//! per direction, RST_STREAM frames, and the GOAWAY error code. The app becomes
//! [`App::Grpc`] when the request `content-type` starts with `application/grpc`, and the
//! record then adds `service` and `method` split from `:path` `/package.Service/Method`, the
//! HTTP method moving to `http_method`.
//!
//! SQL injection: every request's `:path` is checked like an HTTP/1 target (URL-decoded path
//! and query values, [`crate::detect::Threats::http_target`]); request bodies are not.
//!
//! Violations (recorded, parsing goes on while the framing is intact): frames larger than the
//! receiver's SETTINGS_MAX_FRAME_SIZE, malformed SETTINGS/RST_STREAM, CONTINUATION out of
//! place, HPACK decoding errors.

pub mod hpack;
pub mod parser;

use serde_json::{Map, Value};

use super::http::Http;
use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{Block, Kind, Parse};

/// Where a direction is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    /// Expecting the client preface (to server) or the server's first frame or `101` head.
    #[default]
    Start,
    /// Expecting a frame header.
    Frames,
    /// Inside a frame payload being skipped: bytes still owed.
    Skip(u32),
    /// Framing lost (garbage, gap): stop.
    Stopped,
}

/// Per-direction counters and framing state.
#[derive(Debug, Clone, Copy, Default)]
struct Side {
    phase: Phase,
    frames: u32,
    headers: u32,
    rst: u32,
    /// The first header block of this direction was seen.
    first_done: bool,
    /// A header block that is not being decoded continues on this stream.
    cont: Option<u32>,
    /// SETTINGS_MAX_FRAME_SIZE of the peer (limits frames of this side): 0 until the peer's
    /// SETTINGS is seen (frame sizes are then not checked, as the directions may be fed out
    /// of their relative order), the default 16384 or the advertised value after it.
    max_frame: u32,
}

/// Per-session HTTP/2 and gRPC state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Http2 {
    side: [Side; 2],
    /// How far the search for the end of the server's `HTTP/1.1 101` head got (a head trickled
    /// in small segments is searched once).
    upgrade_head: crate::rescan::Resume,
    method: Option<Text<16>>,
    authority: Option<Text<128>>,
    path: Option<Text<256>>,
    scheme: Option<Text<16>>,
    content_type: Option<Text<64>>,
    user_agent: Option<Text<128>>,
    status: Option<u16>,
    resp_content_type: Option<Text<64>>,
    grpc_status: Option<u32>,
    streams: u32,
    max_stream: u32,
    goaway: Option<u32>,
    upgraded: bool,
    violation: bool,
    gap: bool,
    /// SQL injection in each request's `:path` (URL-decoded path and query values).
    threats: crate::detect::Threats,
}

/// One step of the feed loop.
enum Step {
    /// Consumed this many bytes; go on.
    Took(usize),
    /// The next item needs at least this many bytes.
    Need(usize),
    /// Stop this direction.
    Stop,
    /// A connection error (RFC 9113 §5.4.1: the peer closes with GOAWAY): not HTTP/2 from here
    /// ([`Feed::Invalid`]).
    Invalid,
}

/// Fields found in one header block.
#[derive(Default)]
struct Fields {
    method: Option<Text<16>>,
    authority: Option<Text<128>>,
    host: Option<Text<128>>,
    path: Option<Text<256>>,
    scheme: Option<Text<16>>,
    content_type: Option<Text<64>>,
    user_agent: Option<Text<128>>,
    status: Option<u16>,
    grpc_status: Option<u32>,
}

impl Fields {
    fn take(&mut self, name: &[u8], value: &[u8]) {
        match name {
            b":method" => set(&mut self.method, value),
            b":authority" => set(&mut self.authority, value),
            b"host" => set(&mut self.host, value),
            b":path" => set(&mut self.path, value),
            b":scheme" => set(&mut self.scheme, value),
            b"content-type" => set(&mut self.content_type, value),
            b"user-agent" => set(&mut self.user_agent, value),
            b":status" if self.status.is_none() => {
                self.status = digits(value).and_then(|v| u16::try_from(v).ok()).filter(|s| *s <= 999);
            }
            b"grpc-status" if self.grpc_status.is_none() => self.grpc_status = digits(value),
            _ => {}
        }
    }
}

/// Sets `slot` to `value` (bounded) unless already set.
fn set<const N: usize>(slot: &mut Option<Text<N>>, value: &[u8]) {
    if slot.is_none() {
        *slot = Some(text(value));
    }
}

/// A short decimal number.
fn digits(v: &[u8]) -> Option<u32> {
    if v.is_empty() || v.len() > 9 || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(v.iter().fold(0u32, |a, &d| a * 10 + u32::from(d - b'0')))
}

impl Http2 {
    /// Bytes examined searching for the end of an `HTTP/1.1 101` head (h2c upgrade): a
    /// measure of work, proportional to the bytes fed however they were segmented (tests).
    pub fn examined(&self) -> u64 {
        self.upgrade_head.examined()
    }

    /// State for a connection upgraded from HTTP/1.1 (`Upgrade: h2c` answered by `101`): the
    /// HTTP/1 request is stream 1 and supplies method, authority, path and user agent. Feed it
    /// from the server's `HTTP/1.1 101` head and the client's preface on.
    pub fn after_upgrade(http: &Http) -> Self {
        Http2 {
            method: http.method().map(|s| text(s.as_bytes())),
            authority: http.host().map(|s| text(s.as_bytes())),
            path: http.path().map(|s| text(s.as_bytes())),
            user_agent: http.user_agent().map(|s| text(s.as_bytes())),
            scheme: Some(text(b"http")),
            side: [Side { first_done: true, ..Side::default() }, Side::default()],
            streams: 1,
            max_stream: 1,
            upgraded: true,
            threats: http.threats().copied().unwrap_or_default(),
            ..Http2::default()
        }
    }

    /// The gRPC service and method, when the request path has the gRPC shape.
    fn grpc_names(&self) -> Option<(&str, &str)> {
        let p = self.path.as_ref()?.as_str();
        let (s, m) = parser::grpc_path(p.as_bytes())?;
        Some((std::str::from_utf8(s).ok()?, std::str::from_utf8(m).ok()?))
    }

    /// Handles the frame at the start of `b` for direction `d`.
    fn frame(&mut self, d: usize, b: &[u8]) -> Step {
        let Parse::Ok(h, _) = parser::frame_header(b) else { return Step::Need(parser::FRAME_HEADER) };
        let Some(side) = self.side.get(d).copied() else { return Step::Stop };
        if side.max_frame != 0 && h.len > side.max_frame {
            return Step::Invalid; // larger than the receiver allows (§4.2: FRAME_SIZE_ERROR)
        }
        if let Some(s) = side.cont {
            if h.kind != Kind::Continuation || h.stream != s {
                return Step::Invalid; // §6.10: nothing may interrupt a header block
            }
            if h.flags & parser::FLAG_END_HEADERS != 0 {
                self.side[d].cont = None;
            }
            return self.skip(d, h.len);
        }
        match h.kind {
            Kind::Headers => {
                if h.stream == 0 {
                    self.violation = true;
                }
                match parser::block_span(b, hpack::MAX_FRAGS) {
                    Block::Incomplete(k) => Step::Need(k),
                    Block::Invalid => Step::Invalid, // §4.3: COMPRESSION_ERROR
                    Block::Complete(span) => {
                        self.new_headers(d, h.stream);
                        self.decode_block(d, b.get(..span).unwrap_or_default());
                        Step::Took(span)
                    }
                    Block::TooBig => {
                        self.new_headers(d, h.stream);
                        self.side[d].first_done = true;
                        if h.flags & parser::FLAG_END_HEADERS == 0 {
                            self.side[d].cont = Some(h.stream);
                        }
                        self.skip(d, h.len)
                    }
                }
            }
            Kind::PushPromise => {
                if h.flags & parser::FLAG_END_HEADERS == 0 {
                    self.side[d].cont = Some(h.stream);
                }
                self.skip(d, h.len)
            }
            Kind::Continuation => Step::Invalid, // no header block open (§6.10: PROTOCOL_ERROR)
            Kind::Settings => {
                if h.stream != 0 || !h.len.is_multiple_of(6) || (h.flags & parser::FLAG_END_STREAM != 0 && h.len != 0) {
                    self.violation = true;
                    return self.skip(d, h.len);
                }
                if h.len > parser::MAX_PROBE_SETTINGS {
                    return self.skip(d, h.len);
                }
                let Some(payload) = b.get(parser::FRAME_HEADER..h.total()) else {
                    return Step::Need(h.total());
                };
                let ack = h.flags & parser::FLAG_END_STREAM != 0;
                if let Some(peer) = self.side.get_mut(1 - d).filter(|p| !ack && p.max_frame == 0) {
                    peer.max_frame = parser::DEFAULT_MAX_FRAME;
                }
                for (id, v) in parser::settings(payload) {
                    if !parser::setting_valid(id, v) {
                        self.violation = true;
                    } else if id == parser::SETTINGS_MAX_FRAME_SIZE {
                        // Limits what the peer may send.
                        if let Some(peer) = self.side.get_mut(1 - d) {
                            peer.max_frame = v;
                        }
                    }
                }
                self.count(d);
                Step::Took(h.total())
            }
            Kind::RstStream => {
                if h.len != 4 || h.stream == 0 {
                    self.violation = true;
                } else {
                    self.side[d].rst = self.side[d].rst.saturating_add(1);
                }
                self.skip(d, h.len)
            }
            Kind::Goaway => {
                if h.len < 8 || h.stream != 0 {
                    self.violation = true;
                    return self.skip(d, h.len);
                }
                let Some(code) = b.get(13..17) else { return Step::Need(17) };
                self.goaway = Some(u32::from_be_bytes([code[0], code[1], code[2], code[3]]));
                self.skip(d, h.len)
            }
            Kind::Data
            | Kind::Priority
            | Kind::Ping
            | Kind::WindowUpdate
            | Kind::Other(_) => self.skip(d, h.len),
        }
    }

    /// Counts one frame of direction `d`.
    fn count(&mut self, d: usize) {
        if let Some(s) = self.side.get_mut(d) {
            s.frames = s.frames.saturating_add(1);
        }
    }

    /// Consumes a frame header and skips its `len`-byte payload.
    fn skip(&mut self, d: usize, len: u32) -> Step {
        self.count(d);
        if let Some(s) = self.side.get_mut(d) {
            s.phase = if len == 0 { Phase::Frames } else { Phase::Skip(len) };
        }
        Step::Took(parser::FRAME_HEADER)
    }

    /// Counts a HEADERS frame and the stream it may open.
    fn new_headers(&mut self, d: usize, stream: u32) {
        if let Some(s) = self.side.get_mut(d) {
            s.headers = s.headers.saturating_add(1);
        }
        if d == 0 && stream % 2 == 1 && stream > self.max_stream {
            self.streams = self.streams.saturating_add(1);
            self.max_stream = stream;
        }
    }

    /// Decodes the complete header block `b` (HEADERS + CONTINUATION frames) of direction `d`.
    fn decode_block(&mut self, d: usize, b: &[u8]) {
        let mut frags = hpack::Frags::default();
        let mut at = 0usize;
        let mut first = true;
        while let Some(rest) = b.get(at..).filter(|r| !r.is_empty()) {
            let Parse::Ok(h, _) = parser::frame_header(rest) else { break };
            let payload = rest.get(parser::FRAME_HEADER..h.total()).unwrap_or_default();
            let frag = if first { parser::headers_fragment(h.flags, payload) } else { Some(payload) };
            let Some(frag) = frag else {
                self.violation = true; // padding longer than the payload
                return;
            };
            frags.push(frag);
            self.count(d);
            at += h.total();
            first = false;
        }
        let mut f = Fields::default();
        let threats = &mut self.threats;
        let checked = hpack::decode(frags, |n, v| {
            if d == 0 && n == b":path" {
                threats.http_target(Dir::ToServer, v);
            }
            f.take(n, v)
        });
        if checked.is_err() {
            self.violation = true;
        }
        let first_block = !self.side[d].first_done;
        self.side[d].first_done = true;
        if f.grpc_status.is_some() && d == 1 && self.grpc_status.is_none() {
            self.grpc_status = f.grpc_status;
        }
        if !first_block {
            return;
        }
        if d == 0 {
            self.method = f.method;
            self.authority = f.authority.or(f.host);
            self.path = f.path;
            self.scheme = f.scheme;
            self.content_type = f.content_type;
            self.user_agent = f.user_agent;
        } else {
            self.status = f.status;
            self.resp_content_type = f.content_type;
        }
    }
}

impl AppParser for Http2 {
    const APP: App = App::Http2;
    const PORTS: &'static [u16] = &[50051];
    const TRANSPORT: Transport = Transport::Tcp;
    const BECOMES: &'static [App] = &[App::Grpc];

    fn probe(dir: Dir, data: &[u8]) -> Probe {
        let p = match dir {
            Dir::ToServer => parser::preface(data),
            Dir::ToClient => parser::probe_server_settings(data),
        };
        match p {
            Parse::Ok(..) => Probe::Match,
            Parse::Incomplete(_) => Probe::NeedMore,
            Parse::Invalid => Probe::NoMatch,
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        let mut off = 0usize;
        loop {
            let rest = data.get(off..).unwrap_or_default();
            let phase = self.side[d].phase;
            if phase == Phase::Stopped {
                return if off == 0 { Feed::Done } else { Feed::Consumed(off) };
            }
            if rest.is_empty() {
                return Feed::Consumed(off);
            }
            let step = match phase {
                Phase::Start => {
                    let p = match dir {
                        Dir::ToServer => parser::preface(rest),
                        Dir::ToClient if rest.first() == Some(&b'H') => {
                            let p = parser::upgrade_head_from(rest, &mut self.upgrade_head);
                            if matches!(p, Parse::Ok(..)) {
                                self.upgraded = true;
                            }
                            p
                        }
                        Dir::ToClient => Parse::Ok((), 0),
                    };
                    match p {
                        Parse::Ok((), n) => {
                            self.side[d].phase = Phase::Frames;
                            Step::Took(n)
                        }
                        Parse::Incomplete(k) => Step::Need(k),
                        Parse::Invalid => Step::Invalid,
                    }
                }
                Phase::Skip(owed) => {
                    let k = owed.min(u32::try_from(rest.len()).unwrap_or(u32::MAX));
                    self.side[d].phase = if owed == k { Phase::Frames } else { Phase::Skip(owed - k) };
                    Step::Took(k as usize)
                }
                Phase::Frames => self.frame(d, rest),
                Phase::Stopped => Step::Stop,
            };
            match step {
                Step::Took(n) => off += n,
                Step::Need(k) => return Feed::Need { consumed: off, at_least: k },
                Step::Stop => self.side[d].phase = Phase::Stopped,
                Step::Invalid => {
                    self.violation = true;
                    self.side[d].phase = Phase::Stopped;
                    return Feed::Invalid { consumed: off };
                }
            }
        }
    }

    fn gap(&mut self, dir: Dir, len: usize) -> bool {
        let d = dir as usize;
        if dir == Dir::ToClient {
            self.upgrade_head.reset();
        }
        let len = u32::try_from(len).unwrap_or(u32::MAX);
        self.side[d].phase = match self.side[d].phase {
            // A hole inside a skipped payload keeps the framing.
            Phase::Skip(owed) if len < owed => Phase::Skip(owed - len),
            Phase::Skip(owed) if len == owed => Phase::Frames,
            Phase::Stopped => Phase::Stopped,
            _ => {
                self.gap = true;
                self.side[d].phase = Phase::Stopped;
                return false;
            }
        };
        true
    }

    fn app(&self) -> App {
        let grpc = |t: &Option<Text<64>>| t.as_ref().is_some_and(|c| c.starts_with("application/grpc"));
        if grpc(&self.content_type) || (self.content_type.is_none() && grpc(&self.resp_content_type)) {
            App::Grpc
        } else {
            App::Http2
        }
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        let grpc = self.app() == App::Grpc;
        if let Some(m) = &self.method {
            out.insert(if grpc { "http_method" } else { "method" }.into(), m.as_str().into());
        }
        if grpc {
            if let Some((s, m)) = self.grpc_names() {
                out.insert("service".into(), s.into());
                out.insert("method".into(), m.into());
            }
        }
        let strings = [
            ("authority", self.authority.as_ref().map(|t| t.as_str())),
            ("path", self.path.as_ref().map(|t| t.as_str())),
            ("scheme", self.scheme.as_ref().map(|t| t.as_str())),
            ("content_type", self.content_type.as_ref().map(|t| t.as_str())),
            ("user_agent", self.user_agent.as_ref().map(|t| t.as_str())),
            ("response_content_type", self.resp_content_type.as_ref().map(|t| t.as_str())),
        ];
        for (k, v) in strings {
            if let Some(v) = v {
                out.insert(k.into(), v.into());
            }
        }
        if let Some(s) = self.status {
            out.insert("status".into(), s.into());
        }
        if let Some(s) = self.grpc_status {
            out.insert("grpc_status".into(), s.into());
        }
        out.insert("streams".into(), self.streams.into());
        out.insert("headers_to_server".into(), self.side[0].headers.into());
        out.insert("headers_to_client".into(), self.side[1].headers.into());
        out.insert("frames_to_server".into(), self.side[0].frames.into());
        out.insert("frames_to_client".into(), self.side[1].frames.into());
        let rst = self.side[0].rst.saturating_add(self.side[1].rst);
        if rst > 0 {
            out.insert("rst_streams".into(), rst.into());
        }
        if let Some(g) = self.goaway {
            out.insert("goaway_error".into(), g.into());
        }
        if self.upgraded {
            out.insert("upgrade".into(), "h2c".into());
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
