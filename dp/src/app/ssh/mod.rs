//! SSH: both identification strings (RFC 4253 §4.2), then the cleartext binary packets
//! (RFC 4253 §6) up to SSH_MSG_NEWKEYS, reading both SSH_MSG_KEXINIT (RFC 4253 §7.1) to report
//! the negotiated key exchange, host key and cipher algorithms. After NEWKEYS a direction is
//! encrypted and is no longer parsed; once both are, the parser is done.
//!
//! Until then bytes that cannot be SSH answer [`Feed::Invalid`] (the engine detects the app
//! again): a client's first line that is not an identification, a cleartext packet with an
//! impossible length or padding. Encrypted packets cannot be told
//! from other bytes (their lengths are encrypted with most ciphers): they are not validated.
//!
//! `ssh_v1`: once both identifications are known, a pair that
//! negotiates protocol 1 (RFC 4253 §5.1: both ends 1.x, or one 1.x-only and the other "1.99")
//! is recorded in the direction of the 1.x-only identification, with it as evidence.
//! NeuVector flags any end announcing 1.x; here a 2.0-only end facing a 1.x-only one is not a
//! threat (nothing is negotiated; the client closes or reconnects with protocol 1, a session of
//! its own), nor is a client announcing "1.99" to a 2.0 server (Cisco's does; protocol 2).
//! After protocol 1 is negotiated its packets are framed by their clear length fields (SSH
//! protocol 1.5: length, 1 to 8 bytes of padding, type, data, CRC), validated (5 bytes to 256
//! KiB, OpenSSH's SSH-1 bounds) and skipped, never parsed as SSH 2.0 packets.
//!
//! Negotiation follows RFC 4253 §7.1 in its simple form: the first algorithm on the client's
//! list that the server also lists (the extra compatibility conditions on kex/host-key pairs are
//! not checked). The first KEXINIT's lists are remembered as hashes of at most
//! [`MAX_NAMES`] names (fixed size); see `parser.rs` for what `ssh-parser` does and does not do
//! here.

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use crate::detect::{ThreatId, Threats};
use parser::{Line, Parse, Protocol, MSG_KEXINIT, MSG_NEWKEYS};

/// Names remembered per algorithm list of the first KEXINIT.
pub const MAX_NAMES: usize = 32;

/// Where a direction's parsing is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Stage {
    /// Reading lines until the identification; counts the other lines seen.
    Ident(u8),
    /// Reading cleartext binary packets (SSH 2.0), or SSH 1.x packets by their clear lengths
    /// when the session speaks protocol 1.
    Packets,
    /// After NEWKEYS: encrypted, not parsed.
    Encrypted,
    /// Framing lost (gap or garbage).
    Lost,
    /// Not started.
    #[default]
    Start,
}

/// Per-direction progress.
#[derive(Debug, Clone, Copy, Default)]
struct Side {
    stage: Stage,
    packets: u32,
    kexinit: bool,
    /// Bytes of the current SSH 1.x packet still to skip.
    skip: usize,
    /// How far the line being received was searched (lines trickled in small segments are
    /// examined once).
    line: crate::rescan::Resume,
}

/// Hashes of one algorithm name-list, in order.
#[derive(Debug, Clone, Copy)]
struct Names {
    hashes: [u64; MAX_NAMES],
    len: usize,
}

impl Default for Names {
    fn default() -> Self {
        Names { hashes: [0; MAX_NAMES], len: 0 }
    }
}

impl Names {
    fn of(list: &[u8]) -> Self {
        let mut n = Names::default();
        for name in parser::names(list).take(MAX_NAMES) {
            n.hashes[n.len] = parser::name_hash(name);
            n.len += 1;
        }
        n
    }

    fn iter(&self) -> impl Iterator<Item = u64> + '_ {
        self.hashes[..self.len].iter().copied()
    }
}

/// The first KEXINIT's lists (kex, host key, enc c2s, enc s2c) and who sent it.
#[derive(Debug, Clone, Copy)]
struct FirstKex {
    from: Dir,
    lists: [Names; 4],
}

/// Negotiates one list (RFC 4253 §7.1): `first` was remembered from `first_from`, `second` is
/// the other side's list. Returns the chosen name (borrowed from `second`).
fn negotiate<'a>(first_from: Dir, first: &Names, second: &'a [u8]) -> Option<&'a [u8]> {
    match first_from {
        // Server list remembered: first client name the server also lists.
        Dir::ToClient => parser::names(second).find(|n| first.iter().any(|h| h == parser::name_hash(n))),
        // Client list remembered: in client order, the first one the server lists.
        Dir::ToServer => first.iter().find_map(|h| parser::names(second).find(|n| parser::name_hash(n) == h)),
    }
}

