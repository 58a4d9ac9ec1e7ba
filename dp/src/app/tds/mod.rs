//! Microsoft SQL Server / Sybase Tabular Data Stream ([MS-TDS] v20240910 and earlier: 2.2.3
//! packets, 2.2.6 client messages, 2.2.7 tokens; TDS 5.0 LOGIN after Sybase's reference; see
//! [`parser`]).
//!
//! Written here: the Rust TDS crates (`tiberius`, `tds-protocol`-style codecs) are async clients
//! that decode whole messages into owned values (`String`, `Vec`) from a growable buffer, so
//! every message allocates and a large SQL batch would have to be buffered whole. Here packets
//! are framed by their headers and each message is looked at through a bounded *window* of its
//! first payload bytes across packets (the stream engine holds at most that much); the rest of
//! the message is skipped by counting.
//!
//! Client side: PRELOGIN (client version, ENCRYPTION, instance, MARS), TLS inside PRELOGIN
//! packets (counted, then parsing of both directions stops: `encrypted: true`), LOGIN7 (TDS
//! version, packet size, client program version, host, user, application, server name, client
//! library, language, database; the password is never read), TDS 5.0 LOGIN (host, user,
//! application, server, library, language, `tds_version: "5.0"`), SQLBatch (UTF-16LE text after
//! ALL_HEADERS: the first [`SQL_WINDOW`] bytes are converted to UTF-8 and handed whole to the SQL
//! injection detector; the record keeps [`QUERY_TEXT`] bytes of the first and last), RPC (count,
//! first procedure; the statement of `sp_executesql` goes to the detector too), Attention
//! (count), TDS 5.0 language commands (detector). Server side: the PRELOGIN response (server
//! version, ENCRYPTION), then tabular results: ENVCHANGE (database, packet size), LOGINACK
//! (program, version, negotiated TDS version), ERROR (count, first number and message).
//! Directions are parsed independently; a gap stops the direction it hits unless it falls
//! inside a payload being skipped. MARS (SMP-wrapped packets) stops parsing quietly.
//!
//! **Mid-stream** ([`MIDSTREAM`], [`crate::app::midstream`]): a session picked up after its
//! login is recognised by its packets ([MS-TDS] 2.2.3.1): a header of a type sent after login
//! (SQLBatch, RPC, Attention, BulkLoad, TransactionManager from the client, tabular result from
//! the server), status bits within EOM/IGNORE/RESETCONNECTION(SKIPTRAN), a length `8..=32768`
//! and window 0; three packets in a row whose SPIDs agree and, inside a message, of the same
//! type with the next packet id and the same size (a long result set: 4096-byte tabular
//! packets), or one packet whose payload shows its message: a SQLBatch's ALL_HEADERS
//! (2.2.5.3) followed by UTF-16LE text (2.2.6.7), an RPC's ALL_HEADERS and procedure name or
//! well-known id (2.2.6.6), at a turn boundary a tabular result opening with ENVCHANGE,
//! LOGINACK, ERROR or INFO (2.2.7). The packet type says who sent it (a tabular result: the
//! server), which fixes a mid-stream session's orientation. Parsing starts at the first packet
//! of a message (packet id 0 or 1, or after an end of message).

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{Chunks, Parse, Table, HEADER};

/// Query text kept in the record (bytes, first and last statement).
pub const QUERY_TEXT: usize = 256;
/// Statement bytes (UTF-8) handed to the SQL injection detector, the detector's own input cap.
pub const SQL_TEXT: usize = crate::detect::sqli::MAX_INPUT;
/// Payload window of a SQLBatch: ALL_HEADERS plus UTF-16LE text for [`SQL_TEXT`] ASCII bytes.
pub const SQL_WINDOW: usize = 128 + 2 * SQL_TEXT;
/// Payload window of PRELOGIN, LOGIN7, TDS 5.0 LOGIN and tabular results, and the part of an
/// RPC window read for its procedure and parameter layout (bytes).
pub const HEAD_WINDOW: usize = 1024;

