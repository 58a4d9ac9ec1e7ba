//! App (L7 protocol) detection and parsing: the contract every protocol module implements.
//!
//! One module (directory) per protocol under `app/`, each with pure parsing functions over
//! `&[u8]` (`parser.rs`) and a per-session state implementing [`AppParser`] (`mod.rs`).
//! `template/` is a complete, tested example to copy when adding a protocol.
//!
//! Contract (after Suricata's app-layer parsers):
//! - **Probing** is stateless: [`AppParser::probe`] sees the first bytes of one direction and says
//!   [`Probe::Match`], [`Probe::NeedMore`] or [`Probe::NoMatch`]. It must decide the same way
//!   however TCP segmented those bytes: a prefix of a real first message is never `NoMatch`.
//!   Ports only order the candidates; content decides.
//! - **Parsers never buffer**: [`AppParser::feed`] gets in-order bytes of one direction and says
//!   how much it consumed; the stream engine keeps the unconsumed tail (bounded) and presents it
//!   again with more bytes appended. Parser state is fixed-size (`Clone`, no heap), so a
//!   snapshot can be copied into a report.
//! - Every length read from the wire is capped before use; unknown codes are values, not errors;
//!   nothing panics on any input. Extracted strings are bounded ([`Text`]).
//! - Gaps (bytes the engine lost) are announced with [`AppParser::gap`]; a parser resynchronises
//!   or stops, and says whether it still knows where its messages are (a parser that lost
//!   them no longer validates: the engine reports inspection lost, an exception when the
//!   verdict depends on the app).
//! - **Parsers keep validating after detection**: bytes that cannot be the protocol (a request
//!   line that is not one, a byte that is no RESP type, an impossible length or opcode) are
//!   answered [`Feed::Invalid`] with the bytes of whole valid messages before them. The engine
//!   then drops the parser and runs detection again on the rest of the stream (the session's app
//!   becomes undecided, then whatever the new bytes are), so the policy decides again. Only what
//!   no real peer of the protocol would send is invalid: the corpus tests must still pass.

use arrayvec::ArrayString;
use serde_json::{Map, Value};

pub use crate::session::Dir;

pub mod cassandra;
pub mod couchbase;
pub mod dhcp;
pub mod dns;
pub mod echo;
pub mod engine;
pub mod http;
pub mod http2;
pub mod kafka;
pub mod midstream;
pub mod mongodb;
pub mod mysql;
pub mod ntp;
pub mod postgresql;
pub mod redis;
pub mod spark;
pub mod ssh;
pub mod tds;
pub mod template;
pub mod tftp;
pub mod tls;
pub mod zookeeper;
pub mod tns;
#[cfg(test)]
pub mod testutil;

/// An application protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum App {
    /// Not (yet) recognised.
    #[default]
    Unknown,
    /// The template protocol (tests and documentation only).
    Template,
    /// HTTP/1.0 and HTTP/1.1.
    Http,
    /// HTTP/2 (prior knowledge or h2c upgrade).
    Http2,
    /// gRPC over HTTP/2.
    Grpc,
    /// TLS.
    Tls,
    /// DNS over UDP or TCP.
    Dns,
    /// SSH.
    Ssh,
    /// Redis RESP2/RESP3.
    Redis,
    /// MySQL / MariaDB client-server protocol.
    Mysql,
    /// PostgreSQL frontend/backend protocol.
    Postgresql,
    /// Echo (RFC 862), recognised by the server repeating the client's bytes.
    Echo,
    /// Apache Kafka wire protocol.
    Kafka,
    /// MongoDB wire protocol.
    Mongodb,
    /// Cassandra CQL native protocol.
    Cassandra,
    /// Couchbase / memcached binary protocol.
    Couchbase,
    /// NTP (v3/v4).
    Ntp,
    /// DHCPv4.
    Dhcp,
    /// Apache ZooKeeper client protocol.
    Zookeeper,
    /// Oracle TNS (Net8).
    Tns,
    /// Microsoft SQL Server / Sybase Tabular Data Stream.
    Tds,
    /// Apache Spark RPC and block transfer (Netty transport).
    Spark,
    /// TFTP (request and data transfer).
    Tftp,
}

