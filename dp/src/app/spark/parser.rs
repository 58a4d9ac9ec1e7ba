//! Pure parsing functions of Spark's Netty transport (no state, no allocation).
//!
//! Framing (`network-common`: `MessageEncoder`, `TransportFrameDecoder`, `Message.Type`): every
//! frame is an 8-byte big-endian frame length that counts itself, the 1-byte message type, the
//! type's header and, for types whose body travels in the frame, the body. The decoder refuses
//! frames whose length minus 8 is not in `1..i32::MAX`, so a frame is at most [`MAX_FRAME`]
//! bytes. `StreamResponse` and `UploadStream` carry their data after the frame, outside the
//! frame length (their header says how many bytes follow).
//!
//! Headers after the type byte (`Encoders.Strings` is an i32 byte length and UTF-8 bytes; a
//! `StreamChunkId` is an i64 stream id and an i32 chunk index):
//!
//! | type | name | header |
//! |---|---|---|
//! | 0 | ChunkFetchRequest | StreamChunkId |
//! | 1 | ChunkFetchSuccess | StreamChunkId, then the chunk (in frame) |
//! | 2 | ChunkFetchFailure | StreamChunkId, error string |
//! | 3 | RpcRequest | i64 request id, i32 body size, then the body (in frame) |
//! | 4 | RpcResponse | i64 request id, i32 body size, then the body (in frame) |
//! | 5 | RpcFailure | i64 request id, error string |
//! | 6 | StreamRequest | stream id string |
//! | 7 | StreamResponse | stream id string, i64 byte count (data follows the frame) |
//! | 8 | StreamFailure | stream id string, error string |
//! | 9 | OneWayMessage | i32 body size, then the body (in frame) |
//! | 10 | UploadStream | i64 request id, i32 meta size, meta, i64 byte count (data follows) |
//! | 11 | MergedBlockMetaRequest | i64 request id, app id string, i32 shuffle id, merge id, reduce id |
//! | 12 | MergedBlockMetaSuccess | i64 request id, i32 chunk count, then bitmaps (in frame) |
//!
//! Bodies of `RpcRequest` and `OneWayMessage` are, for Spark's RPC (`NettyRpcEnv`
//! `RequestMessage.serialize`): the sender's `RpcAddress` and the receiver's (each a boolean
//! "present", then a `DataOutput.writeUTF` host (u16 length, modified UTF-8) and an i32 port),
//! the receiver endpoint's name (`writeUTF`), then the Java-serialised content (stream magic
//! `AC ED 00 05`). The block transfer service (`network-shuffle` `BlockTransferMessage`) sends a
//! type byte (0..=19) and the message instead; authentication bootstraps send a tag byte
//! ([`TAG_SASL`], [`TAG_AUTH_CHALLENGE`], [`TAG_AUTH_MESSAGE`]) and an app id string.

pub use crate::app::Parse;

/// Bytes of the frame length and the type byte.
pub const PREFIX: usize = 9;
/// Largest frame length `TransportFrameDecoder` accepts (length minus 8 below `i32::MAX`).
pub const MAX_FRAME: u64 = i32::MAX as u64 + 7;

/// `ChunkFetchRequest`.
pub const CHUNK_FETCH_REQUEST: u8 = 0;
/// `ChunkFetchSuccess`.
pub const CHUNK_FETCH_SUCCESS: u8 = 1;
/// `ChunkFetchFailure`.
pub const CHUNK_FETCH_FAILURE: u8 = 2;
/// `RpcRequest`.
pub const RPC_REQUEST: u8 = 3;
/// `RpcResponse`.
pub const RPC_RESPONSE: u8 = 4;
/// `RpcFailure`.
pub const RPC_FAILURE: u8 = 5;
/// `StreamRequest`.
pub const STREAM_REQUEST: u8 = 6;
/// `StreamResponse`.
pub const STREAM_RESPONSE: u8 = 7;
/// `StreamFailure`.
pub const STREAM_FAILURE: u8 = 8;
/// `OneWayMessage`.
pub const ONE_WAY: u8 = 9;
/// `UploadStream`.
pub const UPLOAD_STREAM: u8 = 10;
/// `MergedBlockMetaRequest`.
pub const MERGED_META_REQUEST: u8 = 11;
/// `MergedBlockMetaSuccess`.
pub const MERGED_META_SUCCESS: u8 = 12;
/// Number of message types (`0..TYPES`).
pub const TYPES: usize = 13;

