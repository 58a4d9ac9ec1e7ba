//! Pure parsing functions of the Tabular Data Stream protocol ([MS-TDS] 2.2; TDS 5.0 LOGIN after
//! Sybase's TDS 5.0 reference), over `&[u8]`: no state, no allocation.
//!
//! Framing ([MS-TDS] 2.2.3): every message is carried in one or more packets, each with an
//! 8-byte header: type (u8), status (u8, bit 0x01 = end of message), length (u16 big-endian,
//! header included), SPID (u16 big-endian), packet id (u8), window (u8, always 0). Messages are
//! looked at through a *window*: their first bytes of payload across packets ([`gather`],
//! [`Chunks`]); the rest is skipped by counting. Fields beyond the window read as absent.
//!
//! Byte orders: the packet header and PRELOGIN option offsets/lengths are big-endian; LOGIN7,
//! ALL_HEADERS and token fields are little-endian; strings are UTF-16LE with lengths in
//! characters (B_VARCHAR: u8 count, US_VARCHAR: u16 count).

pub use crate::app::Parse;

use crate::app::Text;

/// Packet header size (bytes).
pub const HEADER: usize = 8;
/// Largest accepted packet, header included (bytes): the negotiated packet size is at most
/// 32767 ([MS-TDS] 2.2.6.4 PacketSize); one more for servers that round up.
pub const MAX_PACKET: usize = 32768;

/// SQL batch ([MS-TDS] 2.2.6.7).
pub const SQL_BATCH: u8 = 0x01;
/// TDS 4.2/5.0 LOGIN (pre-TDS 7).
pub const LOGIN5: u8 = 0x02;
/// Remote procedure call ([MS-TDS] 2.2.6.6).
pub const RPC: u8 = 0x03;
/// Tabular result: every server message ([MS-TDS] 2.2.4).
pub const TABULAR: u8 = 0x04;
/// Attention signal ([MS-TDS] 2.2.1.7).
pub const ATTENTION: u8 = 0x06;
/// Bulk load data.
pub const BULK_LOAD: u8 = 0x07;
/// Federated authentication token.
pub const FEDAUTH: u8 = 0x08;
/// Transaction manager request.
pub const TRANSACTION: u8 = 0x0e;
/// TDS 5.0 normal buffer (language, RPC and dynamic tokens of Sybase clients).
pub const TDS5_NORMAL: u8 = 0x0f;
/// LOGIN7 ([MS-TDS] 2.2.6.4).
pub const LOGIN7: u8 = 0x10;
/// SSPI message.
pub const SSPI: u8 = 0x11;
/// PRELOGIN, and TLS handshake records wrapped in PRELOGIN packets ([MS-TDS] 2.2.6.5).
pub const PRELOGIN: u8 = 0x12;
/// First byte of an SMP (MARS session multiplexing) header, which wraps packets once MARS is on.
pub const SMP: u8 = 0x53;

/// Status bits a packet may carry: EOM, IGNORE, event notification (TDS 5), RESETCONNECTION,
/// RESETCONNECTIONSKIPTRAN.
pub const STATUS_BITS: u8 = 0x1f;
/// Status bit: last packet of the message.
pub const EOM: u8 = 0x01;

/// Name of a packet type, `None` for types no client or server sends.
pub fn type_name(t: u8) -> Option<&'static str> {
    Some(match t {
        SQL_BATCH => "sql_batch",
        LOGIN5 => "login5",
        RPC => "rpc",
        TABULAR => "tabular_result",
        ATTENTION => "attention",
        BULK_LOAD => "bulk_load",
        FEDAUTH => "fedauth_token",
        TRANSACTION => "transaction_manager",
        TDS5_NORMAL => "tds5_normal",
        LOGIN7 => "login7",
        SSPI => "sspi",
        PRELOGIN => "prelogin",
        _ => return None,
    })
}

/// A packet header ([MS-TDS] 2.2.3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Packet type.
    pub ptype: u8,
    /// Status bits.
    pub status: u8,
    /// Packet length, header included (bytes).
    pub length: usize,
    /// Server process id.
    pub spid: u16,
    /// Packet sequence number (wraps).
    pub packet_id: u8,
    /// Window (unused, 0).
    pub window: u8,
}

impl Header {
    /// True on the last packet of a message.
    pub fn eom(&self) -> bool {
        self.status & EOM != 0
    }
}