#[derive(Debug, Clone, Copy, Default)]
struct DirState {
    /// Payload bytes of the current packet still to skip.
    pkt_left: usize,
    /// Packets of the current message follow (its window was already taken).
    more: bool,
    msg_type: u8,
    stopped: bool,
    packets: u64,
    messages: u64,
    /// How far the packets of the message being received were walked (a message cut into
    /// many small packets is walked once).
    gather: parser::GatherWalk,
}

/// The first ERROR token.
#[derive(Debug, Clone, Default)]
pub struct TdsError {
    /// Error number.
    pub number: i32,
    /// Class (severity).
    pub class: u8,
    /// Message, truncated to 128 bytes.
    pub message: Text<128>,
}

/// Per-session TDS state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Tds {
    d: [DirState; 2],
    client_version: Option<(u8, u8, u16, u16)>,
    encryption: Option<u8>,
    instance: Option<Text<32>>,
    mars: Option<bool>,
    server_version: Option<(u8, u8, u16, u16)>,
    server_encryption: Option<u8>,
    encrypted: bool,
    tls_packets: u32,
    smp: bool,
    tds_version: Option<u32>,
    tds5: bool,
    packet_size: Option<u32>,
    client_prog_version: Option<u32>,
    host: Option<Text<64>>,
    user: Option<Text<64>>,
    app_name: Option<Text<64>>,
    server_name: Option<Text<64>>,
    library: Option<Text<32>>,
    language: Option<Text<32>>,
    database: Option<Text<64>>,
    integrated_security: bool,
    server_program: Option<Text<32>>,
    server_prog_version: Option<[u8; 4]>,
    negotiated_version: Option<u32>,
    negotiated_packet_size: Option<u32>,
    login_ok: Option<bool>,
    batches: u64,
    first_query: Option<Text<QUERY_TEXT>>,
    last_query: Option<Text<QUERY_TEXT>>,
    rpcs: u64,
    first_rpc: Option<Text<32>>,
    attentions: u64,
    errors: u64,
    first_error: Option<TdsError>,
    threats: crate::detect::Threats,
    violation: bool,
    gap: bool,
}

enum Step {
    Took(usize),
    Need(usize),
    Stop,
    /// Not TDS from here ([`Feed::Invalid`]).
    Invalid,
}

impl Tds {
    /// Bytes examined walking the packets of messages (both directions): a measure of work,
    /// proportional to the bytes fed however they were segmented (tests).
    pub fn examined(&self) -> u64 {
        self.d.iter().map(|d| d.gather.examined()).sum()
    }

    /// Text of the first SQL statement (SQLBatch, RPC statement or TDS 5.0 language command),
    /// first [`QUERY_TEXT`] bytes.
    pub fn first_query(&self) -> Option<&str> {
        self.first_query.as_ref().map(|t| t.as_str())
    }

    /// Text of the last SQL statement, first [`QUERY_TEXT`] bytes.
    pub fn last_query(&self) -> Option<&str> {
        self.last_query.as_ref().map(|t| t.as_str())
    }

    /// User name from LOGIN7 or the TDS 5.0 LOGIN.
    pub fn user(&self) -> Option<&str> {
        self.user.as_ref().map(|t| t.as_str())
    }

    /// True once TLS was seen (parsing stopped).
    pub fn encrypted(&self) -> bool {
        self.encrypted
    }

    /// One statement in UTF-8 (at most [`SQL_TEXT`] bytes): kept for the record, checked whole.
    fn statement(&mut self, sql: &[u8]) {
        let q = text::<QUERY_TEXT>(sql);
        if self.first_query.is_none() {
            self.first_query = Some(q);
        }
        self.last_query = Some(q);
        self.threats.sql(Dir::ToServer, sql);
    }

