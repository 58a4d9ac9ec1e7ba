//! The detection engine: per-session app context, candidate probing, dispatch to the detected
//! parser, and the registry of parsers (one line per protocol in [`registry!`]).
//!
//! A new session gets an [`AppCtx`] from the core's pool (bounded; when empty the session is
//! forwarded uninspected and its record says `inspection: "bypassed"`). Until the app is known,
//! the in-order bytes of each direction (TCP, via [`Stream`]) or each datagram (UDP) are probed
//! by every remaining candidate, in port order; `NoMatch` removes a candidate, the first `Match`
//! decides, and the same bytes are then fed to the new parser. Detection gives up, leaving
//! `app: "unknown"`, after a bounded number of packets or bytes per direction.
//!
//! A TCP session picked up mid-stream (no SYN seen) is opened with [`Engine::open_midstream`]:
//! its bytes start anywhere, so first-message probes do not apply; the candidates that declare a
//! [`Framing`] ([`AppParser::MIDSTREAM`]) are looked for by [`super::midstream`] (turn
//! boundaries, length chains, bounded scanning), the parser starts at a message boundary of each
//! direction ([`AppParser::resumed`]), and when the content names the server the engine asks its
//! caller to swap the session's ends ([`Engine::take_flip`]).
//!
//! After detection the parser keeps validating: when it answers [`Feed::Invalid`] (the bytes
//! stopped being its protocol) the engine drops it, removes its candidate, remembers the app
//! as [`AppCtx::previous`] and runs detection again on the rest of the stream, at most
//! [`MAX_CHANGES`] times per session; the policy then decides again on the new app.
//!
//! Cost per byte: an undecided direction keeps its first bytes and presents them again with
//! each new segment (`Feed::Need { consumed: 0, at_least: len + 1 }`), so each remaining
//! candidate re-probes the prefix once per segment. That is bounded: at most
//! `detect_packets + 1` rounds per direction and detection phase (the packet count stops
//! detection), each over at most `detect_bytes`, so the probing of a direction costs at most
//! `(detect_packets + 1) × candidates` probe passes over each of its bytes, times
//! `MAX_CHANGES + 1` phases; [`Engine::probed`] counts the bytes probed (a unit test checks
//! the bound on one-byte segments).

use serde_json::{Map, Value};

#[allow(unused_imports)]
use super::AppParser;
use super::midstream::{Framing, Mid, Outcome, Role};
use super::{echo, App, AppSet, Dir, Feed, Probe, Transport};
use crate::expect::{Expectation, Related};
use crate::stream::{BufPool, Bypass, Sink, Stream};
use crate::wire::ipproto;

/// Limits of the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineLimits {
    /// Give up detection after this many payload-carrying packets in one direction.
    pub detect_packets: u32,
    /// Give up detection after this many bytes in one direction.
    pub detect_bytes: usize,
}

impl Default for EngineLimits {
    fn default() -> Self {
        EngineLimits { detect_packets: 16, detect_bytes: 8192 }
    }
}

/// One registered parser.
pub struct Candidate {
    /// Its app.
    pub app: App,
    /// Ports that put it first.
    pub ports: &'static [u16],
    /// Transport(s).
    pub transport: Transport,
    /// Its stateless probe.
    pub probe: fn(Dir, &[u8]) -> Probe,
    /// Creates its per-session state.
    pub make: fn() -> AppState,
    /// Creates the state of a related flow announced by another session
    /// ([`AppParser::from_related`]).
    pub related: fn(&Expectation) -> Option<AppState>,
    /// The apps a session may end up as once this candidate matched: its app and
    /// [`AppParser::BECOMES`].
    pub becomes: AppSet,
    /// How it is recognised mid-stream ([`AppParser::MIDSTREAM`]).
    pub framing: Option<Framing>,
    /// Creates its state for a session detected mid-stream ([`AppParser::resumed`]).
    pub resumed: fn() -> AppState,
}

/// `first` and `more` as a set (for the constant registry).
const fn set_of(first: App, more: &[App]) -> AppSet {
    let mut s = AppSet::EMPTY.with(first);
    let mut i = 0;
    while i < more.len() {
        s = s.with(more[i]);
        i += 1;
    }
    s
}

/// Most times a session's parser may reject the stream and detection run again; past it the
/// app stays `unknown` (decided).
pub const MAX_CHANGES: u8 = 4;

macro_rules! registry {
    ($($variant:ident => $ty:ty),* $(,)?) => {
        /// Per-session state of the detected parser.
        #[derive(Debug, Clone, Default)]
        pub enum AppState {
            /// No parser (detecting, unknown or bypassed).
            #[default]
            None,
            $(
                #[doc = concat!("State of [`", stringify!($ty), "`].")]
                $variant($ty),
            )*
        }

        /// Every registered parser, in registration order.
        pub const CANDIDATES: &[Candidate] = &[
            $(Candidate {
                app: <$ty as AppParser>::APP,
                ports: <$ty as AppParser>::PORTS,
                transport: <$ty as AppParser>::TRANSPORT,
                probe: <$ty as AppParser>::probe,
                make: || AppState::$variant(<$ty>::default()),
                related: |e| <$ty as AppParser>::from_related(e).map(AppState::$variant),
                becomes: set_of(<$ty as AppParser>::APP, <$ty as AppParser>::BECOMES),
                framing: <$ty as AppParser>::MIDSTREAM,
                resumed: || AppState::$variant(<$ty as AppParser>::resumed()),
            },)*
        ];

        #[allow(unused_variables)]
        impl AppState {
            fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
                match self {
                    AppState::None => Feed::Done,
                    $(AppState::$variant(p) => p.feed(dir, data),)*
                }
            }

            /// True when the parser kept its framing ([`AppParser::gap`]).
            fn gap(&mut self, dir: Dir, len: usize) -> bool {
                match self {
                    AppState::None => true,
                    $(AppState::$variant(p) => p.gap(dir, len),)*
                }
            }

            /// Bytes of `dir` the parser will skip unread ([`AppParser::opaque`]).
            fn opaque(&self, dir: Dir) -> u64 {
                match self {
                    AppState::None => 0,
                    $(AppState::$variant(p) => p.opaque(dir),)*
                }
            }

            /// The parser that takes over after a protocol switch, if any.
            fn successor(&self) -> Option<AppState> {
                #[allow(irrefutable_let_patterns)]
                if let AppState::Http(h) = self {
                    if h.h2c_switched() {
                        return Some(AppState::Http2(super::http2::Http2::after_upgrade(h)));
                    }
                }
                None
            }

            /// A related flow the parser announced ([`AppParser::take_related`]).
            fn take_related(&mut self) -> Option<Related> {
                match self {
                    AppState::None => None,
                    $(AppState::$variant(p) => p.take_related(),)*
                }
            }

            /// The registered app of the parser (before refinement).
            fn base_app(&self) -> App {
                match self {
                    AppState::None => App::Unknown,
                    $(AppState::$variant(_) => <$ty as AppParser>::APP,)*
                }
            }

            /// The app as refined by the parser.
            pub fn app(&self) -> App {
                match self {
                    AppState::None => App::Unknown,
                    $(AppState::$variant(p) => p.app(),)*
                }
            }

            /// Writes the parser's `l7` fields.
            pub fn l7(&self, out: &mut Map<String, Value>) {
                match self {
                    AppState::None => {}
                    $(AppState::$variant(p) => p.l7(out),)*
                }
            }

            /// The parser's threat detections, if any.
            pub fn threats(&self) -> Option<&crate::detect::Threats> {
                match self {
                    AppState::None => None,
                    $(AppState::$variant(p) => p.threats(),)*
                }
            }
        }
    };
}

/// Registers the parsers (one line each); the template joins them in tests only, so an invented
/// protocol never labels real traffic.
macro_rules! parsers {
    ($($variant:ident => $ty:ty),* $(,)?) => {
        #[cfg(test)]
        registry! { Template => super::template::Template, $($variant => $ty),* }
        #[cfg(not(test))]
        registry! { $($variant => $ty),* }
    };
}

