//! MySQL / MariaDB client-server protocol (MySQL internals manual "Client/Server Protocol":
//! "MySQL Packets", "Connection Phase" with `Protocol::HandshakeV10`,
//! `Protocol::HandshakeResponse41` and `Protocol::SSLRequest`, "Command Phase" `COM_*` packets,
//! `ERR_Packet`; MariaDB "Connection" and "1 - Connecting" pages for the `5.5.5-` version prefix
//! and extended capabilities). See [`parser`] for the wire functions.
//!
//! Written here rather than with `mysql_common`: that crate is a large codec for client
//! libraries (it pulls in a big dependency tree: serde, regex, num-bigint, crypto, time types),
//! decodes whole packets into owned values, and offers no API for looking at the first bytes of a
//! 16 MB packet and skipping the rest. Here each packet is framed by its 4-byte header; only its
//! first [`parser::WINDOW`] bytes are looked at and the rest is skipped by counting, so nothing
//! larger than the window is ever requested from the stream engine. Continuation packets of a
//! multi-packet payload (after a `0xFFFFFF`-byte packet) are skipped whole.
//!
//! Directions are parsed independently (the stream engine may deliver them in any order):
//! client packets with sequence id 0 are commands; sequence id 1 before any command is the
//! handshake response (or SSLRequest); other client packets belong to authentication exchanges or
//! `LOAD DATA LOCAL` and are only counted. On the server side the first packet is the greeting
//! (or a connection error); any later packet starting with `0xff` (outside a continuation) is an
//! `ERR_Packet` (text and binary result rows never start with `0xff`).
//!
//! Extracted: server version (MariaDB's `5.5.5-` prefix removed), connection id, user, database,
//! auth plugin, client name/version and program name (connection attributes), whether TLS was
//! requested (then parsing stops: the rest is TLS) or compression negotiated (then parsing stops),
//! command counts per `COM_*` name and the first [`MAX_NAMES`] distinct names, query text of
//! `COM_QUERY` / `COM_STMT_PREPARE` (first and last, [`QUERY_TEXT`] bytes) with a count, the
//! authentication outcome, and errors (count, first code, SQL state and message).
//!
//! After authentication a client packet whose sequence id neither starts a command (0) nor
//! continues the exchange answers [`Feed::Invalid`]: MySQL itself closes such a connection
//! ("Got packets out of order"), and other protocols' bytes read as MySQL headers land there.
//!
//! Every `COM_QUERY` / `COM_STMT_PREPARE` text (its first [`parser::WINDOW`] bytes) goes to the
//! statement-level SQL injection detector with MySQL's quoting rules
//! ([`crate::detect::Threats::sql_in`]).

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{Header, HEADER, MAX_PAYLOAD, WINDOW};

/// Distinct command names remembered.
pub const MAX_NAMES: usize = 8;
/// Query text kept (bytes).
pub const QUERY_TEXT: usize = 512;
/// Per-command counters: `COM_SLEEP` (0x00) to `COM_RESET_CONNECTION` (0x1f), then one for all
/// other bytes (including MariaDB's `COM_STMT_BULK_EXECUTE`).
const COUNTERS: usize = 0x21;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Mode {
    #[default]
    Active,
    Stopped,
}

#[derive(Debug, Clone, Copy, Default)]
struct DirState {
    /// Payload bytes of the current packet still to skip.
    skip: usize,
    /// The previous packet was `MAX_PAYLOAD` long: the next one continues it.
    cont: bool,
    packets: u64,
    mode: Mode,
    /// Sequence id of the last packet.
    last_seq: u8,
}

/// Per-command counters (arrays this long have no `Default`).
#[derive(Debug, Clone, Copy)]
struct Counts([u32; COUNTERS]);

impl Default for Counts {
    fn default() -> Self {
        Counts([0; COUNTERS])
    }
}

/// The first error packet seen.
#[derive(Debug, Clone, Default)]
pub struct MysqlError {
    /// Error code.
    pub code: u16,
    /// SQL state (5 characters) if sent.
    pub sql_state: Option<Text<8>>,
    /// Message, truncated to 256 bytes.
    pub message: Text<256>,
}