impl App {
    /// Every app, in declaration order.
    pub const ALL: &'static [App] = &[App::Unknown, App::Template, App::Http, App::Http2, App::Grpc, App::Tls, App::Dns, App::Ssh, App::Redis, App::Mysql, App::Postgresql, App::Echo, App::Kafka, App::Mongodb, App::Cassandra, App::Couchbase, App::Ntp, App::Dhcp, App::Zookeeper, App::Tns, App::Tds, App::Spark, App::Tftp];

    /// The app named `name` (as [`App::as_str`] writes it), if any.
    pub fn from_name(name: &str) -> Option<App> {
        App::ALL.iter().copied().find(|a| a.as_str() == name)
    }

    /// Name used in connection records and policy (`"unknown"`, `"http"`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            App::Unknown => "unknown",
            App::Template => "template",
            App::Http => "http",
            App::Http2 => "http2",
            App::Grpc => "grpc",
            App::Tls => "tls",
            App::Dns => "dns",
            App::Ssh => "ssh",
            App::Redis => "redis",
            App::Mysql => "mysql",
            App::Postgresql => "postgresql",
            App::Echo => "echo",
            App::Kafka => "kafka",
            App::Mongodb => "mongodb",
            App::Cassandra => "cassandra",
            App::Couchbase => "couchbase",
            App::Ntp => "ntp",
            App::Dhcp => "dhcp",
            App::Zookeeper => "zookeeper",
            App::Tns => "tns",
            App::Tds => "tds",
            App::Spark => "spark",
            App::Tftp => "tftp",
        }
    }
}

/// Transport a protocol runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP only.
    Tcp,
    /// UDP only.
    Udp,
    /// Both.
    Both,
}

/// Outcome of probing the first bytes of a direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Probe {
    /// These bytes are this protocol.
    Match,
    /// Not enough bytes to decide.
    NeedMore,
    /// Not this protocol.
    NoMatch,
}

/// Result of a pure parsing function over a byte slice (each protocol's `parser.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse<T> {
    /// A complete item and the bytes it took.
    Ok(T, usize),
    /// At least this many bytes are needed in total.
    Incomplete(usize),
    /// The bytes are not valid for the protocol (or exceed a cap).
    Invalid,
}

/// Outcome of feeding bytes to a parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feed {
    /// `n` bytes were consumed (whole messages); present the rest again with more data.
    Consumed(usize),
    /// `consumed` bytes were consumed and the next message needs at least `at_least` bytes in
    /// total (from the start of the unconsumed part) before it can be parsed.
    Need {
        /// Bytes consumed.
        consumed: usize,
        /// Minimum length of the unconsumed part worth presenting next.
        at_least: usize,
    },
    /// The parser has extracted what it wants (or gave up on this stream): stop feeding it.
    Done,
    /// The bytes from `consumed` on cannot be this protocol (the stream stopped being it): the
    /// engine drops the parser and detects the app again from there.
    Invalid {
        /// Bytes of valid messages before the invalid ones.
        consumed: usize,
    },
}

/// A set of apps (one bit per [`App`], by declaration order; every app fits, a unit test
/// checks).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct AppSet(pub u64);

impl AppSet {
    /// No app.
    pub const EMPTY: AppSet = AppSet(0);
    /// Every app.
    pub const ALL: AppSet = AppSet(u64::MAX >> (64 - App::ALL.len()));

    /// The set of `apps`.
    pub fn of(apps: &[App]) -> AppSet {
        apps.iter().fold(AppSet::EMPTY, |s, a| s.with(*a))
    }

    /// This set plus `app`.
    #[inline]
    pub const fn with(self, app: App) -> AppSet {
        AppSet(self.0 | 1u64 << (app as u32 & 63))
    }

    /// True when `app` is in the set.
    #[inline]
    pub const fn contains(self, app: App) -> bool {
        self.0 & (1u64 << (app as u32 & 63)) != 0
    }

    /// True when the sets share an app.
    #[inline]
    pub const fn intersects(self, other: AppSet) -> bool {
        self.0 & other.0 != 0
    }

    /// The apps of the set, in declaration order.
    pub fn iter(self) -> impl Iterator<Item = App> {
        App::ALL.iter().copied().filter(move |a| self.contains(*a))
    }
}

/// Bounded text for extracted fields: at most `N` bytes, truncated on a UTF-8 boundary, invalid
/// UTF-8 replaced.
pub type Text<const N: usize> = ArrayString<N>;