parsers! {
    Http => super::http::Http,
    Http2 => super::http2::Http2,
    Redis => super::redis::Redis,
    Mysql => super::mysql::Mysql,
    Postgresql => super::postgresql::Postgresql,
    Tls => super::tls::Tls,
    Ssh => super::ssh::Ssh,
    Dns => super::dns::Dns,
    Echo => super::echo::Echo,
    Kafka => super::kafka::Kafka,
    Mongodb => super::mongodb::Mongodb,
    Cassandra => super::cassandra::Cassandra,
    Couchbase => super::couchbase::Couchbase,
    Ntp => super::ntp::Ntp,
    Dhcp => super::dhcp::Dhcp,
    Zookeeper => super::zookeeper::Zookeeper,
    Tns => super::tns::Tns,
    Tds => super::tds::Tds,
    Spark => super::spark::Spark,
    Tftp => super::tftp::Tftp,
}

/// Inspection status of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Inspection {
    /// Bytes are being probed or parsed.
    #[default]
    Active,
    /// Detection ended (app known or given up) and the parser needs nothing more.
    Done,
    /// Inspection stopped for a reason; the session is still forwarded and counted.
    Bypassed(BypassReason),
}

/// Why inspection of a session stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// A stream cap was hit.
    Stream(Bypass),
    /// No app context was free on this core.
    PoolFull,
}

impl BypassReason {
    /// Name used in connection records.
    pub fn as_str(self) -> &'static str {
        match self {
            BypassReason::Stream(b) => b.as_str(),
            BypassReason::PoolFull => "inspection_pool_full",
        }
    }
}

/// Why a session's detection ended with app `unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnknownReason {
    /// Every candidate rejected the bytes.
    NoMatch,
    /// The detection window (packets or bytes per direction) ended undecided.
    Limit,
    /// Bytes were lost before detection decided.
    Gap,
    /// The session's verdict hung on its app and the bytes could no longer be any app the
    /// policy allows ([`Engine::decide_unknown`]).
    NoAllowedApp,
    /// The stream stopped being its detected protocol more than [`MAX_CHANGES`] times.
    Changes,
}

impl UnknownReason {
    /// Name used in connection records.
    pub fn as_str(self) -> &'static str {
        match self {
            UnknownReason::NoMatch => "no_match",
            UnknownReason::Limit => "detect_limit",
            UnknownReason::Gap => "gap",
            UnknownReason::NoAllowedApp => "no_allowed_app",
            UnknownReason::Changes => "too_many_changes",
        }
    }
}

/// Everything the engine keeps for one session.
#[derive(Debug, Default)]
pub struct AppCtx {
    /// Detected app (Unknown while detecting or after giving up).
    pub app: App,
    /// Session packets seen when the app was decided.
    pub detected_after: u32,
    /// Parser state.
    pub state: AppState,
    /// True once detection ended (decided or gave up).
    pub decided: bool,
    /// The app the session was detected as before its parser last rejected the stream
    /// ([`Feed::Invalid`]); `Unknown` while that never happened.
    pub previous: App,
    /// Times a parser rejected the stream and detection ran again.
    pub changes: u8,
    /// Why the app is `unknown` although detection ended (None while detecting or detected).
    pub unknown_reason: Option<UnknownReason>,
    /// A gap (the out-of-order limit skipped a hole) made the detected parser lose its
    /// framing: inspection is lost ([`Inspection::Bypassed`], `out_of_order_limit`).
    pub lost: bool,
    /// Mid-stream detection ([`super::midstream`]; off for sessions whose handshake was seen).
    pub mid: Mid,
    remaining: u64,
    detect_packets: [u32; 2],
    /// Both directions' first bytes, for echo recognition ([`echo::Mirror`]).
    head: echo::Mirror,
    streams: [Stream; 2],
}

/// True when the server's first bytes repeat the client's first bytes and are not a greeting of
/// a protocol that both sides open identically (two OpenSSH peers of one version send the same
/// identification line): no other parser's probe claims them as the server's side.
pub fn echoes(client_head: &[u8], server_first: &[u8]) -> bool {
    echo::mirrors(client_head, server_first) && !claimed(server_first)
}

/// True when another parser's probe claims `server_first` as the server's side of its
/// protocol (a greeting both sides send alike), which then is no echo.
fn claimed(server_first: &[u8]) -> bool {
    CANDIDATES.iter().any(|c| c.app != App::Echo && (c.probe)(Dir::ToClient, server_first) == Probe::Match)
}

/// What a report needs of a session's app context (cloned off the packet path).
#[derive(Debug, Clone, Default)]
pub struct AppSummary {
    /// App.
    pub app: App,
    /// Packets until detection (0 when not detected).
    pub detected_after: u32,
    /// Inspection status.
    pub inspection: Inspection,
    /// Parser state, for the `l7` object.
    pub state: AppState,
    /// Overlapping TCP bytes that differed, both directions.
    pub overlaps_differ: u32,
    /// Retransmitted TCP bytes that could not be compared with what was inspected.
    pub unverified: u32,
    /// Urgent bytes taken out of band, both directions.
    pub urgent_bytes: u32,
    /// Gaps in the TCP streams, both directions.
    pub gaps: u32,
    /// The app before the stream last stopped being it ([`AppCtx::previous`]).
    pub previous: App,
    /// Re-detections ([`AppCtx::changes`]).
    pub changes: u8,
    /// Why the app is `unknown` ([`AppCtx::unknown_reason`]).
    pub unknown_reason: Option<UnknownReason>,
}

impl AppCtx {
    fn reset(&mut self, proto: u8, server_port: u16) {
        self.app = App::Unknown;
        self.detected_after = 0;
        self.state = AppState::None;
        self.decided = false;
        self.previous = App::Unknown;
        self.changes = 0;
        self.unknown_reason = None;
        self.lost = false;
        self.mid = Mid::default();
        self.detect_packets = [0; 2];
        self.head = echo::Mirror::default();
        self.streams = Default::default();
        let tcp = proto == ipproto::TCP;
        let mut mask = 0u64;
        for (i, c) in CANDIDATES.iter().enumerate().take(64) {
            let ok = match c.transport {
                Transport::Both => true,
                Transport::Tcp => tcp,
                Transport::Udp => proto == ipproto::UDP,
            };
            if ok {
                mask |= 1 << i;
            }
        }
        self.remaining = mask;
        let _ = server_port;
    }

    /// Inspection status.
    pub fn inspection(&self) -> Inspection {
        for s in &self.streams {
            if let Some(b) = s.bypass {
                return Inspection::Bypassed(BypassReason::Stream(b));
            }
        }
        if self.lost {
            // Gaps come from the out-of-order limit (the stream skips the hole).
            return Inspection::Bypassed(BypassReason::Stream(Bypass::OutOfOrder));
        }
        if self.decided && self.streams.iter().all(|s| s.finished()) && self.app != App::Unknown {
            return Inspection::Done;
        }
        if self.decided && self.app == App::Unknown {
            return Inspection::Done;
        }
        Inspection::Active
    }

    /// The report view.
    pub fn summary(&self) -> AppSummary {
        AppSummary {
            app: self.app,
            detected_after: self.detected_after,
            inspection: self.inspection(),
            state: self.state.clone(),
            overlaps_differ: self.streams.iter().map(|s| s.overlaps_differ).sum(),
            unverified: self.streams.iter().map(|s| s.unverified).sum(),
            urgent_bytes: self.streams.iter().map(|s| s.urgent_bytes).sum(),
            gaps: self.streams.iter().map(|s| s.gaps).sum(),
            previous: self.previous,
            changes: self.changes,
            unknown_reason: self.unknown_reason,
        }
    }
}

/// The per-core engine: the app context pool and the stream buffer pool.
pub struct Engine {
    ctxs: Vec<AppCtx>,
    free: Vec<u32>,
    bufs: BufPool,
    limits: EngineLimits,
    /// Sessions bypassed because the pool was empty.
    pub pool_full: u64,
    /// Bytes presented to probes (each probe call counts its input), for the detection cost
    /// bound (see the module docs).
    pub probed: u64,
    /// Times a parser rejected its stream and detection ran again.
    pub redetections: u64,
    /// The threats of parsers dropped by re-detection (context, their detections merged),
    /// until [`Engine::take_dropped_threats`]: a parser can record a threat in the same feed
    /// that answers [`Feed::Invalid`] (an oversized TLS record), and the threat stage reads
    /// parsers' threats only after the feed.
    dropped_threats: Option<(u32, crate::detect::Threats)>,
}