/// Parses a packet header. `Invalid` when the status has unknown bits, the window is not 0 or
/// the length is outside `8..=`[`MAX_PACKET`]; the type is not checked.
pub fn header(b: &[u8]) -> Parse<Header> {
    let Some(h) = b.get(..HEADER) else { return Parse::Incomplete(HEADER) };
    let length = usize::from(u16::from_be_bytes([h[2], h[3]]));
    if h[1] & !STATUS_BITS != 0 || h[7] != 0 || !(HEADER..=MAX_PACKET).contains(&length) {
        return Parse::Invalid;
    }
    Parse::Ok(
        Header {
            ptype: h[0],
            status: h[1],
            length,
            spid: u16::from_be_bytes([h[4], h[5]]),
            packet_id: h[6],
            window: h[7],
        },
        HEADER,
    )
}

/// Where the first `window` payload bytes of a message end ([`gather`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gathered {
    /// Bytes from the first header through the end of the window (or of the message).
    pub consumed: usize,
    /// Payload bytes in the window.
    pub taken: usize,
    /// Payload bytes of the packet the window ends in that lie beyond it (to skip).
    pub pkt_left: usize,
    /// More packets of this message follow the one the window ends in.
    pub more: bool,
    /// Packets whose header lies in the window.
    pub packets: u32,
}

/// How far [`gather_from`] walked the packets of a message in the bytes presented again with
/// more appended (the stream engine's contract): the packets before `p` were read and
/// checked, so each packet header is read a bounded number of times however many packets
/// the message was cut into. `Copy`, 24 bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GatherWalk {
    /// Start of the next packet header to read.
    p: u32,
    /// Payload bytes taken so far.
    taken: u32,
    /// Packets walked.
    packets: u32,
    /// Type of the first packet.
    first_type: Option<u8>,
    /// Bytes examined (packet headers read), never reset.
    examined: u64,
}

impl GatherWalk {
    /// Forgets the walk (the message was taken); keeps the count.
    pub fn reset(&mut self) {
        *self = GatherWalk { examined: self.examined, ..GatherWalk::default() };
    }

    /// Bytes examined so far (a measure of work for tests).
    pub fn examined(&self) -> u64 {
        self.examined
    }
}

/// Walks the packets of one message from its first header in `b` until `window` payload bytes
/// are in hand or the message ends. `Incomplete(n)`: `n` bytes of `b` are needed; `Invalid`: a
/// header is invalid or a later packet has another type than the first.
pub fn gather(b: &[u8], window: usize) -> Parse<Gathered> {
    gather_from(b, window, &mut GatherWalk::default())
}

/// [`gather`] on bytes presented again with more appended: `walk` keeps how far the packets
/// were read, and the walk goes on from there (a message cut into many small packets is not
/// walked again from its first packet at each one). `b` must start where it started at the
/// previous call with the same `window` (after [`GatherWalk::reset`], anywhere).
pub fn gather_from(b: &[u8], window: usize, walk: &mut GatherWalk) -> Parse<Gathered> {
    if walk.p as usize > b.len() {
        walk.reset();
    }
    loop {
        let p = walk.p as usize;
        walk.examined = walk.examined.saturating_add(HEADER as u64);
        let h = match header(b.get(p..).unwrap_or_default()) {
            Parse::Ok(h, _) => h,
            Parse::Incomplete(n) => return Parse::Incomplete(p + n),
            Parse::Invalid => return Parse::Invalid,
        };
        if *walk.first_type.get_or_insert(h.ptype) != h.ptype {
            return Parse::Invalid;
        }
        let taken = walk.taken as usize;
        let plen = h.length - HEADER;
        let take = plen.min(window.saturating_sub(taken));
        let end = p + HEADER + take;
        if b.len() < end {
            return Parse::Incomplete(end);
        }
        let taken = taken + take;
        let packets = walk.packets + 1;
        if take < plen || taken >= window || h.eom() {
            walk.reset();
            return Parse::Ok(Gathered { consumed: end, taken, pkt_left: plen - take, more: !h.eom(), packets }, end);
        }
        walk.p = u32::try_from(end).unwrap_or(u32::MAX);
        walk.taken = u32::try_from(taken).unwrap_or(u32::MAX);
        walk.packets = packets;
    }
}

/// The payload pieces of consecutive packets (headers already validated by [`gather`]), the
/// last one cut where `b` ends.
#[derive(Debug, Clone)]
pub struct Chunks<'a> {
    b: &'a [u8],
}

