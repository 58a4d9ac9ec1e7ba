//! Pure parsing functions for DHCPv4 messages (RFC 2131 §2 fixed format, RFC 2132 options).
//!
//! Fixed header (236 bytes): op, htype, hlen, hops (1 byte each), xid (4), secs (2), flags (2),
//! ciaddr, yiaddr, siaddr, giaddr (4 each), chaddr (16), sname (64), file (128); then the magic
//! cookie 99.130.83.99 (RFC 2131 §3, RFC 2132 §2) and options as code/length/value triples
//! (pad 0 and end 255 have no length). Option overload (RFC 2132 §9.3) into sname/file is not
//! followed: the options used here are always in the options field in practice.
//!
//! No field library: `dhcproto` decodes every message into owned `Vec`s and a map (an
//! allocation per datagram on the packet path) and rejects what it cannot decode; a single pass
//! over the options with borrowed slices is enough for the fields reported.

pub use crate::app::Parse;

/// Offset of the magic cookie, and length of the fixed BOOTP header before it.
pub const COOKIE_AT: usize = 236;
/// The magic cookie (RFC 2131 §3).
pub const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// Smallest DHCP message: header, cookie and at least a message type option (3 bytes).
pub const MIN_LEN: usize = COOKIE_AT + 4 + 3;
/// Largest datagram considered (bytes; RFC 2131 §2 allows larger with option 57, rarely used).
pub const MAX_LEN: usize = 4096;

/// Option codes used (RFC 2132).
pub mod opt {
    /// Pad (no length).
    pub const PAD: u8 = 0;
    /// Host name (§3.14).
    pub const HOSTNAME: u8 = 12;
    /// Requested IP address (§9.1).
    pub const REQUESTED: u8 = 50;
    /// IP address lease time, seconds (§9.2).
    pub const LEASE: u8 = 51;
    /// DHCP message type (§9.6).
    pub const MESSAGE_TYPE: u8 = 53;
    /// Server identifier (§9.7).
    pub const SERVER_ID: u8 = 54;
    /// End (no length).
    pub const END: u8 = 255;
}

/// Name of a DHCP message type (RFC 2132 §9.6, RFC 4388 §6.1 for 10..=13, RFC 6926 for 14..=18).
pub fn message_type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        1 => "DISCOVER",
        2 => "OFFER",
        3 => "REQUEST",
        4 => "DECLINE",
        5 => "ACK",
        6 => "NAK",
        7 => "RELEASE",
        8 => "INFORM",
        9 => "FORCERENEW",
        10 => "LEASEQUERY",
        11 => "LEASEUNASSIGNED",
        12 => "LEASEUNKNOWN",
        13 => "LEASEACTIVE",
        14 => "BULKLEASEQUERY",
        15 => "LEASEQUERYDONE",
        16 => "ACTIVELEASEQUERY",
        17 => "LEASEQUERYSTATUS",
        18 => "TLS",
        _ => return None,
    })
}

/// What one message says (borrowed from the datagram).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Message<'a> {
    /// 1 BOOTREQUEST, 2 BOOTREPLY.
    pub op: u8,
    /// Transaction id.
    pub xid: u32,
    /// Client hardware address, `hlen` bytes (at most 16).
    pub chaddr: &'a [u8],
    /// "Your" (client) address.
    pub yiaddr: [u8; 4],
    /// Option 53.
    pub message_type: u8,
    /// Option 50.
    pub requested: Option<[u8; 4]>,
    /// Option 12 (raw bytes, at most 255).
    pub hostname: Option<&'a [u8]>,
    /// Option 54.
    pub server_id: Option<[u8; 4]>,
    /// Option 51 (seconds).
    pub lease: Option<u32>,
}

fn addr(v: &[u8]) -> Option<[u8; 4]> {
    v.try_into().ok()
}

/// Checks the fixed-header bytes present so far (also on prefixes): op 1 or 2, hlen <= 16,
/// hops <= 16, and as much of the cookie as is there.
fn header_plausible(b: &[u8]) -> bool {
    let at = |i: usize| b.get(i).copied();
    if at(0).is_some_and(|op| op != 1 && op != 2) {
        return false;
    }
    if at(1).is_some_and(|ht| ht == 0 || ht > 40) {
        return false;
    }
    if at(2).is_some_and(|hl| hl == 0 || hl > 16) || at(3).is_some_and(|h| h > 16) {
        return false;
    }
    (0..4).all(|i| at(COOKIE_AT + i).is_none_or(|c| c == COOKIE[i]))
}

/// Parses one whole datagram. `Incomplete` while the header so far is plausible and shorter than
/// [`MIN_LEN`], or while the options run past the end or lack the end option (a prefix);
/// `Invalid` for anything that is not DHCP (bad op/htype/hlen/hops, no cookie, no or a
/// repeated/unknown message type option, non-padding after the end option).
pub fn message(b: &[u8]) -> Parse<Message<'_>> {
    if !header_plausible(b) {
        return Parse::Invalid;
    }
    if b.len() < MIN_LEN {
        return Parse::Incomplete(MIN_LEN);
    }
    if b.len() > MAX_LEN {
        return Parse::Invalid;
    }
    let hlen = usize::from(b[2]);
    let mut m = Message {
        op: b[0],
        xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        chaddr: &b[28..28 + hlen],
        yiaddr: [b[16], b[17], b[18], b[19]],
        message_type: 0,
        requested: None,
        hostname: None,
        server_id: None,
        lease: None,
    };
    let mut o = &b[COOKIE_AT + 4..];
    let mut ended = false;
    while let Some((&code, rest)) = o.split_first() {
        match code {
            opt::PAD => {
                o = rest;
                continue;
            }
            opt::END => {
                ended = true;
                // Only padding may follow the end option.
                if rest.iter().any(|c| *c != 0) {
                    return Parse::Invalid;
                }
                break;
            }
            _ => {}
        }
        // An option running past the end: the datagram may be a prefix (probing), so undecided.
        let Some((&len, rest)) = rest.split_first() else { return Parse::Incomplete(b.len() + 2) };
        let Some(v) = rest.get(..usize::from(len)) else {
            return Parse::Incomplete(b.len() + usize::from(len) - rest.len() + 2)
        };
        o = &rest[usize::from(len)..];
        match code {
            opt::MESSAGE_TYPE => {
                if m.message_type != 0 || v.len() != 1 || message_type_name(v[0]).is_none() {
                    return Parse::Invalid;
                }
                m.message_type = v[0];
            }
            opt::REQUESTED => m.requested = addr(v),
            opt::SERVER_ID => m.server_id = addr(v),
            opt::LEASE => m.lease = addr(v).map(u32::from_be_bytes),
            opt::HOSTNAME if !v.is_empty() => m.hostname = Some(v),
            _ => {}
        }
    }
    // RFC 2131 §4.1: options end with the end option (some relays trim trailing padding but
    // never the end option itself); without it the bytes may be a prefix, so undecided.
    if !ended {
        return Parse::Incomplete(b.len() + 1);
    }
    if m.message_type == 0 {
        return Parse::Invalid;
    }
    Parse::Ok(m, b.len())
}
