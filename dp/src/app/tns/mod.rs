//! Oracle TNS (Transparent Network Substrate, "Net8"), the transport of Oracle Database client
//! connections: packet framing and the connection establishment packets. See [`parser`] for the
//! layouts followed (the packet header and the CONNECT, ACCEPT, REFUSE, REDIRECT and DATA
//! bodies, as Oracle clients and listeners send them) and the pure functions.
//!
//! Written here: there is no maintained Rust crate for TNS, and the layouts are a handful of
//! fixed offsets; this module is a packet walker that looks at the first [`HEAD`] bytes of each
//! packet and skips the rest by counting, so nothing larger is buffered.
//!
//! Framing: every packet has an 8-byte header with a 2-byte length, until the listener ACCEPTs
//! with TNS version 315 or later; from then on both directions use 4-byte lengths (large SDU).
//! A header whose 2-byte length is 0 is read with a 4-byte length in any case, which frames a
//! session correctly even when the bytes of one direction are seen before the ACCEPT.
//!
//! Detection (strict, both directions): a client CONNECT with zero checksums, a version in
//! 300..=330 and a compatible version between 256 and it, a connect data offset past the fixed
//! part, and connect data either ending exactly at the packet end or (offset equal to the
//! packet length, as clients do for connect data over 230 bytes) carried by the DATA packet
//! that follows; the connect data must start with `(`. From the server: an ACCEPT with such a
//! version and its accept data inside the packet, a REFUSE whose data ends at the packet end,
//! or a REDIRECT whose data (inline or in the following DATA packet) starts with `(`.
//!
//! Extracted: from the CONNECT (the last one when the listener asks for a RESEND or redirects),
//! version, compatible version, service options, SDU and TDU (the 4-byte fields from version
//! 315 when present), connect data length, the connect descriptor ([`MAX_DESCRIPTOR`] bytes) and
//! from it `SERVICE_NAME` or `SID`, `CID` `PROGRAM`, `HOST` and `USER`, and the `ADDRESS`
//! `HOST`, `PORT` and `PROTOCOL`; from an ACCEPT, version, service options, SDU and TDU; from a
//! REFUSE, the user and system reasons, the refuse data ([`MAX_REFUSE`] bytes), its `ERR` code
//! and `VSNNUM`; from a REDIRECT, the redirect address `HOST` / `PORT` (the part of the data
//! before its NUL; the rest is the new connect descriptor). Packets and DATA packets are counted
//! per direction, packet types seen are listed, markers and resends counted. In DATA payloads
//! two plaintext markers are recognised: the ANO (native encryption / integrity) negotiation
//! magic and the banner of the TTC protocol negotiation (`python-oracledb`, or the server's
//! platform). The TTC calls themselves (OALL8) are not decoded: their layout depends on the
//! capabilities negotiated at logon. Their SQL text is found by a scan of client DATA payloads
//! ([`parser::sql_text`]: a printable run starting with a statement keyword), reported as
//! `sql` and checked for SQL injection; with native network encryption on, nothing is found.
//!
//! A gap inside a skipped packet shortens the skip; any other gap stops that direction.

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::Parse;

/// Bytes of each packet looked at; the rest is skipped.
pub const HEAD: usize = 2048;
/// Connect descriptor kept (bytes).
pub const MAX_DESCRIPTOR: usize = 256;
/// Refuse data kept (bytes).
pub const MAX_REFUSE: usize = 160;
/// How many DATA packets of a direction are looked at for the ANO magic and the TTC banner.
pub const MARKER_PACKETS: u64 = 4;

/// NV data expected in the next DATA packet of a direction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Pending {
    #[default]
    None,
    /// Connect data of this length (client).
    Connect(u16),
    /// Redirect data of this length (server).
    Redirect(u16),
}

/// Per-direction framing state.
#[derive(Debug, Clone, Copy, Default)]
struct Side {
    skip: u64,
    stopped: bool,
    packets: u64,
    data_packets: u64,
    markers: u64,
    pending: Pending,
    banner: Option<Text<64>>,
}