impl<'a> Chunks<'a> {
    /// Chunks of `b`, which starts with a packet header.
    pub fn new(b: &'a [u8]) -> Self {
        Chunks { b }
    }
}

impl<'a> Iterator for Chunks<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let h = self.b.get(..HEADER)?;
        let len = usize::from(u16::from_be_bytes([h[2], h[3]])).max(HEADER);
        let end = len.min(self.b.len());
        let piece = self.b.get(HEADER..end).unwrap_or_default();
        self.b = self.b.get(end..).unwrap_or_default();
        Some(piece)
    }
}

/// Copies the payload of `chunks` into `out`; returns the bytes written.
pub fn copy_chunks<'a>(chunks: impl Iterator<Item = &'a [u8]>, out: &mut [u8]) -> usize {
    let mut n = 0;
    for c in chunks {
        let k = c.len().min(out.len() - n);
        out[n..n + k].copy_from_slice(&c[..k]);
        n += k;
        if n == out.len() {
            break;
        }
    }
    n
}

fn le16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_le_bytes([s[0], s[1]]))
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    b.get(at..at + 2).map(|s| u16::from_be_bytes([s[0], s[1]]))
}

/// Little-endian u32 at `at`.
pub fn le32(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4).map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

// ---------------------------------------------------------------------------------------------
// PRELOGIN ([MS-TDS] 2.2.6.5)

/// PRELOGIN option tokens.
pub mod option {
    /// UL_VERSION (4 bytes, big-endian major/minor/build) + US_SUBBUILD (2 bytes).
    pub const VERSION: u8 = 0x00;
    /// B_FENCRYPTION (1 byte).
    pub const ENCRYPTION: u8 = 0x01;
    /// Instance name, NUL-terminated.
    pub const INSTOPT: u8 = 0x02;
    /// Client thread id (4 bytes; empty from a server).
    pub const THREADID: u8 = 0x03;
    /// B_MARS (1 byte).
    pub const MARS: u8 = 0x04;
    /// Trace id (36 bytes).
    pub const TRACEID: u8 = 0x05;
    /// Federated authentication required (1 byte).
    pub const FEDAUTHREQUIRED: u8 = 0x06;
    /// Nonce (32 bytes).
    pub const NONCEOPT: u8 = 0x07;
    /// Terminator of the option table.
    pub const TERMINATOR: u8 = 0xff;
    /// Highest option token defined ([MS-TDS] 2.2.6.5, TDS 7.4 / 8.0).
    pub const LAST: u8 = 0x08;
}

/// The options of a PRELOGIN message that Warden reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Prelogin<'a> {
    /// VERSION: major, minor, build, sub-build.
    pub version: Option<(u8, u8, u16, u16)>,
    /// ENCRYPTION byte.
    pub encryption: Option<u8>,
    /// INSTOPT without its NUL.
    pub instance: Option<&'a [u8]>,
    /// MARS byte.
    pub mars: Option<u8>,
    /// FEDAUTHREQUIRED byte.
    pub fedauth_required: Option<u8>,
    /// Number of option tokens.
    pub options: u32,
}

/// State of an option table checked over a possibly incomplete payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// Well formed; the table (terminator included) is this long.
    Complete(usize),
    /// Consistent so far; more bytes are needed to decide.
    Partial,
    /// Not a PRELOGIN option table.
    Invalid,
}

/// Checks the option table at the start of `payload` (of which `total` bytes exist in the
/// message, `payload` possibly shorter): 5-byte entries (token ≤ [`option::LAST`], offset and
/// length big-endian) ending with the terminator; each option's data after the table and inside
/// `total`, each token at most once, VERSION present first.
pub fn option_table(payload: &[u8], total: usize) -> Table {
    let mut seen = 0u32;
    let mut i = 0;
    loop {
        let Some(&tok) = payload.get(i) else {
            return if i < total { Table::Partial } else { Table::Invalid };
        };
        if tok == option::TERMINATOR {
            if i == 0 {
                return Table::Invalid;
            }
            let table = i + 1;
            // Every option's data must start at or after the table.
            let mut j = 0;
            while j < i {
                let off = usize::from(be16(payload, j + 1).unwrap_or(0));
                if off < table {
                    return Table::Invalid;
                }
                j += 5;
            }
            return Table::Complete(table);
        }
        if tok > option::LAST || seen & (1 << tok) != 0 || (i == 0) != (tok == option::VERSION) {
            return Table::Invalid;
        }
        seen |= 1 << tok;
        let (Some(off), Some(len)) = (be16(payload, i + 1), be16(payload, i + 3)) else {
            // Check what is there of the offset: at most `total`.
            if let Some(&hi) = payload.get(i + 1) {
                if usize::from(hi) << 8 > total {
                    return Table::Invalid;
                }
            }
            return if i + 5 <= total { Table::Partial } else { Table::Invalid };
        };
        let (off, len) = (usize::from(off), usize::from(len));
        if off + len > total || (tok == option::VERSION && len != 6) || (tok == option::ENCRYPTION && len != 1) {
            return Table::Invalid;
        }
        i += 5;
        if i > 5 * (usize::from(option::LAST) + 1) {
            return Table::Invalid;
        }
    }
}