/// Per-session MySQL state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Mysql {
    d: [DirState; 2],
    protocol: Option<u8>,
    server_version: Option<Text<64>>,
    connection_id: Option<u32>,
    server_auth_plugin: Option<Text<32>>,
    login_seen: bool,
    user: Option<Text<64>>,
    database: Option<Text<64>>,
    auth_plugin: Option<Text<32>>,
    client_name: Option<Text<32>>,
    client_version: Option<Text<32>>,
    program_name: Option<Text<32>>,
    tls: bool,
    compressed: bool,
    auth_ok: Option<bool>,
    counts: Counts,
    names: [u8; MAX_NAMES],
    n_names: usize,
    queries: u64,
    first_query: Option<Text<QUERY_TEXT>>,
    last_query: Option<Text<QUERY_TEXT>>,
    errors: u64,
    /// Authentication failures answered by the server (`ERR_Packet` 1045 / 1698 or SQL state
    /// 28000), saturating.
    auth_failures: u32,
    /// Of those, how many [`Mysql::take_auth_failures`] handed out.
    auth_failures_taken: u32,
    first_error: Option<MysqlError>,
    violation: bool,
    gap: bool,
    /// The server's last packet asks the client for more (an authentication switch or more
    /// data, a `LOAD DATA LOCAL` file request).
    awaits_reply: bool,
    threats: crate::detect::Threats,
}

impl Mysql {
    /// Text of the last `COM_QUERY` / `COM_STMT_PREPARE` (first [`QUERY_TEXT`] bytes).
    pub fn last_query(&self) -> Option<&str> {
        self.last_query.as_ref().map(|t| t.as_str())
    }

    /// Text of the first `COM_QUERY` / `COM_STMT_PREPARE` (first [`QUERY_TEXT`] bytes).
    pub fn first_query(&self) -> Option<&str> {
        self.first_query.as_ref().map(|t| t.as_str())
    }

    /// Number of `COM_QUERY` and `COM_STMT_PREPARE` commands.
    pub fn query_count(&self) -> u64 {
        self.queries
    }