/// Fields of the connect descriptor.
#[derive(Debug, Clone, Default)]
struct Descriptor {
    text: Text<MAX_DESCRIPTOR>,
    service_name: Option<Text<64>>,
    sid: Option<Text<64>>,
    program: Option<Text<96>>,
    cid_host: Option<Text<64>>,
    cid_user: Option<Text<64>>,
    host: Option<Text<64>>,
    port: Option<u32>,
    protocol: Option<Text<16>>,
}

/// Per-session TNS state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Tns {
    side: [Side; 2],
    /// 4-byte packet lengths (an ACCEPT of version 315 or later was seen).
    large: bool,
    /// Packet types seen (bit n for type n).
    types: u16,
    connect: Option<parser::Connect>,
    connects: u32,
    descriptor: Option<Descriptor>,
    accept: Option<parser::Accept>,
    refuse: Option<parser::Refuse>,
    refuse_data: Option<Text<MAX_REFUSE>>,
    refuse_err: Option<u32>,
    vsnnum: Option<u32>,
    redirects: u32,
    redirect_host: Option<Text<64>>,
    redirect_port: Option<u32>,
    resends: u32,
    ano: bool,
    /// First SQL statement seen in a client DATA packet (truncated), and how many.
    sql: Option<Text<256>>,
    statements: u32,
    threats: crate::detect::Threats,
    violation: bool,
    gap: bool,
}

fn opt_text<const N: usize>(v: Option<&[u8]>) -> Option<Text<N>> {
    v.filter(|v| !v.is_empty()).map(text)
}

impl Descriptor {
    fn parse(d: &[u8]) -> Descriptor {
        let get = |path: &[&[u8]]| parser::nv_value(d, path);
        Descriptor {
            text: text(d),
            service_name: opt_text(get(&[b"CONNECT_DATA", b"SERVICE_NAME"])),
            sid: opt_text(get(&[b"CONNECT_DATA", b"SID"])),
            program: opt_text(get(&[b"CID", b"PROGRAM"])),
            cid_host: opt_text(get(&[b"CID", b"HOST"])),
            cid_user: opt_text(get(&[b"CID", b"USER"])),
            host: opt_text(get(&[b"ADDRESS", b"HOST"])),
            port: get(&[b"ADDRESS", b"PORT"]).and_then(parser::decimal),
            protocol: opt_text(get(&[b"ADDRESS", b"PROTOCOL"])),
        }
    }
}

impl Tns {
    fn on_descriptor(&mut self, d: &[u8]) {
        self.descriptor = Some(Descriptor::parse(d));
    }

    fn on_redirect_data(&mut self, d: &[u8]) {
        let addr = d.split(|&c| c == 0).next().unwrap_or(d);
        self.redirect_host = opt_text(parser::nv_value(addr, &[b"ADDRESS", b"HOST"]));
        self.redirect_port = parser::nv_value(addr, &[b"ADDRESS", b"PORT"]).and_then(parser::decimal);
    }