/// Parses a complete PRELOGIN payload (option table and data). `None` if the table is not well
/// formed.
pub fn prelogin(payload: &[u8]) -> Option<Prelogin<'_>> {
    let Table::Complete(table) = option_table(payload, payload.len()) else { return None };
    let mut p = Prelogin::default();
    let mut i = 0;
    while i + 5 <= table {
        let tok = payload[i];
        let off = usize::from(be16(payload, i + 1)?);
        let len = usize::from(be16(payload, i + 3)?);
        let data = payload.get(off..off + len)?;
        p.options += 1;
        match tok {
            option::VERSION => {
                p.version = Some((data[0], data[1], u16::from_be_bytes([data[2], data[3]]), le16(data, 4)?));
            }
            option::ENCRYPTION => p.encryption = data.first().copied(),
            option::INSTOPT => p.instance = Some(data.split(|&c| c == 0).next().unwrap_or_default()),
            option::MARS => p.mars = data.first().copied(),
            option::FEDAUTHREQUIRED => p.fedauth_required = data.first().copied(),
            _ => {}
        }
        i += 5;
    }
    Some(p)
}

/// Name of a PRELOGIN ENCRYPTION value ([MS-TDS] 2.2.6.5: ENCRYPT_OFF, _ON, _NOT_SUP, _REQ,
/// optionally with ENCRYPT_CLIENT_CERT 0x80).
pub fn encryption_name(e: u8) -> &'static str {
    match e {
        0x00 => "off",
        0x01 => "on",
        0x02 => "not_supported",
        0x03 => "required",
        0x80 => "client_cert_off",
        0x81 => "client_cert_on",
        0x83 => "client_cert_required",
        _ => "other",
    }
}

/// True when `payload` starts like a TLS record (handshake, alert, change cipher spec or
/// application data, version 3.x): the TLS handshake TDS 7 carries in PRELOGIN packets.
pub fn is_tls(payload: &[u8]) -> bool {
    matches!(payload, [0x14..=0x17, 0x03, ..])
}

// ---------------------------------------------------------------------------------------------
// LOGIN7 ([MS-TDS] 2.2.6.4)

/// Size of the LOGIN7 fixed part up to `cbSSPILong` (TDS 7.2+; 7.0/7.1 stop at 86).
pub const LOGIN7_FIXED: usize = 94;

/// The LOGIN7 fields Warden reports (strings as UTF-16LE bytes; absent when outside the window).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Login7<'a> {
    /// Total length of the LOGIN7 data.
    pub length: u32,
    /// TDS version (`0x74000004` for 7.4).
    pub tds_version: u32,
    /// Requested packet size (bytes).
    pub packet_size: u32,
    /// Client program version.
    pub client_prog_version: u32,
    /// Client process id.
    pub client_pid: u32,
    /// HostName.
    pub host: Option<&'a [u8]>,
    /// UserName.
    pub user: Option<&'a [u8]>,
    /// AppName.
    pub app: Option<&'a [u8]>,
    /// ServerName.
    pub server_name: Option<&'a [u8]>,
    /// CltIntName (client interface library).
    pub library: Option<&'a [u8]>,
    /// Language.
    pub language: Option<&'a [u8]>,
    /// Database.
    pub database: Option<&'a [u8]>,
    /// Integrated (SSPI) authentication requested (OptionFlags2 fIntSecurity).
    pub integrated_security: bool,
    /// Read-only application intent (TypeFlags fReadOnlyIntent).
    pub read_only_intent: bool,
}

/// True for the TDS versions a LOGIN7 may request.
pub fn known_tds_version(v: u32) -> bool {
    matches!(
        v,
        0x7000_0000 | 0x7100_0000 | 0x7100_0001 | 0x7209_0002 | 0x730a_0003 | 0x730b_0003 | 0x7400_0004 | 0x0800_0000
    )
}