    /// User name from the handshake response (or `COM_CHANGE_USER`).
    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().map(|t| t.as_str())
    }

    /// The first error packet.
    pub fn first_error(&self) -> Option<&MysqlError> {
        self.first_error.as_ref()
    }

    /// Authentication failures the server answered in this session so far (saturating): an
    /// `ERR_Packet` with code 1045 `ER_ACCESS_DENIED_ERROR` (wrong user or password), 1698
    /// `ER_ACCESS_DENIED_NO_PASSWORD_ERROR`, or SQL state `28000` (invalid authorization), after
    /// the greeting: to the handshake response, an authentication switch, or a
    /// `COM_CHANGE_USER` (which lets one connection try many passwords). 1044 (access to a
    /// database denied) is not one: the password was right. The fact the per-core
    /// `mysql_access_denied` detector ([`crate::detect::auth_fail`]) counts across sessions;
    /// nothing is recorded here, since a single failure is a typo, not an attack. A session
    /// that asked for TLS (`tls` in the record) shows none: the exchange is encrypted.
    pub fn auth_failures(&self) -> u32 {
        self.auth_failures
    }

    /// The [`Mysql::auth_failures`] not taken before: the per-core `mysql_access_denied`
    /// detector counts each failure once.
    pub fn take_auth_failures(&mut self) -> u32 {
        let n = self.auth_failures - self.auth_failures_taken;
        self.auth_failures_taken = self.auth_failures;
        n
    }

    fn client_packet(&mut self, h: Header, p: &[u8]) {
        if h.seq == 0 && p.is_empty() {
            return;
        }
        if h.seq == 0 {
            self.command(p, h.len > p.len());
        } else if h.seq == 1 && !self.login_seen {
            self.login_seen = true;
            let Some(l) = parser::login(p, h.len) else {
                self.violation = true;
                return;
            };
            if l.ssl_request {
                self.tls = true;
                return;
            }
            if l.capabilities & parser::CLIENT_COMPRESS != 0 {
                self.compressed = true;
            }
            self.user = l.user.map(text);
            self.database = l.database.map(text);
            self.auth_plugin = l.auth_plugin.map(text);
            self.client_name = l.client_name.map(text);
            self.client_version = l.client_version.map(text);
            self.program_name = l.program_name.map(text);
        }
    }

    /// One command packet (`p`, cut to the window when `truncated`).
    fn command(&mut self, p: &[u8], truncated: bool) {
        let Some((&code, body)) = p.split_first() else { return };
        let slot = if usize::from(code) < COUNTERS - 1 { usize::from(code) } else { COUNTERS - 1 };
        self.counts.0[slot] = self.counts.0[slot].saturating_add(1);
        if self.n_names < MAX_NAMES && !self.names[..self.n_names].contains(&code) {
            self.names[self.n_names] = code;
            self.n_names += 1;
        }
        match code {
            parser::COM_QUERY | parser::COM_STMT_PREPARE => {
                let q = text::<QUERY_TEXT>(body);
                self.threats.sql_in(Dir::ToServer, crate::detect::sql::Dialect::Mysql, truncated, body);
                self.queries = self.queries.saturating_add(1);
                if self.first_query.is_none() {
                    self.first_query = Some(q);
                }
                self.last_query = Some(q);
            }
            parser::COM_INIT_DB if self.database.is_none() => self.database = Some(text(body)),
            parser::COM_CHANGE_USER => {
                if let Some(u) = parser::Cursor::new(body).cstr() {
                    self.user = Some(text(u));
                }
            }
            _ => {}
        }
    }

    fn server_packet(&mut self, h: Header, p: &[u8]) {
        let first = self.d[Dir::ToClient as usize].packets == 1;
        match p.first() {
            Some(10 | 9) if first => {
                let Some(g) = parser::greeting(p) else {
                    self.violation = true;
                    return;
                };
                self.protocol = Some(g.protocol);
                let v = g.version.strip_prefix(b"5.5.5-").filter(|v| !v.is_empty()).unwrap_or(g.version);
                self.server_version = Some(text(v));
                self.connection_id = Some(g.connection_id);
                if !g.auth_plugin.is_empty() {
                    self.server_auth_plugin = Some(text(g.auth_plugin));
                }
            }
            Some(0xff) => {
                if self.auth_ok.is_none() && self.protocol.is_some() && h.seq >= 2 && self.d[1].packets <= 6 {
                    self.auth_ok = Some(false);
                }
                self.errors = self.errors.saturating_add(1);
                let err = parser::err_packet(p);
                let denied = err.is_some_and(|e| matches!(e.code, 1045 | 1698) || e.sql_state == Some(b"28000"));
                if denied && self.protocol.is_some() {
                    self.auth_failures = self.auth_failures.saturating_add(1);
                }
                if self.first_error.is_none() {
                    if let Some(e) = err {
                        self.first_error = Some(MysqlError {
                            code: e.code,
                            sql_state: e.sql_state.map(text),
                            message: text(e.message),
                        });
                    }
                }
            }
            // The OK closing authentication: among the first few server packets (greeting, auth
            // switch, more data), with a sequence id past the handshake response.
            Some(0x00) if self.auth_ok.is_none() && self.protocol.is_some() && h.seq >= 2 && self.d[1].packets <= 6 => {
                self.auth_ok = Some(true)
            }
            _ if first => self.violation = true,
            _ => {}
        }
    }

    /// After authentication, a client packet starts a command (sequence id 0) or continues the
    /// exchange: the next id after the client's last packet (a multi-packet payload, the
    /// packets of a `LOAD DATA LOCAL` file) or after a server packet that asked for a reply (an
    /// authentication switch of `COM_CHANGE_USER`, a file request). A server checks this and
    /// closes the connection otherwise (`ER_NET_PACKETS_OUT_OF_ORDER`).
    fn seq_ok(&self, seq: u8) -> bool {
        self.auth_ok != Some(true)
            || seq == 0
            || seq == self.d[0].last_seq.wrapping_add(1)
            || self.awaits_reply && seq == self.d[1].last_seq.wrapping_add(1)
    }

    fn stopped(&self) -> bool {
        self.tls || self.compressed
    }
}

impl AppParser for Mysql {
    const APP: App = App::Mysql;
    const PORTS: &'static [u16] = &[3306, 3307];
    const TRANSPORT: Transport = Transport::Tcp;

