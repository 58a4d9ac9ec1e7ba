//! NTP over UDP (RFC 5905 §7.3 packet header, NTPv3 RFC 1305 Appendix A): version, the mode of
//! each side, the server's stratum (and kiss code for stratum 0), packet counts per direction,
//! and whether each reply's origin timestamp echoes the last request's transmit timestamp
//! (RFC 5905 §8, the on-wire protocol's bogus-packet check).
//!
//! Parsing is our own (see `parser.rs` for why and for the strict probe: random UDP payloads are
//! common, so the probe checks version, mode, stratum, poll, precision, root delay/dispersion,
//! a non-zero transmit timestamp and the extension/MAC trailer layout).

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{mode_name, Parse};

/// Per-session NTP state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Ntp {
    version: Option<u8>,
    mode: [Option<u8>; 2],
    stratum: Option<u8>,
    kiss: Option<Text<4>>,
    refid: Option<[u8; 4]>,
    packets: [u32; 2],
    malformed: u32,
    last_request: Option<u64>,
    origin_matched: u32,
    origin_mismatched: u32,
}

impl AppParser for Ntp {
    const APP: App = App::Ntp;
    const PORTS: &'static [u16] = &[123];
    const TRANSPORT: Transport = Transport::Udp;

    fn probe(_dir: Dir, data: &[u8]) -> Probe {
        match parser::packet(data) {
            Parse::Ok(..) => Probe::Match,
            Parse::Incomplete(_) => Probe::NeedMore,
            Parse::Invalid => Probe::NoMatch,
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        let Parse::Ok(h, _) = parser::packet(data) else {
            // A datagram that is no NTP packet: the flow stopped being NTP.
            self.malformed = self.malformed.saturating_add(1);
            return Feed::Invalid { consumed: 0 };
        };
        self.packets[d] = self.packets[d].saturating_add(1);
        self.version.get_or_insert(h.version);
        self.mode[d].get_or_insert(h.mode);
        match h.mode {
            parser::mode::SERVER | parser::mode::BROADCAST | parser::mode::SYMMETRIC_PASSIVE => {
                if self.stratum.is_none() {
                    self.stratum = Some(h.stratum);
                    if h.stratum == 0 {
                        let n = h.refid.iter().position(|c| *c == 0).unwrap_or(4);
                        self.kiss = Some(text(&h.refid[..n]));
                    } else {
                        self.refid = Some(h.refid);
                    }
                }
                if let Some(req) = self.last_request {
                    if h.origin == req {
                        self.origin_matched = self.origin_matched.saturating_add(1);
                    } else {
                        self.origin_mismatched = self.origin_mismatched.saturating_add(1);
                    }
                }
            }
            _ => self.last_request = Some(h.transmit),
        }
        Feed::Consumed(data.len())
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        if let Some(v) = self.version {
            out.insert("version".into(), v.into());
        }
        if let Some(m) = self.mode[Dir::ToServer as usize] {
            out.insert("mode".into(), mode_name(m).into());
        }
        if let Some(m) = self.mode[Dir::ToClient as usize] {
            out.insert("reply_mode".into(), mode_name(m).into());
        }
        if let Some(s) = self.stratum {
            out.insert("stratum".into(), s.into());
        }
        if let Some(k) = &self.kiss {
            out.insert("kiss_code".into(), k.as_str().into());
        }
        if let (Some(r), Some(s)) = (self.refid, self.stratum) {
            // Stratum 1: a 4-character source code; otherwise an IPv4 address (or a hash of an
            // IPv6 one, RFC 5905 §7.3), shown dotted.
            let v = if s == 1 {
                let n = r.iter().position(|c| *c == 0).unwrap_or(4);
                text::<4>(&r[..n]).as_str().to_string()
            } else {
                std::net::Ipv4Addr::from(r).to_string()
            };
            out.insert("refid".into(), v.into());
        }
        out.insert("packets_to_server".into(), self.packets[0].into());
        out.insert("packets_to_client".into(), self.packets[1].into());
        if self.origin_matched > 0 || self.origin_mismatched > 0 {
            out.insert("origin_matched".into(), self.origin_matched.into());
            out.insert("origin_mismatched".into(), self.origin_mismatched.into());
        }
        if self.malformed > 0 {
            out.insert("malformed".into(), self.malformed.into());
        }
    }
}

#[cfg(test)]
mod tests;
