//! Pure parsing functions for NTP packets (RFC 5905 §7.3, NTPv3 RFC 1305 §3.2/Appendix A),
//! control messages (mode 6: RFC 1305 Appendix B, RFC 9327) and private messages (mode 7:
//! ntpd's `ntp_request.h`, never standardised; `ntpdc` and the `monlist` query).
//!
//! Layout of the 48-byte header: byte 0 = LI (2 bits) | VN (3 bits) | Mode (3 bits); byte 1
//! stratum; byte 2 poll (log2 s); byte 3 precision (log2 s, signed); root delay and dispersion
//! (4 bytes each, 16.16 seconds); reference id (4); then the reference, origin, receive and transmit timestamps
//! (8 bytes each, NTP 64-bit format). After the header, NTPv4 may carry extension fields
//! (RFC 7822 §3: 2-byte type, 2-byte length, multiple of 4, at least 16 bytes) and a MAC
//! (RFC 5905 §7.3: 4-byte key id + 16-byte MD5 or 20-byte SHA-1 digest; RFC 8573 also uses
//! 20-byte digests; a 4-byte crypto-NAK is a lone key id of 0). An SNTP client may send a
//! request whose fields are all zero but LI, VN and mode (RFC 4330 §5; lwIP's SNTP client,
//! in countless embedded devices, does): the only time packet with a zero transmit timestamp
//! taken.
//!
//! **Control messages** (mode 6, [`control`]; RFC 9327 §2): a 12-byte header, byte 0 LI | VN
//! | 6, byte 1 R (response) | E (error) | M (more) | opcode (5 bits), then sequence, status,
//! association id, offset and count (16 bits each), `count` bytes of data (at most 468)
//! padded with zeros to a 32-bit boundary, and an optional MAC. `ntpq` speaks it.
//!
//! **Private messages** (mode 7, [`private`]; `ntp_request.h` of ntpd 4.2.x): an 8-byte header,
//! byte 0 R | M | VN | 7, byte 1 A (authenticated) | sequence (7 bits), implementation (0
//! universal, 2 old xntpd, 3 xntpd), request code, then err (4 bits) | item count (12 bits)
//! and MBZ (4 bits) | item size (12 bits), then the items (responses: at most 500 bytes of
//! them, exactly `count × size`). `ntpdc` spoke it; request code 42 (MON_GETLIST_1) and 20
//! (MON_GETLIST) are `monlist`, the classic amplification query (CVE-2013-5211).
//!
//! No field library: the `ntp-proto` / `sntpc` crates either pull in a full NTP daemon or only
//! build client requests, and none reads modes 6 or 7; the headers are fixed bytes, so plain
//! reads are simpler and allocation-free. Every form is checked strictly (versions, codes,
//! lengths that must add up exactly), because random UDP payloads on port 123 are common.

pub use crate::app::Parse;

/// Length of the fixed header (bytes).
pub const HEADER: usize = 48;
/// Largest datagram considered (bytes): header + a few extension fields + MAC.
pub const MAX_LEN: usize = 1024;

/// Association modes (RFC 5905 §7.3, Figure 10).
pub mod mode {
    /// Symmetric active.
    pub const SYMMETRIC_ACTIVE: u8 = 1;
    /// Symmetric passive.
    pub const SYMMETRIC_PASSIVE: u8 = 2;
    /// Client.
    pub const CLIENT: u8 = 3;
    /// Server.
    pub const SERVER: u8 = 4;
    /// Broadcast.
    pub const BROADCAST: u8 = 5;
    /// Control message (RFC 9327).
    pub const CONTROL: u8 = 6;
    /// Private (implementation-specific, ntpd's mode 7).
    pub const PRIVATE: u8 = 7;
}

/// Name of a mode ("client", "server", ...; "mode-N" for the others).
pub fn mode_name(m: u8) -> &'static str {
    match m {
        0 => "reserved",
        1 => "symmetric_active",
        2 => "symmetric_passive",
        3 => "client",
        4 => "server",
        5 => "broadcast",
        6 => "control",
        _ => "private",
    }
}

