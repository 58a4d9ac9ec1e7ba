//! Apache Spark RPC and block transfer over Spark's Netty transport (`common/network-common`:
//! `Message`, `MessageEncoder`, `TransportFrameDecoder` and the message classes; `core`
//! `NettyRpcEnv` `RequestMessage.serialize`; `common/network-shuffle` `BlockTransferMessage`;
//! the `crypto` and `sasl` bootstraps). See [`parser`] for the wire format and pure functions.
//!
//! Written here: there is no Rust implementation of this transport, and the framing is simple
//! (an 8-byte length, a type byte, a fixed header). Each frame is read up to its first [`HEAD`]
//! bytes (whole for `StreamResponse` and `UploadStream`, whose header ends the frame; at most
//! [`MAX_WHOLE`] bytes) and the rest of the frame, and the stream data that follows those two,
//! is skipped by counting, so block transfers of any size are never buffered.
//!
//! Detection (either direction, first frame): the frame length is at most [`parser::MAX_FRAME`]
//! (its first four bytes are zero) and at least the type's header; the type is one a client
//! sends first (`ChunkFetchRequest`, `RpcRequest`, `StreamRequest`, `OneWayMessage`,
//! `UploadStream`, `MergedBlockMetaRequest`) or, from the server, a response or a server-sent
//! `RpcRequest`/`OneWayMessage`; size fields equal the frame length minus the header, request
//! ids are non-negative (`TransportClient` draws them with `Math.abs`; `RpcFailure` may carry
//! `Long.MIN_VALUE`), chunk indexes and byte counts are non-negative, and stream names and app
//! ids in headers hold no control characters. `ChunkFetchSuccess` (length, type, the chunk
//! index's sign) and `MergedBlockMetaSuccess` (length, type, two signs) carry the least to
//! check; their stream ids are random longs.
//!
//! Extracted: frame counts and per-type message counts of each direction; for Spark RPC bodies
//! (`RpcRequest`, `OneWayMessage`) the receiver endpoint names (first [`MAX_ENDPOINTS`],
//! [`MAX_NAME`] bytes each), the names asked of the `endpoint-verifier` (`CheckExistence`,
//! first [`MAX_ENDPOINTS`]), the simple class names of the messages (first [`MAX_MESSAGES`])
//! and the first sender RPC address of each direction; block transfer message names (first
//! [`MAX_BLOCKS`]) and the app id of `OpenBlocks`/`FetchShuffleBlocks`; authentication
//! (`spark.authenticate`: a SASL or auth engine tag starting an RPC body) with its app id, and
//! `encrypted` when framing is lost after it (the AES auth engine encrypts everything that
//! follows; nothing is decrypted); failure count and the first failure text ([`MAX_FAILURE`]
//! bytes); bytes skipped unread. A gap inside a skipped frame shortens the skip; any other gap
//! stops that direction.

pub mod parser;

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{Frame, Header, Parse};

/// Bytes of each frame looked at; the rest is skipped.
pub const HEAD: usize = 1024;
/// Largest `StreamResponse` / `UploadStream` frame read whole (their header ends the frame).
pub const MAX_WHOLE: u64 = 8192;
/// Distinct endpoint names (and, separately, verified names) remembered.
pub const MAX_ENDPOINTS: usize = 8;
/// Distinct RPC message class names remembered.
pub const MAX_MESSAGES: usize = 12;
/// Distinct block transfer message types remembered.
pub const MAX_BLOCKS: usize = 8;
/// Failure text kept (bytes).
pub const MAX_FAILURE: usize = 160;
/// Endpoint, verified and message class names kept (bytes each).
pub const MAX_NAME: usize = 40;

/// Bytes of a stream id, app id or stream name the probe checks.
const PROBE_TEXT: usize = 64;

/// A bounded list of distinct names, in order of first sight.
#[derive(Debug, Clone, Copy)]
struct Names<const N: usize, const L: usize> {
    items: [Text<L>; N],
    len: usize,
}

impl<const N: usize, const L: usize> Default for Names<N, L> {
    fn default() -> Self {
        Names { items: [Text::new(); N], len: 0 }
    }
}

impl<const N: usize, const L: usize> Names<N, L> {
    fn list(&self) -> &[Text<L>] {
        self.items.get(..self.len).unwrap_or(&[])
    }

    fn add(&mut self, b: &[u8]) {
        if b.is_empty() || self.len >= N {
            return;
        }
        let t = text::<L>(b);
        if !self.list().contains(&t) {
            self.items[self.len] = t;
            self.len += 1;
        }
    }

