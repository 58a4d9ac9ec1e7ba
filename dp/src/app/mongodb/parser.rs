//! Pure parsing functions for the MongoDB wire protocol (no state, no allocation).
//!
//! Follows the MongoDB manual "MongoDB Wire Protocol": "Standard Message Header" (`MsgHeader`:
//! int32 messageLength, requestID, responseTo, opCode, all little-endian), "OP_MSG" (uint32
//! flagBits; sections of kind 0 (one body document) and kind 1 (int32 size, cstring
//! identifier, documents); optional CRC-32C checksum), "OP_COMPRESSED" (originalOpcode,
//! uncompressedSize, compressorId), and the legacy opcodes "OP_QUERY" and "OP_REPLY"; and the
//! BSON specification (bsonspec.org 1.1: `document ::= int32 e_list "\x00"`, element type bytes
//! and `e_name` cstrings) for the first element of a document. Whole documents are read with the
//! `bson` crate's borrowed [`bson::RawDocument`] (no copy, no allocation).

pub use crate::app::Parse;
use bson::RawDocument;

/// Length of the standard message header.
pub const HEADER: usize = 16;
/// Largest message accepted (bytes, header included): the server's `maxMessageSizeBytes`.
pub const MAX_MESSAGE: usize = 48_000_000;
/// Smallest BSON document (length + terminator).
pub const MIN_DOC: usize = 5;
/// OP_REPLY.
pub const OP_REPLY: i32 = 1;
/// OP_UPDATE (legacy).
pub const OP_UPDATE: i32 = 2001;
/// OP_INSERT (legacy).
pub const OP_INSERT: i32 = 2002;
/// OP_QUERY (legacy; still used for the first `isMaster` by old drivers).
pub const OP_QUERY: i32 = 2004;
/// OP_GET_MORE (legacy).
pub const OP_GET_MORE: i32 = 2005;
/// OP_DELETE (legacy).
pub const OP_DELETE: i32 = 2006;
/// OP_KILL_CURSORS (legacy).
pub const OP_KILL_CURSORS: i32 = 2007;
/// OP_COMPRESSED.
pub const OP_COMPRESSED: i32 = 2012;
/// OP_MSG.
pub const OP_MSG: i32 = 2013;
/// OP_MSG flag bits defined by the spec (checksumPresent, moreToCome, exhaustAllowed).
pub const MSG_FLAGS: u32 = 1 | 2 | 1 << 16;

/// Name of an opcode (`None` for unknown opcodes, which are values, not errors).
pub fn op_name(op: i32) -> Option<&'static str> {
    Some(match op {
        OP_REPLY => "OP_REPLY",
        OP_UPDATE => "OP_UPDATE",
        OP_INSERT => "OP_INSERT",
        OP_QUERY => "OP_QUERY",
        OP_GET_MORE => "OP_GET_MORE",
        OP_DELETE => "OP_DELETE",
        OP_KILL_CURSORS => "OP_KILL_CURSORS",
        OP_COMPRESSED => "OP_COMPRESSED",
        OP_MSG => "OP_MSG",
        _ => return None,
    })
}

