//! MongoDB wire protocol (MongoDB manual "MongoDB Wire Protocol": "Standard Message Header",
//! "OP_MSG" with kind 0 and kind 1 sections, "OP_COMPRESSED", legacy "OP_QUERY" and "OP_REPLY";
//! BSON spec 1.1 for documents). See [`parser`] for the pure functions.
//!
//! Framing and headers are read here (the `bson` crate has no wire-protocol framing); command
//! documents are read with `bson`'s borrowed [`bson::RawDocument::from_bytes`], which validates
//! the document in place without copying or allocating. Each message is framed by its
//! `messageLength`; only its first [`HEAD`] bytes are looked at and the rest is skipped by
//! counting, so nothing larger is buffered. A command document longer than what fits in
//! [`HEAD`] still yields its command name (read directly from the first BSON element), but not
//! its `$db`.
//!
//! Detection: a valid header (length `16..=48 MB`, a known opcode, `responseTo` 0 from the
//! client) followed by a plausible body: OP_MSG flag bits within the defined ones, a section
//! kind 0 or 1 and a BSON document whose first element has a known type and a printable key;
//! OP_QUERY flags, a printable `db.collection` name and the query's first element; OP_REPLY
//! (server only) flags and the first document; OP_COMPRESSED a known original opcode and a
//! compressor id 0..=3. The removed legacy write opcodes (OP_INSERT, ...) are counted when
//! parsing but not enough to detect a session.
//!
//! Extracted: command names (first key of the client's OP_MSG body or OP_QUERY query, first
//! [`MAX_COMMANDS`] distinct, 64 bytes each), `$db` of the first command that has one (or the
//! database of an OP_QUERY `db.$cmd` collection), message counts per opcode and per direction,
//! compressed messages and the first compressor. OP_COMPRESSED payloads are not decompressed.
//! A gap inside a skipped message shortens the skip; any other gap stops that direction.
//!
//! **Mid-stream** ([`MIDSTREAM`], [`crate::app::midstream`]): a session picked up without its
//! first messages is MongoDB when two standard message headers follow each other at the offset
//! the first one's `messageLength` announces (length `16..=48 MB`, one of the nine opcodes:
//! four exact bytes each), or when a message's `responseTo` is the `requestID` the other side
//! just sent (its sender is then the server). An OP_REPLY is sent by servers only.

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{Header, Parse};

/// Bytes of each message looked at (header and command document); the rest is skipped.
pub const HEAD: usize = 16 * 1024;
/// Distinct command names remembered.
pub const MAX_COMMANDS: usize = 8;
/// Longest collection name the probe accepts in OP_QUERY (bytes).
const PROBE_MAX_NAME: usize = 256;

/// Opcodes counted separately (index into the counters); the last slot counts unknown ones.
const COUNTED: [i32; 9] = [
    parser::OP_MSG,
    parser::OP_QUERY,
    parser::OP_REPLY,
    parser::OP_COMPRESSED,
    parser::OP_UPDATE,
    parser::OP_INSERT,
    parser::OP_GET_MORE,
    parser::OP_DELETE,
    parser::OP_KILL_CURSORS,
];

/// Mid-stream framing of MongoDB (module docs): a standard message header at the start of `b`.
pub fn mid_head(b: &[u8], _boundary: bool) -> crate::app::midstream::Head {
    use crate::app::midstream::{Head, Msg, Role};
    if b.get(3).is_some_and(|&c| c > 0x02) {
        return Head::No; // messageLength over 48 MB
    }
    let Some(len) = parser::le32(b, 0) else { return Head::Need(parser::HEADER) };
    let Some(len) = usize::try_from(len).ok().filter(|l| (parser::HEADER..=parser::MAX_MESSAGE).contains(l)) else {
        return Head::No;
    };
    let (Some(request), Some(response_to), Some(op)) = (parser::le32(b, 4), parser::le32(b, 8), parser::le32(b, 12)) else {
        return Head::Need(parser::HEADER);
    };
    if !COUNTED.contains(&op) {
        return Head::No;
    }
    Head::Msg(Msg {
        len: len as u32,
        role: if op == parser::OP_REPLY { Role::Server } else { Role::Either },
        request: Some(request as u32),
        answers: (response_to != 0).then_some(response_to as u32),
        starts: true,
        ends: true,
        ..Msg::default()
    })
}

