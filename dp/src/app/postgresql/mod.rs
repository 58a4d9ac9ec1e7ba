//! PostgreSQL frontend/backend protocol v3 (PostgreSQL documentation, "Frontend/Backend
//! Protocol": "Message Flow" and "Message Formats"; see [`parser`]).
//!
//! Written here rather than with the `pgwire` crate: its codecs decode from a `BytesMut` into
//! owned messages (`Query { query: String }`, `Startup` with a `BTreeMap` of parameters), so every
//! message allocates, and they need the whole message in the buffer: a 1 GB `CopyData` or a huge
//! `Query` would have to be buffered. Here each message is framed by its length field; only its
//! first [`parser::WINDOW`] bytes are looked at and the rest is skipped by counting.
//!
//! Client side: the start-up phase takes untyped messages (`SSLRequest`, `GSSENCRequest`,
//! `CancelRequest`, `StartupMessage`); bytes after an `SSLRequest` / `GSSENCRequest` that are not
//! a start-up message are the encrypted session (parsing stops). After the `StartupMessage`,
//! typed messages: `Query` and `Parse` texts are kept ([`QUERY_TEXT`] bytes, first and last, with
//! counts). Server side: a single `S` or `G` byte first accepts encryption (parsing stops), `N`
//! refuses it; then typed messages: `Authentication*` (method and outcome), `ParameterStatus`
//! (`server_version`), `ErrorResponse` (count; first severity, SQLSTATE and message),
//! `CommandComplete` count. Directions are parsed independently; a gap stops the direction it
//! hits unless it falls inside a payload being skipped.
//!
//! A message type the protocol does not define (frontend types from the client, backend types
//! from the server), an impossible length, or a start-up packet that is none answers
//! [`Feed::Invalid`]: the server (or libpq) closes the connection there, and the engine detects
//! the app again.
//!
//! Every `Query` and `Parse` text (its first [`parser::WINDOW`] bytes) goes to the
//! statement-level SQL injection detector ([`crate::detect::Threats::sql_in`], standard quoting
//! with `E'…'` and dollar-quoted strings).
//!
//! **Mid-stream** ([`MIDSTREAM`], [`crate::app::midstream`]): a session picked up after its
//! start-up is PostgreSQL when four typed messages (a type byte of the side's set, a length
//! `4..=2^30` counting itself) follow each other at the offsets their lengths announce, none of
//! a type only the other side sends (a result set: `DataRow` after `DataRow`). A type only the
//! server sends (`ReadyForQuery`, `RowDescription`, ...) in the proving message says which side
//! is the server. The parser then reads typed messages both ways (no start-up, user or
//! database).

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{Untyped, MAX_MESSAGE, MAX_STARTUP, WINDOW};

/// Query text kept (bytes).
pub const QUERY_TEXT: usize = 512;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Phase {
    /// Client: untyped start-up messages. Server: `S`/`N`/`G` encryption answers possible.
    #[default]
    Startup,
    Typed,
    Stopped,
}

#[derive(Debug, Clone, Copy, Default)]
struct DirState {
    phase: Phase,
    /// Body bytes of the current message still to skip.
    skip: usize,
    messages: u64,
}

/// The first `ErrorResponse`.
#[derive(Debug, Clone, Default)]
pub struct PgError {
    /// Severity (`V`, else `S`).
    pub severity: Text<16>,
    /// SQLSTATE code.
    pub code: Text<8>,
    /// Primary message, truncated to 256 bytes.
    pub message: Text<256>,
}

/// Per-session PostgreSQL state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Postgresql {
    d: [DirState; 2],
    ssl_requested: bool,
    gssenc_requested: bool,
    encrypted: bool,
    cancel: bool,
    protocol: Option<u32>,
    user: Option<Text<64>>,
    database: Option<Text<64>>,
    application_name: Option<Text<64>>,
    replication: Option<Text<16>>,
    server_version: Option<Text<64>>,
    auth_method: Option<&'static str>,
    sasl_mechanism: Option<Text<32>>,
    auth_ok: Option<bool>,
    queries: u64,
    parses: u64,
    first_query: Option<Text<QUERY_TEXT>>,
    last_query: Option<Text<QUERY_TEXT>>,
    completed: u64,
    errors: u64,
    first_error: Option<PgError>,
    violation: bool,
    gap: bool,
    threats: crate::detect::Threats,
}

enum Step {
    Took(usize),
    Need(usize),
    Stop,
    /// Not PostgreSQL from here ([`Feed::Invalid`]).
    Invalid,
}