/// Limits and sizes of an [`Engine`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineConfig {
    /// Sessions inspected at once per core.
    pub max_sessions: usize,
    /// Per-direction stream buffer cap (bytes).
    pub stream_session_cap: usize,
    /// Per-core stream buffer cap (bytes).
    pub stream_core_cap: usize,
    /// Detection limits.
    pub limits: EngineLimits,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_sessions: 16384,
            stream_session_cap: 64 * 1024,
            stream_core_cap: 64 << 20,
            limits: EngineLimits::default(),
        }
    }
}

/// Ordering of candidates for a server port: those listing the port first.
fn ordered(server_port: u16) -> impl Iterator<Item = (usize, &'static Candidate)> {
    let first = CANDIDATES.iter().enumerate().filter(move |(_, c)| c.ports.contains(&server_port));
    let rest = CANDIDATES.iter().enumerate().filter(move |(_, c)| !c.ports.contains(&server_port));
    first.chain(rest)
}

struct Detector<'a> {
    ctx_app: &'a mut App,
    decided: &'a mut bool,
    detected_after: &'a mut u32,
    remaining: &'a mut u64,
    state: &'a mut AppState,
    head: &'a mut echo::Mirror,
    previous: &'a mut App,
    changes: &'a mut u8,
    unknown_reason: &'a mut Option<UnknownReason>,
    lost: &'a mut bool,
    mid: &'a mut Mid,
    detect_packets: &'a mut [u32; 2],
    probed: &'a mut u64,
    redetections: &'a mut u64,
    /// [`Engine`]'s slot for the threats of parsers this detector drops, and its context.
    dropped_threats: &'a mut Option<(u32, crate::detect::Threats)>,
    idx: u32,
    limits: EngineLimits,
    dir: Dir,
    server_port: u16,
    session_packets: u32,
}

impl Detector<'_> {
    /// Shows the bytes presented to detection (a direction's unconsumed stream bytes, or a
    /// datagram) to the echo check: the server repeating the client's first bytes is an echo
    /// service whatever the client's bytes looked like (a probe may already have matched them).
    fn mirror(&mut self, bytes: &[u8], datagram: bool) {
        if self.head.observe(self.dir, bytes, datagram, claimed) && !matches!(self.state, AppState::Echo(_)) {
            let mut e = echo::Echo::default();
            e.feed(Dir::ToServer, self.head.client_head());
            *self.state = AppState::Echo(e);
            *self.ctx_app = App::Echo;
            *self.decided = true;
            *self.unknown_reason = None;
            *self.detected_after = self.session_packets;
        }
    }

    /// Probes the candidates on `bytes`; returns the feed result for the stream.
    fn detect(&mut self, bytes: &[u8], datagram: bool) -> Feed {
        if self.mid.on && !datagram {
            return self.detect_mid(bytes);
        }
        if !*self.decided {
            let mut matched = None;
            for (i, c) in ordered(self.server_port) {
                if *self.remaining & (1 << i) == 0 {
                    continue;
                }
                *self.probed += bytes.len() as u64;
                match (c.probe)(self.dir, bytes) {
                    Probe::Match => {
                        matched = Some(c);
                        break;
                    }
                    Probe::NoMatch => *self.remaining &= !(1 << i),
                    Probe::NeedMore => {}
                }
            }
            match matched {
                Some(c) => {
                    *self.state = (c.make)();
                    *self.ctx_app = c.app;
                    *self.decided = true;
                    *self.detected_after = self.session_packets;
                }
                None => {
                    let packets = self.detect_packets[self.dir as usize];
                    let exhausted = *self.remaining == 0
                        || packets > self.limits.detect_packets
                        || bytes.len() > self.limits.detect_bytes
                        || datagram && packets >= self.limits.detect_packets;
                    if exhausted {
                        *self.decided = true;
                        *self.unknown_reason =
                            Some(if *self.remaining == 0 { UnknownReason::NoMatch } else { UnknownReason::Limit });
                        return Feed::Done;
                    }
                    // Keep everything and present it again with more bytes.
                    return if datagram {
                        Feed::Consumed(bytes.len())
                    } else {
                        Feed::Need { consumed: 0, at_least: bytes.len() + 1 }
                    };
                }
            }
        }
        self.feed_parser(bytes, datagram)
    }

    /// Feeds the decided parser (the direction translated while a mid-stream session waits
    /// for its ends to be swapped, [`Mid::flip`]).
    fn feed_parser(&mut self, bytes: &[u8], datagram: bool) -> Feed {
        let pdir = if self.mid.flip { self.dir.flip() } else { self.dir };
        let mut r = self.state.feed(pdir, bytes);
        if r == Feed::Done {
            // A protocol switch (HTTP/1.1 `Upgrade: h2c` answered by 101): the old parser
            // stopped without consuming the new protocol's bytes; its successor takes them.
            if let Some(next) = self.state.successor() {
                *self.state = next;
                r = self.state.feed(pdir, bytes);
            }
        }
        if let Feed::Invalid { consumed } = r {
            return self.redetect(bytes, consumed, datagram);
        }
        if matches!(self.state, AppState::None) {
            return Feed::Done;
        }
        *self.ctx_app = self.state.app();
        r
    }

    /// Mid-stream detection and synchronisation ([`super::midstream`]): until the direction is
    /// synchronised its bytes go to the walks, then to the parser from a message start.
    fn detect_mid(&mut self, bytes: &[u8]) -> Feed {
        let dir = self.dir;
        if self.mid.synced(dir) {
            return if *self.decided && matches!(self.state, AppState::None) { Feed::Done } else { self.feed_parser(bytes, false) };
        }
        self.mid.present(dir, bytes);
        let limits = (self.limits.detect_packets, self.limits.detect_bytes);
        loop {
            match self.mid.search(dir, bytes, limits) {
                Outcome::Keep(k) => {
                    return if k >= bytes.len() {
                        Feed::Consumed(bytes.len())
                    } else {
                        Feed::Need { consumed: k, at_least: bytes.len() - k + 1 }
                    };
                }
                Outcome::GiveUp => {
                    *self.decided = true;
                    *self.unknown_reason = Some(UnknownReason::Limit);
                    *self.detected_after = self.session_packets;
                    return Feed::Done;
                }
                Outcome::Found { cand, at, role, start, first } => {
                    let c = &CANDIDATES[cand];
                    *self.state = if first { (c.make)() } else { (c.resumed)() };
                    *self.ctx_app = c.app;
                    *self.decided = true;
                    *self.unknown_reason = None;
                    *self.detected_after = self.session_packets;
                    self.mid.choose(cand);
                    self.orient(role);
                    if start {
                        return self.synced_at(bytes, at);
                    }
                }
                Outcome::Synced { at, role } => {
                    self.orient(role);
                    return self.synced_at(bytes, at);
                }
            }
        }
    }

    /// The content says `role` sent this direction's bytes: the first such evidence fixes the
    /// orientation ([`Mid::flip`] when the guess was wrong), later evidence is ignored.
    fn orient(&mut self, role: Role) {
        let want = match role {
            Role::Client => Dir::ToServer,
            Role::Server => Dir::ToClient,
            Role::Either => return,
        };
        if !self.mid.oriented {
            self.mid.oriented = true;
            self.mid.flip = want != self.dir;
        }
    }

    /// The direction's messages start at `bytes[at..]`: the parser is fed from there on.
    fn synced_at(&mut self, bytes: &[u8], at: usize) -> Feed {
        self.mid.set_synced(self.dir);
        let at = at.min(bytes.len());
        match self.feed_parser(&bytes[at..], false) {
            Feed::Consumed(n) => Feed::Consumed(at + n),
            Feed::Need { consumed, at_least } => Feed::Need { consumed: at + consumed, at_least },
            Feed::Done => Feed::Done,
            Feed::Invalid { consumed } => Feed::Invalid { consumed: at + consumed },
        }
    }

    /// The parser rejected `bytes[consumed..]`: drop it and its candidate, and detect the app
    /// again from there (the answer is for all of `bytes`).
    fn redetect(&mut self, bytes: &[u8], consumed: usize, datagram: bool) -> Feed {
        if let Some(t) = self.state.threats().filter(|t| !t.is_empty()) {
            match self.dropped_threats {
                Some((i, kept)) if *i == self.idx => kept.absorb(t),
                _ => *self.dropped_threats = Some((self.idx, *t)),
            }
        }
        let rejected = self.state.base_app();
        if let Some(i) = CANDIDATES.iter().position(|c| c.app == rejected) {
            *self.remaining &= !(1u64 << i);
            if self.mid.on {
                self.mid.restart(self.dir, i);
            }
        }
        *self.previous = self.state.app();
        *self.state = AppState::None;
        *self.ctx_app = App::Unknown;
        *self.lost = false;
        *self.changes = self.changes.saturating_add(1);
        *self.redetections += 1;
        if *self.changes > MAX_CHANGES {
            *self.decided = true;
            *self.unknown_reason = Some(UnknownReason::Changes);
            return Feed::Done;
        }
        *self.decided = false;
        // A fresh detection window for both directions; this packet is its first.
        *self.detect_packets = [0; 2];
        self.detect_packets[self.dir as usize] = 1;
        let consumed = consumed.min(bytes.len());
        let rest = &bytes[consumed..];
        if rest.is_empty() {
            return Feed::Consumed(consumed);
        }
        match self.detect(rest, datagram) {
            Feed::Consumed(n) => Feed::Consumed(consumed + n),
            Feed::Need { consumed: n, at_least } => Feed::Need { consumed: consumed + n, at_least },
            // `detect` answers a parser's `Invalid` itself.
            Feed::Done | Feed::Invalid { .. } => Feed::Done,
        }
    }
}