    fn value(&self) -> Value {
        self.list().iter().map(|t| Value::from(t.as_str())).collect()
    }
}

/// Authentication bootstrap seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Auth {
    /// `SaslMessage` (DIGEST-MD5 via `SaslRpcHandler`).
    Sasl,
    /// The AES-based auth engine (`ClientChallenge` or `AuthMessage`, `AuthRpcHandler`).
    Spark,
}

/// Per-direction framing state.
#[derive(Debug, Clone, Copy, Default)]
struct Side {
    skip: u64,
    stopped: bool,
    frames: u64,
    counts: [u32; parser::TYPES],
    /// First sender RPC address in this direction's `RequestMessage`s.
    address: Option<Text<48>>,
}

/// Per-session Spark transport state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Spark {
    side: [Side; 2],
    endpoints: Names<MAX_ENDPOINTS, MAX_NAME>,
    lookups: Names<MAX_ENDPOINTS, MAX_NAME>,
    messages: Names<MAX_MESSAGES, MAX_NAME>,
    blocks: [u8; MAX_BLOCKS],
    n_blocks: usize,
    app_id: Option<Text<64>>,
    auth: Option<Auth>,
    auth_app_id: Option<Text<32>>,
    encrypted: bool,
    failures: u64,
    failure: Option<Text<MAX_FAILURE>>,
    skipped: u64,
    violation: bool,
    gap: bool,
}

fn address(a: &parser::RpcAddress<'_>) -> Text<48> {
    let mut t = Text::<48>::new();
    let _ = write!(t, "{}:{}", text::<36>(a.host).as_str(), a.port);
    t
}

impl Spark {
    /// Receiver endpoint names seen (first [`MAX_ENDPOINTS`] distinct).
    pub fn endpoints(&self) -> impl Iterator<Item = &str> {
        self.endpoints.list().iter().map(|t| t.as_str())
    }

    fn add_block(&mut self, t: u8) {
        if parser::block_name(t).is_some() && self.n_blocks < MAX_BLOCKS && !self.blocks[..self.n_blocks].contains(&t) {
            self.blocks[self.n_blocks] = t;
            self.n_blocks += 1;
        }
    }

    /// The body of an `RpcRequest` or `OneWayMessage` of direction `d` (cut to the window).
    fn on_rpc_body(&mut self, d: usize, body: &[u8]) {
        let Some(&first) = body.first() else { return };
        if matches!(first, parser::TAG_SASL | parser::TAG_AUTH_CHALLENGE | parser::TAG_AUTH_MESSAGE) {
            self.auth.get_or_insert(if first == parser::TAG_SASL { Auth::Sasl } else { Auth::Spark });
            if self.auth_app_id.is_none() {
                self.auth_app_id = parser::auth_app_id(body).map(text);
            }
        } else if let Some(m) = parser::request_message(body) {
            self.endpoints.add(m.name);
            if let (None, Some(a)) = (self.side[d].address, m.sender.as_ref()) {
                self.side[d].address = Some(address(a));
            }
            if let Some(class) = parser::message_class(m.content) {
                self.messages.add(parser::simple_name(class));
            }
            if let Some(name) = parser::check_existence_name(m.content) {
                self.lookups.add(name);
            }
        } else if parser::block_name(first).is_some() {
            self.add_block(first);
            if self.app_id.is_none() {
                self.app_id = parser::block_app_id(body).map(text);
            }
        }
    }

    fn on_frame(&mut self, d: usize, f: &Frame, h: &Header<'_>, w: &[u8]) {
        let s = &mut self.side[d];
        s.frames = s.frames.saturating_add(1);
        if let Some(c) = s.counts.get_mut(usize::from(f.ty)) {
            *c = c.saturating_add(1);
        }
        let body = w.get(h.body_off..).unwrap_or(&[]);
        match f.ty {
            parser::RPC_REQUEST | parser::ONE_WAY => self.on_rpc_body(d, body),
            // A block transfer reply (`StreamHandle`, ...); raw SASL tokens are not.
            parser::RPC_RESPONSE if self.auth.is_none() => {
                if let Some(&t) = body.first() {
                    self.add_block(t);
                }
            }
            parser::RPC_FAILURE | parser::CHUNK_FETCH_FAILURE | parser::STREAM_FAILURE => {
                self.failures = self.failures.saturating_add(1);
                if self.failure.is_none() {
                    self.failure = h.error.map(text);
                }
            }
            _ => {}
        }
    }