/// Name of a TDS version (`"7.4"`), `None` if unknown.
pub fn tds_version_name(v: u32) -> Option<&'static str> {
    Some(match v {
        0x7000_0000 => "7.0",
        0x7100_0000 => "7.1",
        0x7100_0001 => "7.1 SP1",
        0x7209_0002 => "7.2",
        0x730a_0003 => "7.3A",
        0x730b_0003 => "7.3B",
        0x7400_0004 => "7.4",
        0x0800_0000 => "8.0",
        _ => return None,
    })
}

/// Checks the first bytes of a LOGIN7 payload (`total`: the message's payload bytes present in
/// its first packet, or more): Length at least the fixed part, a known TDS version, a packet size
/// in 512..=32767 (0 = server default), HostName offset after the fixed part. `Partial` means
/// consistent so far.
pub fn login7_check(payload: &[u8]) -> Table {
    let fixed = |v: u32| if v < 0x7209_0002 { 86 } else { LOGIN7_FIXED };
    let Some(len) = le32(payload, 0) else {
        return if payload.len() >= 4 { Table::Invalid } else { Table::Partial };
    };
    if !(86..=128 * 1024).contains(&len) {
        return Table::Invalid;
    }
    // Version: the high byte (last on the wire) decides the family; check byte by byte.
    match payload.get(4..8) {
        Some(v) if !known_tds_version(u32::from_le_bytes([v[0], v[1], v[2], v[3]])) => return Table::Invalid,
        Some(_) => {}
        None => return Table::Partial,
    }
    let ver = le32(payload, 4).unwrap_or(0);
    let Some(size) = le32(payload, 8) else { return Table::Partial };
    if size != 0 && !(512..=32767).contains(&size) {
        return Table::Invalid;
    }
    let Some(ib_host) = le16(payload, 36) else { return Table::Partial };
    let Some(cch_host) = le16(payload, 38) else { return Table::Partial };
    let (ib, cch) = (usize::from(ib_host), usize::from(cch_host));
    if (cch > 0 && ib < fixed(ver)) || ib + 2 * cch > len as usize {
        return Table::Invalid;
    }
    Table::Complete(40)
}

/// Parses a LOGIN7 payload (possibly cut to a window). `None` if [`login7_check`] rejects it or
/// the fixed part is cut.
pub fn login7(payload: &[u8]) -> Option<Login7<'_>> {
    if !matches!(login7_check(payload), Table::Complete(_)) || payload.len() < 86 {
        return None;
    }
    let s = |at: usize| -> Option<&[u8]> {
        let ib = usize::from(le16(payload, at)?);
        let cch = usize::from(le16(payload, at + 2)?);
        payload.get(ib..ib + 2 * cch)
    };
    Some(Login7 {
        length: le32(payload, 0)?,
        tds_version: le32(payload, 4)?,
        packet_size: le32(payload, 8)?,
        client_prog_version: le32(payload, 12)?,
        client_pid: le32(payload, 16)?,
        host: s(36),
        user: s(40),
        app: s(48),
        server_name: s(52),
        library: s(60),
        language: s(64),
        database: s(68),
        integrated_security: payload[25] & 0x80 != 0,
        read_only_intent: payload[26] & 0x20 != 0,
    })
}

// ---------------------------------------------------------------------------------------------
// TDS 5.0 LOGIN (Sybase): fixed-width fields, each followed by its length byte.

/// Bytes of a TDS 5.0 LOGIN payload needed to read the fields below.
pub const LOGIN5_WINDOW: usize = 564;

/// The TDS 5.0 LOGIN fields Warden reports (raw bytes in the client's character set).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Login5<'a> {
    /// lhostname.
    pub host: &'a [u8],
    /// lusername.
    pub user: &'a [u8],
    /// lappname.
    pub app: Option<&'a [u8]>,
    /// lservname.
    pub server_name: Option<&'a [u8]>,
    /// ltds_version (4 bytes: major, minor, ...).
    pub tds_version: Option<[u8; 4]>,
    /// lprogname (client library).
    pub library: Option<&'a [u8]>,
    /// llanguage.
    pub language: Option<&'a [u8]>,
    /// lpacketsize (ASCII digits).
    pub packet_size: Option<&'a [u8]>,
}