/// `SaslMessage` tag (SASL bootstrap, `spark.authenticate` without AES encryption).
pub const TAG_SASL: u8 = 0xEA;
/// `ClientChallenge` tag (AES-based auth engine of Spark 2.2 to 3.x).
pub const TAG_AUTH_CHALLENGE: u8 = 0xFA;
/// `AuthMessage` tag (auth engine of Spark 3.4+; also the older `ServerResponse`).
pub const TAG_AUTH_MESSAGE: u8 = 0xFB;
/// Java object serialisation stream magic and version (`ObjectStreamConstants`).
pub const JAVA_STREAM: [u8; 4] = [0xAC, 0xED, 0x00, 0x05];

const NAMES: [&str; TYPES] = [
    "ChunkFetchRequest",
    "ChunkFetchSuccess",
    "ChunkFetchFailure",
    "RpcRequest",
    "RpcResponse",
    "RpcFailure",
    "StreamRequest",
    "StreamResponse",
    "StreamFailure",
    "OneWayMessage",
    "UploadStream",
    "MergedBlockMetaRequest",
    "MergedBlockMetaSuccess",
];

/// Fixed header bytes after the type byte (strings counted by their length field only).
const FIXED: [usize; TYPES] = [12, 12, 16, 12, 12, 12, 4, 12, 8, 4, 20, 24, 12];

const BLOCK_NAMES: [&str; 20] = [
    "OpenBlocks",
    "UploadBlock",
    "RegisterExecutor",
    "StreamHandle",
    "RegisterDriver",
    "ShuffleServiceHeartbeat",
    "UploadBlockStream",
    "RemoveBlocks",
    "BlocksRemoved",
    "FetchShuffleBlocks",
    "GetLocalDirsForExecutors",
    "LocalDirsForExecutors",
    "PushBlockStream",
    "FinalizeShuffleMerge",
    "MergeStatuses",
    "FetchShuffleBlockChunks",
    "DiagnoseCorruption",
    "CorruptionCause",
    "BlockPushReturnCode",
    "RemoveShuffleMerge",
];

/// Name of a message type (`Message.Type`); `None` for unknown types.
pub fn type_name(t: u8) -> Option<&'static str> {
    NAMES.get(usize::from(t)).copied()
}

/// Fixed header bytes after the type byte of type `t`; `None` for unknown types.
pub fn fixed_header(t: u8) -> Option<usize> {
    FIXED.get(usize::from(t)).copied()
}

/// Name of a block transfer message type (`BlockTransferMessage.Type`, the class it decodes to).
pub fn block_name(t: u8) -> Option<&'static str> {
    BLOCK_NAMES.get(usize::from(t)).copied()
}

/// Big-endian i16 as u16 at `off`.
pub fn be16(b: &[u8], off: usize) -> Option<u16> {
    b.get(off..off.checked_add(2)?).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

/// Big-endian i32 at `off`.
pub fn be32(b: &[u8], off: usize) -> Option<i32> {
    b.get(off..off.checked_add(4)?).map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Big-endian i64 at `off`.
pub fn be64(b: &[u8], off: usize) -> Option<i64> {
    let s = b.get(off..off.checked_add(8)?)?;
    Some(i64::from_be_bytes([s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]]))
}

/// Frame length and type of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    /// Frame length in bytes, the 8 length bytes included (`PREFIX + fixed header ..= MAX_FRAME`).
    pub len: u64,
    /// Message type (`0..TYPES`).
    pub ty: u8,
}

/// Parses the 9-byte prefix (frame length and type). Invalid when the length is above
/// [`MAX_FRAME`] or too short for the type's fixed header, or the type is unknown.
pub fn prefix(b: &[u8]) -> Parse<Frame> {
    let (Some(len), Some(&ty)) = (be64(b, 0), b.get(8)) else { return Parse::Incomplete(PREFIX) };
    let Some(fixed) = fixed_header(ty) else { return Parse::Invalid };
    match u64::try_from(len) {
        Ok(len) if len <= MAX_FRAME && len >= (PREFIX + fixed) as u64 => Parse::Ok(Frame { len, ty }, PREFIX),
        _ => Parse::Invalid,
    }
}

/// What a frame's header says, read from the start of the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header<'a> {
    /// Offset of the body from the frame start (after the fixed header; meaningful for the types
    /// whose body is in the frame).
    pub body_off: usize,
    /// Bytes that follow the frame outside its length (`StreamResponse`, `UploadStream`).
    pub after: u64,
    /// Error text of a failure message (cut to what the window holds).
    pub error: Option<&'a [u8]>,
}