    fn probe(dir: Dir, data: &[u8]) -> Probe {
        match dir {
            Dir::ToServer => probe_client(data),
            Dir::ToClient => probe_server(data),
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        if self.stopped() {
            return Feed::Done;
        }
        if self.d[d].mode == Mode::Stopped {
            return Feed::Consumed(data.len());
        }
        let mut off = 0;
        loop {
            let st = &mut self.d[d];
            if st.skip > 0 {
                let n = st.skip.min(data.len() - off);
                st.skip -= n;
                off += n;
                if st.skip > 0 {
                    return Feed::Consumed(off);
                }
            }
            let rest = &data[off..];
            if rest.is_empty() {
                return Feed::Consumed(off);
            }
            let Some(h) = parser::header(rest) else {
                return Feed::Need { consumed: off, at_least: HEADER };
            };
            if dir == Dir::ToServer && !self.seq_ok(h.seq) {
                // The server would answer "Got packets out of order" and close: not MySQL.
                self.violation = true;
                self.d[d].mode = Mode::Stopped;
                return Feed::Invalid { consumed: off };
            }
            let st = &mut self.d[d];
            let window = h.len.min(WINDOW);
            let Some(p) = rest.get(HEADER..HEADER + window) else {
                return Feed::Need { consumed: off, at_least: HEADER + window };
            };
            st.packets = st.packets.saturating_add(1);
            st.last_seq = h.seq;
            let cont = st.cont;
            if dir == Dir::ToClient {
                // The first packet of a reply (its id follows the client's) asking for more.
                self.awaits_reply =
                    h.seq == self.d[0].last_seq.wrapping_add(1) && !cont && matches!(p.first(), Some(0xfb | 0xfe | 0x01));
            }
            let st = &mut self.d[d];
            st.cont = h.len == MAX_PAYLOAD;
            st.skip = h.len - window;
            off += HEADER + window;
            if !cont {
                if dir == Dir::ToServer {
                    self.client_packet(h, p);
                } else {
                    self.server_packet(h, p);
                }
            }
            if self.stopped() {
                return Feed::Done;
            }
        }
    }

    fn gap(&mut self, dir: Dir, len: usize) -> bool {
        self.gap = true;
        let stopped = self.stopped();
        let st = &mut self.d[dir as usize];
        if st.mode == Mode::Stopped || stopped {
            return true;
        }
        if st.skip >= len {
            st.skip -= len; // lost bytes were payload being skipped anyway
            return true;
        }
        st.mode = Mode::Stopped; // packet boundaries unknown
        false
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        let s = |t: &Option<Text<64>>| t.as_ref().map(|t| Value::from(t.as_str()));
        let put = |out: &mut Map<String, Value>, k: &str, v: Option<Value>| {
            if let Some(v) = v {
                out.insert(k.into(), v);
            }
        };
        put(out, "protocol", self.protocol.map(Value::from));
        put(out, "server_version", s(&self.server_version));
        put(out, "connection_id", self.connection_id.map(Value::from));
        put(out, "server_auth_plugin", self.server_auth_plugin.as_ref().map(|t| t.as_str().into()));
        put(out, "user", s(&self.user));
        put(out, "database", s(&self.database));
        put(out, "auth_plugin", self.auth_plugin.as_ref().map(|t| t.as_str().into()));
        put(out, "client_name", self.client_name.as_ref().map(|t| t.as_str().into()));
        put(out, "client_version", self.client_version.as_ref().map(|t| t.as_str().into()));
        put(out, "program_name", self.program_name.as_ref().map(|t| t.as_str().into()));
        out.insert("tls".into(), self.tls.into());
        if self.compressed {
            out.insert("compressed".into(), true.into());
        }
        put(out, "auth_ok", self.auth_ok.map(Value::from));
        let names: Vec<Value> = self.names[..self.n_names]
            .iter()
            .map(|&c| parser::command_name(c).map_or_else(|| format!("COM_0x{c:02x}"), str::to_string).into())
            .collect();
        out.insert("commands".into(), names.into());
        let mut counts = Map::new();
        for (code, &n) in self.counts.0.iter().enumerate().filter(|(_, n)| **n > 0) {
            let name = u8::try_from(code).ok().filter(|_| code < COUNTERS - 1).and_then(parser::command_name);
            counts.insert(name.unwrap_or("other").into(), n.into());
        }
        out.insert("command_counts".into(), counts.into());
        out.insert("query_count".into(), self.queries.into());
        let q = |t: &Option<Text<QUERY_TEXT>>| t.as_ref().map(|t| Value::from(t.as_str()));
        put(out, "first_query", q(&self.first_query));
        put(out, "last_query", q(&self.last_query));
        out.insert("errors".into(), self.errors.into());
        if let Some(e) = &self.first_error {
            out.insert("first_error_code".into(), e.code.into());
            put(out, "first_error_sqlstate", e.sql_state.as_ref().map(|t| t.as_str().into()));
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

/// Checks the packet header bytes present so far: payload length at most `max_len` (once all 3
/// length bytes are there), sequence id `seq`.
fn header_prefix_ok(b: &[u8], max_len: usize, seq: u8) -> bool {
    let len_ok = match b.get(..3) {
        Some(l) => usize::from(l[0]) | usize::from(l[1]) << 8 | usize::from(l[2]) << 16 <= max_len,
        None => true,
    };
    len_ok && b.get(3).is_none_or(|&c| c == seq)
}

/// Server probe: `HandshakeV10` (or V9) with a printable version string starting with a digit and
/// the zero filler after the first auth data, or a connection-refusing `ERR_Packet` (code
/// 1000-4999, printable message) as the very first packet.
fn probe_server(b: &[u8]) -> Probe {
    if !header_prefix_ok(b, 2048, 0) {
        return Probe::NoMatch;
    }
    let Some(h) = parser::header(b) else { return Probe::NeedMore };
    if h.len < 8 {
        return Probe::NoMatch;
    }
    let p = &b[HEADER..b.len().min(HEADER + h.len)];
    match p.first() {
        None => Probe::NeedMore,
        Some(10 | 9) => {
            let v = &p[1..];
            let end = v.iter().position(|&c| c == 0);
            let ver = &v[..end.unwrap_or(v.len())];
            if ver.len() > 64
                || ver.first().is_some_and(|c| !c.is_ascii_digit())
                || !ver.iter().all(|&c| (0x20..0x7f).contains(&c))
                || (end == Some(0) && !ver.is_empty())
            {
                return Probe::NoMatch;
            }
            let Some(end) = end else { return Probe::NeedMore };
            if end == 0 {
                return Probe::NoMatch;
            }
            let after = &v[end + 1..];
            let need = if p[0] == 10 { 13 } else { 4 };
            if h.len < 1 + end + 1 + need {
                return Probe::NoMatch;
            }
            match after.get(need - 1) {
                None => Probe::NeedMore,
                Some(0) if p[0] == 10 => Probe::Match,
                Some(_) if p[0] == 9 => Probe::Match,
                Some(_) => Probe::NoMatch,
            }
        }
        Some(0xff) => {
            if h.len > 512 {
                return Probe::NoMatch;
            }
            if let Some(c) = p.get(1..3) {
                let code = u16::from_le_bytes([c[0], c[1]]);
                if !(1000..=4999).contains(&code) {
                    return Probe::NoMatch;
                }
            }
            if !p.iter().skip(3).all(|&c| c >= 0x20 && c != 0x7f) {
                return Probe::NoMatch;
            }
            if p.len() == h.len {
                Probe::Match
            } else {
                Probe::NeedMore
            }
        }
        Some(_) => Probe::NoMatch,
    }
}

/// Client probe: `HandshakeResponse41` or `SSLRequest` as the first client packet: sequence id 1,
/// `CLIENT_PROTOCOL_41`, a non-zero character set, 19 zero filler bytes (the last 4 of the 23 are
/// MariaDB's extended capabilities), then (response) a printable NUL-terminated user name.
fn probe_client(b: &[u8]) -> Probe {
    if !header_prefix_ok(b, 1 << 16, 1) {
        return Probe::NoMatch;
    }
    let Some(h) = parser::header(b) else { return Probe::NeedMore };
    if h.len < 32 {
        return Probe::NoMatch;
    }
    let p = &b[HEADER..b.len().min(HEADER + h.len)];
    if p.get(1).is_some_and(|&c| u32::from(c) << 8 & parser::CLIENT_PROTOCOL_41 == 0)
        || p.get(8).is_some_and(|&c| c == 0)
        || !p.iter().skip(9).take(19).all(|&c| c == 0)
    {
        return Probe::NoMatch;
    }
    if p.len() < 32 {
        return Probe::NeedMore;
    }
    let caps = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
    if h.len == 32 {
        return if caps & parser::CLIENT_SSL != 0 { Probe::Match } else { Probe::NoMatch };
    }
    let user = &p[32..];
    let end = user.iter().position(|&c| c == 0);
    let name = &user[..end.unwrap_or(user.len())];
    if name.len() > 128 || !name.iter().all(|&c| c >= 0x20 && c != 0x7f) {
        return Probe::NoMatch;
    }
    match end {
        Some(_) => Probe::Match,
        None if p.len() == h.len => Probe::NoMatch,
        None => Probe::NeedMore,
    }
}

#[cfg(test)]
mod tests;