/// The header fields this module reports, read from one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Leap indicator (0..=3).
    pub leap: u8,
    /// Version number (1..=4 accepted).
    pub version: u8,
    /// Association mode (1..=5 accepted).
    pub mode: u8,
    /// Stratum (0..=16 accepted; 0 = unspecified / kiss-o'-death, 16 = unsynchronised).
    pub stratum: u8,
    /// Poll interval exponent (log2 seconds, as sent).
    pub poll: i8,
    /// Precision exponent (log2 seconds).
    pub precision: i8,
    /// Reference id (4 bytes, ASCII for stratum 0/1, an address or hash otherwise).
    pub refid: [u8; 4],
    /// Origin timestamp (NTP 64-bit format).
    pub origin: u64,
    /// Transmit timestamp (NTP 64-bit format).
    pub transmit: u64,
    /// An SNTP client request with every field zero but LI, VN and mode (RFC 4330 §5).
    pub zeroed: bool,
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    if let Some(s) = b.get(at..at + 8) {
        a.copy_from_slice(s);
    }
    u64::from_be_bytes(a)
}

/// Checks that what follows the header is a plausible sequence of extension fields (RFC 7822 §3)
/// optionally followed by a MAC (key id + 16 or 20 bytes digest, or a 4-byte crypto-NAK).
fn trailer_ok(mut t: &[u8]) -> bool {
    loop {
        match t.len() {
            0 | 4 | 20 | 24 => return true,
            _ => {}
        }
        // An extension field: type, length (>= 16, multiple of 4, within the packet).
        let Some(h) = t.get(..4) else { return false };
        let len = usize::from(u16::from_be_bytes([h[2], h[3]]));
        if len < 16 || len % 4 != 0 || len > t.len() {
            return false;
        }
        t = &t[len..];
    }
}

/// True for a 48-byte client request whose bytes after the first are all zero (RFC 4330 §5).
fn zeroed_request(b: &[u8]) -> bool {
    b.len() == HEADER && b[0] & 7 == mode::CLIENT && b[1..].iter().all(|&x| x == 0)
}

/// Parses one whole NTP time datagram (modes 1..=5) strictly (the probe). `Incomplete` while
/// fewer than [`HEADER`] bytes are given and the bytes so far are plausible; `Invalid` for
/// modes 0, 6 and 7 (see [`datagram`]), versions outside 1..=4, stratum above 16, unaligned or
/// implausible trailers, and all-zero transmit timestamps other than in a zeroed SNTP request.
pub fn packet(b: &[u8]) -> Parse<Header> {
    let Some(&first) = b.first() else { return Parse::Incomplete(HEADER) };
    let version = (first >> 3) & 7;
    let mode = first & 7;
    if !(1..=4).contains(&version) || !(1..=5).contains(&mode) {
        return Parse::Invalid;
    }
    if let Some(&stratum) = b.get(1) {
        if stratum > 16 {
            return Parse::Invalid;
        }
    }
    if b.len() < HEADER {
        return Parse::Incomplete(HEADER);
    }
    if b.len() > MAX_LEN || !trailer_ok(&b[HEADER..]) {
        return Parse::Invalid;
    }
    if zeroed_request(b) {
        return Parse::Ok(
            Header { leap: first >> 6, version, mode, stratum: 0, poll: 0, precision: 0, refid: [0; 4], origin: 0, transmit: 0, zeroed: true },
            b.len(),
        );
    }
    let h = Header {
        leap: first >> 6,
        version,
        mode,
        stratum: b[1],
        poll: b[2] as i8,
        precision: b[3] as i8,
        refid: [b[12], b[13], b[14], b[15]],
        origin: u64_at(b, 24),
        transmit: u64_at(b, 40),
        zeroed: false,
    };
    // Poll is 4..=17 in RFC 5905 but clients send 0 and some old ones up to 17; a huge or
    // negative poll is not NTP. Precision is a small negative exponent, or 0 in bare SNTP
    // requests, or 32 (chrony's client requests, which hide the real value).
    if !(0..=17).contains(&h.poll) || !((-32..=0).contains(&h.precision) || h.precision == 32) {
        return Parse::Invalid;
    }
    // Root delay and root dispersion (NTP short format, 16.16 seconds) stay far below 256 s
    // (MAXDISP is 16 s, RFC 5905 §7.2).
    if b[4] != 0 || b[8] != 0 {
        return Parse::Invalid;
    }
    // Every sender fills its transmit timestamp (RFC 5905 §8; clients using random
    // timestamps for privacy, RFC 9109, still send a non-zero value).
    if h.transmit == 0 {
        return Parse::Invalid;
    }
    // A server (or broadcast) reply carries a receive/reference time; stratum 0 is only a
    // kiss-o'-death with an ASCII code (RFC 5905 §7.4).
    if matches!(h.mode, mode::SERVER | mode::BROADCAST) && h.stratum == 0 && !h.refid.iter().all(|c| c.is_ascii_uppercase() || *c == 0 || *c == b' ') {
        return Parse::Invalid;
    }
    Parse::Ok(h, b.len())
}