/// One fixed-width field of `width` bytes at `at` followed by its length byte.
fn fixed_field(b: &[u8], at: usize, width: usize) -> Option<&[u8]> {
    let len = usize::from(*b.get(at + width)?);
    if len > width {
        return None;
    }
    b.get(at..at + len)
}

/// Checks the start of a TDS 5.0 LOGIN payload: hostname, username, password and host process
/// lengths at most 30, printable names, and the integer byte orders of `lint2`/`lint4` valid.
pub fn login5_check(payload: &[u8]) -> Table {
    for (at, width) in [(0usize, 30usize), (31, 30), (62, 30), (93, 30)] {
        let field = &payload[payload.len().min(at)..payload.len().min(at + width)];
        if field.iter().any(|&c| c != 0 && !(0x20..0x7f).contains(&c)) && at != 62 {
            return Table::Invalid;
        }
        match payload.get(at + width) {
            Some(&l) if usize::from(l) > width => return Table::Invalid,
            Some(&l) if at != 62 && field[..usize::from(l)].contains(&0) => return Table::Invalid,
            Some(_) => {}
            None => return Table::Partial,
        }
    }
    match payload.get(124..126) {
        Some([2 | 3, 0 | 1]) => Table::Complete(126),
        Some(_) => Table::Invalid,
        None if payload.get(124).is_some_and(|&c| !matches!(c, 2 | 3)) => Table::Invalid,
        None => Table::Partial,
    }
}

/// Parses a TDS 5.0 LOGIN payload (possibly cut to a window); `None` unless [`login5_check`]
/// accepts it. Offsets: hostname 0, username 31, password 62, hostproc 93, options 124..137,
/// appname 140, servername 171, remote password 202, tds version 458, progname 462, progversion
/// 473, language 480, charset 525, packet size 557 (each name followed by its length byte).
pub fn login5(payload: &[u8]) -> Option<Login5<'_>> {
    if !matches!(login5_check(payload), Table::Complete(_)) {
        return None;
    }
    Some(Login5 {
        host: fixed_field(payload, 0, 30)?,
        user: fixed_field(payload, 31, 30)?,
        app: fixed_field(payload, 140, 30),
        server_name: fixed_field(payload, 171, 30),
        tds_version: payload.get(458..462).map(|v| [v[0], v[1], v[2], v[3]]),
        library: fixed_field(payload, 462, 10),
        language: fixed_field(payload, 480, 30),
        packet_size: fixed_field(payload, 557, 6),
    })
}

// ---------------------------------------------------------------------------------------------
// SQLBatch and RPC ([MS-TDS] 2.2.6.7, 2.2.6.6, ALL_HEADERS 2.2.5.3)

/// Length of the ALL_HEADERS prefix at the start of `payload` (TDS 7.2+), 0 when there is none:
/// TotalLength (u32) at least 4 and covering whole headers whose HeaderLength (u32) fits.
pub fn all_headers_len(payload: &[u8]) -> usize {
    let Some(total) = le32(payload, 0).map(|t| t as usize) else { return 0 };
    if !(4..=1024).contains(&total) {
        return 0;
    }
    let mut p = 4;
    while p < total {
        match le32(payload, p).map(|l| l as usize) {
            Some(l) if l >= 6 && p + l <= total => p += l,
            _ => return 0,
        }
    }
    total
}

/// Decodes UTF-16LE code units from `chunks` (a code unit may straddle two chunks) into UTF-8
/// in `out`, stopping before the first character that does not fit; unpaired surrogates become
/// U+FFFD. Returns the bytes written.
pub fn utf16_to_utf8<'a>(chunks: impl Iterator<Item = &'a [u8]>, out: &mut [u8]) -> usize {
    let mut n = 0;
    let mut carry: Option<u8> = None;
    let units = chunks.flat_map(|c| c.iter().copied()).filter_map(move |b| match carry.take() {
        Some(lo) => Some(u16::from_le_bytes([lo, b])),
        None => {
            carry = Some(b);
            None
        }
    });
    for ch in char::decode_utf16(units) {
        let ch = ch.unwrap_or(char::REPLACEMENT_CHARACTER);
        let w = ch.len_utf8();
        if n + w > out.len() {
            break;
        }
        ch.encode_utf8(&mut out[n..n + w]);
        n += w;
    }
    n
}

