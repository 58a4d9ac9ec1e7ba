//! Pure parsing functions for the ZooKeeper client protocol (no state, no allocation).
//!
//! Follows the jute record definitions of `zookeeper-jute/src/main/resources/zookeeper.jute`
//! (`ConnectRequest`, `ConnectResponse`, `RequestHeader`, `ReplyHeader`, `MultiHeader`,
//! `AuthPacket`, `WatcherEvent` and the per-operation request records) and the framing of the
//! client connection (`ClientCnxnSocket`: every packet is a 4-byte big-endian length followed by
//! that many bytes; the client appends a `readOnly` boolean byte after the `ConnectRequest`
//! record and the server one after the `ConnectResponse` record, both optional for old peers).
//! Jute primitives: `int` is a big-endian i32, `long` a big-endian i64, `boolean` one byte,
//! `ustring` and `buffer` an i32 length (`-1` for null) followed by that many bytes.
//! Operation codes are those of `ZooDefs.OpCode`, error codes those of `KeeperException.Code`.

pub use crate::app::Parse;

/// Largest frame accepted (bytes after the 4-byte length): 64 MiB. Servers reject packets above
/// `jute.maxbuffer` (1 MiB by default); deployments raise it, rarely this far.
pub const MAX_FRAME: usize = 64 * 1024 * 1024;
/// Smallest request after the connect frame (`RequestHeader`: xid, type).
pub const MIN_REQUEST: usize = 8;
/// Smallest reply after the connect frame (`ReplyHeader`: xid, zxid, err).
pub const MIN_REPLY: usize = 16;
/// Largest session timeout (ms) believed in a connect frame: 24 hours.
pub const MAX_TIMEOUT_MS: i32 = 86_400_000;
/// Password lengths believed in a connect frame: none, or the 16 bytes servers issue.
pub const PASSWD_LENS: [usize; 2] = [0, 16];

/// Reply `xid` of watch events (`ClientCnxn.NOTIFICATION_XID`).
pub const XID_WATCH_EVENT: i32 = -1;
/// `xid` of pings and their replies.
pub const XID_PING: i32 = -2;
/// `xid` of `auth` packets and their replies.
pub const XID_AUTH: i32 = -4;
/// `xid` of `setWatches` packets and their replies.
pub const XID_SET_WATCHES: i32 = -8;

/// Op code of `ping`.
pub const OP_PING: i32 = 11;
/// Op code of `multi`.
pub const OP_MULTI: i32 = 14;
/// Op code of `multiRead`.
pub const OP_MULTI_READ: i32 = 22;
/// Op code of `auth`.
pub const OP_AUTH: i32 = 100;
/// Op code of `setWatches`.
pub const OP_SET_WATCHES: i32 = 101;

/// Big-endian i32 at `off`.
pub fn be32(b: &[u8], off: usize) -> Option<i32> {
    b.get(off..off.checked_add(4)?).map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Big-endian i64 at `off`.
pub fn be64(b: &[u8], off: usize) -> Option<i64> {
    let s = b.get(off..off.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(s);
    Some(i64::from_be_bytes(a))
}

/// The 4-byte length prefix: the frame length after it, if within `min..=MAX_FRAME`.
pub fn frame_len(b: &[u8], min: usize) -> Parse<usize> {
    match be32(b, 0) {
        None => Parse::Incomplete(4),
        Some(n) => match usize::try_from(n) {
            Ok(n) if (min..=MAX_FRAME).contains(&n) => Parse::Ok(n, 4),
            _ => Parse::Invalid,
        },
    }
}

/// Which connect frame: the client's `ConnectRequest` or the server's `ConnectResponse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `ConnectRequest {int protocolVersion; long lastZxidSeen; int timeOut; long sessionId;
    /// buffer passwd}` + optional `readOnly` byte.
    Request,
    /// `ConnectResponse {int protocolVersion; int timeOut; long sessionId; buffer passwd}` +
    /// optional `readOnly` byte.
    Response,
}

impl Side {
    /// Offset (from the start of the frame, length prefix included) of the timeout field.
    fn timeout_at(self) -> usize {
        match self {
            Side::Request => 16,
            Side::Response => 8,
        }
    }

    /// Offset of the session id.
    fn session_at(self) -> usize {
        self.timeout_at() + 4
    }

    /// Offset of the password length; also the frame length (after the prefix) without the
    /// password and the `readOnly` byte.
    fn passwd_len_at(self) -> usize {
        self.session_at() + 8
    }
}

/// A connect frame's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Connect {
    /// `protocolVersion` (always 0 when accepted).
    pub protocol_version: i32,
    /// `lastZxidSeen` (requests only; 0 in responses).
    pub last_zxid_seen: i64,
    /// `timeOut`: requested (request) or negotiated (response) session timeout in ms; a
    /// response with 0 tells the client its session expired.
    pub timeout_ms: i32,
    /// `sessionId`: 0 for a new session in a request, the assigned id in a response.
    pub session_id: i64,
    /// Length of `passwd` (0 or 16).
    pub passwd_len: usize,
    /// The trailing `readOnly` byte, when the peer sent one.
    pub read_only: Option<bool>,
}

