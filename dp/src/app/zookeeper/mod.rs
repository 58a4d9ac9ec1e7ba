//! Apache ZooKeeper client protocol (the jute-serialised client/server connection on port 2181;
//! records from `zookeeper.jute`, op codes from `ZooDefs.OpCode`, error codes from
//! `KeeperException.Code`, special xids from `ClientCnxn`). See [`parser`] for the pure
//! functions and the wire layout.
//!
//! Written here: no Rust crate decodes ZooKeeper packets without owning a client connection
//! (the client crates build `Vec`/`String` records from complete buffers), and the framing is a
//! 4-byte length, so this module is a header walker: it reads the length, looks at the first
//! [`HEAD`] bytes of each packet (headers and the leading path or scheme) and skips the rest by
//! counting, buffering nothing beyond [`HEAD`] bytes.
//!
//! Detection: each direction opens with its connect frame, which the probe checks field by
//! field ([`parser::connect`]): a frame of 28/29/44/45 bytes (request) or 20/21/36/37 bytes
//! (response), protocol version 0, a non-negative last zxid, a timeout of at most 24 h, a
//! password length of 0 or 16 consistent with the frame length and a `readOnly` byte of 0 or 1.
//! So a flow is recognised from either side. A connection opened by a four-letter-word admin
//! command (`ruok`, `stat`, `srvr`, `mntr`, ..., [`parser::FOUR_LETTER_WORDS`]: the word alone,
//! or with LF or CRLF, as `printf ruok | nc` and `echo mntr | nc` send it) is ZooKeeper too:
//! the record names the word (`four_letter_word`), the size of the text answer and whether the
//! server refused it as not whitelisted (`four_letter_refused`); client bytes after the word
//! are not ZooKeeper (the server reads none).
//!
//! Extracted: the connect fields (protocol version, requested and negotiated session timeout,
//! session id as hex, read-only flags, reconnect, expired session), op names seen (first
//! [`MAX_OPS`] distinct), paths of path-carrying requests and of the first sub-operation of
//! `multi` (first [`MAX_PATHS`] distinct, 128 bytes each), the `auth` scheme (never the
//! credentials), request, response, ping, watch event and error counts, replies matched to
//! requests by xid (up to [`MAX_PENDING`] outstanding; `auth` and `setWatches` replies by their
//! fixed xids), the latest zxid, and the last error's name with the op that failed. After a gap
//! inside a packet being skipped the skip is shortened; any other gap stops that direction.

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{Connect, Parse, Side};

/// Bytes of each packet looked at (length prefix included); the rest is skipped.
pub const HEAD: usize = 256;
/// Distinct op codes remembered.
pub const MAX_OPS: usize = 16;
/// Distinct paths remembered.
pub const MAX_PATHS: usize = 4;
/// Outstanding requests remembered for matching replies by xid.
pub const MAX_PENDING: usize = 32;

/// Per-session ZooKeeper state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Zookeeper {
    /// Bytes still to skip per direction (rest of a packet).
    skip: [u64; 2],
    stopped: [bool; 2],
    /// The first frame of the direction (its connect frame) has been handled.
    opened: [bool; 2],
    request: Option<Connect>,
    response: Option<Connect>,
    ops: [i32; MAX_OPS],
    n_ops: usize,
    paths: [Text<128>; MAX_PATHS],
    n_paths: usize,
    auth_scheme: Option<Text<32>>,
    /// (xid, op) of requests awaiting their reply, oldest first.
    pending: [(i32, i32); MAX_PENDING],
    n_pending: usize,
    requests: u64,
    responses: u64,
    pings: u64,
    watch_events: u64,
    errors: u64,
    matched: u64,
    last_zxid: Option<i64>,
    /// Last non-zero reply error and the op of its request, when known.
    last_error: Option<(i32, Option<i32>)>,
    violation: bool,
    gap: bool,
    /// A four-letter-word admin command opened the connection (the server answers in text
    /// and closes it).
    four_letter: Option<[u8; 4]>,
    /// Bytes of the text answer.
    four_letter_answer: u64,
    /// The answer said the command is not in `4lw.commands.whitelist`.
    four_letter_refused: bool,
}

impl Zookeeper {
    /// Op codes seen (first [`MAX_OPS`] distinct), in order of first appearance.
    pub fn ops(&self) -> &[i32] {
        self.ops.get(..self.n_ops).unwrap_or(&[])
    }

    /// Paths seen in requests (first [`MAX_PATHS`] distinct).
    pub fn paths(&self) -> &[Text<128>] {
        self.paths.get(..self.n_paths).unwrap_or(&[])
    }

    fn add_op(&mut self, op: i32) {
        if self.n_ops < MAX_OPS && !self.ops().contains(&op) {
            self.ops[self.n_ops] = op;
            self.n_ops += 1;
        }
    }

    fn add_path(&mut self, p: &[u8]) {
        let p: Text<128> = text(p);
        if self.n_paths < MAX_PATHS && !self.paths().contains(&p) {
            self.paths[self.n_paths] = p;
            self.n_paths += 1;
        }
    }