    /// One packet of direction `d`: `p` is its start (at most [`HEAD`] bytes), `len` its length.
    fn on_packet(&mut self, d: usize, h: &parser::Header, p: &[u8]) {
        let len = h.length;
        self.side[d].packets = self.side[d].packets.saturating_add(1);
        if let Some(bit) = 1u16.checked_shl(u32::from(h.ptype)) {
            self.types |= bit;
        }
        let pending = std::mem::take(&mut self.side[d].pending);
        match h.ptype {
            parser::CONNECT if d == 0 => {
                self.connects = self.connects.saturating_add(1);
                let Some(c) = parser::connect(p) else { return };
                self.connect = Some(c);
                let (off, n) = (usize::from(c.data_offset), usize::from(c.data_len));
                if n == 0 {
                    return;
                }
                if off + n <= len {
                    let end = (off + n).min(p.len());
                    self.on_descriptor(p.get(off..end).unwrap_or(&[]));
                } else if off >= len {
                    self.side[d].pending = Pending::Connect(c.data_len);
                }
            }
            parser::ACCEPT if d == 1 => {
                let Some(a) = parser::accept(p, len) else { return };
                self.accept = Some(a);
                if a.version >= parser::VERSION_LARGE_SDU {
                    self.large = true;
                }
            }
            parser::REFUSE if d == 1 => {
                let Some(r) = parser::refuse(p) else { return };
                self.refuse = Some(r);
                let end = (12 + usize::from(r.data_len)).min(p.len());
                let data = p.get(12..end).unwrap_or(&[]);
                self.refuse_data = opt_text(Some(data));
                self.refuse_err = parser::nv_value(data, &[b"ERR"]).and_then(parser::decimal);
                self.vsnnum = parser::nv_value(data, &[b"VSNNUM"]).and_then(parser::decimal);
            }
            parser::REDIRECT if d == 1 => {
                self.redirects = self.redirects.saturating_add(1);
                let Some(n) = parser::be16(p, 8) else { return };
                if len > 10 {
                    let end = (10 + usize::from(n)).min(p.len());
                    self.on_redirect_data(p.get(10..end).unwrap_or(&[]));
                } else if n > 0 {
                    self.side[d].pending = Pending::Redirect(n);
                }
            }
            parser::DATA => {
                let s = &mut self.side[d];
                s.data_packets = s.data_packets.saturating_add(1);
                let nth = s.data_packets;
                let payload = p.get(parser::HEADER + 2..).unwrap_or(&[]);
                let nv = |n: u16| payload.get(..usize::from(n).min(payload.len())).unwrap_or(&[]);
                match pending {
                    Pending::Connect(n) => self.on_descriptor(nv(n)),
                    Pending::Redirect(n) => self.on_redirect_data(nv(n)),
                    Pending::None if nth <= MARKER_PACKETS => {
                        if payload.starts_with(&parser::ANO_MAGIC) {
                            self.ano = true;
                        } else if self.side[d].banner.is_none() {
                            self.side[d].banner = parser::ttc_banner(payload).map(text);
                        }
                    }
                    Pending::None => {}
                }
                if d == Dir::ToServer as usize {
                    if let Some(sql) = parser::sql_text(payload) {
                        self.statements = self.statements.saturating_add(1);
                        if self.sql.is_none() {
                            self.sql = Some(text(sql));
                        }
                        self.threats.sql(Dir::ToServer, sql);
                    }
                }
            }
            parser::RESEND => self.resends = self.resends.saturating_add(1),
            parser::MARKER => self.side[d].markers = self.side[d].markers.saturating_add(1),
            _ => {}
        }
    }

    fn stop(&mut self, d: usize) {
        self.violation = true;
        self.side[d].stopped = true;
    }
}

impl AppParser for Tns {
    const APP: App = App::Tns;
    const PORTS: &'static [u16] = &[1521];
    const TRANSPORT: Transport = Transport::Tcp;