impl Sink for Detector<'_> {
    fn data(&mut self, bytes: &[u8]) -> Feed {
        self.mirror(bytes, false);
        let r = self.detect(bytes, false);
        // The stream drops what was consumed: the echo check's offset follows it.
        match r {
            Feed::Consumed(n) | Feed::Need { consumed: n, .. } => self.head.consumed(self.dir, n),
            Feed::Done | Feed::Invalid { .. } => {}
        }
        r
    }

    fn gap(&mut self, len: usize) {
        self.head.gap(self.dir);
        if self.mid.on && !self.mid.synced(self.dir) {
            // Not following messages yet: the walks start over after the hole.
            self.mid.gap(self.dir, len);
            return;
        }
        if *self.decided {
            // A hole the parser cannot frame across: what follows is not validated any more
            // (and the hole, retransmitted later, would pass as a retransmission).
            if !self.state.gap(self.dir, len) {
                *self.lost = true;
            }
        } else {
            // Detection cannot continue across a hole in the first bytes.
            *self.decided = true;
            *self.unknown_reason = Some(UnknownReason::Gap);
        }
    }
}

impl Engine {
    /// An engine with all contexts allocated now.
    pub fn new(cfg: EngineConfig) -> Self {
        let n = cfg.max_sessions.max(1);
        Engine {
            ctxs: (0..n).map(|_| AppCtx::default()).collect(),
            free: (0..n as u32).rev().collect(),
            bufs: BufPool::new(cfg.stream_core_cap, cfg.stream_session_cap),
            limits: cfg.limits,
            pool_full: 0,
            probed: 0,
            redetections: 0,
            dropped_threats: None,
        }
    }

    /// Takes a context for a new session; `None` when the pool is empty (counted).
    pub fn open(&mut self, proto: u8, server_port: u16) -> Option<u32> {
        let Some(i) = self.free.pop() else {
            self.pool_full += 1;
            return None;
        };
        self.ctxs[i as usize].reset(proto, server_port);
        Some(i)
    }

    /// Takes a context for a new TCP session picked up mid-stream (no SYN seen, first frame not
    /// a SYN|ACK): detection by framing ([`super::midstream`]), not by the probes of first
    /// messages; no echo (the first bytes seen are not the first bytes sent). `None` when the
    /// pool is empty (counted).
    pub fn open_midstream(&mut self, proto: u8, server_port: u16) -> Option<u32> {
        let i = self.open(proto, server_port)?;
        let c = &mut self.ctxs[i as usize];
        c.mid = Mid::open();
        c.remaining = c.mid.candidates();
        c.head.stop();
        Some(i)
    }

    /// True (once) when the content of mid-stream session `idx` showed its guessed client is
    /// the server ([`Mid::flip`]): the engine's directions are swapped now, and the caller
    /// swaps the session's ends.
    pub fn take_flip(&mut self, idx: u32) -> bool {
        let Some(c) = self.ctxs.get_mut(idx as usize) else { return false };
        if !c.mid.flip {
            return false;
        }
        c.streams.swap(0, 1);
        c.detect_packets.swap(0, 1);
        c.mid.swap();
        true
    }

    /// Takes a context for a new session that is the related flow `e` announced: the app is
    /// decided at once (`detected_after` = 1, the session's first packet) with the state
    /// [`AppParser::from_related`] builds; when that parser declines, detection runs as for
    /// [`Engine::open`]. `None` when the pool is empty (counted).
    pub fn open_related(&mut self, proto: u8, server_port: u16, e: &Expectation) -> Option<u32> {
        let i = self.open(proto, server_port)?;
        let c = &mut self.ctxs[i as usize];
        if let Some(state) = CANDIDATES.get(usize::from(e.parser)).and_then(|cand| (cand.related)(e)) {
            c.app = state.app();
            c.state = state;
            c.decided = true;
            c.detected_after = 1;
        }
        Some(i)
    }

    /// The related flow the session's parser announced since the last call, with the index of
    /// its parser in [`CANDIDATES`] (see [`AppParser::take_related`]).
    pub fn take_related(&mut self, idx: u32) -> Option<(u8, Related)> {
        let c = self.ctxs.get_mut(idx as usize)?;
        let data = c.state.take_related()?;
        let app = c.state.base_app();
        let parser = CANDIDATES.iter().position(|cand| cand.app == app)?;
        Some((u8::try_from(parser).ok()?, data))
    }

    /// Returns a context (session ended and reported).
    pub fn close(&mut self, idx: u32) {
        if let Some(c) = self.ctxs.get_mut(idx as usize) {
            for s in &mut c.streams {
                s.release(&mut self.bufs);
            }
            c.state = AppState::None;
            self.free.push(idx);
        }
    }

    /// The context `idx`.
    pub fn ctx(&self, idx: u32) -> &AppCtx {
        &self.ctxs[idx as usize]
    }

    /// True when session `idx` may still be detected as one of `apps` from the bytes seen so
    /// far: while detecting, some remaining candidate (one no probe of either direction has
    /// rejected) may end up as one of them ([`Candidate::becomes`]), or echo is among them and
    /// the server has not spoken yet (echo is told by the server's first bytes, not by a
    /// probe). Once decided: whether the app is one of them. False while detecting again with
    /// a direction whose stream the previous parser had finished: its bytes are no longer
    /// probed, so nothing says they could be one of them.
    pub fn may_become(&self, idx: u32, apps: AppSet) -> bool {
        let Some(c) = self.ctxs.get(idx as usize) else { return false };
        if c.decided {
            return apps.contains(c.app);
        }
        if c.streams.iter().any(|s| s.finished()) {
            return false;
        }
        if apps.contains(App::Echo) && c.head.watching() {
            return true;
        }
        CANDIDATES
            .iter()
            .enumerate()
            .take(64)
            .any(|(i, cand)| c.remaining & (1u64 << i) != 0 && cand.becomes.intersects(apps))
    }

    /// Ends detection of session `idx` now with app `unknown` ([`UnknownReason::NoAllowedApp`]:
    /// whatever other candidates think, the bytes can no longer be an app the policy allows);
    /// `session_packets` are the session's packets so far. No-op once decided.
    pub fn decide_unknown(&mut self, idx: u32, session_packets: u32) {
        let Some(c) = self.ctxs.get_mut(idx as usize) else { return };
        if c.decided {
            return;
        }
        c.decided = true;
        c.app = App::Unknown;
        c.state = AppState::None;
        c.remaining = 0;
        c.detected_after = session_packets;
        c.unknown_reason = Some(UnknownReason::NoAllowedApp);
        // Echo can no longer be recognised either.
        c.head.stop();
        for s in &mut c.streams {
            s.release(&mut self.bufs);
        }
    }

