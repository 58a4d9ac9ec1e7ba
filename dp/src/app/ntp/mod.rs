//! NTP over UDP (RFC 5905 §7.3 packet header, NTPv3 RFC 1305 Appendix A): version, the mode of
//! each side, the server's stratum (and kiss code for stratum 0), packet counts per direction,
//! and whether each reply's origin timestamp echoes the last request's transmit timestamp
//! (RFC 5905 §8, the on-wire protocol's bogus-packet check); SNTP requests with every field
//! zero but LI, VN and mode (RFC 4330 §5, `sntp_zeroed`).
//!
//! Control messages (mode 6, RFC 1305 Appendix B, RFC 9327: `ntpq`) and private messages
//! (mode 7, ntpd's `ntp_request.h`: `ntpdc`, and the `monlist` amplification query,
//! CVE-2013-5211) are NTP too, both directions: the record says the control opcode
//! (`control_opcode`), or the implementation and request code (`implementation`,
//! `request_code`), `monlist: true` for MON_GETLIST_1 (42) and MON_GETLIST (20), how many
//! requests and responses of each kind, the items private responses carried (`items`, the
//! amplification a monlist answer gives) and the first error a response reported. The threat
//! catalogue has no NTP threat: `monlist` is shown, not raised.
//!
//! Parsing is our own (see `parser.rs` for why and for the strict probe: random UDP payloads are
//! common, so the probe checks version, mode, stratum, poll, precision, root delay/dispersion,
//! a non-zero transmit timestamp and the extension/MAC trailer layout; for modes 6 and 7 the
//! opcodes, codes and lengths that must add up exactly).

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{control_opcode_name, mode_name, Packet, Parse};

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
    /// A zeroed SNTP request was seen (RFC 4330 §5).
    sntp_zeroed: bool,
    /// Mode 6: the first request's opcode (or the first response's, without a request).
    control_opcode: Option<u8>,
    /// Mode 6 messages: requests, responses, error responses.
    control: [u32; 3],
    /// Mode 7: the first request's (implementation, request code), or the first response's.
    private: Option<(u8, u8)>,
    /// Mode 7 messages: requests, responses.
    private_msgs: [u32; 2],
    /// Items carried by mode 7 responses.
    items: u32,
    /// The first non-zero error code of a mode 7 response.
    private_err: Option<u8>,
}

impl Ntp {
    /// A time packet (modes 1..=5) of direction `d`.
    fn time(&mut self, d: usize, h: &parser::Header) {
        self.version.get_or_insert(h.version);
        self.mode[d].get_or_insert(h.mode);
        if h.zeroed {
            self.sntp_zeroed = true;
        }
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
    }
}

impl AppParser for Ntp {
    const APP: App = App::Ntp;
    const PORTS: &'static [u16] = &[123];
    const TRANSPORT: Transport = Transport::Udp;

    fn probe(_dir: Dir, data: &[u8]) -> Probe {
        match parser::datagram(data) {
            Parse::Ok(..) => Probe::Match,
            Parse::Incomplete(_) => Probe::NeedMore,
            Parse::Invalid => Probe::NoMatch,
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        let Parse::Ok(p, _) = parser::datagram(data) else {
            // A datagram that is no NTP packet: the flow stopped being NTP.
            self.malformed = self.malformed.saturating_add(1);
            return Feed::Invalid { consumed: 0 };
        };
        self.packets[d] = self.packets[d].saturating_add(1);
        match p {
            Packet::Time(h) => self.time(d, &h),
            Packet::Control(c) => {
                self.version.get_or_insert(c.version);
                self.mode[d].get_or_insert(parser::mode::CONTROL);
                if c.response {
                    self.control[1] = self.control[1].saturating_add(1);
                    if c.error {
                        self.control[2] = self.control[2].saturating_add(1);
                    }
                } else {
                    self.control[0] = self.control[0].saturating_add(1);
                }
                if self.control_opcode.is_none() || !c.response && self.control[0] == 1 {
                    self.control_opcode = Some(c.opcode);
                }
            }
            Packet::Private(p) => {
                self.version.get_or_insert(p.version);
                self.mode[d].get_or_insert(parser::mode::PRIVATE);
                let i = usize::from(p.response);
                self.private_msgs[i] = self.private_msgs[i].saturating_add(1);
                if p.response {
                    self.items = self.items.saturating_add(u32::from(p.items));
                    if p.err != 0 {
                        self.private_err.get_or_insert(p.err);
                    }
                }
                if self.private.is_none() || !p.response && self.private_msgs[0] == 1 {
                    self.private = Some((p.implementation, p.request));
                }
            }
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
        if self.sntp_zeroed {
            out.insert("sntp_zeroed".into(), true.into());
        }
        if let Some(op) = self.control_opcode {
            out.insert("control_opcode".into(), control_opcode_name(op).into());
            out.insert("control_opcode_id".into(), op.into());
            out.insert("control_requests".into(), self.control[0].into());
            out.insert("control_responses".into(), self.control[1].into());
            if self.control[2] > 0 {
                out.insert("control_errors".into(), self.control[2].into());
            }
        }
        if let Some((implementation, request)) = self.private {
            out.insert("implementation".into(), implementation.into());
            out.insert("request_code".into(), request.into());
            if matches!(request, parser::MON_GETLIST_1 | parser::MON_GETLIST) {
                out.insert("monlist".into(), true.into());
            }
            out.insert("private_requests".into(), self.private_msgs[0].into());
            out.insert("private_responses".into(), self.private_msgs[1].into());
            out.insert("items".into(), self.items.into());
            if let Some(e) = self.private_err {
                out.insert("private_error".into(), e.into());
            }
        }
        if self.malformed > 0 {
            out.insert("malformed".into(), self.malformed.into());
        }
    }
}

#[cfg(test)]
mod tests;