/// Little-endian i32 at `off`.
pub fn le32(b: &[u8], off: usize) -> Option<i32> {
    b.get(off..off.checked_add(4)?).map(|s| i32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The standard message header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Total message length (header included), within `HEADER..=MAX_MESSAGE`.
    pub len: usize,
    /// requestID.
    pub request_id: i32,
    /// responseTo (0 in requests).
    pub response_to: i32,
    /// opCode.
    pub op: i32,
}

/// Parses the standard message header. Invalid when the length is out of range.
pub fn header(b: &[u8]) -> Parse<Header> {
    // The length decides as soon as its 4 bytes are there.
    if le32(b, 0).is_some_and(|len| usize::try_from(len).map_or(true, |l| !(HEADER..=MAX_MESSAGE).contains(&l))) {
        return Parse::Invalid;
    }
    let (Some(len), Some(request_id), Some(response_to), Some(op)) = (le32(b, 0), le32(b, 4), le32(b, 8), le32(b, 12))
    else {
        return Parse::Incomplete(HEADER);
    };
    match usize::try_from(len) {
        Ok(len) if (HEADER..=MAX_MESSAGE).contains(&len) => Parse::Ok(Header { len, request_id, response_to, op }, HEADER),
        _ => Parse::Invalid,
    }
}

/// Whether `t` is a BSON element type byte (spec 1.1, deprecated types included).
pub fn element_type(t: u8) -> bool {
    matches!(t, 0x01..=0x13 | 0x7f | 0xff)
}

/// Reads a cstring at `off`: `Ok((bytes, offset after NUL))`, `Incomplete` when no NUL within
/// `b` (and `b` holds fewer than `max` bytes from `off`), `Invalid` when longer than `max`.
pub fn cstring(b: &[u8], off: usize, max: usize) -> Parse<&[u8]> {
    let s = b.get(off..).unwrap_or(&[]);
    match s.iter().take(max + 1).position(|&c| c == 0) {
        Some(n) => Parse::Ok(&s[..n], off + n + 1),
        None if s.len() > max => Parse::Invalid,
        None => Parse::Incomplete(off + s.len() + 1),
    }
}

/// First element of the BSON document at the start of `b`: its type and key (the command name
/// of a command document). Reads only the document length, type byte and key; `limit` caps the
/// document length. `Incomplete` when `b` ends before the key does.
pub fn first_key(b: &[u8], limit: usize) -> Parse<(u8, &[u8])> {
    let Some(len) = le32(b, 0) else { return Parse::Incomplete(4) };
    let Ok(len) = usize::try_from(len) else { return Parse::Invalid };
    if !(MIN_DOC..=limit).contains(&len) {
        return Parse::Invalid;
    }
    let Some(&t) = b.get(4) else { return Parse::Incomplete(5) };
    if t == 0 {
        return if len == MIN_DOC { Parse::Ok((0, &[]), 5) } else { Parse::Invalid };
    }
    if !element_type(t) {
        return Parse::Invalid;
    }
    match cstring(b, 5, len - 6) {
        Parse::Ok(k, n) => Parse::Ok((t, k), n),
        Parse::Incomplete(n) => Parse::Incomplete(n),
        Parse::Invalid => Parse::Invalid,
    }
}

/// The command document of a message: its command name (first key) and `$db` when the whole
/// document lies in `b`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Command<'a> {
    /// First key of the document (the command name).
    pub name: &'a [u8],
    /// `$db` string element, if the document is complete in `b` and has one.
    pub db: Option<&'a str>,
}

/// Reads the command document starting at `b` (document length at offset 0, capped by
/// `limit`): the first key always, `$db` through [`RawDocument`] when the whole document is in
/// `b`. `None` when the document is malformed or its first key is cut off.
pub fn command(b: &[u8], limit: usize) -> Option<Command<'_>> {
    let Parse::Ok((_, name), _) = first_key(b, limit) else { return None };
    let len = usize::try_from(le32(b, 0)?).ok()?;
    let db = b
        .get(..len)
        .and_then(|d| RawDocument::from_bytes(d).ok())
        .and_then(|d| d.get_str("$db").ok());
    Some(Command { name, db })
}

/// Offset of the command document in a message body (`b` starts after the header) for OP_MSG
/// (the kind-0 section: the first one, or after kind-1 sections) and OP_QUERY (the query; its
/// database is the part of fullCollectionName before the first `.`, returned as the second
/// value). `None` for other opcodes or when cut short.
pub fn command_offset(op: i32, b: &[u8]) -> Option<(usize, Option<&[u8]>)> {
    match op {
        OP_MSG => {
            let mut off = 4;
            for _ in 0..8 {
                match *b.get(off)? {
                    0 => return Some((off + 1, None)),
                    1 => {
                        let size = usize::try_from(le32(b, off + 1)?).ok()?;
                        off = off.checked_add(1 + size.max(4))?;
                    }
                    _ => return None,
                }
            }
            None
        }
        OP_QUERY => {
            let Parse::Ok(coll, n) = cstring(b, 4, 512) else { return None };
            let db = coll.split(|&c| c == b'.').next();
            Some((n + 8, db))
        }
        _ => None,
    }
}
