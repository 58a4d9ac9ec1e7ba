//! DHCPv4 over UDP (RFC 2131 §2-§4, options RFC 2132 §3.14, §9.1, §9.2, §9.6, §9.7): the
//! message types seen (first 8), the client hardware address (chaddr, `hlen` bytes), the
//! requested address (option 50), the assigned address (yiaddr of OFFER/ACK), the server
//! identifier (option 54), the lease time (option 51), the client host name (option 12, at most
//! 64 bytes) and message counts per direction.
//!
//! Parsing is our own, not `dhcproto` (it allocates per message); see `parser.rs`. DHCP uses
//! ports 67/68 and broadcast addresses, so a session is whatever the flow key makes of it: each
//! datagram is parsed on its own.

pub mod parser;

use std::net::Ipv4Addr;

use arrayvec::ArrayVec;
use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::{message_type_name, Parse};

/// Message types kept (first ones seen).
pub const MAX_TYPES: usize = 8;
/// Host name bytes kept.
pub const MAX_HOSTNAME: usize = 64;

/// Per-session DHCP state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Dhcp {
    types: ArrayVec<u8, MAX_TYPES>,
    mac: ArrayVec<u8, 16>,
    requested: Option<[u8; 4]>,
    assigned: Option<[u8; 4]>,
    server_id: Option<[u8; 4]>,
    lease: Option<u32>,
    hostname: Option<Text<MAX_HOSTNAME>>,
    messages: [u32; 2],
    malformed: u32,
}

impl AppParser for Dhcp {
    const APP: App = App::Dhcp;
    const PORTS: &'static [u16] = &[67, 68];
    const TRANSPORT: Transport = Transport::Udp;

    fn probe(_dir: Dir, data: &[u8]) -> Probe {
        match parser::message(data) {
            Parse::Ok(..) => Probe::Match,
            Parse::Incomplete(_) => Probe::NeedMore,
            Parse::Invalid => Probe::NoMatch,
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        let Parse::Ok(m, _) = parser::message(data) else {
            // A datagram that is no DHCP message: the flow stopped being DHCP.
            self.malformed = self.malformed.saturating_add(1);
            return Feed::Invalid { consumed: 0 };
        };
        self.messages[d] = self.messages[d].saturating_add(1);
        if self.types.len() < MAX_TYPES {
            self.types.push(m.message_type);
        }
        if self.mac.is_empty() {
            // hlen <= 16 is checked by the parser.
            let _ = self.mac.try_extend_from_slice(m.chaddr);
        }
        if m.requested.is_some() {
            self.requested = m.requested;
        }
        // OFFER (2) and ACK (5) carry the assigned address.
        if matches!(m.message_type, 2 | 5) && m.yiaddr != [0; 4] {
            self.assigned = Some(m.yiaddr);
        }
        if m.server_id.is_some() {
            self.server_id = m.server_id;
        }
        if m.lease.is_some() {
            self.lease = m.lease;
        }
        if let (None, Some(h)) = (&self.hostname, m.hostname) {
            self.hostname = Some(text(h));
        }
        Feed::Consumed(data.len())
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        let types: Vec<Value> = self
            .types
            .iter()
            .map(|t| message_type_name(*t).map_or_else(|| Value::from(*t), Value::from))
            .collect();
        out.insert("message_types".into(), types.into());
        if !self.mac.is_empty() {
            let mut s = String::with_capacity(48);
            for (i, b) in self.mac.iter().enumerate() {
                if i > 0 {
                    s.push(':');
                }
                s.push_str(&format!("{b:02x}"));
            }
            out.insert("client_mac".into(), s.into());
        }
        let ip = |a: [u8; 4]| Value::from(Ipv4Addr::from(a).to_string());
        if let Some(a) = self.requested {
            out.insert("requested_address".into(), ip(a));
        }
        if let Some(a) = self.assigned {
            out.insert("assigned_address".into(), ip(a));
        }
        if let Some(a) = self.server_id {
            out.insert("server_id".into(), ip(a));
        }
        if let Some(l) = self.lease {
            out.insert("lease_seconds".into(), l.into());
        }
        if let Some(h) = &self.hostname {
            out.insert("hostname".into(), h.as_str().into());
        }
        out.insert("messages_to_server".into(), self.messages[0].into());
        out.insert("messages_to_client".into(), self.messages[1].into());
        if self.malformed > 0 {
            out.insert("malformed".into(), self.malformed.into());
        }
    }
}

#[cfg(test)]
mod tests;