    /// True when nothing of session `idx` will be read any more, in either direction:
    /// detection ended, no echo check pending, and no parser, or both streams finished (the
    /// parser said done, or inspection was bypassed). The XDP fast path may then forward
    /// everything ([`crate::fastpath`]).
    pub fn inspection_over(&self, idx: u32) -> bool {
        let Some(c) = self.ctxs.get(idx as usize) else { return false };
        c.decided
            && !c.lost
            && !c.head.watching()
            && !c.mid.on
            && (matches!(c.state, AppState::None) || c.streams.iter().all(|s| s.finished()))
    }

    /// As [`Self::inspection_over`], except that the echo check still waits for the server's
    /// first bytes (the client's are all it needs, [`echo::Mirror::awaits_server`]): nothing
    /// more of the client's direction will be read, the server's first bytes will.
    pub fn over_but_echo(&self, idx: u32, datagram: bool) -> bool {
        let Some(c) = self.ctxs.get(idx as usize) else { return false };
        c.decided
            && !c.lost
            && !c.mid.on
            && c.head.awaits_server(datagram)
            && (matches!(c.state, AppState::None) || c.streams.iter().all(|s| s.finished()))
    }

    /// The opaque run ahead in direction `dir` of TCP session `idx`: `(next, len)` when its
    /// parser will consume the next `len` bytes, from sequence number `next`, without reading
    /// them ([`AppParser::opaque`]) and the stream holds nothing (every byte before `next`
    /// was read). The XDP fast path may forward payload within that run in the kernel.
    pub fn opaque_run(&self, idx: u32, dir: Dir) -> Option<(u32, u64)> {
        let c = self.ctxs.get(idx as usize)?;
        if !c.decided || c.lost || c.mid.on || c.head.watching() {
            return None;
        }
        let s = &c.streams[dir as usize];
        if !s.idle() {
            return None;
        }
        let n = c.state.opaque(dir);
        (n > 0).then(|| (s.next().unwrap_or(0), n))
    }

    /// The XDP fast path may have forwarded direction `dir`'s payload up to sequence number
    /// `hi` without Warden seeing it ([`Stream::skip_until`]).
    pub fn tcp_skip_until(&mut self, idx: u32, dir: Dir, hi: u32) {
        if let Some(c) = self.ctxs.get_mut(idx as usize) {
            c.streams[dir as usize].skip_until(hi);
        }
    }

    /// App contexts free in the pool (sessions that can still be inspected).
    pub fn free_contexts(&self) -> usize {
        self.free.len()
    }

    /// The threats of the parsers of context `idx` that re-detection dropped since the last
    /// call (merged), so that a threat recorded in the feed that ended a parser is not lost.
    /// Clears what another context left (nothing took it: its session went on without the
    /// threat stage).
    #[inline]
    pub fn take_dropped_threats(&mut self, idx: u32) -> Option<crate::detect::Threats> {
        if self.dropped_threats.is_none() {
            return None;
        }
        match self.dropped_threats.take() {
            Some((i, t)) if i == idx => Some(t),
            _ => None,
        }
    }

    /// The parser state of context `idx`.
    pub fn state(&self, idx: u32) -> &AppState {
        &self.ctx(idx).state
    }

    /// The parser state of context `idx`, for what a parser learned that the pipeline takes
    /// (DNS answers for `fqdn` rules).
    pub fn state_mut(&mut self, idx: u32) -> &mut AppState {
        &mut self.ctxs[idx as usize].state
    }

    /// Bytes held in stream buffers on this core.
    pub fn buffered(&self) -> usize {
        self.bufs.in_use()
    }

    /// Bytes kept for conflict checks on this core ([`crate::stream`]).
    pub fn kept(&self) -> usize {
        self.bufs.kept()
    }

    /// The receiver of direction `dir` acknowledged everything before `ack`.
    pub fn tcp_ack(&mut self, idx: u32, dir: Dir, ack: u32) {
        if let Some(c) = self.ctxs.get_mut(idx as usize) {
            c.streams[dir as usize].acked(ack, &mut self.bufs);
        }
    }

    /// True when an urgent mark on `seq` of direction `dir` would move an earlier one
    /// ([`Stream::urgent_moves_mark`]).
    pub fn tcp_urgent_moves_mark(&self, idx: u32, dir: Dir, seq: u32) -> bool {
        self.ctxs.get(idx as usize).is_some_and(|c| c.streams[dir as usize].urgent_moves_mark(seq))
    }

    /// An urgent mark on the byte at `seq` of direction `dir` ([`Stream::urgent`]).
    pub fn tcp_urgent(&mut self, idx: u32, dir: Dir, seq: u32) {
        if let Some(c) = self.ctxs.get_mut(idx as usize) {
            c.streams[dir as usize].urgent(seq);
        }
    }

    /// The server's SYN|ACK acknowledged `ack`: when the client's SYN carried data and the
    /// server did not take it (`ack` = ISN + 1, no TCP Fast Open), the client sends those
    /// bytes again, maybe different ones; detection starts over from `ack` so that what is
    /// inspected is what the server reads. True when it started over.
    pub fn tcp_syn_acked(&mut self, idx: u32, client: Dir, ack: u32, proto: u8, server_port: u16) -> bool {
        let Some(c) = self.ctxs.get_mut(idx as usize) else { return false };
        if c.streams[client.flip() as usize].next().is_some() {
            // The server's stream started: this SYN|ACK is a retransmission, long after the
            // handshake; what was inspected since stands.
            return false;
        }
        let s = &c.streams[client as usize];
        let Some(next) = s.next() else { return false };
        if next == ack || (ack.wrapping_sub(next) as i32) > 0 {
            return false;
        }
        for s in &mut c.streams {
            s.release(&mut self.bufs);
        }
        c.reset(proto, server_port);
        c.streams[client as usize].start(ack);
        c.head.syn(client);
        true
    }

    /// A TCP SYN from `dir` with sequence `seq`: the stream starts at `seq + 1`.
    pub fn tcp_syn(&mut self, idx: u32, dir: Dir, seq: u32) {
        let c = &mut self.ctxs[idx as usize];
        if c.streams[dir as usize].next().is_none() {
            // The direction's bytes start at their real start (echo recognition).
            c.head.syn(dir);
        }
        c.streams[dir as usize].start(seq.wrapping_add(1));
    }

    /// Counts a detection packet of `dir` and builds the detector for it, with the direction's
    /// stream and the buffer pool; `None` when the session needs no more inspection.
    fn begin(
        &mut self,
        idx: u32,
        dir: Dir,
        server_port: u16,
        session_packets: u32,
    ) -> Option<(Detector<'_>, &mut Stream, &mut BufPool)> {
        let Engine { ctxs, bufs, limits, probed, redetections, dropped_threats, .. } = self;
        let c = ctxs.get_mut(idx as usize)?;
        // A session given up as unknown still shows its first bytes to the echo check.
        let echo_pending = c.head.watching();
        if c.decided && matches!(c.state, AppState::None) && !echo_pending {
            return None;
        }
        let d = dir as usize;
        if !c.decided {
            c.detect_packets[d] = c.detect_packets[d].saturating_add(1);
        }
        let AppCtx {
            app,
            decided,
            detected_after,
            remaining,
            state,
            detect_packets,
            head,
            streams,
            previous,
            changes,
            unknown_reason,
            lost,
            mid,
        } = c;
        let det = Detector {
            ctx_app: app,
            decided,
            detected_after,
            remaining,
            state,
            head,
            previous,
            changes,
            unknown_reason,
            lost,
            mid,
            detect_packets,
            probed,
            redetections,
            dropped_threats,
            idx,
            limits: *limits,
            dir,
            server_port,
            session_packets,
        };
        Some((det, &mut streams[d], bufs))
    }

    /// A TCP segment with payload.
    ///
    /// Returns how many of its bytes differ from bytes already inspected ([`Stream::segment`]).
    pub fn tcp_segment(&mut self, idx: u32, dir: Dir, seq: u32, payload: &[u8], server_port: u16, session_packets: u32) -> u32 {
        match self.begin(idx, dir, server_port, session_packets) {
            Some((mut det, stream, bufs)) => stream.segment(seq, payload, bufs, &mut det),
            None => 0,
        }
    }