impl Postgresql {
    /// Text of the last `Query` or `Parse` (first [`QUERY_TEXT`] bytes).
    pub fn last_query(&self) -> Option<&str> {
        self.last_query.as_ref().map(|t| t.as_str())
    }

    /// Text of the first `Query` or `Parse` (first [`QUERY_TEXT`] bytes).
    pub fn first_query(&self) -> Option<&str> {
        self.first_query.as_ref().map(|t| t.as_str())
    }

    /// Number of `Query` (simple protocol) and `Parse` (extended protocol) messages.
    pub fn query_count(&self) -> u64 {
        self.queries.saturating_add(self.parses)
    }

    /// User from the `StartupMessage`.
    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().map(|t| t.as_str())
    }

    /// The first `ErrorResponse`.
    pub fn first_error(&self) -> Option<&PgError> {
        self.first_error.as_ref()
    }

    fn query(&mut self, q: &[u8]) {
        let q = text::<QUERY_TEXT>(q);
        if self.first_query.is_none() {
            self.first_query = Some(q);
        }
        self.last_query = Some(q);
    }

    /// One untyped client message (start-up phase).
    fn client_startup(&mut self, rest: &[u8]) -> Step {
        let Some(len) = parser::be32(rest, 0).map(|l| l as usize) else { return Step::Need(4) };
        let after_request = self.ssl_requested || self.gssenc_requested;
        if !(8..=MAX_STARTUP).contains(&len) {
            if after_request {
                self.encrypted = true; // TLS / GSSAPI bytes after the request was accepted
                return Step::Stop;
            }
            return Step::Invalid;
        }
        let window = len.min(WINDOW);
        let Some(body) = rest.get(4..window) else { return Step::Need(window) };
        let Some(msg) = parser::untyped(len, body) else { return Step::Need(8) };
        match msg {
            Untyped::SslRequest => self.ssl_requested = true,
            Untyped::GssEncRequest => self.gssenc_requested = true,
            Untyped::Cancel(_) => self.cancel = true,
            Untyped::Startup(proto, params) => {
                self.protocol = Some(proto);
                for (k, v) in parser::params(params) {
                    match k {
                        b"user" => self.user = Some(text(v)),
                        b"database" => self.database = Some(text(v)),
                        b"application_name" => self.application_name = Some(text(v)),
                        b"replication" => self.replication = Some(text(v)),
                        _ => {}
                    }
                }
                self.d[0].phase = Phase::Typed;
            }
            Untyped::Other(_) => {
                if after_request {
                    self.encrypted = true;
                    return Step::Stop;
                }
                return Step::Invalid;
            }
        }
        self.d[0].skip = len - window;
        Step::Took(window)
    }

    /// One typed message of direction `d`: header checks, then `handle` over its window.
    fn typed(&mut self, d: usize, rest: &[u8]) -> Step {
        let Some((t, len)) = parser::typed(rest) else {
            // Reject a bad type as soon as it arrives.
            return if rest.first().is_some_and(|t| !known_type(d, *t)) { Step::Invalid } else { Step::Need(5) };
        };
        // A server closes the connection on an unknown frontend message type ("invalid frontend
        // message type"), libpq on an unknown backend one ("lost synchronization").
        if !(4..=MAX_MESSAGE).contains(&len) || !known_type(d, t) {
            return Step::Invalid;
        }
        let window = (len - 4).min(WINDOW);
        let Some(body) = rest.get(5..5 + window) else { return Step::Need(5 + window) };
        self.d[d].skip = len - 4 - window;
        self.d[d].messages = self.d[d].messages.saturating_add(1);
        if d == Dir::ToServer as usize {
            self.client_message(t, body, window < len - 4);
        } else {
            self.server_message(t, body);
        }
        Step::Took(5 + window)
    }

    /// One client message (`body` cut to the window when `truncated`).
    fn client_message(&mut self, t: u8, body: &[u8], truncated: bool) {
        match t {
            b'Q' => {
                self.queries = self.queries.saturating_add(1);
                let q = parser::cstr(body).0;
                self.threats.sql_in(Dir::ToServer, crate::detect::sql::Dialect::Ansi, truncated, q);
                self.query(q);
            }
            b'P' => {
                self.parses = self.parses.saturating_add(1);
                let (_name, rest) = parser::cstr(body);
                let q = parser::cstr(rest.unwrap_or_default()).0;
                self.threats.sql_in(Dir::ToServer, crate::detect::sql::Dialect::Ansi, truncated, q);
                self.query(q);
            }
            _ => {}
        }
    }

    fn server_message(&mut self, t: u8, body: &[u8]) {
        match t {
            b'R' => {
                let code = parser::be32(body, 0);
                match code {
                    Some(0) => self.auth_ok = Some(true),
                    Some(c) if self.auth_method.is_none() => {
                        self.auth_method = parser::auth_name(c).or(Some("other"));
                        if c == 10 {
                            let mech = parser::cstr(body.get(4..).unwrap_or_default()).0;
                            self.sasl_mechanism = Some(text(mech));
                        }
                    }
                    _ => {}
                }
            }
            b'E' => {
                let f = parser::fields(body);
                if self.auth_ok.is_none() && f.code.is_some_and(|c| c.starts_with(b"28")) {
                    self.auth_ok = Some(false);
                }
                self.errors = self.errors.saturating_add(1);
                if self.first_error.is_none() {
                    self.first_error = Some(PgError {
                        severity: text(f.severity_nl.or(f.severity).unwrap_or_default()),
                        code: text(f.code.unwrap_or_default()),
                        message: text(f.message.unwrap_or_default()),
                    });
                }
            }
            b'S' => {
                let (k, rest) = parser::cstr(body);
                if k == b"server_version" {
                    self.server_version = Some(text(parser::cstr(rest.unwrap_or_default()).0));
                }
            }
            b'C' => self.completed = self.completed.saturating_add(1),
            _ => {}
        }
    }

    fn stop(&mut self, d: usize, len: usize) -> Feed {
        self.d[d].phase = Phase::Stopped;
        if self.encrypted || self.d[1 - d].phase == Phase::Stopped {
            Feed::Done
        } else {
            Feed::Consumed(len)
        }
    }
}