/// Length of a control message's header (RFC 9327 §2).
pub const CONTROL_HEADER: usize = 12;
/// Most data bytes in one control message (RFC 9327 §2; ntpd's `CTL_MAX_DATA_LEN`).
pub const CONTROL_MAX_DATA: usize = 468;
/// Length of a private message's header (`ntp_request.h`: `REQ_LEN_HDR`).
pub const PRIVATE_HEADER: usize = 8;
/// Most item bytes in one private response (`RESP_DATA_SIZE`).
pub const PRIVATE_MAX_DATA: usize = 500;
/// Longest private request taken (bytes): ntpdc's 192-byte form with a 20-byte MAC, rounded up.
pub const PRIVATE_MAX_REQUEST: usize = 256;
/// Request code of `monlist` (MON_GETLIST_1).
pub const MON_GETLIST_1: u8 = 42;
/// Request code of the older `monlist` (MON_GETLIST).
pub const MON_GETLIST: u8 = 20;

/// A control message's header (mode 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Control {
    /// Leap indicator (responses carry the server's).
    pub leap: u8,
    /// Version number (1..=4).
    pub version: u8,
    /// R bit: a response.
    pub response: bool,
    /// E bit: an error response (its status holds the error code).
    pub error: bool,
    /// M bit: more fragments follow.
    pub more: bool,
    /// Opcode (1..=12 or 31, RFC 9327 §2.1).
    pub opcode: u8,
    /// Sequence number.
    pub sequence: u16,
    /// Status word (an error code when `error`).
    pub status: u16,
    /// Association id (0: the system).
    pub association: u16,
    /// Offset of this fragment's data in the response (bytes).
    pub offset: u16,
    /// Data bytes in this message.
    pub count: u16,
}

/// A private message's header (mode 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Private {
    /// Version number (1..=4).
    pub version: u8,
    /// R bit: a response.
    pub response: bool,
    /// M bit: more responses follow.
    pub more: bool,
    /// A bit: the request is authenticated.
    pub auth: bool,
    /// Sequence number of a response packet (0..=127).
    pub sequence: u8,
    /// Implementation: 0 universal, 2 old xntpd, 3 xntpd.
    pub implementation: u8,
    /// Request code (42 and 20: `monlist`).
    pub request: u8,
    /// Error code of a response (0 none, 1 implementation, 2 request, 3 format, 4 no data,
    /// 7 authentication).
    pub err: u8,
    /// Items in this packet.
    pub items: u16,
    /// Size of each item (bytes).
    pub item_size: u16,
}

impl Private {
    /// True for the `monlist` requests (and their responses).
    pub fn monlist(&self) -> bool {
        matches!(self.request, MON_GETLIST_1 | MON_GETLIST)
    }
}

/// What one NTP datagram is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packet {
    /// A time packet (modes 1..=5).
    Time(Header),
    /// A control message (mode 6).
    Control(Control),
    /// A private message (mode 7).
    Private(Private),
}

/// Parses one whole NTP datagram of any mode (the probe): [`packet`], [`control`] or
/// [`private`] by its mode bits. `Incomplete` only for a plausible prefix.
pub fn datagram(b: &[u8]) -> Parse<Packet> {
    let Some(&first) = b.first() else { return Parse::Incomplete(PRIVATE_HEADER) };
    match first & 7 {
        mode::CONTROL => match control(b) {
            Parse::Ok(c, n) => Parse::Ok(Packet::Control(c), n),
            Parse::Incomplete(n) => Parse::Incomplete(n),
            Parse::Invalid => Parse::Invalid,
        },
        mode::PRIVATE => match private(b) {
            Parse::Ok(p, n) => Parse::Ok(Packet::Private(p), n),
            Parse::Incomplete(n) => Parse::Incomplete(n),
            Parse::Invalid => Parse::Invalid,
        },
        _ => match packet(b) {
            Parse::Ok(h, n) => Parse::Ok(Packet::Time(h), n),
            Parse::Incomplete(n) => Parse::Incomplete(n),
            Parse::Invalid => Parse::Invalid,
        },
    }
}