    /// A UDP datagram's payload. A datagram parser that is done stays done; its state is kept
    /// for the report.
    pub fn datagram(&mut self, idx: u32, dir: Dir, payload: &[u8], server_port: u16, session_packets: u32) {
        if payload.is_empty() {
            return;
        }
        if let Some((mut det, _, _)) = self.begin(idx, dir, server_port, session_packets) {
            det.mirror(payload, true);
            det.detect(payload, true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_detected_across_segments_and_parsed() {
        let mut e = Engine::new(EngineConfig { max_sessions: 2, ..EngineConfig::default() });
        let i = e.open(ipproto::TCP, 1234).unwrap();
        e.tcp_syn(i, Dir::ToServer, 99);
        e.tcp_segment(i, Dir::ToServer, 100, b"WT", 1234, 2);
        assert_eq!(e.ctx(i).app, App::Unknown);
        e.tcp_segment(i, Dir::ToServer, 102, b"PL\x01\x00\x02hi", 1234, 3);
        let c = e.ctx(i);
        assert_eq!((c.app, c.detected_after), (App::Template, 3));
        let mut m = Map::new();
        c.state.l7(&mut m);
        assert_eq!(m["first_payload"], "hi");
        e.close(i);
        assert_eq!(e.buffered(), 0);
    }

    #[test]
    fn echo_is_recognised_by_mirrored_bytes_only() {
        use crate::app::testutil::corpus_flows;
        for f in corpus_flows("echo.pcap") {
            let (c, s) = match f.proto {
                6 => (f.to_server.clone(), f.to_client.clone()),
                _ => (f.datagrams[0].1.clone(), f.datagrams[1].1.clone()),
            };
            assert!(echoes(&c[..c.len().min(echo::HEAD)], &s), "{f:?}");
        }
        for file in ["http.pcap", "redis.pcap", "dns.pcap", "ssh.pcap", "mysql.pcap", "tls.pcap", "postgresql.pcap"] {
            for f in corpus_flows(file) {
                let (c, s) = (&f.to_server, &f.to_client);
                if !c.is_empty() && !s.is_empty() {
                    assert!(!echoes(&c[..c.len().min(echo::HEAD)], s), "{file}");
                }
            }
        }
        // Through the engine, on a port no parser lists, TCP and UDP.
        let mut e = Engine::new(EngineConfig { max_sessions: 3, ..EngineConfig::default() });
        let t = e.open(ipproto::TCP, 40007).unwrap();
        e.tcp_syn(t, Dir::ToServer, 0);
        e.tcp_syn(t, Dir::ToClient, 0);
        e.tcp_segment(t, Dir::ToServer, 1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 40007, 3);
        assert_eq!(e.ctx(t).app, App::Http);
        e.tcp_segment(t, Dir::ToClient, 1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 40007, 4);
        assert_eq!(e.ctx(t).app, App::Echo);
        // The same bytes in a session picked up mid-stream (no SYN): not compared.
        let m = e.open(ipproto::TCP, 40007).unwrap();
        e.tcp_segment(m, Dir::ToServer, 1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 40007, 1);
        e.tcp_segment(m, Dir::ToClient, 1, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 40007, 2);
        assert_ne!(e.ctx(m).app, App::Echo);
        let u = e.open(ipproto::UDP, 40007).unwrap();
        e.datagram(u, Dir::ToServer, b"ping-1\n", 40007, 1);
        e.datagram(u, Dir::ToClient, b"ping-1\n", 40007, 2);
        let c = e.ctx(u);
        assert_eq!((c.app, c.detected_after), (App::Echo, 2));
    }

    #[test]
    fn context_size_is_bounded() {
        // The pool is allocated at start: keep a context small enough that the default pool
        // (16384 per worker) stays in the tens of MiB.
        let size = std::mem::size_of::<AppCtx>();
        eprintln!("AppCtx: {size} bytes");
        assert!(size <= 4096, "AppCtx grew to {size} bytes");
    }

    #[test]
    fn h2c_upgrade_hands_the_session_to_http2() {
        let mut e = Engine::new(EngineConfig { max_sessions: 1, ..EngineConfig::default() });
        let i = e.open(ipproto::TCP, 8080).unwrap();
        e.tcp_syn(i, Dir::ToServer, 0);
        e.tcp_syn(i, Dir::ToClient, 0);
        let req = b"GET /up HTTP/1.1\r\nHost: h2.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
        e.tcp_segment(i, Dir::ToServer, 1, req, 8080, 3);
        assert_eq!(e.ctx(i).app, App::Http);
        let mut resp = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec();
        resp.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        e.tcp_segment(i, Dir::ToClient, 1, &resp, 8080, 4);
        let mut preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
        e.tcp_segment(i, Dir::ToServer, 1 + req.len() as u32, &preface, 8080, 5);
        let c = e.ctx(i);
        assert_eq!(c.app, App::Http2);
        let mut m = Map::new();
        c.state.l7(&mut m);
        assert_eq!(m["path"], "/up", "{m:?}");
        assert_eq!(m["upgrade"], "h2c", "{m:?}");
    }

    /// Random bytes and unrelated line protocols sent to every registered protocol's own ports
    /// stay `unknown`: ports only order candidates, content decides.
    #[test]
    fn foreign_bytes_on_standard_ports_stay_unknown() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random = |n: usize| -> Vec<u8> {
            (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect()
        };
        let mut inputs: Vec<(Vec<u8>, Vec<u8>)> = vec![
            (b"EHLO mail.example.test\r\n".to_vec(), b"220 mail.example.test ESMTP\r\n".to_vec()),
            (b"USER anonymous\r\n".to_vec(), b"+OK POP3 ready\r\n".to_vec()),
            (b"{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n".to_vec(), b"{\"result\":1}\n".to_vec()),
            (b"HELLO\r\n".to_vec(), b"WELCOME\r\n".to_vec()),
            (b"stats\r\n".to_vec(), b"STAT pid 1\r\nEND\r\n".to_vec()),
        ];
        for n in [1, 7, 64, 600, 3000] {
            inputs.push((random(n), random(n)));
        }
        let ports: Vec<u16> = CANDIDATES.iter().filter(|c| c.app != App::Template).flat_map(|c| c.ports.iter().copied()).collect();
        assert!(ports.len() >= 8);
        for &port in &ports {
            for (client, server) in &inputs {
                for proto in [ipproto::TCP, ipproto::UDP] {
                    let mut e = Engine::new(EngineConfig { max_sessions: 1, ..EngineConfig::default() });
                    let i = e.open(proto, port).unwrap();
                    if proto == ipproto::TCP {
                        e.tcp_segment(i, Dir::ToServer, 1, client, port, 3);
                        e.tcp_segment(i, Dir::ToClient, 1, server, port, 4);
                    } else {
                        e.datagram(i, Dir::ToServer, client, port, 1);
                        e.datagram(i, Dir::ToClient, server, port, 2);
                    }
                    let app = e.ctx(i).app;
                    assert_eq!(app, App::Unknown, "port {port} proto {proto}: {:?}", String::from_utf8_lossy(&client[..client.len().min(40)]));
                }
            }
        }
    }

    /// A stream that stops being its detected protocol is detected again from the rejected
    /// bytes on: HTTP then RESP becomes Redis (previous app HTTP), in one segment or two.
    #[test]
    fn a_rejected_stream_is_detected_again() {
        let req = b"GET / HTTP/1.0\r\n\r\n";
        let resp = b"*1\r\n$4\r\nPING\r\n";
        for split in [true, false] {
            let mut e = Engine::new(EngineConfig { max_sessions: 1, ..EngineConfig::default() });
            let i = e.open(ipproto::TCP, 8080).unwrap();
            e.tcp_syn(i, Dir::ToServer, 0);
            if split {
                e.tcp_segment(i, Dir::ToServer, 1, req, 8080, 3);
                assert_eq!((e.ctx(i).app, e.ctx(i).changes), (App::Http, 0));
                e.tcp_segment(i, Dir::ToServer, 1 + req.len() as u32, resp, 8080, 4);
            } else {
                e.tcp_segment(i, Dir::ToServer, 1, &[&req[..], resp].concat(), 8080, 3);
            }
            let c = e.ctx(i);
            assert_eq!((c.app, c.previous, c.changes, c.decided), (App::Redis, App::Http, 1, true));
            let mut m = Map::new();
            c.state.l7(&mut m);
            assert_eq!(m["commands"][0], "PING", "{m:?}");
            e.tcp_segment(i, Dir::ToClient, 1, b"+PONG\r\n", 8080, 5);
            assert_eq!(e.ctx(i).app, App::Redis, "the server's answer is Redis too");
            assert_eq!(e.redetections, 1);
        }
        // Rejected bytes no candidate takes: unknown (undecided, then given up), never HTTP again.
        let mut e = Engine::new(EngineConfig { max_sessions: 1, ..EngineConfig::default() });
        let i = e.open(ipproto::TCP, 8080).unwrap();
        e.tcp_segment(i, Dir::ToServer, 1, req, 8080, 3);
        let mut seq = 1 + req.len() as u32;
        for _ in 0..20 {
            e.tcp_segment(i, Dir::ToServer, seq, b"\x01\x02", 8080, 4);
            seq += 2;
        }
        let c = e.ctx(i);
        assert_eq!((c.app, c.previous, c.decided), (App::Unknown, App::Http, true));
        assert!(matches!(c.unknown_reason, Some(UnknownReason::NoMatch | UnknownReason::Limit)), "{:?}", c.unknown_reason);
        // UDP: a datagram that cannot be DNS after DNS; past MAX_CHANGES the app stays unknown.
        let mut e = Engine::new(EngineConfig { max_sessions: 1, ..EngineConfig::default() });
        let i = e.open(ipproto::UDP, 53).unwrap();
        let query = crate::app::testutil::corpus_flows("dns.pcap")
            .into_iter()
            .find(|f| f.proto == 17)
            .map(|f| f.datagrams[0].1.clone())
            .unwrap();
        e.datagram(i, Dir::ToServer, &query, 53, 1);
        assert_eq!(e.ctx(i).app, App::Dns);
        e.datagram(i, Dir::ToServer, b"\x01", 53, 2);
        assert_eq!((e.ctx(i).app, e.ctx(i).previous, e.ctx(i).decided), (App::Unknown, App::Dns, false));
        let j = e.open(ipproto::UDP, 53);
        assert!(j.is_none());
        e.close(i);
        let i = e.open(ipproto::UDP, 53).unwrap();
        e.datagram(i, Dir::ToServer, &query, 53, 1);
        e.ctxs[i as usize].changes = MAX_CHANGES;
        e.datagram(i, Dir::ToServer, b"\x01", 53, 2);
        let c = e.ctx(i);
        assert_eq!((c.app, c.decided, c.unknown_reason), (App::Unknown, true, Some(UnknownReason::Changes)));
    }

    /// Every parser keeps validating after detection: a real flow of its protocol from the
    /// corpus, fed in capture order, then another protocol's bytes from the client, is detected
    /// again (previous app: the flow's). SSH is validated until its keys change (it is not here:
    /// the corpus flows reach the encrypted part), echo has no syntax; bytes inside a message a
    /// length announced (a DNS-over-TCP message RESP's `*1` announces as 10801 bytes) are
    /// judged when the message is complete.
    #[test]
    fn every_parser_rejects_other_bytes_after_detection() {
        use crate::app::testutil::corpus_flows;
        let resp: &[u8] = b"*1\r\n$4\r\nPING\r\n";
        let http: &[u8] = b"POST / HTTP/1.1\r\nHost: a\r\n\r\n";
        let files = [
            "http.pcap", "redis.pcap", "tls.pcap", "tls12.pcap", "mysql.pcap", "postgresql.pcap", "kafka.pcap",
            "mongodb.pcap", "cassandra.pcap", "couchbase-sdk.pcap", "couchbase-memcached-binary.pcap",
            "zookeeper.pcap", "tns.pcap", "tds.pcap", "spark.pcap", "grpc.pcap", "dns.pcap", "ntp.pcap",
            "dhcp.pcap", "tftp.pcap",
        ];
        let mut validated: std::collections::BTreeMap<&str, (u32, u32)> = Default::default();
        for file in files {
            for f in corpus_flows(file) {
                let mut e = Engine::new(EngineConfig { max_sessions: 1, ..EngineConfig::default() });
                let i = e.open(f.proto, f.server_port).unwrap();
                let mut next = [1u32; 2];
                let mut n = 0;
                if f.proto == ipproto::TCP {
                    for (d, seg) in &f.segments {
                        n += 1;
                        e.tcp_segment(i, *d, next[*d as usize], seg, f.server_port, n);
                        next[*d as usize] = next[*d as usize].wrapping_add(seg.len() as u32);
                    }
                } else {
                    for (d, dg) in &f.datagrams {
                        n += 1;
                        e.datagram(i, *d, dg, f.server_port, n);
                    }
                }
                let app = e.ctx(i).app;
                if app == App::Unknown || e.ctx(i).changes > 0 {
                    continue;
                }
                // grpcio allows 4 MiB frames: RESP reads as a smaller (ignored) frame there.
                let other = if matches!(app, App::Redis | App::Grpc) { http } else { resp };
                if f.proto == ipproto::TCP {
                    e.tcp_segment(i, Dir::ToServer, next[0], other, f.server_port, n + 1);
                } else {
                    e.datagram(i, Dir::ToServer, other, f.server_port, n + 1);
                }
                let c = e.ctx(i);
                let v = validated.entry(app.as_str()).or_default();
                v.1 += 1;
                if c.changes == 1 && c.previous == app && c.app != app {
                    v.0 += 1;
                }
            }
        }
        eprintln!("validated (changed, flows): {validated:?}");
        for (app, (changed, flows)) in &validated {
            assert!(*changed > 0, "{app}: none of {flows} flows noticed the switch");
        }
        for app in ["http", "redis", "tls", "mysql", "postgresql", "kafka", "mongodb", "cassandra", "couchbase", "zookeeper", "tns", "tds", "spark", "grpc", "dns", "ntp", "dhcp", "tftp"] {
            assert!(validated.contains_key(app), "no {app} flow: {validated:?}");
        }
    }

    /// A hole the out-of-order limit skips after detection: inside a body the parser keeps its
    /// framing; across a message head it cannot validate what follows, and inspection is lost.
    #[test]
    fn a_gap_the_parser_cannot_frame_across_loses_inspection() {
        let post = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n";
        for (hole_at, hole, lost) in [(post.len() + 10, 20, false), (post.len() + 100, 20, true)] {
            let mut e = Engine::new(EngineConfig { max_sessions: 1, ..EngineConfig::default() });
            let i = e.open(ipproto::TCP, 80).unwrap();
            e.tcp_syn(i, Dir::ToServer, 0);
            e.tcp_segment(i, Dir::ToServer, 1, post, 80, 3);
            let mut body = vec![b'x'; 100];
            body.extend_from_slice(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
            e.tcp_segment(i, Dir::ToServer, 1 + post.len() as u32, &body[..hole_at - post.len()], 80, 4);
            // Nine segments beyond the hole: the ninth makes the stream skip it.
            let mut seq = 1 + (hole_at + hole) as u32;
            for k in 0..9 {
                e.tcp_segment(i, Dir::ToServer, seq, b"zz", 80, 5 + k);
                seq += 2;
            }
            let c = e.ctx(i);
            assert_eq!(c.app, App::Http);
            assert_eq!(c.lost, lost, "hole at {hole_at}");
            let want = if lost {
                Inspection::Bypassed(BypassReason::Stream(Bypass::OutOfOrder))
            } else {
                Inspection::Active
            };
            assert_eq!(c.inspection(), want);
        }
    }

    /// What a pending policy decision asks of the engine: may the bytes seen still become one
    /// of these apps?
    #[test]
    fn may_become_follows_the_candidates_and_echo() {
        let mut e = Engine::new(EngineConfig { max_sessions: 2, ..EngineConfig::default() });
        let http = AppSet::EMPTY.with(App::Http);
        let i = e.open(ipproto::TCP, 8080).unwrap();
        assert!(e.may_become(i, http) && e.may_become(i, AppSet::EMPTY.with(App::Grpc)));
        e.tcp_syn(i, Dir::ToServer, 0);
        e.tcp_syn(i, Dir::ToClient, 0);
        e.tcp_segment(i, Dir::ToServer, 1, b"GE", 8080, 3);
        assert!(e.may_become(i, http), "a prefix of a request");
        e.tcp_segment(i, Dir::ToServer, 3, b"\x00", 8080, 4);
        assert!(!e.may_become(i, http), "no request has a NUL there");
        assert!(!e.ctx(i).decided);
        assert!(e.may_become(i, AppSet::EMPTY.with(App::Echo)), "an echo server may still mirror");
        e.decide_unknown(i, 4);
        let c = e.ctx(i);
        assert_eq!((c.app, c.decided, c.unknown_reason), (App::Unknown, true, Some(UnknownReason::NoAllowedApp)));
        assert!(!e.may_become(i, http) && e.may_become(i, AppSet::EMPTY.with(App::Unknown)));
        assert_eq!(e.buffered(), 0, "its buffers are returned");
        // The server mirroring the client afterwards is not an echo any more.
        e.tcp_segment(i, Dir::ToClient, 1, b"GE\x00", 8080, 5);
        assert_eq!(e.ctx(i).app, App::Unknown);
        // Decided sessions: their app.
        let j = e.open(ipproto::TCP, 8080).unwrap();
        e.tcp_segment(j, Dir::ToServer, 1, b"GET / HTTP/1.1\r\n\r\n", 8080, 3);
        assert!(e.may_become(j, http) && !e.may_become(j, AppSet::EMPTY.with(App::Redis)));
    }

    /// Undecided bytes are presented again with each segment; the probing stays within
    /// `(detect_packets + 1) × candidates` passes over each byte whatever the segmentation.
    #[test]
    fn detection_cost_per_byte_is_bounded() {
        let limits = EngineLimits::default();
        let candidates = CANDIDATES.len() as u64;
        for seg in [1usize, 7, 100, 1000] {
            let mut e = Engine::new(EngineConfig { max_sessions: 1, ..EngineConfig::default() });
            let i = e.open(ipproto::TCP, 8080).unwrap();
            // An inline Redis command that never ends keeps Redis (and others) undecided.
            let mut bytes = b"SET k ".to_vec();
            bytes.resize(limits.detect_bytes * 2, b'v');
            let mut delivered = 0u64;
            for (k, chunk) in bytes.chunks(seg).enumerate() {
                e.tcp_segment(i, Dir::ToServer, 1 + (k * seg) as u32, chunk, 8080, k as u32 + 1);
                delivered += chunk.len() as u64;
                if e.ctx(i).decided {
                    break;
                }
            }
            assert!(e.ctx(i).decided, "detection ended");
            let bound = (u64::from(limits.detect_packets) + 1) * candidates * delivered;
            assert!(e.probed <= bound, "seg {seg}: probed {} bytes for {delivered} delivered", e.probed);
            assert!(e.probed > 0);
        }
    }

    #[test]
    fn unknown_after_limits_and_pool_bound() {
        let mut e = Engine::new(EngineConfig {
            max_sessions: 1,
            limits: EngineLimits { detect_packets: 3, detect_bytes: 100 },
            ..EngineConfig::default()
        });
        let i = e.open(ipproto::TCP, 80).unwrap();
        assert!(e.open(ipproto::TCP, 80).is_none());
        assert_eq!(e.pool_full, 1);
        let mut seq = 1;
        for _ in 0..10 {
            e.tcp_segment(i, Dir::ToServer, seq, b"zzzz", 80, 1);
            seq += 4;
        }
        let c = e.ctx(i);
        assert!(c.decided);
        assert_eq!((c.app, c.inspection()), (App::Unknown, Inspection::Done));
        e.close(i);
        assert_eq!(e.buffered(), 0);
    }
}

/// Runs every registered parser on arbitrary `data` (fuzzing entry point): both probes, then
/// feeding through the stream engine's buffering in both directions split at a point derived
/// from the data, a gap, a related flow's state when the parser announced one, and the `l7`
/// output. Must never panic.
pub fn exercise_all(data: &[u8]) {
    for c in CANDIDATES {
        exercise_candidate(c, data);
    }
}

/// As [`exercise_all`] for the parser of `app` only (per-parser fuzz targets). Unregistered
/// apps do nothing.
pub fn exercise(app: App, data: &[u8]) {
    for c in CANDIDATES.iter().filter(|c| c.app == app) {
        exercise_candidate(c, data);
    }
}

fn exercise_candidate(c: &Candidate, data: &[u8]) {
    let split = data.first().map(|b| usize::from(*b) % (data.len() + 1)).unwrap_or(0);
    let (a, b) = data.split_at(split);
    if let Some(f) = c.framing {
        // Mid-stream heads at every offset of the first bytes, at and off a boundary, and the
        // resumed parser on both halves.
        for at in 0..data.len().min(64) {
            for boundary in [true, false] {
                if let super::midstream::Head::Msg(m) = (f.head)(&data[at..], boundary) {
                    let prev = super::midstream::Prev { key: m.key, len: u16::try_from(m.len).unwrap_or(u16::MAX), ends: m.ends };
                    let _ = (f.follows)(prev, &m);
                }
            }
        }
        let mut resumed = (c.resumed)();
        let _ = resumed.feed(Dir::ToClient, b);
        let _ = resumed.feed(Dir::ToServer, a);
        let mut m = Map::new();
        resumed.l7(&mut m);
    }
    {
        let _ = (c.probe)(Dir::ToServer, data);
        let _ = (c.probe)(Dir::ToClient, data);
        let mut state = (c.make)();
        for (dir, bytes) in [(Dir::ToServer, a), (Dir::ToClient, b), (Dir::ToServer, b), (Dir::ToClient, a)] {
            // Present growing prefixes the way the stream engine does.
            let mut off = 0;
            let mut end = bytes.len().min(off + 1 + bytes.len() / 3);
            while off < bytes.len() {
                match state.feed(dir, &bytes[off..end]) {
                    Feed::Consumed(n) => off += n.min(end - off),
                    Feed::Need { consumed, .. } => off += consumed.min(end - off),
                    Feed::Done | Feed::Invalid { .. } => break,
                }
                if end == bytes.len() {
                    break;
                }
                end = bytes.len().min(end + 1 + bytes.len() / 3);
            }
        }
        state.gap(Dir::ToServer, 7);
        let _ = state.feed(Dir::ToServer, a);
        // A related flow the parser announced (a TFTP transfer) opens with its state and is fed
        // the other part, both ways.
        if let Some(data) = state.take_related() {
            let flow = crate::flow::Addr::v4([198, 18, 0, 1]);
            let e = Expectation {
                zone: 0,
                proto: ipproto::UDP,
                parser: 0,
                client: flow,
                client_port: 1024,
                server: flow,
                server_port: 69,
                expires_ns: 0,
                data,
            };
            if let Some(mut rel) = (c.related)(&e) {
                let _ = rel.feed(Dir::ToClient, b);
                let _ = rel.feed(Dir::ToServer, b);
                let mut m = Map::new();
                rel.l7(&mut m);
            }
        }
        let mut m = Map::new();
        state.l7(&mut m);
        let _ = state.app();
    }
}

#[cfg(test)]
mod smoke_fuzz {
    use super::*;
    use crate::app::testutil::corpus_flows;

    /// Deterministic mutations of real corpus bytes through every parser (the CI-run share of
    /// the `app_parsers` fuzz target).
    #[test]
    fn mutated_corpus_bytes_never_panic_any_parser() {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut runs = 0;
        for file in ["http.pcap", "tls.pcap", "dns.pcap", "ssh.pcap", "redis.pcap", "mysql.pcap", "postgresql.pcap", "grpc.pcap", "tftp.pcap"] {
            for f in corpus_flows(file).iter().take(3) {
                let mut seeds: Vec<Vec<u8>> = vec![f.to_server.clone(), f.to_client.clone()];
                seeds.extend(f.datagrams.iter().map(|(_, d)| d.clone()));
                for seed in seeds.iter().filter(|s| !s.is_empty()) {
                    let seed = &seed[..seed.len().min(4096)];
                    exercise_all(seed);
                    for _ in 0..60 {
                        let mut m = seed.to_vec();
                        for _ in 0..(1 + rnd() % 8) {
                            let i = (rnd() as usize) % m.len();
                            match rnd() % 4 {
                                0 => m[i] = rnd() as u8,
                                1 => m.truncate(i.max(1)),
                                2 => m[i] = 0xff,
                                _ => m.insert(i, rnd() as u8),
                            }
                        }
                        exercise_all(&m);
                        runs += 1;
                    }
                }
            }
        }
        assert!(runs > 500, "only {runs} mutated inputs");
    }
}