/// The SQL text of a SQLBatch whose payload (possibly a window, across packets) is `chunks`:
/// ALL_HEADERS skipped when present, UTF-16LE converted to UTF-8 into `out` as far as it fits.
/// Returns the bytes written.
pub fn sql_batch_text(chunks: Chunks<'_>, out: &mut [u8]) -> usize {
    // ALL_HEADERS length from the first payload bytes (they may straddle packets).
    let mut head = [0u8; 128];
    let hn = copy_chunks(chunks.clone(), &mut head);
    let skip = all_headers_len(&head[..hn]);
    utf16_to_utf8(sub_chunks(chunks, skip, usize::MAX), out)
}

/// Bounded text from UTF-16LE bytes (truncated on a character boundary).
pub fn utf16_text<const N: usize>(b: &[u8]) -> Text<N> {
    let mut out = Text::<N>::new();
    let units = b.chunks_exact(2).map(|u| u16::from_le_bytes([u[0], u[1]]));
    for ch in char::decode_utf16(units) {
        if out.try_push(ch.unwrap_or(char::REPLACEMENT_CHARACTER)).is_err() {
            break;
        }
    }
    out
}

/// Name of a well-known stored procedure id of an RPC ([MS-TDS] 2.2.6.6, ProcID).
pub fn proc_name(id: u16) -> &'static str {
    match id {
        1 => "sp_cursor",
        2 => "sp_cursoropen",
        3 => "sp_cursorprepare",
        4 => "sp_cursorexecute",
        5 => "sp_cursorprepexec",
        6 => "sp_cursorunprepare",
        7 => "sp_cursorfetch",
        8 => "sp_cursoroption",
        9 => "sp_cursorclose",
        10 => "sp_executesql",
        11 => "sp_prepare",
        12 => "sp_execute",
        13 => "sp_prepexec",
        14 => "sp_prepexecrpc",
        15 => "sp_unprepare",
        _ => "other",
    }
}

/// The procedure of an RPC request (after ALL_HEADERS): `Ok(name)` as UTF-16LE bytes, or
/// `Err(id)` for a well-known procedure given by id. `None` if cut or malformed.
pub fn rpc_proc(body: &[u8]) -> Option<Result<&[u8], u16>> {
    let n = le16(body, 0)?;
    if n == 0xffff {
        return le16(body, 2).map(Err);
    }
    let n = usize::from(n);
    if n == 0 || n > 128 {
        return None;
    }
    body.get(2..2 + 2 * n).map(Ok)
}

/// Where the statement of an `sp_executesql` RPC lies: the first parameter's value when it is a
/// plain (non-PLP) NVARCHAR/NCHAR. `body` starts after the procedure name/id and the 2-byte
/// OptionFlags; returns (offset in `body`, length in bytes) of the UTF-16LE value, which may
/// extend past `body` (a window). `None` for other parameter types, PLP (`nvarchar(max)`, sent in
/// chunks) and NULL values.
pub fn rpc_statement(body: &[u8]) -> Option<(usize, usize)> {
    // ParamMetaData: B_VARCHAR name, StatusFlags, TYPE_INFO, then the value.
    let name = usize::from(*body.first()?);
    let p = 1 + 2 * name + 1;
    match *body.get(p)? {
        // NVARCHARTYPE / NCHARTYPE: USHORTLEN max length, 5-byte collation, USHORTLEN length.
        0xe7 | 0xef => {
            if le16(body, p + 1)? == 0xffff {
                return None;
            }
            let len = le16(body, p + 8)?;
            if len == 0xffff {
                return None;
            }
            Some((p + 10, usize::from(len)))
        }
        _ => None,
    }
}

/// The bytes `skip..skip + take` of the concatenation of `chunks`.
pub fn sub_chunks<'a>(
    chunks: impl Iterator<Item = &'a [u8]>,
    skip: usize,
    take: usize,
) -> impl Iterator<Item = &'a [u8]> {
    let (mut skip, mut take) = (skip, take);
    chunks.map(move |c| {
        let k = skip.min(c.len());
        skip -= k;
        let c = &c[k..];
        let n = take.min(c.len());
        take -= n;
        &c[..n]
    })
}

// ---------------------------------------------------------------------------------------------
// Tabular result tokens ([MS-TDS] 2.2.7)

