//! Pure parsing functions for the memcached binary protocol as Couchbase uses it
//! (memcached "BinaryProtocolRevamped" wiki §"Packet Structure"/§"Header"; Couchbase
//! kv_engine `docs/BinaryProtocol.md` §"Packet structure" and §"Flexible framing extras" for the
//! alternative magics 0x08/0x18).
//!
//! Header (24 bytes): magic, opcode, key length (2; for the flexible magics: framing-extras
//! length (1) + key length (1)), extras length, data type, vbucket (request) or status
//! (response) (2), total body length (4), opaque (4), CAS (8). The body is framing extras,
//! extras, key, value in that order.
//!
//! No field library: the Rust memcached crates are clients that own their sockets and allocate;
//! the header is fixed, so this borrows slices from the input.

pub use crate::app::Parse;

/// Header length (bytes).
pub const HEADER: usize = 24;
/// Largest total body accepted (bytes): Couchbase's item limit is 20 MiB plus headroom.
pub const MAX_BODY: usize = 32 << 20;

/// Magic bytes.
pub mod magic {
    /// Client request.
    pub const REQUEST: u8 = 0x80;
    /// Server response.
    pub const RESPONSE: u8 = 0x81;
    /// Client request with flexible framing extras (Couchbase).
    pub const ALT_REQUEST: u8 = 0x08;
    /// Server response with flexible framing extras (Couchbase).
    pub const ALT_RESPONSE: u8 = 0x18;
}

/// Name of an opcode, `None` for opcodes this table does not know.
pub fn opcode_name(op: u8) -> Option<&'static str> {
    Some(match op {
        0x00 => "GET",
        0x01 => "SET",
        0x02 => "ADD",
        0x03 => "REPLACE",
        0x04 => "DELETE",
        0x05 => "INCREMENT",
        0x06 => "DECREMENT",
        0x07 => "QUIT",
        0x08 => "FLUSH",
        0x09 => "GETQ",
        0x0a => "NOOP",
        0x0b => "VERSION",
        0x0c => "GETK",
        0x0d => "GETKQ",
        0x0e => "APPEND",
        0x0f => "PREPEND",
        0x10 => "STAT",
        0x11 => "SETQ",
        0x12 => "ADDQ",
        0x13 => "REPLACEQ",
        0x14 => "DELETEQ",
        0x15 => "INCREMENTQ",
        0x16 => "DECREMENTQ",
        0x17 => "QUITQ",
        0x18 => "FLUSHQ",
        0x19 => "APPENDQ",
        0x1a => "PREPENDQ",
        0x1b => "VERBOSITY",
        0x1c => "TOUCH",
        0x1d => "GAT",
        0x1e => "GATQ",
        0x1f => "HELLO",
        0x20 => "SASL_LIST_MECHS",
        0x21 => "SASL_AUTH",
        0x22 => "SASL_STEP",
        0x23 => "IOCTL_GET",
        0x24 => "IOCTL_SET",
        0x25 => "CONFIG_VALIDATE",
        0x26 => "CONFIG_RELOAD",
        0x27 => "AUDIT_PUT",
        0x28 => "AUDIT_CONFIG_RELOAD",
        0x29 => "SHUTDOWN",
        0x30..=0x3f => "RANGE_OR_TAP",
        0x40..=0x5f => "DCP",
        0x80..=0x88 => "VBUCKET_OR_GET",
        0x89 => "SELECT_BUCKET",
        0x8a..=0x9f => "CLUSTER",
        0xa0..=0xb4 => "SUBDOC_OR_META",
        0xb5 => "GET_CLUSTER_CONFIG",
        0xb6..=0xcf => "SUBDOC_OR_COLLECTIONS",
        0xd0..=0xef => "SUBDOC",
        0xf0..=0xfe => "ADMIN",
        _ => return None,
    })
}

/// One message header and the parts of its body this module reads (borrowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    /// Magic byte (see [`magic`]).
    pub magic: u8,
    /// Opcode.
    pub opcode: u8,
    /// Status (responses) or vbucket (requests).
    pub status: u16,
    /// Total body length (bytes, <= [`MAX_BODY`]).
    pub body: usize,
    /// The key (complete once [`Header`] is returned).
    pub key: &'a [u8],
    /// Offset of the value from the start of the message.
    pub value_at: usize,
}

impl Header<'_> {
    /// True for responses.
    pub fn is_response(&self) -> bool {
        matches!(self.magic, magic::RESPONSE | magic::ALT_RESPONSE)
    }

    /// Whole message length (header + body).
    pub fn len(&self) -> usize {
        HEADER + self.body
    }

    /// Never empty (the header alone is 24 bytes); for clippy's `len_without_is_empty`.
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// Parses a header and returns it once the header, framing extras, extras and key are present
/// (the value may still be missing: `Parse::Ok`'s count is the bytes up to the key's end).
/// `Invalid` for unknown magics, data types above 7 (JSON|Snappy|Xattr), opcodes not in
/// [`opcode_name`], lengths not fitting the body or a body above [`MAX_BODY`].
pub fn header(b: &[u8]) -> Parse<Header<'_>> {
    let at = |i: usize| b.get(i).copied();
    let Some(m) = at(0) else { return Parse::Incomplete(HEADER) };
    if !matches!(m, magic::REQUEST | magic::RESPONSE | magic::ALT_REQUEST | magic::ALT_RESPONSE) {
        return Parse::Invalid;
    }
    if at(1).is_some_and(|op| opcode_name(op).is_none()) {
        return Parse::Invalid;
    }
    if at(5).is_some_and(|dt| dt > 7) {
        return Parse::Invalid;
    }
    if at(8).is_some_and(|t| t > (MAX_BODY >> 24) as u8) {
        return Parse::Invalid;
    }
    let Some(h) = b.get(..HEADER) else { return Parse::Incomplete(HEADER) };
    let (framing, key) = if matches!(m, magic::ALT_REQUEST | magic::ALT_RESPONSE) {
        (usize::from(h[2]), usize::from(h[3]))
    } else {
        (0, usize::from(u16::from_be_bytes([h[2], h[3]])))
    };
    let extras = usize::from(h[4]);
    let body = u32::from_be_bytes([h[8], h[9], h[10], h[11]]) as usize;
    if body > MAX_BODY || framing + extras + key > body {
        return Parse::Invalid;
    }
    let key_at = HEADER + framing + extras;
    let Some(k) = b.get(key_at..key_at + key) else { return Parse::Incomplete(key_at + key) };
    Parse::Ok(
        Header { magic: m, opcode: h[1], status: u16::from_be_bytes([h[6], h[7]]), body, key: k, value_at: key_at + key },
        key_at + key,
    )
}
