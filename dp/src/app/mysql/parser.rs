//! Pure MySQL / MariaDB client-server protocol functions (no state, no allocation), after the
//! MySQL internals manual "Client/Server Protocol": "MySQL Packets" (3-byte little-endian payload
//! length + sequence id; a payload of `0xFFFFFF` bytes continues in the next packet), "Initial
//! Handshake" (`Protocol::HandshakeV10`, `HandshakeV9`), `Protocol::HandshakeResponse41`,
//! `Protocol::SSLRequest`, "Capabilities Flags", `ERR_Packet`, "Text Protocol" / "Prepared
//! Statements" command bytes (`COM_*`), and MariaDB's extended capabilities (the last 4 filler
//! bytes of the handshake response when `CLIENT_MYSQL` is not set).
//!
//! Every function takes a payload that may be cut short (the session only looks at the first
//! [`WINDOW`] bytes of a packet): fields beyond the cut read as absent, never as errors.

/// Packet header size (bytes).
pub const HEADER: usize = 4;
/// Largest payload of one packet; a payload of exactly this size continues in the next packet.
pub const MAX_PAYLOAD: usize = 0xFF_FFFF;
/// Bytes of a payload the session looks at; the rest of a longer packet is skipped unread.
pub const WINDOW: usize = 2048;

/// `CLIENT_MYSQL` / `CLIENT_LONG_PASSWORD` (MariaDB: unset means extended caps in the filler).
pub const CLIENT_LONG_PASSWORD: u32 = 0x1;
/// `CLIENT_CONNECT_WITH_DB`: the handshake response carries a database name.
pub const CLIENT_CONNECT_WITH_DB: u32 = 0x8;
/// `CLIENT_COMPRESS`: packets are compressed after authentication.
pub const CLIENT_COMPRESS: u32 = 0x20;
/// `CLIENT_PROTOCOL_41`.
pub const CLIENT_PROTOCOL_41: u32 = 0x200;
/// `CLIENT_SSL`: with a 32-byte response this is an SSLRequest; TLS follows.
pub const CLIENT_SSL: u32 = 0x800;
/// `CLIENT_SECURE_CONNECTION`: auth response has a 1-byte length.
pub const CLIENT_SECURE_CONNECTION: u32 = 0x8000;
/// `CLIENT_PLUGIN_AUTH`: the response names the auth plugin.
pub const CLIENT_PLUGIN_AUTH: u32 = 0x8_0000;
/// `CLIENT_CONNECT_ATTRS`: the response carries key/value connection attributes.
pub const CLIENT_CONNECT_ATTRS: u32 = 0x10_0000;
/// `CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA`: auth response has a length-encoded length.
pub const CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA: u32 = 0x20_0000;

/// `COM_INIT_DB`.
pub const COM_INIT_DB: u8 = 0x02;
/// `COM_QUERY`.
pub const COM_QUERY: u8 = 0x03;
/// `COM_CHANGE_USER`.
pub const COM_CHANGE_USER: u8 = 0x11;
/// `COM_STMT_PREPARE`.
pub const COM_STMT_PREPARE: u8 = 0x16;

/// A packet header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length (bytes), at most [`MAX_PAYLOAD`].
    pub len: usize,
    /// Sequence id.
    pub seq: u8,
}

/// Reads a packet header; `None` with fewer than 4 bytes.
pub fn header(b: &[u8]) -> Option<Header> {
    let h = b.get(..HEADER)?;
    Some(Header { len: usize::from(h[0]) | usize::from(h[1]) << 8 | usize::from(h[2]) << 16, seq: h[3] })
}

/// A bounds-checked reader over a payload.
#[derive(Debug, Clone, Copy)]
pub struct Cursor<'a> {
    b: &'a [u8],
}

impl<'a> Cursor<'a> {
    /// Reader at the start of `b`.
    pub fn new(b: &'a [u8]) -> Self {
        Cursor { b }
    }
    /// Bytes not read yet.
    pub fn rest(&self) -> &'a [u8] {
        self.b
    }
    /// Next `n` bytes.
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (h, t) = (self.b.get(..n)?, self.b.get(n..)?);
        self.b = t;
        Some(h)
    }
    /// One byte.
    pub fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    /// Little-endian u16.
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    /// Little-endian u32.
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    /// NUL-terminated string (without the NUL); `None` if no NUL.
    pub fn cstr(&mut self) -> Option<&'a [u8]> {
        let i = self.b.iter().position(|&c| c == 0)?;
        let s = self.take(i)?;
        self.take(1)?;
        Some(s)
    }
    /// Length-encoded integer (`int<lenenc>`); `None` for the NULL / ERR markers or short input.
    pub fn lenenc(&mut self) -> Option<u64> {
        match self.u8()? {
            n @ 0..=0xfa => Some(u64::from(n)),
            0xfc => self.u16().map(u64::from),
            0xfd => self.take(3).map(|b| u64::from(b[0]) | u64::from(b[1]) << 8 | u64::from(b[2]) << 16),
            0xfe => self.take(8).map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])),
            _ => None,
        }
    }
    /// Length-encoded string (`string<lenenc>`).
    pub fn lenenc_str(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.lenenc()?).ok()?;
        self.take(n)
    }
}