    /// One message starting at the packet header at the start of `rest`.
    fn message(&mut self, dir: Dir, rest: &[u8]) -> Step {
        let d = dir as usize;
        if rest.first() == Some(&parser::SMP) {
            self.smp = true; // MARS on: SMP headers (not TDS packet headers) wrap what follows
            return Step::Stop;
        }
        let h = match parser::header(rest) {
            Parse::Ok(h, _) => h,
            Parse::Incomplete(n) => return Step::Need(n),
            Parse::Invalid => {
                return Step::Invalid;
            }
        };
        let known = match dir {
            Dir::ToServer => parser::type_name(h.ptype).is_some() && h.ptype != parser::TABULAR,
            Dir::ToClient => matches!(h.ptype, parser::TABULAR | parser::PRELOGIN),
        };
        if !known {
            return Step::Invalid;
        }
        let window = match (dir, h.ptype) {
            (Dir::ToServer, parser::SQL_BATCH | parser::TDS5_NORMAL | parser::RPC) => SQL_WINDOW,
            (_, parser::PRELOGIN | parser::LOGIN7 | parser::LOGIN5 | parser::TABULAR) => HEAD_WINDOW,
            _ => 0,
        };
        let g = match parser::gather_from(rest, window, &mut self.d[d].gather) {
            Parse::Ok(g, _) => g,
            Parse::Incomplete(n) => return Step::Need(n),
            Parse::Invalid => {
                return Step::Invalid;
            }
        };
        let st = &mut self.d[d];
        st.pkt_left = g.pkt_left;
        st.more = g.more;
        st.msg_type = h.ptype;
        st.packets = st.packets.saturating_add(u64::from(g.packets));
        st.messages = st.messages.saturating_add(1);
        let chunks = Chunks::new(&rest[..g.consumed]);
        match h.ptype {
            parser::SQL_BATCH | parser::TDS5_NORMAL => {
                self.sql_message(h.ptype, chunks);
                return Step::Took(g.consumed);
            }
            parser::ATTENTION => self.attentions = self.attentions.saturating_add(1),
            _ => {}
        }
        if window == 0 {
            return Step::Took(g.consumed);
        }
        let mut buf = [0u8; HEAD_WINDOW];
        let n = parser::copy_chunks(chunks.clone(), &mut buf);
        let payload = &buf[..n];
        if h.ptype == parser::PRELOGIN && parser::is_tls(payload) {
            self.tls_packets = self.tls_packets.saturating_add(1);
            self.encrypted = true;
            return Step::Stop;
        }
        match (dir, h.ptype) {
            (Dir::ToServer, parser::PRELOGIN) => match parser::prelogin(payload) {
                Some(p) => {
                    self.client_version = p.version.or(self.client_version);
                    self.encryption = p.encryption.or(self.encryption);
                    self.instance = p.instance.map(text).or(self.instance);
                    self.mars = p.mars.map(|m| m != 0).or(self.mars);
                }
                None => self.violation = true,
            },
            (Dir::ToServer, parser::LOGIN7) => self.login7(payload),
            (Dir::ToServer, parser::LOGIN5) => self.login5(payload),
            (Dir::ToServer, parser::RPC) => self.rpc(payload, chunks),
            (Dir::ToClient, parser::TABULAR) => self.tabular(payload),
            (Dir::ToClient, _) => self.violation = true, // PRELOGIN from the server without TLS
            _ => {}
        }
        Step::Took(g.consumed)
    }

    fn login7(&mut self, payload: &[u8]) {
        let Some(l) = parser::login7(payload) else {
            self.violation = true;
            return;
        };
        self.tds_version = Some(l.tds_version);
        self.packet_size = Some(l.packet_size);
        self.client_prog_version = Some(l.client_prog_version);
        self.integrated_security = l.integrated_security;
        let t = |s: Option<&[u8]>| s.map(parser::utf16_text);
        self.host = t(l.host);
        self.user = t(l.user);
        self.app_name = t(l.app);
        self.server_name = t(l.server_name);
        self.library = l.library.map(parser::utf16_text);
        self.language = l.language.map(parser::utf16_text);
        self.database = t(l.database).filter(|d| !d.is_empty()).or(self.database);
    }

    fn login5(&mut self, payload: &[u8]) {
        let Some(l) = parser::login5(payload) else {
            self.violation = true;
            return;
        };
        self.tds5 = true;
        self.host = Some(text(l.host));
        self.user = Some(text(l.user));
        self.app_name = l.app.map(text);
        self.server_name = l.server_name.map(text);
        self.library = l.library.map(text);
        self.language = l.language.map(text);
        self.packet_size =
            l.packet_size.and_then(|p| std::str::from_utf8(p).ok()).and_then(|s| s.trim_end_matches('\0').parse().ok());
    }