/// Per-session SSH state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Ssh {
    sides: [Side; 2],
    /// Identification strings without CR LF, per direction.
    ident: [Option<Text<255>>; 2],
    /// softwareversion per direction.
    software: [Option<Text<64>>; 2],
    /// protoversion per direction.
    proto: [Option<Text<8>>; 2],
    first_kex: Option<FirstKex>,
    kex: Option<Text<64>>,
    host_key: Option<Text<64>>,
    enc_c2s: Option<Text<64>>,
    enc_s2c: Option<Text<64>>,
    violation: bool,
    threats: Threats,
}

impl Ssh {
    /// Bytes examined searching for the ends of lines before the binary packets (both
    /// directions): a measure of work, proportional to the bytes fed however they were
    /// segmented (tests).
    pub fn examined(&self) -> u64 {
        self.sides.iter().map(|s| s.line.examined()).sum()
    }

    /// The protocol each identification speaks, per direction.
    fn protocols(&self) -> [Option<Protocol>; 2] {
        [0, 1].map(|d| self.proto[d].as_ref().map(|p| parser::protocol(p.as_bytes())))
    }

    /// True when `d`'s packets are SSH 1.x packets: its identification speaks only protocol 1,
    /// or it is compatible ("1.99") and the other end speaks only protocol 1 (RFC 4253 §5.1).
    fn v1_framing(&self, d: usize) -> bool {
        let p = self.protocols();
        match p[d] {
            Some(Protocol::V1) => true,
            Some(Protocol::Compat) => p[1 - d] == Some(Protocol::V1),
            _ => false,
        }
    }

    /// Once both identifications are known (the one of `dir` just arrived): records `ssh_v1`
    /// when they negotiate protocol 1 (RFC 4253 §5.1): both speak only 1.x
    /// (`client_and_server_protocol_1`), or one speaks only 1.x and the other is compatible
    /// ("1.99": `client_protocol_1_server_compatible`, `server_protocol_1_client_compatible`).
    /// Recorded in the direction of the 1.x-only identification (the later one when both are),
    /// with it as evidence. A 1.x-only end facing a 2.0-only one negotiates nothing (the
    /// connection ends, or the client retries with the other protocol, a new session).
    fn judge_protocol(&mut self, dir: Dir) {
        let [Some(c), Some(s)] = self.protocols() else { return };
        let (reason, by) = match (c, s) {
            (Protocol::V1, Protocol::V1) => ("client_and_server_protocol_1", dir),
            (Protocol::V1, Protocol::Compat) => ("client_protocol_1_server_compatible", Dir::ToServer),
            (Protocol::Compat, Protocol::V1) => ("server_protocol_1_client_compatible", Dir::ToClient),
            _ => return,
        };
        let evidence = self.ident[by as usize].unwrap_or_default();
        self.threats.record(ThreatId::SshV1, by, reason, evidence.as_bytes());
    }

    fn done(&self) -> bool {
        self.sides.iter().all(|s| matches!(s.stage, Stage::Encrypted | Stage::Lost))
    }

    fn lose(&mut self, d: usize) {
        self.violation = true;
        self.sides[d].stage = Stage::Lost;
    }

    fn on_kexinit(&mut self, dir: Dir, k: &parser::KexInit<'_>) {
        let lists = [k.kex, k.host_key, k.enc_c2s, k.enc_s2c];
        match self.first_kex {
            None => self.first_kex = Some(FirstKex { from: dir, lists: lists.map(Names::of) }),
            Some(first) if first.from != dir => {
                let pick = |i: usize| negotiate(first.from, &first.lists[i], lists[i]).map(text);
                self.kex = pick(0);
                self.host_key = pick(1);
                self.enc_c2s = pick(2);
                self.enc_s2c = pick(3);
            }
            Some(_) => {}
        }
    }
}

impl AppParser for Ssh {
    const APP: App = App::Ssh;
    const PORTS: &'static [u16] = &[22, 2222];
    const TRANSPORT: Transport = Transport::Tcp;