    fn on_connect(&mut self, dir: Dir, c: Connect) {
        match dir {
            Dir::ToServer => self.request = Some(c),
            Dir::ToClient => self.response = Some(c),
        }
    }

    /// A request packet (`body` = the looked-at part after the length prefix).
    fn on_request(&mut self, body: &[u8]) {
        let Some((xid, op)) = parser::request_header(body) else {
            self.violation = true;
            return;
        };
        self.add_op(op);
        if op == parser::OP_PING {
            self.pings = self.pings.saturating_add(1);
            return;
        }
        self.requests = self.requests.saturating_add(1);
        if let Some(p) = parser::request_path(body, op) {
            self.add_path(p);
        }
        if op == parser::OP_MULTI || op == parser::OP_MULTI_READ {
            if let Some(sub) = parser::multi_first_op(body) {
                self.add_op(sub);
            }
        }
        if op == parser::OP_AUTH && self.auth_scheme.is_none() {
            self.auth_scheme = parser::auth_scheme(body).map(text);
        }
        if !matches!(xid, parser::XID_WATCH_EVENT | parser::XID_PING | parser::XID_AUTH | parser::XID_SET_WATCHES) {
            if self.n_pending == MAX_PENDING {
                self.pending.copy_within(1.., 0);
                self.n_pending -= 1;
            }
            self.pending[self.n_pending] = (xid, op);
            self.n_pending += 1;
        }
    }

    /// A reply packet.
    fn on_reply(&mut self, body: &[u8]) {
        let Some((xid, zxid, err)) = parser::reply_header(body) else {
            self.violation = true;
            return;
        };
        match xid {
            parser::XID_WATCH_EVENT => {
                self.watch_events = self.watch_events.saturating_add(1);
                return;
            }
            parser::XID_PING => return,
            _ => {}
        }
        self.responses = self.responses.saturating_add(1);
        if zxid > 0 {
            self.last_zxid = Some(self.last_zxid.map_or(zxid, |z| z.max(zxid)));
        }
        let op = match xid {
            parser::XID_AUTH => Some(parser::OP_AUTH),
            parser::XID_SET_WATCHES => Some(parser::OP_SET_WATCHES),
            _ => self.pending[..self.n_pending].iter().position(|&(x, _)| x == xid).map(|i| {
                let op = self.pending[i].1;
                self.pending.copy_within(i + 1..self.n_pending, i);
                self.n_pending -= 1;
                self.matched = self.matched.saturating_add(1);
                op
            }),
        };
        if err != 0 {
            self.errors = self.errors.saturating_add(1);
            self.last_error = Some((err, op));
        }
    }

    /// A connection opened by a four-letter-word command: the client's word (nothing may
    /// follow it: the server answers and closes), then the server's text answer, consumed
    /// whole. `None` when the connection is not one.
    fn four_letter_feed(&mut self, dir: Dir, data: &[u8]) -> Option<Feed> {
        if self.four_letter.is_none() {
            if dir != Dir::ToServer || self.opened[0] || !data.first().is_some_and(u8::is_ascii_lowercase) {
                return None;
            }
            return Some(match parser::four_letter_word(data) {
                Parse::Ok(w, n) => {
                    self.four_letter = Some(w);
                    self.opened = [true; 2];
                    Feed::Consumed(n)
                }
                Parse::Incomplete(k) => Feed::Need { consumed: 0, at_least: k },
                Parse::Invalid => Feed::Invalid { consumed: 0 },
            });
        }
        Some(match dir {
            // ZooKeeper reads nothing after the word.
            Dir::ToServer => Feed::Invalid { consumed: 0 },
            Dir::ToClient => {
                if self.four_letter_answer == 0 && data.windows(16).any(|w| w == b"is not executed ") {
                    self.four_letter_refused = true;
                }
                self.four_letter_answer = self.four_letter_answer.saturating_add(data.len() as u64);
                Feed::Consumed(data.len())
            }
        })
    }

    /// The session id the record shows: the server's, else a reconnecting client's.
    fn session_id(&self) -> Option<i64> {
        match (self.response, self.request) {
            (Some(r), _) if r.session_id != 0 => Some(r.session_id),
            (_, Some(q)) if q.session_id != 0 => Some(q.session_id),
            _ => None,
        }
    }
}

fn side(dir: Dir) -> Side {
    match dir {
        Dir::ToServer => Side::Request,
        Dir::ToClient => Side::Response,
    }
}

impl AppParser for Zookeeper {
    const APP: App = App::Zookeeper;
    const PORTS: &'static [u16] = &[2181];
    const TRANSPORT: Transport = Transport::Tcp;