    /// An RPC: `head` is the first [`HEAD_WINDOW`] payload bytes, `chunks` the whole window.
    fn rpc(&mut self, head: &[u8], chunks: Chunks<'_>) {
        self.rpcs = self.rpcs.saturating_add(1);
        let headers = parser::all_headers_len(head);
        let body = head.get(headers..).unwrap_or_default();
        let Some(proc) = parser::rpc_proc(body) else { return };
        let (name, after): (Text<32>, usize) = match proc {
            Ok(n) => (parser::utf16_text(n), 2 + n.len()),
            Err(id) => (text(parser::proc_name(id).as_bytes()), 4),
        };
        if self.first_rpc.is_none() {
            self.first_rpc = Some(name);
        }
        if !name.as_str().trim_start_matches("sys.").eq_ignore_ascii_case("sp_executesql") {
            return;
        }
        // After the name: OptionFlags (2 bytes), then the statement parameter.
        let start = after + 2;
        let params = body.get(start..).unwrap_or_default();
        if let Some((at, len)) = parser::rpc_statement(params) {
            let mut out = [0u8; SQL_TEXT];
            let n = parser::utf16_to_utf8(parser::sub_chunks(chunks, headers + start + at, len), &mut out);
            self.statement(&out[..n]);
        }
    }

    fn sql_message(&mut self, ptype: u8, chunks: Chunks<'_>) {
        let mut out = [0u8; SQL_TEXT];
        if ptype == parser::SQL_BATCH {
            self.batches = self.batches.saturating_add(1);
            let n = parser::sql_batch_text(chunks, &mut out);
            self.statement(&out[..n]);
        } else {
            // TDS 5.0 LANGUAGE token (0x21): u32 length (status byte included), status, text.
            let n = parser::copy_chunks(chunks, &mut out);
            let b = &out[..n];
            if b.first() == Some(&0x21) {
                let len = parser::le32(b, 1).map(|l| l as usize).unwrap_or(0);
                if let Some(sql) = b.get(6..(5 + len).min(b.len())) {
                    self.batches = self.batches.saturating_add(1);
                    let mut copy = [0u8; SQL_TEXT];
                    copy[..sql.len()].copy_from_slice(sql);
                    self.statement(&copy[..sql.len()]);
                }
            }
        }
    }

    fn tabular(&mut self, payload: &[u8]) {
        // The answer to the client's PRELOGIN is a PRELOGIN option table in a tabular packet.
        // It is the server's first message, and starts with option token VERSION (0x00), which no
        // token stream does.
        if self.d[1].messages == 1 && !self.tds5 && payload.first() == Some(&parser::option::VERSION) {
            match parser::prelogin(payload) {
                Some(p) => {
                    self.server_version = p.version;
                    self.server_encryption = p.encryption;
                }
                None => self.violation = true,
            }
            return;
        }
        if self.tds5 {
            return; // TDS 5.0 tokens differ; responses are only counted
        }
        let logging_in = self.login_ok.is_none() && self.tds_version.is_some();
        parser::tokens(payload, |t| match t {
            parser::Token::EnvChange(parser::env::DATABASE, v) if !v.is_empty() => {
                self.database = Some(parser::utf16_text(v));
            }
            parser::Token::EnvChange(parser::env::PACKET_SIZE, v) => {
                let s: Text<8> = parser::utf16_text(v);
                self.negotiated_packet_size = s.parse().ok();
            }
            parser::Token::LoginAck { tds_version, prog_name, prog_version, .. } => {
                self.login_ok = Some(true);
                self.negotiated_version = Some(tds_version);
                self.server_program = Some(parser::utf16_text(prog_name));
                self.server_prog_version = Some(prog_version);
            }
            parser::Token::Message { error: true, number, class, text } => {
                self.errors = self.errors.saturating_add(1);
                if logging_in && self.login_ok.is_none() {
                    self.login_ok = Some(false);
                }
                if self.first_error.is_none() {
                    self.first_error = Some(TdsError { number, class, message: parser::utf16_text(text) });
                }
            }
            _ => {}
        });
    }
}