/// Builds a [`Text`] from wire bytes, truncating to `N` bytes: the first `4 N` bytes read as
/// `String::from_utf8_lossy` reads them (each invalid sequence one U+FFFD), the characters kept
/// up to the first that does not fit. Valid runs are copied whole (parsers call this for every
/// field they keep, so a copy per character showed in profiles).
pub fn text<const N: usize>(bytes: &[u8]) -> Text<N> {
    let mut out = ArrayString::<N>::new();
    for chunk in bytes[..bytes.len().min(N * 4)].utf8_chunks() {
        let valid = chunk.valid();
        let room = N - out.len();
        if valid.len() > room {
            let mut end = room;
            while !valid.is_char_boundary(end) {
                end -= 1;
            }
            out.push_str(&valid[..end]);
            return out;
        }
        out.push_str(valid);
        if !chunk.invalid().is_empty() && out.try_push(char::REPLACEMENT_CHARACTER).is_err() {
            return out;
        }
    }
    out
}

/// For parsers that read message heads and skip bodies by count: skips what is left of the
/// body (`*skip` bytes) from `data[*off..]`, advancing both. True when the body goes on past
/// `data` (the caller answers `Feed::Consumed(*off)`).
#[inline]
pub fn skip_body(skip: &mut u64, data: &[u8], off: &mut usize) -> bool {
    if *skip == 0 {
        return false;
    }
    let n = (*skip).min(data.len().saturating_sub(*off) as u64);
    *skip -= n;
    *off += n as usize;
    *skip > 0
}

/// For the same parsers: a gap of `len` bytes that falls inside the body being skipped only
/// shortens the skip (true: framing is intact); a longer one breaks the framing (false).
#[inline]
pub fn skip_gap(skip: &mut u64, len: usize) -> bool {
    match skip.checked_sub(len as u64) {
        Some(rest) => {
            *skip = rest;
            true
        }
        None => false,
    }
}