    fn probe(dir: Dir, data: &[u8]) -> Probe {
        if dir == Dir::ToServer && data.first().is_some_and(u8::is_ascii_lowercase) {
            return match parser::four_letter_word(data) {
                Parse::Ok(..) => Probe::Match,
                Parse::Incomplete(_) => Probe::NeedMore,
                Parse::Invalid => Probe::NoMatch,
            };
        }
        match parser::connect(side(dir), data) {
            Parse::Ok(..) => Probe::Match,
            Parse::Incomplete(_) => Probe::NeedMore,
            Parse::Invalid => Probe::NoMatch,
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        if let Some(fed) = self.four_letter_feed(dir, data) {
            return fed;
        }
        let mut off = 0;
        loop {
            if self.stopped[d] {
                return Feed::Consumed(data.len());
            }
            if super::skip_body(&mut self.skip[d], data, &mut off) {
                return Feed::Consumed(off);
            }
            let rest = &data[off..];
            if rest.is_empty() {
                return Feed::Consumed(off);
            }
            if !self.opened[d] {
                match parser::connect(side(dir), rest) {
                    Parse::Ok(c, n) => {
                        self.opened[d] = true;
                        self.on_connect(dir, c);
                        off += n;
                        continue;
                    }
                    Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                    Parse::Invalid => {
                        // Not a connect frame (the probe matched the other side): read packets.
                        self.opened[d] = true;
                        self.violation = true;
                    }
                }
            }
            let min = if dir == Dir::ToServer { parser::MIN_REQUEST } else { parser::MIN_REPLY };
            let size = match parser::frame_len(rest, min) {
                Parse::Ok(s, _) => s,
                Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                // A frame length ZooKeeper refuses (`jute.maxbuffer`): not ZooKeeper.
                Parse::Invalid => {
                    self.violation = true;
                    self.stopped[d] = true;
                    return Feed::Invalid { consumed: off };
                }
            };
            let total = 4 + size;
            let window = total.min(HEAD);
            let Some(body) = rest.get(4..window) else {
                return Feed::Need { consumed: off, at_least: window };
            };
            match dir {
                Dir::ToServer => self.on_request(body),
                Dir::ToClient => self.on_reply(body),
            }
            let take = total.min(rest.len());
            off += take;
            self.skip[d] = (total - take) as u64;
        }
    }

    fn gap(&mut self, dir: Dir, len: usize) -> bool {
        let d = dir as usize;
        self.gap = true;
        if self.stopped[d] {
            return true;
        }
        if !super::skip_gap(&mut self.skip[d], len) {
            self.stopped[d] = true;
            return false;
        }
        true
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        if let Some(c) = self.request.or(self.response) {
            out.insert("protocol_version".into(), c.protocol_version.into());
        }
        if let Some(q) = self.request {
            out.insert("requested_timeout_ms".into(), q.timeout_ms.into());
            out.insert("last_zxid_seen".into(), format!("0x{:x}", q.last_zxid_seen).into());
            if q.session_id != 0 {
                out.insert("reconnect".into(), true.into());
            }
            if let Some(ro) = q.read_only {
                out.insert("can_be_read_only".into(), ro.into());
            }
        }
        if let Some(r) = self.response.or(self.request) {
            out.insert("session_timeout_ms".into(), r.timeout_ms.into());
        }
        if let Some(r) = self.response {
            if let Some(ro) = r.read_only {
                out.insert("read_only".into(), ro.into());
            }
            if r.timeout_ms == 0 && r.session_id == 0 {
                out.insert("session_expired".into(), true.into());
            }
        }
        if let Some(id) = self.session_id() {
            out.insert("session_id".into(), format!("0x{id:x}").into());
        }
        out.insert(
            "ops".into(),
            self.ops().iter().map(|&o| Value::from(parser::op_name(o).unwrap_or("unknown"))).collect(),
        );
        if self.ops().iter().any(|&o| parser::op_name(o).is_none()) {
            out.insert("op_codes".into(), self.ops().iter().map(|&o| Value::from(o)).collect());
        }
        if self.n_paths > 0 {
            out.insert("paths".into(), self.paths().iter().map(|p| Value::from(p.as_str())).collect());
        }
        if let Some(s) = &self.auth_scheme {
            out.insert("auth_scheme".into(), s.as_str().into());
        }
        out.insert("requests".into(), self.requests.into());
        out.insert("responses".into(), self.responses.into());
        out.insert("matched".into(), self.matched.into());
        out.insert("pings".into(), self.pings.into());
        out.insert("watch_events".into(), self.watch_events.into());
        out.insert("errors".into(), self.errors.into());
        if let Some(z) = self.last_zxid {
            out.insert("last_zxid".into(), format!("0x{z:x}").into());
        }
        if let Some((err, op)) = self.last_error {
            out.insert("last_error".into(), parser::err_name(err).unwrap_or("unknown").into());
            out.insert("last_error_code".into(), err.into());
            if let Some(op) = op {
                out.insert("last_error_op".into(), parser::op_name(op).unwrap_or("unknown").into());
            }
        }
        if self.violation {
            out.insert("violation".into(), true.into());
        }
        if let Some(w) = self.four_letter {
            out.insert("four_letter_word".into(), String::from_utf8_lossy(&w).into_owned().into());
            out.insert("four_letter_answer_bytes".into(), self.four_letter_answer.into());
            if self.four_letter_refused {
                out.insert("four_letter_refused".into(), true.into());
            }
        }
        if self.gap {
            out.insert("gap".into(), true.into());
        }
    }
}

#[cfg(test)]
mod tests;