impl AppParser for Tds {
    const APP: App = App::Tds;
    const PORTS: &'static [u16] = &[1433];
    const TRANSPORT: Transport = Transport::Tcp;
    const MIDSTREAM: Option<crate::app::midstream::Framing> = Some(MIDSTREAM);

    fn probe(dir: Dir, data: &[u8]) -> Probe {
        match dir {
            Dir::ToServer => probe_client(data),
            Dir::ToClient => probe_server(data),
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        let mut off = 0;
        loop {
            if self.encrypted || self.d[d].stopped {
                self.d[d].stopped = true;
                return Feed::Done;
            }
            let st = &mut self.d[d];
            if st.pkt_left > 0 {
                let n = st.pkt_left.min(data.len() - off);
                st.pkt_left -= n;
                off += n;
                if st.pkt_left > 0 {
                    return Feed::Consumed(off);
                }
            }
            let rest = &data[off..];
            if rest.is_empty() {
                return Feed::Consumed(off);
            }
            let step = if st.more {
                // Next packet of a message whose window was already taken: skip it by count.
                match parser::header(rest) {
                    Parse::Ok(h, _) if h.ptype == st.msg_type => {
                        st.packets = st.packets.saturating_add(1);
                        st.pkt_left = h.length - HEADER;
                        st.more = !h.eom();
                        Step::Took(HEADER)
                    }
                    Parse::Incomplete(n) => Step::Need(n),
                    _ => Step::Invalid,
                }
            } else {
                self.message(dir, rest)
            };
            match step {
                Step::Took(n) => {
                    off += n;
                    self.d[d].gather.reset();
                }
                Step::Need(k) => return Feed::Need { consumed: off, at_least: k },
                Step::Stop => {
                    self.d[d].stopped = true;
                    return Feed::Done;
                }
                // An impossible header, a packet type the direction never carries, a broken
                // multi-packet message: SQL Server closes the connection; not TDS.
                Step::Invalid => {
                    self.violation = true;
                    self.d[d].stopped = true;
                    return Feed::Invalid { consumed: off };
                }
            }
        }
    }

    fn gap(&mut self, dir: Dir, len: usize) -> bool {
        self.gap = true;
        let encrypted = self.encrypted;
        let st = &mut self.d[dir as usize];
        st.gather.reset();
        if st.stopped || encrypted {
            return true;
        }
        if st.pkt_left >= len {
            st.pkt_left -= len; // lost bytes were payload being skipped anyway
            return true;
        }
        st.stopped = true; // packet boundaries unknown
        false
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        let put = |out: &mut Map<String, Value>, k: &str, v: Option<&str>| {
            if let Some(v) = v {
                out.insert(k.into(), v.into());
            }
        };
        let s = |t: &Option<Text<64>>| t.as_ref().map(|t| t.as_str().to_string());
        let version = |v: (u8, u8, u16, u16)| format!("{}.{}.{}.{}", v.0, v.1, v.2, v.3);
        if self.tds5 {
            out.insert("tds_version".into(), "5.0".into());
        } else if let Some(v) = self.negotiated_version.or(self.tds_version) {
            let name = parser::tds_version_name(v).map(str::to_string).unwrap_or_else(|| format!("0x{v:08x}"));
            out.insert("tds_version".into(), name.into());
        }
        put(out, "client_version", self.client_version.map(version).as_deref());
        put(out, "encryption", self.encryption.map(parser::encryption_name));
        put(out, "instance", self.instance.as_ref().map(|t| t.as_str()));
        if let Some(m) = self.mars {
            out.insert("mars".into(), m.into());
        }
        put(out, "server_version", self.server_version.map(version).as_deref());
        put(out, "server_encryption", self.server_encryption.map(parser::encryption_name));
        out.insert("encrypted".into(), self.encrypted.into());
        if self.tls_packets > 0 {
            out.insert("tls_packets".into(), self.tls_packets.into());
        }
        if let Some(p) = self.packet_size {
            out.insert("packet_size".into(), p.into());
        }
        if let Some(p) = self.negotiated_packet_size {
            out.insert("negotiated_packet_size".into(), p.into());
        }
        if let Some(v) = self.client_prog_version {
            // Sent as bytes major, minor, build (big-endian), as [MS-TDS] 2.2.6.4's examples.
            let b = v.to_le_bytes();
            out.insert(
                "client_prog_version".into(),
                format!("{}.{}.{}", b[0], b[1], u16::from_be_bytes([b[2], b[3]])).into(),
            );
        }
        put(out, "host", s(&self.host).as_deref());
        put(out, "user", s(&self.user).as_deref());
        put(out, "app", s(&self.app_name).as_deref());
        put(out, "server_name", s(&self.server_name).as_deref());
        put(out, "library", self.library.as_ref().map(|t| t.as_str()));
        put(out, "language", self.language.as_ref().map(|t| t.as_str()));
        put(out, "database", s(&self.database).as_deref());
        if self.integrated_security {
            out.insert("integrated_security".into(), true.into());
        }
        put(out, "server_program", self.server_program.as_ref().map(|t| t.as_str()));
        if let Some(v) = self.server_prog_version {
            let b = u16::from_be_bytes([v[2], v[3]]);
            out.insert("server_program_version".into(), format!("{}.{}.{b}", v[0], v[1]).into());
        }
        if let Some(ok) = self.login_ok {
            out.insert("login_ok".into(), ok.into());
        }
        out.insert("query_count".into(), self.batches.into());
        put(out, "first_query", self.first_query.as_ref().map(|t| t.as_str()));
        put(out, "last_query", self.last_query.as_ref().map(|t| t.as_str()));
        out.insert("rpcs".into(), self.rpcs.into());
        put(out, "first_rpc", self.first_rpc.as_ref().map(|t| t.as_str()));
        out.insert("attentions".into(), self.attentions.into());
        out.insert("messages_to_server".into(), self.d[0].messages.into());
        out.insert("messages_to_client".into(), self.d[1].messages.into());
        out.insert("packets_to_server".into(), self.d[0].packets.into());
        out.insert("packets_to_client".into(), self.d[1].packets.into());
        out.insert("errors".into(), self.errors.into());
        if let Some(e) = &self.first_error {
            out.insert("first_error_number".into(), e.number.into());
            out.insert("first_error_class".into(), e.class.into());
            out.insert("first_error".into(), e.message.as_str().into());
        }
        if self.smp {
            out.insert("mars_smp".into(), true.into());
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

/// Packet types sent after login ([MS-TDS] 2.2.3.1.1) that a mid-stream head may have.
const MID_TYPES: [u8; 6] = [parser::SQL_BATCH, parser::RPC, parser::TABULAR, parser::ATTENTION, parser::BULK_LOAD, parser::TRANSACTION];

/// True when `b` (UTF-16LE) holds at least `min` code units (or all of them, when `b` is the
/// whole text and shorter) that are printable ASCII or whitespace, as SQL text and procedure
/// names are: `None` when more bytes are needed.
fn utf16_ascii(b: &[u8], min: usize, whole: bool) -> Option<bool> {
    let units = b.len() / 2;
    if units < min && !whole {
        return None;
    }
    let n = units.min(min);
    Some(n > 0 && b.chunks_exact(2).take(n).all(|u| u[1] == 0 && (u[0].is_ascii_graphic() || matches!(u[0], b' ' | b'\t' | b'\r' | b'\n'))))
}

/// Mid-stream framing of TDS (module docs): a packet header at the start of `b`, with the
/// payload checked when it starts a SQLBatch, an RPC or (at a boundary) a tabular result.
pub fn mid_head(b: &[u8], boundary: bool) -> crate::app::midstream::Head {
    use crate::app::midstream::{Head, Msg, Role};
    let bad = match b {
        [] => return Head::Need(HEADER),
        [t, ..] if !MID_TYPES.contains(t) => true,
        [_, s, ..] if *s & !parser::STATUS_BITS != 0 => true,
        [_, _, hi, ..] if usize::from(*hi) << 8 > parser::MAX_PACKET => true,
        [_, _, hi, lo, ..] if usize::from(u16::from_be_bytes([*hi, *lo])) < HEADER => true,
        [_, _, _, _, _, _, _, w, ..] if *w != 0 => true,
        _ => false,
    };
    if bad {
        return Head::No;
    }
    if b.len() < HEADER {
        return Head::Need(HEADER);
    }
    let (ptype, status, id) = (b[0], b[1], b[6]);
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let eom = status & parser::EOM != 0;
    if ptype == parser::ATTENTION && len != HEADER {
        return Head::No; // an Attention has no payload
    }
    let spid = u32::from(u16::from_be_bytes([b[4], b[5]]));
    let starts = id <= 1;
    let payload = &b[HEADER..b.len().min(len)];
    let total = len - HEADER;
    // The payload's first bytes prove a message that starts here.
    let proof = if !starts {
        Some(false)
    } else {
        match ptype {
            parser::SQL_BATCH | parser::RPC => {
                let headers = parser::all_headers_len(payload);
                let whole = payload.len() >= total;
                // Too few bytes to tell, or an ALL_HEADERS not all there yet.
                let short = payload.len() < 4.min(total)
                    || le32_total(payload).is_some_and(|t| (4..=1024).contains(&t)) && !whole;
                if headers == 0 && short {
                    None
                } else {
                    let rest = &payload[headers.min(payload.len())..];
                    let left = total.saturating_sub(headers);
                    if ptype == parser::SQL_BATCH {
                        utf16_ascii(rest, 8, rest.len() >= left)
                    } else {
                        match rest {
                            [0xff, 0xff, id, 0, ..] => Some((1..=15).contains(id)),
                            [lo, hi, name @ ..] => {
                                let n = usize::from(u16::from_le_bytes([*lo, *hi]));
                                if n == 0 || n > 128 || 2 + 2 * n > left {
                                    Some(false)
                                } else {
                                    utf16_ascii(&name[..name.len().min(2 * n)], n.min(8), name.len() >= 2 * n)
                                }
                            }
                            _ if rest.len() >= left => Some(false),
                            _ => None,
                        }
                    }
                }
            }
            parser::TABULAR if boundary => match parser::first_token_check(payload, total) {
                parser::Table::Complete(_) => Some(true),
                parser::Table::Partial if payload.len() < total => None,
                _ => Some(false),
            },
            _ => Some(false),
        }
    };
    let Some(proof) = proof else {
        return Head::Need((HEADER + payload.len() + 2).min(len).max(b.len() + 1));
    };
    Head::Msg(Msg {
        len: len as u32,
        key: spid << 16 | u32::from(ptype) << 8 | u32::from(id),
        role: if ptype == parser::TABULAR { Role::Server } else { Role::Client },
        proof,
        starts,
        ends: eom,
        ..Msg::default()
    })
}

/// The ALL_HEADERS TotalLength field, if its 4 bytes are there.
fn le32_total(payload: &[u8]) -> Option<usize> {
    parser::le32(payload, 0).map(|t| t as usize)
}

/// Packets of one direction: the same SPID; inside a message the same type, the next packet
/// id and the size of the packets before it (the last one may be shorter); after an end of
/// message, the first packet of a message of the same side.
fn mid_follows(prev: crate::app::midstream::Prev, next: &crate::app::midstream::Msg) -> bool {
    let (pspid, ptype, pid) = (prev.key >> 16, (prev.key >> 8) & 0xff, prev.key & 0xff);
    let (nspid, ntype, nid) = (next.key >> 16, (next.key >> 8) & 0xff, next.key & 0xff);
    if pspid != nspid {
        return false;
    }
    let tabular = u32::from(parser::TABULAR);
    if prev.ends {
        next.starts && (ptype == tabular) == (ntype == tabular)
    } else {
        let size = u32::from(prev.len);
        ntype == ptype && nid == (pid + 1) & 0xff && (next.len == size || next.ends && next.len <= size)
    }
}

/// How TDS is recognised mid-stream (module docs).
pub const MIDSTREAM: crate::app::midstream::Framing =
    crate::app::midstream::Framing { head: mid_head, follows: mid_follows, chain: 3 };

/// Checks the header prefix present in `b` against a first packet of type in `types`: status
/// 0 or EOM only, length 8..=[`parser::MAX_PACKET`], SPID `spid_zero` ⇒ 0, packet id 0 or 1
/// (clients) and window 0. `Some(NoMatch)` on a mismatch, `None` when consistent so far.
fn header_prefix(b: &[u8], types: &[u8], client: bool) -> Option<Probe> {
    let bad = match b {
        [] => false,
        [t, ..] if !types.contains(t) => true,
        [_, s, ..] if *s & !parser::EOM != 0 => true,
        [_, _, hi, ..] if usize::from(*hi) << 8 > parser::MAX_PACKET => true,
        [_, _, hi, lo, ..] if !(HEADER..=parser::MAX_PACKET).contains(&usize::from(u16::from_be_bytes([*hi, *lo]))) => {
            true
        }
        [_, _, _, _, s0, ..] if client && *s0 != 0 => true,
        [_, _, _, _, _, s1, ..] if client && *s1 != 0 => true,
        [_, _, _, _, _, _, id, ..] if client && *id > 1 => true,
        [_, _, _, _, _, _, _, w, ..] if *w != 0 => true,
        _ => false,
    };
    if bad {
        Some(Probe::NoMatch)
    } else if b.len() < HEADER {
        Some(Probe::NeedMore)
    } else {
        None
    }
}

fn table_probe(t: Table) -> Probe {
    match t {
        Table::Complete(_) => Probe::Match,
        Table::Partial => Probe::NeedMore,
        Table::Invalid => Probe::NoMatch,
    }
}

/// Client probe: a first packet of PRELOGIN (well-formed option table), LOGIN7 (known TDS
/// version, sane lengths and offsets) or TDS 5.0 LOGIN (fixed-width names with their lengths,
/// valid integer byte orders), with a plausible header.
fn probe_client(b: &[u8]) -> Probe {
    if let Some(p) = header_prefix(b, &[parser::PRELOGIN, parser::LOGIN7, parser::LOGIN5], true) {
        return p;
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let eom = b[1] & parser::EOM != 0;
    let payload = &b[HEADER..b.len().min(len)];
    let total = len - HEADER;
    match b[0] {
        parser::PRELOGIN => {
            if !eom {
                return Probe::NoMatch; // a PRELOGIN always fits one packet
            }
            match parser::option_table(payload, total) {
                // The whole packet must be there to check every option's data range.
                Table::Complete(_) if payload.len() < total => Probe::NeedMore,
                t => table_probe(t),
            }
        }
        parser::LOGIN7 => match parser::login7_check(payload) {
            Table::Complete(_) => {
                // Length is the whole message: this packet's payload when it is the only one.
                let l = parser::le32(payload, 0).unwrap_or(0) as usize;
                if (eom && l != total) || (!eom && l <= total) {
                    Probe::NoMatch
                } else {
                    Probe::Match
                }
            }
            Table::Partial if payload.len() < total => Probe::NeedMore,
            _ => Probe::NoMatch,
        },
        _ => match parser::login5_check(payload) {
            Table::Partial if payload.len() >= total => Probe::NoMatch,
            t => table_probe(t),
        },
    }
}

/// Server probe: a tabular-result packet carrying a PRELOGIN response (well-formed option table)
/// or starting with an ENVCHANGE, LOGINACK, ERROR or INFO token.
fn probe_server(b: &[u8]) -> Probe {
    if let Some(p) = header_prefix(b, &[parser::TABULAR], false) {
        return p;
    }
    let len = usize::from(u16::from_be_bytes([b[2], b[3]]));
    let payload = &b[HEADER..b.len().min(len)];
    let total = len - HEADER;
    let t = if payload.first() == Some(&parser::option::VERSION) {
        match parser::option_table(payload, total) {
            Table::Complete(_) if payload.len() < total => Table::Partial,
            t => t,
        }
    } else {
        parser::first_token_check(payload, total)
    };
    match t {
        Table::Partial if payload.len() >= total => Probe::NoMatch,
        t => table_probe(t),
    }
}

#[cfg(test)]
mod tests;