/// Parses and validates a connect frame from the start of `b` (length prefix included), checking
/// every field as soon as its bytes are present so that a prefix of a valid frame is never
/// `Invalid`: the frame length must be `P + passwd + {0, 1}` (P = 28 for a request, 20 for a
/// response) with a password of 0 or 16 bytes, `protocolVersion` 0, `lastZxidSeen` not negative,
/// the timeout in `0..=MAX_TIMEOUT_MS`, the password length field consistent with the frame
/// length and the `readOnly` byte, when present, 0 or 1. `Ok` gives the fields and the frame's
/// total size (prefix included); `Incomplete` the bytes needed.
pub fn connect(side: Side, b: &[u8]) -> Parse<Connect> {
    let p = side.passwd_len_at();
    let allowed = |n: usize| PASSWD_LENS.iter().any(|&pw| n == p + pw || n == p + pw + 1);
    // Length prefix: every allowed length is below 256.
    if b.iter().take(3).any(|&c| c != 0) {
        return Parse::Invalid;
    }
    let Some(&lo) = b.get(3) else { return Parse::Incomplete(4) };
    let len = usize::from(lo);
    if !allowed(len) {
        return Parse::Invalid;
    }
    // protocolVersion 0.
    if b.iter().skip(4).take(4).any(|&c| c != 0) {
        return Parse::Invalid;
    }
    if side == Side::Request && b.get(8).is_some_and(|&c| c >= 0x80) {
        return Parse::Invalid; // lastZxidSeen < 0
    }
    let t = side.timeout_at();
    if b.get(t).is_some_and(|&c| i32::from(c) > MAX_TIMEOUT_MS >> 24) {
        return Parse::Invalid;
    }
    if let Some(ms) = be32(b, t) {
        if !(0..=MAX_TIMEOUT_MS).contains(&ms) {
            return Parse::Invalid;
        }
    }
    // Password length: 0 or 16 (high bytes zero), consistent with the frame length.
    if b.iter().skip(p).take(3).any(|&c| c != 0) {
        return Parse::Invalid;
    }
    let Some(&pw) = b.get(p + 3) else { return Parse::Incomplete(4 + len) };
    let pw = usize::from(pw);
    if !PASSWD_LENS.contains(&pw) || !(len == p + pw || len == p + pw + 1) {
        return Parse::Invalid;
    }
    let read_only = if len == p + pw + 1 {
        match b.get(4 + len - 1) {
            None => return Parse::Incomplete(4 + len),
            Some(0) => Some(false),
            Some(1) => Some(true),
            Some(_) => return Parse::Invalid,
        }
    } else {
        None
    };
    if b.len() < 4 + len {
        return Parse::Incomplete(4 + len);
    }
    let (Some(timeout_ms), Some(session_id)) = (be32(b, t), be64(b, side.session_at())) else {
        return Parse::Incomplete(4 + len);
    };
    let last_zxid_seen = if side == Side::Request { be64(b, 8).unwrap_or(0) } else { 0 };
    Parse::Ok(
        Connect { protocol_version: 0, last_zxid_seen, timeout_ms, session_id, passwd_len: pw, read_only },
        4 + len,
    )
}