/// An `Encoders.Strings` field at `off`: its declared length (non-negative) and the part of its
/// bytes that `b` holds.
fn string_at(b: &[u8], off: usize) -> Option<(usize, &[u8])> {
    let n = usize::try_from(be32(b, off)?).ok()?;
    let start = off + 4;
    let end = start.saturating_add(n).min(b.len());
    Some((n, b.get(start..end).unwrap_or(&[])))
}

/// Validates the header of frame `f` against its length and reads it. `w` is the start of the
/// frame (at least [`PREFIX`] plus the fixed header; `StreamResponse` and `UploadStream` need
/// the whole frame, as their byte count is its last 8 bytes). `None` when a size field
/// disagrees with the frame length or a count is negative; fields beyond `w` are not checked.
pub fn header<'a>(w: &'a [u8], f: &Frame) -> Option<Header<'a>> {
    let len = f.len;
    let rest = |fixed: usize| len - (PREFIX + fixed) as u64;
    let size_is = |off: usize, want: u64| be32(w, off).is_some_and(|s| u64::try_from(s) == Ok(want));
    let p = PREFIX;
    let mut h = Header { body_off: p + fixed_header(f.ty)?, ..Header::default() };
    match f.ty {
        CHUNK_FETCH_REQUEST => (len == 21).then_some(())?,
        CHUNK_FETCH_SUCCESS => (be32(w, p + 8)? >= 0).then_some(())?,
        CHUNK_FETCH_FAILURE => {
            (size_is(p + 12, rest(16)) && be32(w, p + 8)? >= 0).then_some(())?;
            h.error = Some(string_at(w, p + 12)?.1);
        }
        RPC_REQUEST | RPC_RESPONSE => (be64(w, p)? >= 0 && size_is(p + 8, rest(12))).then_some(())?,
        RPC_FAILURE => {
            let id = be64(w, p)?;
            ((id >= 0 || id == i64::MIN) && size_is(p + 8, rest(12))).then_some(())?;
            h.error = Some(string_at(w, p + 8)?.1);
        }
        STREAM_REQUEST => size_is(p, rest(4)).then_some(())?,
        STREAM_RESPONSE => {
            size_is(p, rest(12)).then_some(())?;
            let end = usize::try_from(len).ok()?;
            h.after = u64::try_from(be64(w, end - 8)?).ok()?;
        }
        STREAM_FAILURE => {
            let (n, _) = string_at(w, p)?;
            let second = p + 4 + n;
            if (second + 4) as u64 > len {
                return None;
            }
            if let Some(m) = be32(w, second) {
                (u64::try_from(m) == Ok(len - (second + 4) as u64)).then_some(())?;
                h.error = Some(string_at(w, second)?.1);
            }
        }
        ONE_WAY => size_is(p, rest(4)).then_some(())?,
        UPLOAD_STREAM => {
            (be64(w, p)? >= 0 && size_is(p + 8, rest(20))).then_some(())?;
            let end = usize::try_from(len).ok()?;
            h.after = u64::try_from(be64(w, end - 8)?).ok()?;
        }
        MERGED_META_REQUEST => (be64(w, p)? >= 0 && size_is(p + 8, rest(24))).then_some(())?,
        MERGED_META_SUCCESS => (be64(w, p)? >= 0 && be32(w, p + 8)? >= 0).then_some(())?,
        _ => return None,
    }
    Some(h)
}

/// A Spark `RpcAddress` as written by `RequestMessage.writeRpcAddress`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcAddress<'a> {
    /// Host (modified UTF-8 bytes).
    pub host: &'a [u8],
    /// Port.
    pub port: i32,
}

/// The start of a serialised `RequestMessage`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestMessage<'a> {
    /// Sender's RPC address (`None` from a client-mode `RpcEnv`, e.g. an executor).
    pub sender: Option<RpcAddress<'a>>,
    /// Receiver's RPC address.
    pub receiver: Option<RpcAddress<'a>>,
    /// Receiver endpoint name.
    pub name: &'a [u8],
    /// The Java-serialised content (starts with [`JAVA_STREAM`]; cut to what `b` holds).
    pub content: &'a [u8],
}

/// A `DataOutput.writeUTF` string at `off` (u16 length, bytes); returns it and the offset after.
pub fn utf(b: &[u8], off: usize) -> Option<(&[u8], usize)> {
    let n = usize::from(be16(b, off)?);
    let end = off + 2 + n;
    Some((b.get(off + 2..end)?, end))
}

fn rpc_address(b: &[u8], off: usize) -> Option<(Option<RpcAddress<'_>>, usize)> {
    match *b.get(off)? {
        0 => Some((None, off + 1)),
        1 => {
            let (host, o) = utf(b, off + 1)?;
            Some((Some(RpcAddress { host, port: be32(b, o)? }), o + 4))
        }
        _ => None,
    }
}