/// True for the control opcodes RFC 9327 §2.1 assigns: 1 read status, 2 read variables,
/// 3 write variables, 4 read clock variables, 5 write clock variables, 6 set trap, 7 trap
/// response, 8 runtime configuration, 9 export configuration, 10 read MRU list, 11 read
/// ordered list, 12 request nonce, 31 unset trap.
fn control_opcode(op: u8) -> bool {
    matches!(op, 1..=12 | 31)
}

/// Name of a control opcode (`read_variables`, ...; `opcode_N` for others).
pub fn control_opcode_name(op: u8) -> &'static str {
    match op {
        1 => "read_status",
        2 => "read_variables",
        3 => "write_variables",
        4 => "read_clock_variables",
        5 => "write_clock_variables",
        6 => "set_trap",
        7 => "trap_response",
        8 => "configure",
        9 => "save_configuration",
        10 => "read_mru",
        11 => "read_ordered_list",
        12 => "request_nonce",
        31 => "unset_trap",
        _ => "other",
    }
}

/// Whether `tail` (what follows a message's data, which ends at `end`) is its padding to a
/// 32-bit boundary (zeros from `ntpq`; ntpd leaves whatever its buffer held), with nothing or
/// a MAC (key id and a 16- or 20-byte digest) after it, the MAC itself possibly aligned to 64
/// bits (`ntpq` pads authenticated requests so); a prefix of such a tail is `Incomplete`.
fn control_tail(end: usize, tail: &[u8]) -> Parse<()> {
    let pad4 = (4 - end % 4) % 4;
    if tail.is_empty() || tail.len() == pad4 {
        return Parse::Ok((), tail.len());
    }
    if [pad4, pad4 + 4].into_iter().any(|pad| tail.len() >= pad && matches!(tail.len() - pad, 20 | 24)) {
        return Parse::Ok((), tail.len());
    }
    if tail.len() < pad4 + 4 + 24 {
        return Parse::Incomplete(end + pad4 + 4 + 24);
    }
    Parse::Invalid
}

/// Whether the data of a control response with `opcode` looks as ntpd writes it: text
/// (`name=value` lists: read and write variables, clock variables, trap messages,
/// configuration, MRU and ordered lists, nonces) with at most one control byte (but TAB, CR,
/// LF) in 32 (ntpsec 1.2.2 writes a few stray bytes into `filtdelay`), pairs of 16-bit
/// association id and status (read status: a multiple of 4 bytes), or nothing (set and unset
/// trap). RFC 9327 §3.
fn control_data_ok(opcode: u8, data: &[u8]) -> bool {
    match opcode {
        1 => data.len() % 4 == 0,
        6 | 31 => data.is_empty(),
        _ => {
            let odd = data.iter().filter(|&&b| b < 0x20 && !matches!(b, b'\t' | b'\r' | b'\n') || b == 0x7f).count();
            odd <= data.len() / 32
        }
    }
}