/// The four-letter-word admin commands ZooKeeper 3.4-3.9 reads on its client port
/// (`FourLetterCommands`; 3.5.3+ runs only those in `4lw.commands.whitelist`, `srvr` by
/// default, and answers the others with "... is not executed because it is not in the
/// whitelist."): `ruok stat srvr conf cons crst dump envi gtmk stmk isro mntr reqs srst wchc
/// wchp wchs dirs hash`, and `kill` of 3.4 and older.
pub const FOUR_LETTER_WORDS: [&[u8; 4]; 20] = [
    b"ruok", b"stat", b"srvr", b"conf", b"cons", b"crst", b"dump", b"envi", b"gtmk", b"stmk", b"isro", b"mntr",
    b"reqs", b"srst", b"wchc", b"wchp", b"wchs", b"dirs", b"hash", b"kill",
];

/// A four-letter-word command as a client's whole first message (`printf ruok | nc`,
/// `echo mntr | nc`: the word alone, or with LF or CRLF); `Incomplete` for a prefix of one.
/// ZooKeeper reads the first 4 bytes of a connection as a 32-bit frame length and takes a
/// value that spells one of the words as that command.
pub fn four_letter_word(b: &[u8]) -> Parse<[u8; 4]> {
    let word = &b[..b.len().min(4)];
    let Some(w) = FOUR_LETTER_WORDS.iter().find(|w| w.starts_with(word)) else { return Parse::Invalid };
    if b.len() < 4 {
        return Parse::Incomplete(4);
    }
    match &b[4..] {
        [] | b"\n" | b"\r\n" => Parse::Ok(**w, b.len()),
        b"\r" => Parse::Incomplete(6),
        _ => Parse::Invalid,
    }
}

/// `RequestHeader {int xid; int type}` at the start of `body` (the frame after its length).
pub fn request_header(body: &[u8]) -> Option<(i32, i32)> {
    Some((be32(body, 0)?, be32(body, 4)?))
}

/// `ReplyHeader {int xid; long zxid; int err}` at the start of `body`.
pub fn reply_header(body: &[u8]) -> Option<(i32, i64, i32)> {
    Some((be32(body, 0)?, be64(body, 4)?, be32(body, 12)?))
}

/// A `ustring` at `off`: `Some(None)` when null (length -1), else its bytes, cut to what `b`
/// holds (a long path in a message whose tail was not looked at). `None` when the length field
/// is missing or negative other than -1.
pub fn ustring(b: &[u8], off: usize) -> Option<Option<&[u8]>> {
    let n = be32(b, off)?;
    if n == -1 {
        return Some(None);
    }
    let n = usize::try_from(n).ok()?;
    let start = off + 4;
    let end = start.saturating_add(n).min(b.len());
    Some(Some(b.get(start..end).unwrap_or(&[])))
}

/// Whether the request record of `op` starts with a `ustring` path (`CreateRequest`,
/// `DeleteRequest`, `ExistsRequest`, `GetDataRequest`, `SetDataRequest`, `GetACLRequest`,
/// `SetACLRequest`, `GetChildrenRequest`, `SyncRequest`, `GetChildren2Request`,
/// `CheckVersionRequest`, create2/createContainer (`CreateRequest`), `CheckWatchesRequest`,
/// `RemoveWatchesRequest`, deleteContainer (the path as a `ustring`), `CreateTTLRequest`,
/// `GetEphemeralsRequest`, `GetAllChildrenNumberRequest`, `AddWatchRequest`).
pub fn has_path(op: i32) -> bool {
    matches!(op, 1..=9 | 12 | 13 | 15 | 17..=21 | 103 | 104 | 106)
}