    fn probe(dir: Dir, data: &[u8]) -> Probe {
        let v = match dir {
            Dir::ToServer => parser::probe_connect(data),
            Dir::ToClient => parser::probe_answer(data),
        };
        match v {
            Some(true) => Probe::Match,
            Some(false) => Probe::NoMatch,
            None => Probe::NeedMore,
        }
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
            let h = match parser::header(rest, self.large) {
                Parse::Ok(h, _) => h,
                Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                Parse::Invalid => {
                    self.stop(d);
                    return Feed::Invalid { consumed: off };
                }
            };
            if parser::type_name(h.ptype).is_none() {
                self.stop(d);
                return Feed::Invalid { consumed: off };
            }
            let window = h.length.min(HEAD);
            let Some(p) = rest.get(..window) else { return Feed::Need { consumed: off, at_least: window } };
            self.on_packet(d, &h, p);
            let take = h.length.min(rest.len());
            off += take;
            self.side[d].skip = (h.length - take) as u64;
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

    fn threats(&self) -> Option<&crate::detect::Threats> {
        Some(&self.threats)
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        if let Some(q) = &self.sql {
            out.insert("sql".into(), q.as_str().into());
            out.insert("statements".into(), self.statements.into());
        }
        if let Some(c) = &self.connect {
            out.insert("version".into(), c.version.into());
            out.insert("version_compatible".into(), c.version_compatible.into());
            out.insert("service_options".into(), c.service_options.into());
            out.insert("sdu".into(), c.sdu.into());
            out.insert("tdu".into(), c.tdu.into());
            out.insert("connect_data_length".into(), c.data_len.into());
        }
        if self.connects > 1 {
            out.insert("connects".into(), self.connects.into());
        }
        if let Some(d) = &self.descriptor {
            out.insert("descriptor".into(), d.text.as_str().into());
            let fields = [
                ("service_name", d.service_name.as_ref().map(|t| t.as_str())),
                ("sid", d.sid.as_ref().map(|t| t.as_str())),
                ("program", d.program.as_ref().map(|t| t.as_str())),
                ("client_host", d.cid_host.as_ref().map(|t| t.as_str())),
                ("client_user", d.cid_user.as_ref().map(|t| t.as_str())),
                ("address_host", d.host.as_ref().map(|t| t.as_str())),
                ("address_protocol", d.protocol.as_ref().map(|t| t.as_str())),
            ];
            for (k, v) in fields {
                if let Some(v) = v {
                    out.insert(k.into(), v.into());
                }
            }
            if let Some(p) = d.port {
                out.insert("address_port".into(), p.into());
            }
        }
        if let Some(a) = &self.accept {
            out.insert("accept_version".into(), a.version.into());
            out.insert("accept_service_options".into(), a.service_options.into());
            out.insert("accept_sdu".into(), a.sdu.into());
            out.insert("accept_tdu".into(), a.tdu.into());
        }
        if let Some(r) = &self.refuse {
            out.insert("refuse_user_reason".into(), r.user_reason.into());
            out.insert("refuse_system_reason".into(), r.system_reason.into());
            if let Some(d) = &self.refuse_data {
                out.insert("refuse_data".into(), d.as_str().into());
            }
            if let Some(e) = self.refuse_err {
                out.insert("refuse_err".into(), e.into());
            }
            if let Some(v) = self.vsnnum {
                out.insert("vsnnum".into(), v.into());
            }
        }
        if self.redirects > 0 {
            out.insert("redirects".into(), self.redirects.into());
            if let Some(h) = &self.redirect_host {
                out.insert("redirect_host".into(), h.as_str().into());
            }
            if let Some(p) = self.redirect_port {
                out.insert("redirect_port".into(), p.into());
            }
        }
        let types: Vec<Value> = (0..16u8)
            .filter(|t| self.types & (1 << t) != 0)
            .filter_map(|t| parser::type_name(t).map(Value::from))
            .collect();
        out.insert("packet_types".into(), types.into());
        out.insert("packets_to_server".into(), self.side[0].packets.into());
        out.insert("packets_to_client".into(), self.side[1].packets.into());
        out.insert("data_packets_to_server".into(), self.side[0].data_packets.into());
        out.insert("data_packets_to_client".into(), self.side[1].data_packets.into());
        let markers = self.side[0].markers + self.side[1].markers;
        if markers > 0 {
            out.insert("markers".into(), markers.into());
        }
        if self.resends > 0 {
            out.insert("resends".into(), self.resends.into());
        }
        if self.large {
            out.insert("large_sdu".into(), true.into());
        }
        if self.ano {
            out.insert("ano_negotiation".into(), true.into());
        }
        for (s, k) in self.side.iter().zip(["client_banner", "server_banner"]) {
            if let Some(b) = &s.banner {
                out.insert(k.into(), b.as_str().into());
            }
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
