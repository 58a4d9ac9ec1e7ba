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
//! Negotiation follows RFC 4253 §7.1 in its simple form: the first algorithm on the client's
//! list that the server also lists (the extra compatibility conditions on kex/host-key pairs are
//! not checked). The first KEXINIT's lists are remembered as hashes of at most
//! [`MAX_NAMES`] names (fixed size); see `parser.rs` for what `ssh-parser` does and does not do
//! here.

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{Line, Parse, MSG_KEXINIT, MSG_NEWKEYS};

/// Names remembered per algorithm list of the first KEXINIT.
pub const MAX_NAMES: usize = 32;

/// Where a direction's parsing is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Stage {
    /// Reading lines until the identification; counts the other lines seen.
    Ident(u8),
    /// Reading cleartext binary packets.
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
}

impl Ssh {
    /// Bytes examined searching for the ends of lines before the binary packets (both
    /// directions): a measure of work, proportional to the bytes fed however they were
    /// segmented (tests).
    pub fn examined(&self) -> u64 {
        self.sides.iter().map(|s| s.line.examined()).sum()
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

    fn gap(&mut self, dir: Dir, _len: usize) -> bool {
        let side = &mut self.sides[dir as usize];
        side.line.reset();
        if matches!(side.stage, Stage::Encrypted | Stage::Lost) {
            return true;
        }
        // Lines and packets are framed by content and length: a gap loses the framing.
        side.stage = Stage::Lost;
        false
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