/// Message types of protocol 3.0 (PostgreSQL "Message Formats"): frontend (`d` 0), backend
/// (`d` 1).
fn known_type(d: usize, t: u8) -> bool {
    if d == Dir::ToServer as usize { FRONTEND.contains(&t) } else { BACKEND.contains(&t) }
}

/// Message types of the frontend (client) and backend (server) after start-up (protocol 3.0,
/// "Message Formats").
const FRONTEND: &[u8] = b"BCdcfDEHFpPQSX";
const BACKEND: &[u8] = b"RK23CdcGHWDIEVvnNAtS1sZT";

/// Mid-stream framing of PostgreSQL (module docs): a typed message header at the start of `b`
/// (a type either side sends and a length `4..=`[`parser::MAX_MESSAGE`]), with the side its type
/// belongs to when only one side sends it.
pub fn mid_head(b: &[u8], _boundary: bool) -> crate::app::midstream::Head {
    use crate::app::midstream::{Head, Msg, Role};
    let Some(&t) = b.first() else { return Head::Need(5) };
    let (client, server) = (FRONTEND.contains(&t), BACKEND.contains(&t));
    if !client && !server || b.get(1).is_some_and(|&c| c > 0x3f) {
        return Head::No;
    }
    let Some((_, len)) = parser::typed(b) else { return Head::Need(5) };
    if !(4..=parser::MAX_MESSAGE).contains(&len) {
        return Head::No;
    }
    let role = match (client, server) {
        (true, false) => Role::Client,
        (false, true) => Role::Server,
        _ => Role::Either,
    };
    Head::Msg(Msg { len: (len + 1) as u32, key: role as u32, role, starts: true, ends: true, ..Msg::default() })
}

/// Messages of one direction are all of one side's types.
fn mid_follows(prev: crate::app::midstream::Prev, next: &crate::app::midstream::Msg) -> bool {
    let either = crate::app::midstream::Role::Either as u32;
    prev.key == either || next.key == either || prev.key == next.key
}

/// How PostgreSQL is recognised mid-stream (module docs): four typed messages in a row.
pub const MIDSTREAM: crate::app::midstream::Framing =
    crate::app::midstream::Framing { head: mid_head, follows: mid_follows, chain: 4 };

impl AppParser for Postgresql {
    const APP: App = App::Postgresql;
    const PORTS: &'static [u16] = &[5432, 5433, 6432];
    const TRANSPORT: Transport = Transport::Tcp;
    const MIDSTREAM: Option<crate::app::midstream::Framing> = Some(MIDSTREAM);

    fn resumed() -> Self {
        let mut p = Postgresql::default();
        for d in &mut p.d {
            d.phase = Phase::Typed;
        }
        p
    }