/// Parses the start of an RPC body as a `RequestMessage`; `None` when it is not one (or is cut
/// before the content's stream magic).
pub fn request_message(b: &[u8]) -> Option<RequestMessage<'_>> {
    let (sender, o) = rpc_address(b, 0)?;
    let (receiver, o) = rpc_address(b, o)?;
    let (name, o) = utf(b, o)?;
    let content = b.get(o..)?;
    content.starts_with(&JAVA_STREAM).then_some(RequestMessage { sender, receiver, name, content })
}

/// Class name of the first object of a Java serialisation stream (`TC_OBJECT`, `TC_CLASSDESC`,
/// UTF name) and the offset after the name; `None` for other stream starts.
pub fn java_class(content: &[u8]) -> Option<(&[u8], usize)> {
    if !content.starts_with(&JAVA_STREAM) || content.get(4..6) != Some(&[0x73, 0x72]) {
        return None;
    }
    utf(content, 6)
}

/// The simple name of a JVM class name: after the last `.` and the last `$` (a trailing `$`,
/// Scala's object marker, dropped). `org.apache.spark.deploy.DeployMessages$RegisterApplication`
/// is `RegisterApplication`.
pub fn simple_name(class: &[u8]) -> &[u8] {
    let c = class.strip_suffix(b"$").unwrap_or(class);
    let start = c.iter().rposition(|&x| x == b'.' || x == b'$').map_or(0, |i| i + 1);
    &c[start..]
}

/// Skips a class descriptor body with exactly one object field named `field` (after the class
/// name: serialVersionUID, flags, field count 1, `L`, the field name, its type as a `TC_STRING`,
/// `TC_ENDBLOCKDATA`, `TC_NULL` superclass); returns the offset of the field's value.
fn one_field(content: &[u8], o: usize, field: &[u8]) -> Option<usize> {
    let o = o + 8 + 1; // serialVersionUID, flags
    if be16(content, o)? != 1 || *content.get(o + 2)? != b'L' {
        return None;
    }
    let (name, o) = utf(content, o + 3)?;
    if name != field || *content.get(o)? != 0x74 {
        return None;
    }
    let (_ty, o) = utf(content, o + 1)?;
    (content.get(o..o + 2)? == [0x78, 0x70]).then_some(o + 2)
}

/// Class name of an RPC message content: the first object's class, or for a Scala `object`
/// (serialised as `scala.runtime.ModuleSerializationProxy` with a `moduleClass` field holding a
/// `TC_CLASS`) the object's class.
pub fn message_class(content: &[u8]) -> Option<&[u8]> {
    let (class, o) = java_class(content)?;
    if class != b"scala.runtime.ModuleSerializationProxy" {
        return Some(class);
    }
    let module = one_field(content, o, b"moduleClass").and_then(|v| match content.get(v..v + 2) {
        Some([0x76, 0x72]) => utf(content, v + 2).map(|(c, _)| c),
        _ => None,
    });
    Some(module.unwrap_or(class))
}

/// The endpoint name asked about by an `RpcEndpointVerifier$CheckExistence(name)` content: the
/// class descriptor with its one `String` field `name`, then the value as a `TC_STRING`.
pub fn check_existence_name(content: &[u8]) -> Option<&[u8]> {
    let (class, o) = java_class(content)?;
    if !class.ends_with(b"RpcEndpointVerifier$CheckExistence") {
        return None;
    }
    let v = one_field(content, o, b"name")?;
    if *content.get(v)? != 0x74 {
        return None;
    }
    Some(utf(content, v + 1)?.0)
}

/// App id of a block transfer message whose first field is the app id (`OpenBlocks`,
/// `FetchShuffleBlocks`, `FetchShuffleBlockChunks`): a printable string of 1 to 255 bytes.
pub fn block_app_id(body: &[u8]) -> Option<&[u8]> {
    if !matches!(body.first(), Some(0 | 9 | 15)) {
        return None;
    }
    let (n, s) = string_at(body, 1)?;
    ((1..=255).contains(&n) && s.len() == n && s.iter().all(|c| c.is_ascii_graphic())).then_some(s)
}

/// App id after an authentication tag (`SaslMessage`, `ClientChallenge`, `AuthMessage` all start
/// with it): a string of at most 255 bytes, cut to what `body` holds.
pub fn auth_app_id(body: &[u8]) -> Option<&[u8]> {
    let (n, s) = string_at(body, 1)?;
    (n <= 255).then_some(s)
}