/// The server's initial handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Greeting<'a> {
    /// Protocol version (10, or 9 for ancient servers).
    pub protocol: u8,
    /// Server version string as sent (MariaDB prefixes `5.5.5-`).
    pub version: &'a [u8],
    /// Connection (thread) id; 0 if cut short.
    pub connection_id: u32,
    /// Capability flags (lower and upper halves; 0 where cut short).
    pub capabilities: u32,
    /// Default auth plugin name (empty if absent).
    pub auth_plugin: &'a [u8],
}

/// Parses `Protocol::HandshakeV10` (or V9) from a payload.
pub fn greeting(p: &[u8]) -> Option<Greeting<'_>> {
    let mut c = Cursor::new(p);
    let protocol = c.u8()?;
    if protocol != 10 && protocol != 9 {
        return None;
    }
    let version = c.cstr()?;
    let mut g = Greeting { protocol, version, connection_id: 0, capabilities: 0, auth_plugin: b"" };
    let Some(id) = c.u32() else { return Some(g) };
    g.connection_id = id;
    if protocol == 9 {
        return Some(g);
    }
    let (Some(_auth1), Some(_filler), Some(lo)) = (c.take(8), c.u8(), c.u16()) else { return Some(g) };
    g.capabilities = u32::from(lo);
    let (Some(_charset), Some(_status), Some(hi), Some(auth_len)) = (c.u8(), c.u16(), c.u16(), c.u8()) else {
        return Some(g);
    };
    g.capabilities |= u32::from(hi) << 16;
    let Some(_reserved) = c.take(10) else { return Some(g) };
    if g.capabilities & CLIENT_SECURE_CONNECTION != 0 {
        let n = usize::from(auth_len).saturating_sub(8).max(13);
        if c.take(n).is_none() {
            return Some(g);
        }
    }
    if g.capabilities & CLIENT_PLUGIN_AUTH != 0 {
        g.auth_plugin = c.cstr().unwrap_or(c.rest());
    }
    Some(g)
}

/// A client handshake response (or SSLRequest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Login<'a> {
    /// Client capability flags.
    pub capabilities: u32,
    /// This is an SSLRequest: TLS follows.
    pub ssl_request: bool,
    /// User name.
    pub user: Option<&'a [u8]>,
    /// Database (`CLIENT_CONNECT_WITH_DB`).
    pub database: Option<&'a [u8]>,
    /// Auth plugin (`CLIENT_PLUGIN_AUTH`).
    pub auth_plugin: Option<&'a [u8]>,
    /// `_client_name` connection attribute.
    pub client_name: Option<&'a [u8]>,
    /// `_client_version` connection attribute.
    pub client_version: Option<&'a [u8]>,
    /// `program_name` connection attribute.
    pub program_name: Option<&'a [u8]>,
}

/// Parses `Protocol::HandshakeResponse41` or `Protocol::SSLRequest` from a payload of full
/// length `full_len` (the payload itself may be cut to [`WINDOW`]). `None` if it is not one
/// (no `CLIENT_PROTOCOL_41`, shorter than 32 bytes).
pub fn login(p: &[u8], full_len: usize) -> Option<Login<'_>> {
    let mut c = Cursor::new(p);
    let capabilities = c.u32()?;
    if capabilities & CLIENT_PROTOCOL_41 == 0 || full_len < 32 {
        return None;
    }
    let _max_packet = c.u32()?;
    let _charset = c.u8()?;
    let _filler = c.take(23)?;
    let mut l = Login { capabilities, ..Login::default() };
    if full_len == 32 {
        l.ssl_request = capabilities & CLIENT_SSL != 0;
        return Some(l);
    }
    let Some(user) = c.cstr() else { return Some(l) };
    l.user = Some(user);
    let auth = if capabilities & CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA != 0 {
        c.lenenc_str()
    } else if capabilities & CLIENT_SECURE_CONNECTION != 0 {
        c.u8().and_then(|n| c.take(usize::from(n)))
    } else {
        c.cstr()
    };
    if auth.is_none() {
        return Some(l);
    }
    if capabilities & CLIENT_CONNECT_WITH_DB != 0 {
        match c.cstr() {
            Some(db) => l.database = Some(db),
            None => return Some(l),
        }
    }
    if capabilities & CLIENT_PLUGIN_AUTH != 0 {
        match c.cstr() {
            Some(a) => l.auth_plugin = Some(a),
            None => return Some(l),
        }
    }
    if capabilities & CLIENT_CONNECT_ATTRS != 0 {
        let Some(total) = c.lenenc().and_then(|n| usize::try_from(n).ok()) else { return Some(l) };
        let attrs = c.rest();
        let mut a = Cursor::new(&attrs[..attrs.len().min(total)]);
        while let (Some(k), Some(v)) = (a.lenenc_str(), a.lenenc_str()) {
            match k {
                b"_client_name" => l.client_name = Some(v),
                b"_client_version" => l.client_version = Some(v),
                b"program_name" => l.program_name = Some(v),
                _ => {}
            }
        }
    }
    Some(l)
}