/// The path a request carries, if any: the first field of path-carrying records, or for
/// `multi`/`multiRead` the path of the first sub-operation (after its `MultiHeader {int type;
/// boolean done; int err}`). `body` is the frame after its length (request header included).
pub fn request_path(body: &[u8], op: i32) -> Option<&[u8]> {
    if has_path(op) {
        return ustring(body, 8)?;
    }
    if op == OP_MULTI || op == OP_MULTI_READ {
        let sub = be32(body, 8)?;
        let done = *body.get(12)?;
        if done == 0 && has_path(sub) {
            return ustring(body, 17)?;
        }
    }
    None
}

/// The first sub-operation code of a `multi`/`multiRead` request (`None` when the first header
/// says done or is cut off).
pub fn multi_first_op(body: &[u8]) -> Option<i32> {
    let sub = be32(body, 8)?;
    (*body.get(12)? == 0).then_some(sub)
}

/// The scheme of an `AuthPacket {int type; ustring scheme; buffer auth}` request (the
/// credentials are not read).
pub fn auth_scheme(body: &[u8]) -> Option<&[u8]> {
    ustring(body, 12)?
}

/// `WatcherEvent {int type; int state; ustring path}` after the reply header of a watch event:
/// `(type, state, path)`.
pub fn watcher_event(body: &[u8]) -> Option<(i32, i32, Option<&[u8]>)> {
    Some((be32(body, 16)?, be32(body, 20)?, ustring(body, 24)?))
}

/// Name of an operation code (`ZooDefs.OpCode`; 107 is `whoAmI` as released in 3.9). `None` for
/// unknown codes (still values, not errors).
pub fn op_name(op: i32) -> Option<&'static str> {
    Some(match op {
        0 => "notification",
        1 => "create",
        2 => "delete",
        3 => "exists",
        4 => "getData",
        5 => "setData",
        6 => "getACL",
        7 => "setACL",
        8 => "getChildren",
        9 => "sync",
        11 => "ping",
        12 => "getChildren2",
        13 => "check",
        14 => "multi",
        15 => "create2",
        16 => "reconfig",
        17 => "checkWatches",
        18 => "removeWatches",
        19 => "createContainer",
        20 => "deleteContainer",
        21 => "createTTL",
        22 => "multiRead",
        100 => "auth",
        101 => "setWatches",
        102 => "sasl",
        103 => "getEphemerals",
        104 => "getAllChildrenNumber",
        105 => "setWatches2",
        106 => "addWatch",
        107 => "whoAmI",
        -10 => "createSession",
        -11 => "closeSession",
        -1 => "error",
        _ => return None,
    })
}

/// Name of a reply error code (`KeeperException.Code`). `None` for unknown codes.
pub fn err_name(err: i32) -> Option<&'static str> {
    Some(match err {
        0 => "OK",
        -1 => "SYSTEMERROR",
        -2 => "RUNTIMEINCONSISTENCY",
        -3 => "DATAINCONSISTENCY",
        -4 => "CONNECTIONLOSS",
        -5 => "MARSHALLINGERROR",
        -6 => "UNIMPLEMENTED",
        -7 => "OPERATIONTIMEOUT",
        -8 => "BADARGUMENTS",
        -12 => "UNKNOWNSESSION",
        -13 => "NEWCONFIGNOQUORUM",
        -14 => "RECONFIGINPROGRESS",
        -100 => "APIERROR",
        -101 => "NONODE",
        -102 => "NOAUTH",
        -103 => "BADVERSION",
        -108 => "NOCHILDRENFOREPHEMERALS",
        -110 => "NODEEXISTS",
        -111 => "NOTEMPTY",
        -112 => "SESSIONEXPIRED",
        -113 => "INVALIDCALLBACK",
        -114 => "INVALIDACL",
        -115 => "AUTHFAILED",
        -118 => "SESSIONMOVED",
        -119 => "NOTREADONLY",
        -120 => "EPHEMERALONLOCALSESSION",
        -121 => "NOWATCHER",
        -122 => "REQUESTTIMEOUT",
        -123 => "RECONFIGDISABLED",
        -124 => "SESSIONCLOSEDREQUIRESASLAUTH",
        -125 => "QUOTAEXCEEDED",
        -127 => "THROTTLEDOP",
        _ => return None,
    })
}