    /// Stops direction `d` at `off`: `Some(Invalid)` when the bytes there are not Spark's
    /// framing (after an auth engine handshake the channel is encrypted: unreadable, not
    /// malformed, and `None`).
    fn stop(&mut self, d: usize, off: usize) -> Option<Feed> {
        self.side[d].stopped = true;
        if self.auth.is_some() {
            self.encrypted = true;
            None
        } else {
            self.violation = true;
            Some(Feed::Invalid { consumed: off })
        }
    }
}

/// Field checks of a probe over the bytes present: a field not yet there leaves the verdict
/// open, a present field that is wrong decides `NoMatch`.
struct Check<'a> {
    b: &'a [u8],
    fail: bool,
    more: bool,
}

impl Check<'_> {
    fn byte(&mut self, off: usize, ok: impl Fn(u8) -> bool) {
        match self.b.get(off) {
            Some(&c) => self.fail |= !ok(c),
            None => self.more = true,
        }
    }

    /// The big-endian i32 at `off` equals `want`, compared byte by byte as present.
    fn size(&mut self, off: usize, want: u64) {
        let Ok(want) = i32::try_from(want) else {
            self.fail = true;
            return;
        };
        for (i, w) in want.to_be_bytes().into_iter().enumerate() {
            self.byte(off + i, |c| c == w);
        }
    }

    /// The sign bit of the big-endian integer at `off` is clear.
    fn nonneg(&mut self, off: usize) {
        self.byte(off, |c| c & 0x80 == 0);
    }

    /// The i64 at `off` is non-negative or `i64::MIN`.
    fn id_or_min(&mut self, off: usize) {
        let min = self.b.get(off) == Some(&0x80);
        for i in 0..8 {
            self.byte(off + i, |c| if i == 0 { c == 0x80 || c & 0x80 == 0 } else { !min || c == 0 });
        }
    }

    /// The first bytes (up to [`PROBE_TEXT`]) of an `n`-byte string at `off` are not control
    /// characters.
    fn text(&mut self, off: usize, n: u64) {
        let n = usize::try_from(n).unwrap_or(usize::MAX).min(PROBE_TEXT);
        for i in 0..n {
            self.byte(off + i, |c| c >= 0x20 && c != 0x7f);
        }
    }

    fn verdict(&self) -> Probe {
        if self.fail {
            Probe::NoMatch
        } else if self.more {
            Probe::NeedMore
        } else {
            Probe::Match
        }
    }
}

/// Types that may open a direction.
fn opens(dir: Dir, t: u8) -> bool {
    use parser::*;
    match dir {
        Dir::ToServer => matches!(
            t,
            CHUNK_FETCH_REQUEST | RPC_REQUEST | STREAM_REQUEST | ONE_WAY | UPLOAD_STREAM | MERGED_META_REQUEST
        ),
        Dir::ToClient => {
            t < TYPES as u8 && !matches!(t, CHUNK_FETCH_REQUEST | STREAM_REQUEST | UPLOAD_STREAM | MERGED_META_REQUEST)
        }
    }
}

fn probe_frame(dir: Dir, b: &[u8]) -> Probe {
    use parser::*;
    let mut c = Check { b, fail: false, more: false };
    for i in 0..4 {
        c.byte(i, |x| x == 0);
    }
    c.byte(4, |x| x <= 0x80);
    c.byte(8, |t| opens(dir, t));
    if c.fail {
        return Probe::NoMatch;
    }
    let f = match prefix(b) {
        Parse::Ok(f, _) => f,
        Parse::Invalid => return Probe::NoMatch,
        Parse::Incomplete(_) => {
            return match be64(b, 0) {
                Some(len) if !(13..=MAX_FRAME as i64).contains(&len) => Probe::NoMatch,
                _ => Probe::NeedMore,
            }
        }
    };
    let (len, p) = (f.len, PREFIX);
    let rest = |fixed: usize| len - (PREFIX + fixed) as u64;
    let end = usize::try_from(len).unwrap_or(usize::MAX);
    match f.ty {
        CHUNK_FETCH_REQUEST => {
            c.fail |= len != 21;
            c.nonneg(p + 8);
        }
        CHUNK_FETCH_SUCCESS => c.nonneg(p + 8),
        CHUNK_FETCH_FAILURE => {
            c.nonneg(p + 8);
            c.size(p + 12, rest(16));
        }
        RPC_REQUEST | RPC_RESPONSE => {
            c.nonneg(p);
            c.size(p + 8, rest(12));
        }
        RPC_FAILURE => {
            c.id_or_min(p);
            c.size(p + 8, rest(12));
        }
        STREAM_REQUEST => {
            c.size(p, rest(4));
            c.text(p + 4, rest(4));
        }
        STREAM_RESPONSE => {
            c.size(p, rest(12));
            c.text(p + 4, rest(12));
            c.nonneg(end - 8);
        }
        STREAM_FAILURE => match be32(b, p) {
            Some(n) if n >= 0 && (17 + n as u64) <= len => {
                c.text(p + 4, n as u64);
                c.size(p + 4 + n as usize, len - 17 - n as u64);
            }
            Some(_) => c.fail = true,
            None => c.more = true,
        },
        ONE_WAY => c.size(p, rest(4)),
        UPLOAD_STREAM => {
            c.nonneg(p);
            c.size(p + 8, rest(20));
            c.nonneg(end - 8);
        }
        MERGED_META_REQUEST => {
            c.nonneg(p);
            c.size(p + 8, rest(24));
            c.text(p + 12, rest(24));
        }
        MERGED_META_SUCCESS => {
            c.nonneg(p);
            c.nonneg(p + 8);
        }
        _ => c.fail = true,
    }
    c.verdict()
}