/// Parses one whole control message (mode 6) strictly: version 1..=4, an assigned opcode, a
/// request without the E and M bits and at offset 0 (LI is free: ntpsec's `ntpq` sends 3);
/// at most 468 data bytes, a response's as its opcode's data looks (none in an error); the
/// datagram exactly the header, the data, its zero padding and optionally a MAC.
pub fn control(b: &[u8]) -> Parse<Control> {
    let Some(&first) = b.first() else { return Parse::Incomplete(CONTROL_HEADER) };
    let version = (first >> 3) & 7;
    if first & 7 != mode::CONTROL || !(1..=4).contains(&version) {
        return Parse::Invalid;
    }
    let response = b.get(1).map(|&f| f & 0x80 != 0);
    if let Some(&f) = b.get(1) {
        let request = f & 0x80 == 0;
        if !control_opcode(f & 0x1f) || request && f & 0x60 != 0 {
            return Parse::Invalid;
        }
    }
    if response == Some(false) {
        if let Some(o) = b.get(8..10) {
            if o != [0, 0] {
                return Parse::Invalid;
            }
        }
    }
    if let Some(c) = b.get(10..12) {
        if usize::from(u16::from_be_bytes([c[0], c[1]])) > CONTROL_MAX_DATA {
            return Parse::Invalid;
        }
    }
    if b.len() < CONTROL_HEADER {
        return Parse::Incomplete(CONTROL_HEADER);
    }
    let be = |at: usize| u16::from_be_bytes([b[at], b[at + 1]]);
    let c = Control {
        leap: first >> 6,
        version,
        response: b[1] & 0x80 != 0,
        error: b[1] & 0x40 != 0,
        more: b[1] & 0x20 != 0,
        opcode: b[1] & 0x1f,
        sequence: be(2),
        status: be(4),
        association: be(6),
        offset: be(8),
        count: be(10),
    };
    let end = CONTROL_HEADER + usize::from(c.count);
    let data = &b[CONTROL_HEADER..end.min(b.len())];
    // An error response carries no data (ntpd's `ctl_error`).
    let data_ok = if c.error { c.count == 0 } else { control_data_ok(c.opcode, data) || c.opcode == 1 && b.len() < end };
    if c.response && !data_ok {
        return Parse::Invalid;
    }
    if b.len() < end {
        // A prefix (a datagram cut short never becomes whole: the parser rejects it).
        return Parse::Incomplete(end);
    }
    match control_tail(end, &b[end..]) {
        Parse::Ok(..) => {}
        Parse::Incomplete(n) => return Parse::Incomplete(n),
        Parse::Invalid => return Parse::Invalid,
    }
    Parse::Ok(c, b.len())
}

/// Parses one whole private message (mode 7) strictly: version 1..=4, implementation 0, 2 or
/// 3, a request code ntpd knows (at most 45), MBZ zero; a request has sequence 0, no error
/// and holds its items within [`PRIVATE_MAX_REQUEST`] bytes; a response is exactly its header
/// and `items × item_size` bytes (at most 500), with no items when it reports an error.
pub fn private(b: &[u8]) -> Parse<Private> {
    let Some(&first) = b.first() else { return Parse::Incomplete(PRIVATE_HEADER) };
    let version = (first >> 3) & 7;
    let response = first & 0x80 != 0;
    if first & 7 != mode::PRIVATE || !(1..=4).contains(&version) || !response && first & 0x40 != 0 {
        return Parse::Invalid;
    }
    if let Some(&a) = b.get(1) {
        if !response && a & 0x7f != 0 {
            return Parse::Invalid;
        }
    }
    if let Some(&i) = b.get(2) {
        if !matches!(i, 0 | 2 | 3) {
            return Parse::Invalid;
        }
    }
    if let Some(&r) = b.get(3) {
        if r > 45 {
            return Parse::Invalid;
        }
    }
    if let Some(&e) = b.get(4) {
        if !response && e >> 4 != 0 || !matches!(e >> 4, 0..=4 | 7) {
            return Parse::Invalid;
        }
    }
    if let Some(&m) = b.get(6) {
        if m >> 4 != 0 {
            return Parse::Invalid;
        }
    }
    if b.len() < PRIVATE_HEADER {
        return Parse::Incomplete(PRIVATE_HEADER);
    }
    let p = Private {
        version,
        response,
        more: first & 0x40 != 0,
        auth: b[1] & 0x80 != 0,
        sequence: b[1] & 0x7f,
        implementation: b[2],
        request: b[3],
        err: b[4] >> 4,
        items: u16::from_be_bytes([b[4] & 0x0f, b[5]]),
        item_size: u16::from_be_bytes([b[6] & 0x0f, b[7]]),
    };
    let data = usize::from(p.items) * usize::from(p.item_size);
    let max = if response { PRIVATE_HEADER + PRIVATE_MAX_DATA } else { PRIVATE_MAX_REQUEST };
    if PRIVATE_HEADER + data > max || response && p.err != 0 && p.items != 0 {
        return Parse::Invalid;
    }
    if b.len() < PRIVATE_HEADER + data {
        // A prefix (a datagram cut short never becomes whole: the parser rejects it).
        return Parse::Incomplete(PRIVATE_HEADER + data);
    }
    if b.len() > max || response && b.len() != PRIVATE_HEADER + data {
        return Parse::Invalid;
    }
    Parse::Ok(p, b.len())
}