/// How MongoDB is recognised mid-stream (module docs): two headers in a row.
pub const MIDSTREAM: crate::app::midstream::Framing =
    crate::app::midstream::Framing { head: mid_head, follows: |_, _| true, chain: 2 };

/// Per-session MongoDB state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Mongodb {
    skip: [u64; 2],
    stopped: [bool; 2],
    messages: [u64; 2],
    ops: [u64; COUNTED.len() + 1],
    commands: [Text<64>; MAX_COMMANDS],
    n_commands: usize,
    db: Option<Text<64>>,
    compressor: Option<u8>,
    violation: bool,
    gap: bool,
}

impl Mongodb {
    /// Command names seen (first [`MAX_COMMANDS`] distinct).
    pub fn command_names(&self) -> impl Iterator<Item = &str> {
        self.commands.iter().take(self.n_commands).map(|t| t.as_str())
    }

    fn on_message(&mut self, dir: Dir, h: &Header, body: &[u8]) {
        let d = dir as usize;
        self.messages[d] = self.messages[d].saturating_add(1);
        let slot = COUNTED.iter().position(|&o| o == h.op).unwrap_or(COUNTED.len());
        self.ops[slot] = self.ops[slot].saturating_add(1);
        if h.op == parser::OP_COMPRESSED {
            if self.compressor.is_none() {
                self.compressor = body.get(8).copied();
            }
            return;
        }
        if dir != Dir::ToServer {
            return;
        }
        let Some((off, coll_db)) = parser::command_offset(h.op, body) else { return };
        let limit = h.len.saturating_sub(parser::HEADER + off);
        let Some(c) = body.get(off..).and_then(|b| parser::command(b, limit)) else { return };
        let name: Text<64> = text(c.name);
        if self.n_commands < MAX_COMMANDS && !self.commands[..self.n_commands].contains(&name) {
            self.commands[self.n_commands] = name;
            self.n_commands += 1;
        }
        if self.db.is_none() {
            self.db = c.db.map(|s| text(s.as_bytes())).or_else(|| coll_db.map(text));
        }
    }
}

/// `Match` when the first element of the document at `b` is readable and printable.
fn probe_doc(b: &[u8], limit: usize) -> Probe {
    match parser::first_key(b, limit) {
        Parse::Ok((_, k), _) if k.iter().all(|&c| (0x20..0x7f).contains(&c)) => Probe::Match,
        Parse::Incomplete(_) => Probe::NeedMore,
        _ => Probe::NoMatch,
    }
}