    fn probe(dir: Dir, data: &[u8]) -> Probe {
        match dir {
            Dir::ToServer => probe_client(data),
            Dir::ToClient => probe_server(data, 0),
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        if self.encrypted {
            return Feed::Done;
        }
        let mut off = 0;
        loop {
            let st = &mut self.d[d];
            if st.phase == Phase::Stopped {
                return self.stop(d, data.len());
            }
            if st.skip > 0 {
                let n = st.skip.min(data.len() - off);
                st.skip -= n;
                off += n;
                if st.skip > 0 {
                    return Feed::Consumed(off);
                }
            }
            let rest = &data[off..];
            let Some(&first) = rest.first() else { return Feed::Consumed(off) };
            let step = match (dir, st.phase) {
                (Dir::ToServer, Phase::Startup) => self.client_startup(rest),
                (Dir::ToClient, Phase::Startup) if matches!(first, b'N' | b'S' | b'G') => match first {
                    b'N' => Step::Took(1), // encryption refused; the start-up follows in clear
                    _ => {
                        self.encrypted = true;
                        Step::Stop
                    }
                },
                (Dir::ToClient, Phase::Startup) => {
                    st.phase = Phase::Typed;
                    continue;
                }
                _ => self.typed(d, rest),
            };
            match step {
                Step::Took(n) => off += n,
                Step::Need(k) => return Feed::Need { consumed: off, at_least: k },
                Step::Stop => return self.stop(d, data.len()),
                Step::Invalid => {
                    self.violation = true;
                    self.d[d].phase = Phase::Stopped;
                    return Feed::Invalid { consumed: off };
                }
            }
        }
    }

    fn gap(&mut self, dir: Dir, len: usize) -> bool {
        self.gap = true;
        let encrypted = self.encrypted;
        let st = &mut self.d[dir as usize];
        if st.phase == Phase::Stopped || encrypted {
            return true;
        }
        if st.skip >= len {
            st.skip -= len; // lost bytes were payload being skipped anyway
            return true;
        }
        st.phase = Phase::Stopped; // message boundaries unknown
        false
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        let put = |out: &mut Map<String, Value>, k: &str, v: Option<&str>| {
            if let Some(v) = v {
                out.insert(k.into(), v.into());
            }
        };
        if let Some(p) = self.protocol {
            out.insert("protocol".into(), format!("{}.{}", p >> 16, p & 0xffff).into());
        }
        put(out, "user", self.user.as_ref().map(|t| t.as_str()));
        put(out, "database", self.database.as_ref().map(|t| t.as_str()));
        put(out, "application_name", self.application_name.as_ref().map(|t| t.as_str()));
        put(out, "replication", self.replication.as_ref().map(|t| t.as_str()));
        put(out, "server_version", self.server_version.as_ref().map(|t| t.as_str()));
        out.insert("ssl_requested".into(), self.ssl_requested.into());
        if self.gssenc_requested {
            out.insert("gssenc_requested".into(), true.into());
        }
        out.insert("encrypted".into(), self.encrypted.into());
        if self.cancel {
            out.insert("cancel_request".into(), true.into());
        }
        put(out, "auth_method", self.auth_method);
        put(out, "sasl_mechanism", self.sasl_mechanism.as_ref().map(|t| t.as_str()));
        if let Some(ok) = self.auth_ok {
            out.insert("auth_ok".into(), ok.into());
        }
        out.insert("queries".into(), self.queries.into());
        out.insert("parses".into(), self.parses.into());
        put(out, "first_query", self.first_query.as_ref().map(|t| t.as_str()));
        put(out, "last_query", self.last_query.as_ref().map(|t| t.as_str()));
        out.insert("commands_completed".into(), self.completed.into());
        out.insert("messages_to_server".into(), self.d[0].messages.into());
        out.insert("messages_to_client".into(), self.d[1].messages.into());
        out.insert("errors".into(), self.errors.into());
        if let Some(e) = &self.first_error {
            out.insert("first_error_severity".into(), e.severity.as_str().into());
            out.insert("first_error_code".into(), e.code.as_str().into());
            out.insert("first_error".into(), e.message.as_str().into());
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

/// Client probe: `SSLRequest`, `GSSENCRequest`, `CancelRequest`, or a `StartupMessage` for
/// protocol 3.x whose first parameter name is an identifier followed by a NUL-terminated value.
fn probe_client(b: &[u8]) -> Probe {
    // Length: at most MAX_STARTUP (10 000), so the first two bytes are zero.
    if b.iter().take(2).any(|&c| c != 0) {
        return Probe::NoMatch;
    }
    let Some(len) = parser::be32(b, 0).map(|l| l as usize) else { return Probe::NeedMore };
    if !(8..=MAX_STARTUP).contains(&len) {
        return Probe::NoMatch;
    }
    // Code: 0x0003_00mm (start-up) or 0x04d2_162e..=0x04d2_1630 (cancel, SSL, GSSENC).
    let code = &b[4..b.len().min(8)];
    let startup_prefix = [0u8, 3, 0];
    let special_prefix = [4u8, 0xd2, 0x16];
    let n = code.len().min(3);
    let is_startup = code[..n] == startup_prefix[..n];
    let is_special = code[..n] == special_prefix[..n];
    if !is_startup && !is_special {
        return Probe::NoMatch;
    }
    let Some(c) = parser::be32(b, 4) else { return Probe::NeedMore };
    match c {
        parser::SSL_REQUEST | parser::GSSENC_REQUEST if len == 8 => return Probe::Match,
        parser::CANCEL_REQUEST if (16..=264).contains(&len) => return Probe::Match,
        c if c >> 16 == 3 && c & 0xffff <= 9 && len > 8 => {}
        _ => return Probe::NoMatch,
    }
    // First parameter: identifier name, NUL, printable value, NUL.
    let params = &b[8..b.len().min(len)];
    let (k, rest) = parser::cstr(params);
    if k.len() > 64 || !k.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.') {
        return Probe::NoMatch;
    }
    let Some(rest) = rest else {
        return if params.len() == len - 8 { Probe::NoMatch } else { Probe::NeedMore };
    };
    if k.is_empty() {
        return Probe::NoMatch;
    }
    let (v, end) = parser::cstr(rest);
    if v.len() > 1024 || v.iter().any(|&c| c < 0x20 || c == 0x7f) {
        return Probe::NoMatch;
    }
    match end {
        Some(_) => Probe::Match,
        None if 8 + k.len() + 1 + rest.len() >= len => Probe::NoMatch,
        None => Probe::NeedMore,
    }
}

/// Server probe: an `Authentication*` request with a known code and a fitting length, an
/// `ErrorResponse` starting with a severity field, a `NegotiateProtocolVersion`, or the one-byte
/// answer to an encryption request (`N` followed by one of those; `S` followed by a TLS record).
fn probe_server(b: &[u8], depth: u8) -> Probe {
    let Some(&t) = b.first() else { return Probe::NeedMore };
    let len_ok = |max: usize| {
        // Length field prefix: high bytes zero, value within [8, max] once complete.
        let hi_ok = b.iter().skip(1).take(2).all(|&c| c == 0);
        hi_ok && parser::be32(b, 1).is_none_or(|l| (8..=max).contains(&(l as usize)))
    };
    match t {
        b'R' => {
            if !len_ok(2048) || b.iter().skip(5).take(3).any(|&c| c != 0) {
                return Probe::NoMatch;
            }
            let (Some(len), Some(code)) = (parser::be32(b, 1), parser::be32(b, 5)) else { return Probe::NeedMore };
            let fits = match code {
                0 | 2 | 3 | 6 | 7 | 9 => len == 8,
                5 => len == 12,
                8 | 11 | 12 => len > 8,
                10 => len > 9,
                _ => false,
            };
            if fits {
                Probe::Match
            } else {
                Probe::NoMatch
            }
        }
        b'E' => {
            if !len_ok(8192) {
                return Probe::NoMatch;
            }
            let f = b.get(5..).unwrap_or_default();
            match f.first() {
                None => return Probe::NeedMore,
                Some(b'S' | b'V') => {}
                Some(_) => return Probe::NoMatch,
            }
            let (sev, rest) = parser::cstr(&f[1..]);
            if sev.len() > 32 || !sev.iter().all(|&c| c >= 0x20 && c != 0x7f) {
                return Probe::NoMatch;
            }
            match rest.map(|r| r.first()) {
                None => Probe::NeedMore,
                Some(None) => Probe::NeedMore,
                Some(Some(c)) if b"SVCMDHPpqWsctdnFLR".contains(c) && !sev.is_empty() => Probe::Match,
                Some(Some(_)) => Probe::NoMatch,
            }
        }
        b'v' => {
            if !len_ok(1024) || b.iter().skip(5).take(3).any(|&c| c != 0) {
                return Probe::NoMatch;
            }
            match parser::be32(b, 5) {
                None => Probe::NeedMore,
                Some(minor) if minor <= 9 => Probe::Match,
                Some(_) => Probe::NoMatch,
            }
        }
        b'N' if depth < 2 => probe_server(&b[1..], depth + 1),
        b'S' if depth < 2 => match b.get(1..3) {
            None if b.get(1).is_none_or(|&c| c == 0x16) => Probe::NeedMore,
            Some([0x16, 0x03]) => Probe::Match,
            _ => Probe::NoMatch,
        },
        _ => Probe::NoMatch,
    }
}

#[cfg(test)]
mod tests;