/// An `ERR_Packet`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrPacket<'a> {
    /// Error code.
    pub code: u16,
    /// SQL state (5 bytes) when the `#` marker is present.
    pub sql_state: Option<&'a [u8]>,
    /// Human-readable message.
    pub message: &'a [u8],
}

/// Parses an `ERR_Packet` (payload starting with `0xff`).
pub fn err_packet(p: &[u8]) -> Option<ErrPacket<'_>> {
    let mut c = Cursor::new(p);
    if c.u8()? != 0xff {
        return None;
    }
    let code = c.u16()?;
    let mut sql_state = None;
    if c.rest().first() == Some(&b'#') {
        c.take(1)?;
        sql_state = Some(c.take(5)?);
    }
    Some(ErrPacket { code, sql_state, message: c.rest() })
}

/// Name of a command byte (`COM_*`); unknown bytes yield `None`.
pub fn command_name(code: u8) -> Option<&'static str> {
    Some(match code {
        0x00 => "COM_SLEEP",
        0x01 => "COM_QUIT",
        0x02 => "COM_INIT_DB",
        0x03 => "COM_QUERY",
        0x04 => "COM_FIELD_LIST",
        0x05 => "COM_CREATE_DB",
        0x06 => "COM_DROP_DB",
        0x07 => "COM_REFRESH",
        0x08 => "COM_SHUTDOWN",
        0x09 => "COM_STATISTICS",
        0x0a => "COM_PROCESS_INFO",
        0x0b => "COM_CONNECT",
        0x0c => "COM_PROCESS_KILL",
        0x0d => "COM_DEBUG",
        0x0e => "COM_PING",
        0x0f => "COM_TIME",
        0x10 => "COM_DELAYED_INSERT",
        0x11 => "COM_CHANGE_USER",
        0x12 => "COM_BINLOG_DUMP",
        0x13 => "COM_TABLE_DUMP",
        0x14 => "COM_CONNECT_OUT",
        0x15 => "COM_REGISTER_SLAVE",
        0x16 => "COM_STMT_PREPARE",
        0x17 => "COM_STMT_EXECUTE",
        0x18 => "COM_STMT_SEND_LONG_DATA",
        0x19 => "COM_STMT_CLOSE",
        0x1a => "COM_STMT_RESET",
        0x1b => "COM_SET_OPTION",
        0x1c => "COM_STMT_FETCH",
        0x1d => "COM_DAEMON",
        0x1e => "COM_BINLOG_DUMP_GTID",
        0x1f => "COM_RESET_CONNECTION",
        0xfa => "COM_STMT_BULK_EXECUTE",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lenenc_and_cstr() {
        let mut c = Cursor::new(b"\xfc\x01\x02\xfb");
        assert_eq!(c.lenenc(), Some(0x0201));
        assert_eq!(c.lenenc(), None); // 0xfb is the NULL marker
        assert_eq!(Cursor::new(b"abc").cstr(), None);
        assert_eq!(Cursor::new(b"ab\0c").cstr(), Some(&b"ab"[..]));
        assert_eq!(Cursor::new(b"\xfe\x01").lenenc(), None);
    }

    #[test]
    fn err_packets() {
        let e = err_packet(b"\xff\x15\x04#28000Access denied").unwrap();
        assert_eq!((e.code, e.sql_state, e.message), (1045, Some(&b"28000"[..]), &b"Access denied"[..]));
        let e = err_packet(b"\xff\x6a\x04Host 'x' is not allowed").unwrap();
        assert_eq!((e.code, e.sql_state), (1130, None));
        assert_eq!(err_packet(b"\xff\x01"), None);
    }

    #[test]
    fn short_logins_are_not_errors() {
        assert_eq!(login(b"\x00\x02\x00\x00", 100), None);
        let l = login(&[0u8; 10], 100);
        assert_eq!(l, None);
    }
}