impl AppParser for Spark {
    const APP: App = App::Spark;
    const PORTS: &'static [u16] = &[7077, 7078, 7079];
    const TRANSPORT: Transport = Transport::Tcp;

    fn probe(dir: Dir, data: &[u8]) -> Probe {
        probe_frame(dir, data)
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
            let f = match parser::prefix(rest) {
                Parse::Ok(f, _) => f,
                Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                Parse::Invalid => {
                    if let Some(f) = self.stop(d, off) {
                    return f;
                    }
                    continue;
                }
            };
            let whole = matches!(f.ty, parser::STREAM_RESPONSE | parser::UPLOAD_STREAM);
            if whole && f.len > MAX_WHOLE {
                if let Some(f) = self.stop(d, off) {
                return f;
                }
                continue;
            }
            // Both bounded: by MAX_WHOLE or by HEAD.
            let window = if whole { f.len as usize } else { f.len.min(HEAD as u64) as usize };
            let Some(w) = rest.get(..window) else { return Feed::Need { consumed: off, at_least: window } };
            let Some(h) = parser::header(w, &f) else {
                if let Some(f) = self.stop(d, off) {
                return f;
                }
                continue;
            };
            self.on_frame(d, &f, &h, w);
            let total = f.len.saturating_add(h.after);
            let take = total.min(rest.len() as u64);
            off += take as usize;
            self.side[d].skip = total - take;
            self.skipped = self.skipped.saturating_add(total - window as u64);
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
        for (s, dir) in self.side.iter().zip(["to_server", "to_client"]) {
            out.insert(format!("frames_{dir}"), s.frames.into());
            let counts: Map<String, Value> = s
                .counts
                .iter()
                .enumerate()
                .filter(|(_, &n)| n > 0)
                .filter_map(|(t, &n)| Some((parser::type_name(t as u8)?.to_string(), Value::from(n))))
                .collect();
            out.insert(format!("messages_{dir}"), Value::Object(counts));
        }
        for (k, v) in [("endpoints", &self.endpoints), ("lookups", &self.lookups)] {
            if v.len > 0 {
                out.insert(k.into(), v.value());
            }
        }
        if self.messages.len > 0 {
            out.insert("rpc_messages".into(), self.messages.value());
        }
        if self.n_blocks > 0 {
            let names = self.blocks[..self.n_blocks].iter().filter_map(|&t| parser::block_name(t)).map(Value::from);
            out.insert("block_messages".into(), names.collect());
        }
        for (k, v) in [("client_address", &self.side[0].address), ("server_address", &self.side[1].address)] {
            if let Some(a) = v {
                out.insert(k.into(), a.as_str().into());
            }
        }
        if let Some(a) = &self.app_id {
            out.insert("app_id".into(), a.as_str().into());
        }
        if let Some(a) = self.auth {
            out.insert("auth".into(), true.into());
            out.insert("auth_protocol".into(), if a == Auth::Sasl { "sasl" } else { "spark" }.into());
            if let Some(id) = &self.auth_app_id {
                out.insert("auth_app_id".into(), id.as_str().into());
            }
        }
        if self.encrypted {
            out.insert("encrypted".into(), true.into());
        }
        out.insert("failures".into(), self.failures.into());
        if let Some(f) = &self.failure {
            out.insert("failure".into(), f.as_str().into());
        }
        out.insert("bytes_skipped".into(), self.skipped.into());
        if self.violation {
            out.insert("violation".into(), true.into());
        }
        if self.gap {
            out.insert("gap".into(), true.into());
        }
    }
}

#[cfg(test)]
mod tests;