/// A response token Warden reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// ENVCHANGE (0xE3): type and new value (UTF-16LE B_VARCHAR for the string types).
    EnvChange(u8, &'a [u8]),
    /// LOGINACK (0xAD): interface, TDS version (big-endian), program name (UTF-16LE), program
    /// version (major, minor, build high, build low).
    LoginAck {
        /// SQL interface (1 = T-SQL).
        interface: u8,
        /// Negotiated TDS version.
        tds_version: u32,
        /// Server program name.
        prog_name: &'a [u8],
        /// Server program version.
        prog_version: [u8; 4],
    },
    /// ERROR (0xAA) or INFO (0xAB): number, class (severity), message text (UTF-16LE).
    Message {
        /// True for ERROR, false for INFO.
        error: bool,
        /// Error number.
        number: i32,
        /// Class (severity).
        class: u8,
        /// Message text.
        text: &'a [u8],
    },
    /// DONE / DONEPROC / DONEINPROC (0xFD..=0xFF): status.
    Done(u16),
}

/// ENVCHANGE types.
pub mod env {
    /// Database.
    pub const DATABASE: u8 = 1;
    /// Packet size.
    pub const PACKET_SIZE: u8 = 4;
}

/// Reads the response tokens at the start of `b` that Warden knows, calling `f` for each, and
/// stops at the first DONE token, at an unknown token (whose length format Warden does not
/// know, such as COLMETADATA) or where `b` is cut. Returns the number of tokens read.
pub fn tokens<'a>(b: &'a [u8], mut f: impl FnMut(Token<'a>)) -> u32 {
    let mut p = 0;
    let mut n = 0;
    while let Some(&t) = b.get(p) {
        if matches!(t, 0xfd..=0xff) {
            if let Some(status) = le16(b, p + 1) {
                f(Token::Done(status));
                n += 1;
            }
            return n;
        }
        if !matches!(t, 0xe3 | 0xad | 0xaa | 0xab) {
            return n;
        }
        let Some(len) = le16(b, p + 1).map(usize::from) else { return n };
        let Some(body) = b.get(p + 3..p + 3 + len) else { return n };
        let tok = match t {
            0xe3 => body.first().map(|&ty| {
                let new = body.get(1).map(|&c| usize::from(c) * 2).and_then(|l| body.get(2..2 + l));
                Token::EnvChange(ty, new.unwrap_or_default())
            }),
            0xad => (|| {
                let interface = *body.first()?;
                let tds_version = u32::from_be_bytes(body.get(1..5)?.try_into().ok()?);
                let name_len = usize::from(*body.get(5)?) * 2;
                let prog_name = body.get(6..6 + name_len)?;
                let v = body.get(6 + name_len..10 + name_len)?;
                Some(Token::LoginAck { interface, tds_version, prog_name, prog_version: [v[0], v[1], v[2], v[3]] })
            })(),
            _ => (|| {
                let number = i32::from_le_bytes(body.get(0..4)?.try_into().ok()?);
                let class = *body.get(5)?;
                let text_len = usize::from(le16(body, 6)?) * 2;
                let text = body.get(8..(8 + text_len).min(body.len()))?;
                Some(Token::Message { error: t == 0xaa, number, class, text })
            })(),
        };
        if let Some(tok) = tok {
            f(tok);
            n += 1;
        }
        p += 3 + len;
    }
    n
}

/// Checks the first token of a server tabular result (`b` after the packet header; `total`
/// payload bytes exist): ENVCHANGE with a known type, LOGINACK with interface 0/1 and a known TDS
/// version, ERROR/INFO, each with its length inside `total`.
pub fn first_token_check(b: &[u8], total: usize) -> Table {
    let Some(&t) = b.first() else { return Table::Partial };
    if !matches!(t, 0xe3 | 0xad | 0xaa | 0xab) {
        return Table::Invalid;
    }
    let Some(len) = le16(b, 1).map(usize::from) else { return Table::Partial };
    if 3 + len > total {
        return Table::Invalid;
    }
    match t {
        0xe3 => match b.get(3) {
            Some(1..=20) if len >= 3 => Table::Complete(4),
            Some(_) => Table::Invalid,
            None => Table::Partial,
        },
        0xad => match b.get(3..8) {
            Some(v) if v[0] <= 1 && (known_tds_version(u32::from_be_bytes([v[1], v[2], v[3], v[4]])) || v[1] == 5) => {
                Table::Complete(8)
            }
            Some(_) => Table::Invalid,
            None => Table::Partial,
        },
        _ => match b.get(3..11) {
            // number, state, class (severity 0..=25), message length inside the token.
            Some(v) if v[5] <= 25 && 8 + 2 * usize::from(u16::from_le_bytes([v[6], v[7]])) <= len => {
                Table::Complete(11)
            }
            Some(_) => Table::Invalid,
            None => Table::Partial,
        },
    }
}