/// Probes a message header and the start of its body; `client` for the client direction.
fn probe_message(b: &[u8], client: bool) -> Probe {
    // Little-endian length of at most 48 MB: the last byte is at most 2.
    if b.get(3).is_some_and(|&c| c > 2) {
        return Probe::NoMatch;
    }
    let h = match parser::header(b) {
        Parse::Ok(h, _) => h,
        Parse::Invalid => return Probe::NoMatch,
        Parse::Incomplete(_) => {
            // Decide on the parts that are there: length, then the opcode bytes.
            if parser::le32(b, 0).is_some_and(|l| !(17..=parser::MAX_MESSAGE as i32).contains(&l)) {
                return Probe::NoMatch;
            }
            if client && b.len() > 8 && b.get(8..).is_some_and(|r| r.iter().take(4).any(|&c| c != 0)) {
                return Probe::NoMatch;
            }
            let op = b.get(12..).unwrap_or(&[]);
            let known = COUNTED.iter().any(|o| o.to_le_bytes().starts_with(op));
            return if known { Probe::NeedMore } else { Probe::NoMatch };
        }
    };
    if client && h.response_to != 0 {
        return Probe::NoMatch;
    }
    let body = &b[parser::HEADER..b.len().min(h.len)];
    let room = h.len - parser::HEADER;
    let le = |off: usize| parser::le32(body, off);
    match h.op {
        parser::OP_MSG => {
            let Some(flags) = le(0) else { return Probe::NeedMore };
            if flags as u32 & !parser::MSG_FLAGS != 0 {
                return Probe::NoMatch;
            }
            match body.get(4) {
                None => Probe::NeedMore,
                Some(0) => probe_doc(&body[5..], room.saturating_sub(5)),
                Some(1) => {
                    let Some(size) = le(5) else { return Probe::NeedMore };
                    if !(4..=room as i32 - 5).contains(&size) {
                        return Probe::NoMatch;
                    }
                    match parser::cstring(body, 9, PROBE_MAX_NAME) {
                        Parse::Ok(id, _) if !id.is_empty() && id.iter().all(|&c| c.is_ascii_graphic()) => Probe::Match,
                        Parse::Incomplete(_) => Probe::NeedMore,
                        _ => Probe::NoMatch,
                    }
                }
                Some(_) => Probe::NoMatch,
            }
        }
        parser::OP_QUERY if client => {
            let Some(flags) = le(0) else { return Probe::NeedMore };
            if flags as u32 & !0xfe != 0 {
                return Probe::NoMatch;
            }
            let (name, n) = match parser::cstring(body, 4, PROBE_MAX_NAME) {
                Parse::Ok(name, n) => (name, n),
                Parse::Incomplete(_) => {
                    let s = body.get(4..).unwrap_or(&[]);
                    return if s.iter().all(|&c| c.is_ascii_graphic()) { Probe::NeedMore } else { Probe::NoMatch };
                }
                Parse::Invalid => return Probe::NoMatch,
            };
            if !name.contains(&b'.') || !name.iter().all(|&c| c.is_ascii_graphic()) {
                return Probe::NoMatch;
            }
            match body.get(n + 8..) {
                None => Probe::NeedMore,
                Some(doc) => probe_doc(doc, room.saturating_sub(n + 8)),
            }
        }
        parser::OP_REPLY if !client => {
            let Some(flags) = le(0) else { return Probe::NeedMore };
            if flags as u32 & !0xf != 0 {
                return Probe::NoMatch;
            }
            let Some(returned) = le(16) else { return Probe::NeedMore };
            match returned {
                0 if room == 20 => Probe::Match,
                1.. => probe_doc(body.get(20..).unwrap_or(&[]), room.saturating_sub(20)),
                _ => Probe::NoMatch,
            }
        }
        parser::OP_COMPRESSED => {
            let Some(orig) = le(0) else { return Probe::NeedMore };
            if orig == parser::OP_COMPRESSED || parser::op_name(orig).is_none() {
                return Probe::NoMatch;
            }
            let Some(size) = le(4) else { return Probe::NeedMore };
            if !(0..=parser::MAX_MESSAGE as i32).contains(&size) {
                return Probe::NoMatch;
            }
            match body.get(8) {
                None => Probe::NeedMore,
                Some(0..=3) => Probe::Match,
                Some(_) => Probe::NoMatch,
            }
        }
        _ => Probe::NoMatch,
    }
}

impl AppParser for Mongodb {
    const APP: App = App::Mongodb;
    const PORTS: &'static [u16] = &[27017, 27018, 27019];
    const TRANSPORT: Transport = Transport::Tcp;
    const MIDSTREAM: Option<crate::app::midstream::Framing> = Some(MIDSTREAM);

    fn probe(dir: Dir, data: &[u8]) -> Probe {
        probe_message(data, dir == Dir::ToServer)
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
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
            let h = match parser::header(rest) {
                Parse::Ok(h, _) => h,
                Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                // A length or opcode no MongoDB peer sends: not MongoDB.
                Parse::Invalid => {
                    self.violation = true;
                    self.stopped[d] = true;
                    return Feed::Invalid { consumed: off };
                }
            };
            let window = h.len.min(HEAD);
            let Some(body) = rest.get(parser::HEADER..window) else {
                return Feed::Need { consumed: off, at_least: window };
            };
            self.on_message(dir, &h, body);
            let take = h.len.min(rest.len());
            off += take;
            self.skip[d] = (h.len - take) as u64;
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
        if self.n_commands > 0 {
            out.insert("command".into(), self.commands[0].as_str().into());
        }
        out.insert("commands".into(), self.command_names().map(Value::from).collect());
        if let Some(db) = &self.db {
            out.insert("db".into(), db.as_str().into());
        }
        let mut ops = Map::new();
        for (i, &n) in self.ops.iter().enumerate() {
            if n > 0 {
                let name = COUNTED.get(i).and_then(|&o| parser::op_name(o)).unwrap_or("unknown");
                ops.insert(name.into(), n.into());
            }
        }
        out.insert("opcodes".into(), ops.into());
        out.insert("messages_to_server".into(), self.messages[0].into());
        out.insert("messages_to_client".into(), self.messages[1].into());
        if let Some(c) = self.compressor {
            let name = match c {
                0 => "noop",
                1 => "snappy",
                2 => "zlib",
                3 => "zstd",
                _ => "unknown",
            };
            out.insert("compressor".into(), name.into());
        }
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