    fn probe(_dir: Dir, data: &[u8]) -> Probe {
        match parser::probe(data) {
            Parse::Ok(..) => Probe::Match,
            Parse::Incomplete(_) => Probe::NeedMore,
            Parse::Invalid => Probe::NoMatch,
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        let mut off = 0;
        loop {
            let side = &mut self.sides[d];
            if side.skip > 0 {
                let k = side.skip.min(data.len() - off);
                side.skip -= k;
                off += k;
            }
            let rest = &data[off..];
            if rest.is_empty() {
                return Feed::Consumed(off);
            }
            match self.sides[d].stage {
                Stage::Start => self.sides[d].stage = Stage::Ident(0),
                Stage::Ident(pre) => match parser::line_from(rest, &mut self.sides[d].line) {
                    Parse::Ok(Line::Ident(id), n) => {
                        let line = &rest[..n];
                        let line = line.strip_suffix(b"\n").unwrap_or(line);
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        self.ident[d] = Some(text(line));
                        self.software[d] = Some(text(id.software));
                        self.proto[d] = Some(text(id.proto));
                        self.sides[d].stage = Stage::Packets;
                        self.judge_protocol(dir);
                        off += n;
                    }
                    Parse::Ok(Line::Other, n) if dir == Dir::ToClient && usize::from(pre) < parser::MAX_PRE_LINES => {
                        self.sides[d].stage = Stage::Ident(pre + 1);
                        off += n;
                    }
                    // More or longer lines before a server's identification than we follow
                    // (OpenSSH accepts up to 1024 lines of 8 KiB): stop reading.
                    Parse::Ok(Line::Other, _) | Parse::Invalid if dir == Dir::ToClient => self.lose(d),
                    // A client's first line that is not an identification: not SSH.
                    Parse::Ok(Line::Other, _) | Parse::Invalid => {
                        self.lose(d);
                        return Feed::Invalid { consumed: off };
                    }
                    Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                },
                Stage::Packets if self.v1_framing(d) => match parser::v1_packet(rest) {
                    Parse::Ok(total, _) => {
                        let side = &mut self.sides[d];
                        side.packets = side.packets.saturating_add(1);
                        side.skip = total;
                    }
                    Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                    // An SSH 1.x packet with an impossible length: not SSH.
                    Parse::Invalid => {
                        self.lose(d);
                        return Feed::Invalid { consumed: off };
                    }
                },
                Stage::Packets => match parser::packet(rest) {
                    Parse::Ok(payload, n) => {
                        let msg = payload.first().copied();
                        let side = &mut self.sides[d];
                        side.packets = side.packets.saturating_add(1);
                        if msg == Some(MSG_KEXINIT) && !side.kexinit {
                            side.kexinit = true;
                            match parser::kexinit(&rest[..n]) {
                                Some(k) => self.on_kexinit(dir, &k),
                                None => self.violation = true,
                            }
                        } else if msg == Some(MSG_NEWKEYS) {
                            side.stage = Stage::Encrypted;
                        }
                        off += n;
                    }
                    Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                    // A cleartext packet with an impossible length or padding: not SSH.
                    Parse::Invalid => {
                        self.lose(d);
                        return Feed::Invalid { consumed: off };
                    }
                },
                Stage::Encrypted | Stage::Lost => {
                    return if self.done() { Feed::Done } else { Feed::Consumed(data.len()) };
                }
            }
        }
    }

    fn gap(&mut self, dir: Dir, len: usize) -> bool {
        let side = &mut self.sides[dir as usize];
        side.line.reset();
        if side.stage == Stage::Packets && side.skip > 0 && len <= side.skip {
            // Lost bytes inside an SSH 1.x packet: its length still frames the next one.
            side.skip -= len;
            return true;
        }
        if matches!(side.stage, Stage::Encrypted | Stage::Lost) {
            return true;
        }
        // Lines and packets are framed by content and length: a gap loses the framing.
        side.stage = Stage::Lost;
        false
    }

    fn threats(&self) -> Option<&Threats> {
        Some(&self.threats)
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        for (d, who) in [(0, "client"), (1, "server")] {
            if let Some(s) = &self.ident[d] {
                out.insert(format!("{who}_version"), s.as_str().into());
            }
            if let Some(s) = &self.software[d] {
                out.insert(format!("{who}_software"), s.as_str().into());
            }
            if let Some(s) = &self.proto[d] {
                out.insert(format!("{who}_proto"), s.as_str().into());
            }
        }
        for (k, v) in [("kex", &self.kex), ("host_key", &self.host_key), ("cipher_c2s", &self.enc_c2s), ("cipher_s2c", &self.enc_s2c)] {
            if let Some(v) = v {
                out.insert(k.into(), v.as_str().into());
            }
        }
        out.insert("packets_to_server".into(), self.sides[0].packets.into());
        out.insert("packets_to_client".into(), self.sides[1].packets.into());
        if self.sides.iter().all(|s| s.stage == Stage::Encrypted) {
            out.insert("encrypted".into(), true.into());
        }
        if self.violation {
            out.insert("violation".into(), true.into());
        }
    }
}

#[cfg(test)]
mod tests;