/// One protocol's per-session parser. See the module docs for the contract.
pub trait AppParser: Default + Clone + Send + 'static {
    /// The app this parser recognises.
    const APP: App;
    /// Ports that put this parser first among the candidates (ordering only).
    const PORTS: &'static [u16];
    /// Transport(s) it runs on.
    const TRANSPORT: Transport;
    /// Apps a session detected as this parser's may turn into without being detected again
    /// (HTTP/1 hands an h2c upgrade to HTTP/2, which [`AppParser::app`] refines to gRPC).
    /// Default: none.
    const BECOMES: &'static [App] = &[];

    /// Stateless probe of the first bytes of direction `dir` (for UDP: the first datagram).
    fn probe(dir: Dir, data: &[u8]) -> Probe;

    /// Feeds in-order bytes of `dir` (for UDP: exactly one datagram, which should be consumed
    /// whole).
    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed;

    /// `len` bytes of `dir` were lost. True when the parser still knows where its messages
    /// are (the bytes fell inside a body it was skipping, or it was not following the
    /// direction any more); false when the gap lost its framing: it can no longer validate
    /// what follows, and the engine reports the session's inspection as lost (an exception
    /// when the verdict depends on the app). Default: nothing to lose (datagram parsers, echo).
    fn gap(&mut self, _dir: Dir, _len: usize) -> bool {
        true
    }

    /// Bytes of direction `dir` the parser will consume next without reading them (the rest
    /// of a body whose length a header announced), once every byte presented so far was
    /// consumed: the XDP fast path may forward them in the kernel ([`crate::fastpath`]).
    /// `u64::MAX` for a body that runs until the connection closes. Default 0: every byte is
    /// read.
    fn opaque(&self, _dir: Dir) -> u64 {
        0
    }

    /// The app as refined by parsing (HTTP/2 becomes gRPC on `application/grpc`). Default
    /// [`AppParser::APP`].
    fn app(&self) -> App {
        Self::APP
    }

    /// Writes the record's `l7` fields (bounded). Called off the packet path.
    fn l7(&self, out: &mut Map<String, Value>);

    /// Takes the announcement of a *related flow* this session's last message asked for (a
    /// TFTP request announces its transfer, which the server sends from a new port): the
    /// data [`AppParser::from_related`] will need, at most [`crate::expect::RELATED_BYTES`]. The
    /// inspector registers it in the shared expectation table ([`crate::expect`]) keyed by this
    /// session's client endpoint and server address. Polled after every fed packet, so return
    /// `None` quickly; each announcement is returned once. Default: none.
    fn take_related(&mut self) -> Option<crate::expect::Related> {
        None
    }

    /// The state of a new session that is the related flow `e` announced (`e.data` is what
    /// [`AppParser::take_related`] returned): the session is opened already decided as
    /// [`AppParser::APP`] with this state. `None` (the default) lets normal detection run.
    fn from_related(_e: &crate::expect::Expectation) -> Option<Self> {
        None
    }

    /// Threats the parser's detectors found in this session (SQL injection in SQL text or HTTP
    /// requests). Default: none.
    fn threats(&self) -> Option<&crate::detect::Threats> {
        None
    }

    /// How this protocol is recognised in a session picked up mid-stream (its handshake not
    /// seen, its bytes starting inside a message): see [`midstream`]. Default: it is not.
    const MIDSTREAM: Option<midstream::Framing> = None;

    /// The state of a session detected mid-stream: fed from message boundaries
    /// ([`midstream`]), without the connection's handshake (no hello, login or greeting will
    /// come). Default: the fresh state.
    fn resumed() -> Self {
        Self::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` as first written: character by character from the lossy string.
    fn text_reference<const N: usize>(bytes: &[u8]) -> Text<N> {
        let mut out = ArrayString::<N>::new();
        for ch in String::from_utf8_lossy(&bytes[..bytes.len().min(N * 4)]).chars() {
            if out.try_push(ch).is_err() {
                break;
            }
        }
        out
    }

    #[test]
    fn text_keeps_what_the_lossy_reading_keeps() {
        let mut rng = testutil::Rng(7);
        let pieces: [&[u8]; 8] = [b"a", b"GET /", "é".as_bytes(), "€".as_bytes(), "😀".as_bytes(), b"\xff", b"\xe2\x82", b"\xf0\x9f\x98"];
        for _ in 0..20_000 {
            let mut b = Vec::new();
            for _ in 0..rng.below(24) {
                b.extend_from_slice(pieces[rng.below(pieces.len())]);
            }
            assert_eq!(text::<8>(&b), text_reference::<8>(&b), "{b:?}");
            assert_eq!(text::<13>(&b), text_reference::<13>(&b), "{b:?}");
            assert_eq!(text::<64>(&b), text_reference::<64>(&b), "{b:?}");
        }
    }

    #[test]
    fn skipping_bodies_across_segments_and_gaps() {
        let mut skip = 10u64;
        let mut off = 2;
        assert!(skip_body(&mut skip, &[0; 6], &mut off), "4 of 10 skipped, more to come");
        assert_eq!((skip, off), (6, 6));
        let mut off = 0;
        assert!(!skip_body(&mut skip, &[0; 9], &mut off));
        assert_eq!((skip, off), (0, 6), "the next message starts after the body");
        let mut off = 0;
        assert!(!skip_body(&mut skip, &[], &mut off));
        let mut skip = 5u64;
        assert!(skip_gap(&mut skip, 5));
        assert_eq!(skip, 0);
        assert!(!skip_gap(&mut skip, 1), "a gap past the body breaks framing");
    }

    #[test]
    fn every_app_fits_an_app_set() {
        assert!(App::ALL.len() <= 64);
        let all = AppSet::of(App::ALL);
        assert_eq!(all, AppSet::ALL);
        for (i, a) in App::ALL.iter().enumerate() {
            assert_eq!(*a as usize, i, "App::ALL is in declaration order");
            assert!(all.contains(*a) && !AppSet::EMPTY.contains(*a));
            assert_eq!(AppSet::EMPTY.with(*a).iter().collect::<Vec<_>>(), [*a]);
        }
        assert_eq!(all.iter().count(), App::ALL.len());
        assert!(AppSet::of(&[App::Http, App::Redis]).intersects(AppSet::EMPTY.with(App::Redis)));
        assert!(!AppSet::of(&[App::Http]).intersects(AppSet::EMPTY.with(App::Redis)));
    }

    #[test]
    fn every_registered_app_has_a_name_that_reads_back() {
        for c in engine::CANDIDATES {
            assert!(App::ALL.contains(&c.app), "{:?} missing from App::ALL", c.app);
        }
        for a in App::ALL {
            assert_eq!(App::from_name(a.as_str()), Some(*a));
        }
    }
}
