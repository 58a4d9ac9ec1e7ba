//! Mid-stream detection: the app of a TCP session picked up without its handshake (Warden
//! started or restarted while the connection was open, asymmetric routing), whose bytes in each
//! direction start at an unknown position, usually inside a message.
//!
//! Protocols that can be recognised so describe their framing ([`Framing`],
//! [`crate::app::AppParser::MIDSTREAM`]): a function that reads a message head at a given
//! position ([`Framing::head`]) and says how long the message is, and a rule for which head may
//! follow which ([`Framing::follows`]). Per direction, [`Mid`] looks for heads in three ways,
//! each byte examined a bounded number of times:
//!
//! - **Turn boundaries.** In request/response protocols a side starts a message when it starts
//!   talking after the other side talked (and a connection idle when Warden started resumes at
//!   a message). The first bytes of a direction and the bytes a direction sends after the other
//!   direction sent some are tried as a message head with `boundary = true`: protocols whose
//!   heads are only plausible there (HTTP request and status lines, Kafka requests and
//!   responses) answer only at boundaries. A boundary is held (its bytes kept by the stream
//!   engine) for at most 4 × `detect_packets` presentations and `detect_bytes` bytes (heads
//!   are read whole there: an HTTP head is a few segments). The protocols without a framing
//!   (Redis, MySQL, Cassandra, SSH, ...) are tried there with the probes of their first
//!   messages, as at the start of a connection: a connection idle when Warden started resumes
//!   with a command or request. Bytes inside a message can look like one (a direction's first
//!   bytes are not always a message start); the parser then rejects what follows and detection
//!   runs again, but what it skipped as a message body is not inspected again.
//! - **Chains.** A head gives the message length, so the next head's position is known: the
//!   bytes in between are skipped without being kept or looked at, and the head there must
//!   [`Framing::follows`] the previous one. [`Framing::chain`] heads in a row prove the
//!   protocol (TLS records: content type, version, length; TDS packets: type, status, SPID,
//!   packet id).
//! - **Scanning.** Until the direction's chain is found, every offset of its first
//!   [`SCAN_BYTES`] bytes is tried (`boundary = false`); heads reject on their first bytes, so
//!   this costs a few comparisons per byte and candidate.
//!
//! A head can also prove the protocol alone ([`Msg::proof`]: a complete HTTP head at a
//! boundary, a TDS SQL batch with its ALL_HEADERS and UTF-16 text) or by answering a request
//! the other direction sent ([`Msg::answers`] equal to a [`Msg::request`] id: Kafka correlation
//! ids). After the proof the parser starts at the first head that starts a message
//! ([`Msg::starts`], or a chained head after one that ended a message); the other direction is
//! synchronised the same way for the detected protocol only (a head that starts a message at a
//! turn boundary, in a chain of two, or one that proves), and its bytes before that are not
//! parsed.
//!
//! **Orientation.** A mid-stream session's client is a guess (the higher port). When the proving
//! head says which side sent it ([`Msg::role`]: an HTTP response, a TDS tabular result, a Kafka
//! response matched to a request), the session's ends are swapped if the guess was wrong — once
//! per session ([`Mid::oriented`]), only for sessions picked up mid-stream; the inspector does
//! the swap ([`Mid::flip`]) and evaluates the policy again. The port guess is no safer: both
//! ports are chosen by whoever opened the connection. What keeps an attacker who skips the
//! handshake from choosing its own direction is the exception policy: protect mode drops
//! mid-stream sessions by default (`[sessions] midstream`, [`crate::exception`]) and they are
//! never inspected nor oriented there.
//!
//! Give-up: after [`MAX_TURNS`] turn boundaries without a proof the app is `unknown`
//! (`detect_limit`). A direction that never turns (a long download) stays undecided at the cost
//! of one call per segment once its scan budget is spent, so the next request on the
//! connection can still be recognised.

use super::Dir;

/// Most candidates with a framing (the engine's registry has fewer; a unit test checks).
pub const MAX_MID: usize = 6;
/// Bytes of each direction in which every offset is tried as a head while undecided.
pub const SCAN_BYTES: u32 = 256 * 1024;
/// Turn boundaries (both directions) tried before mid-stream detection gives up.
pub const MAX_TURNS: u16 = 32;

/// Which side sends a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Role {
    /// Either side (TLS records).
    #[default]
    Either,
    /// Only clients send it (a request).
    Client,
    /// Only servers send it (a response).
    Server,
}

/// A message head found in a direction's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Msg {
    /// Bytes of the whole message, head included (0: not length-framed; the head can only
    /// prove, not chain).
    pub len: u32,
    /// What [`Framing::follows`] compares (protocol-defined: TLS version, TDS type, SPID and
    /// packet id).
    pub key: u32,
    /// Which side sends such a message.
    pub role: Role,
    /// A request id the other direction's answer carries (Kafka correlation id).
    pub request: Option<u32>,
    /// The request id this message answers.
    pub answers: Option<u32>,
    /// The head alone proves the protocol.
    pub proof: bool,
    /// A message starts at this head (parsers can be fed from it); a chained head starts one
    /// when the previous head [`Msg::ends`] one.
    pub starts: bool,
    /// The message ends with this head's length (false: more packets of it follow, TDS).
    pub ends: bool,
}

/// What [`Framing::head`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    /// No head of the protocol starts here.
    No,
    /// A prefix of one: at least this many bytes (from the head's start) are needed.
    Need(usize),
    /// A head.
    Msg(Msg),
}

/// What [`Framing::follows`] knows of the previous head.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Prev {
    /// Its [`Msg::key`].
    pub key: u32,
    /// Its [`Msg::len`] (saturated at 65535).
    pub len: u16,
    /// Its [`Msg::ends`].
    pub ends: bool,
}

/// How a protocol is recognised mid-stream (see the module docs).
#[derive(Debug, Clone, Copy)]
pub struct Framing {
    /// Reads a head at the start of the bytes (`true`: at a turn boundary). Must decide on
    /// the first bytes when it can (it is tried at every offset) and never panic.
    pub head: fn(&[u8], bool) -> Head,
    /// True when the head may follow the previous one in the same direction.
    pub follows: fn(Prev, &Msg) -> bool,
    /// Heads in a row that prove the protocol (0: chains never prove).
    pub chain: u8,
}

/// One candidate's walk in one direction (16 bytes: a context holds 12).
#[derive(Debug, Clone, Copy, Default)]
struct Walk {
    /// Stream offset of the next head (when `chain > 0`).
    next: u32,
    /// The latest request id this direction sent (when `has_id`).
    id: u32,
    /// The previous head.
    prev: Prev,
    /// Heads in a row (0: scanning).
    chain: u8,
    has_id: bool,
}

/// One direction's offsets (bytes since the first byte presented, wrapping).
#[derive(Debug, Clone, Copy, Default)]
struct MidDir {
    /// Offset of the first byte presented next.
    base: u32,
    /// Offset past the last byte presented.
    seen: u32,
    /// Next offset to scan.
    scan: u32,
    /// Offsets scanned.
    scanned: u32,
    /// A turn boundary being tried, and its presentations so far.
    boundary: Option<u32>,
    tries: u16,
    /// The other direction sent bytes since this one last did.
    turn: bool,
    /// The parser is fed this direction's bytes.
    synced: bool,
}

/// What [`Mid::search`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing yet: the first `n` presented bytes are consumed, keep the rest.
    Keep(usize),
    /// Candidate `cand` (index in [`crate::app::engine::CANDIDATES`]) is proved by the head at
    /// presented byte `at`, sent by `role`; `start`: a message starts there; `first`: its
    /// first-message probe matched at a turn boundary (the parser starts in its fresh state,
    /// not [`crate::app::AppParser::resumed`]).
    Found {
        /// Registry index.
        cand: usize,
        /// Byte of the presented bytes.
        at: usize,
        /// Who sent it.
        role: Role,
        /// A message starts there.
        start: bool,
        /// Matched by the candidate's probe of first messages.
        first: bool,
    },
    /// The detected protocol's messages start at presented byte `at`: feed the parser. `role`:
    /// who sent the head there, when it says (orientation evidence after detection).
    Synced {
        /// Byte of the presented bytes.
        at: usize,
        /// Who sent it.
        role: Role,
    },
    /// [`MAX_TURNS`] passed without a proof.
    GiveUp,
}

/// Per-session mid-stream state (part of the engine's app context).
#[derive(Debug, Clone, Copy, Default)]
pub struct Mid {
    /// The session is detected mid-stream.
    pub on: bool,
    /// The content fixed which side is the server (at most once).
    pub oriented: bool,
    /// The ends must be swapped ([`crate::app::engine::Engine::take_flip`]); until then the
    /// parser is fed with directions swapped.
    pub flip: bool,
    /// Candidates (bit: mid index) still possible.
    mask: u8,
    /// Registry candidates whose first-message probes are tried at turn boundaries.
    probes: u64,
    /// Detection decided.
    decided: bool,
    /// The detected candidate's mid index (`None` for one without a framing: the other
    /// direction is then synchronised at its next turn boundary).
    chosen: Option<u8>,
    /// Turn boundaries tried while undecided.
    turns: u16,
    dirs: [MidDir; 2],
    walks: [[Walk; MAX_MID]; 2],
}

/// The registry's candidates with a framing, in registry order (built at compile time, so the
/// walks do not filter the registry at every offset).
struct Framed {
    n: usize,
    cand: [usize; MAX_MID],
    framing: [Option<Framing>; MAX_MID],
}

const FRAMED: Framed = {
    let mut t = Framed { n: 0, cand: [0; MAX_MID], framing: [None; MAX_MID] };
    let mut i = 0;
    while i < super::engine::CANDIDATES.len() {
        if let Some(f) = super::engine::CANDIDATES[i].framing {
            if t.n < MAX_MID {
                t.cand[t.n] = i;
                t.framing[t.n] = Some(f);
                t.n += 1;
            }
        }
        i += 1;
    }
    t
};

/// The candidates with a framing: (mid index, registry index, framing).
fn framed() -> impl Iterator<Item = (usize, usize, Framing)> {
    (0..FRAMED.n).filter_map(|m| FRAMED.framing[m].map(|f| (m, FRAMED.cand[m], f)))
}

/// `x` lies in `base..base + n` (wrapping offsets).
#[inline]
fn within(x: u32, base: u32, n: u32) -> bool {
    x.wrapping_sub(base) < n
}

impl Mid {
    /// The state of a session picked up mid-stream: every framed candidate possible, the
    /// first bytes of each direction a boundary.
    pub fn open() -> Mid {
        let mut m = Mid { on: true, ..Mid::default() };
        for (i, _, _) in framed() {
            m.mask |= 1 << i;
        }
        // First-message probes for the protocols without a framing (a framed protocol is held
        // to its framing, which is stricter than the probe of its first message).
        for (i, c) in super::engine::CANDIDATES.iter().enumerate().take(64) {
            if c.transport != super::Transport::Udp && c.app != super::App::Echo && c.framing.is_none() {
                m.probes |= 1 << i;
            }
        }
        for d in &mut m.dirs {
            d.turn = true;
        }
        m
    }

    /// The registry indices of the candidates still possible (a mask over
    /// [`crate::app::engine::CANDIDATES`]).
    pub fn candidates(&self) -> u64 {
        framed().filter(|(m, _, _)| self.mask & (1 << m) != 0).fold(self.probes, |acc, (_, i, _)| acc | 1 << i)
    }

    /// True when the parser is fed `dir`'s bytes.
    pub fn synced(&self, dir: Dir) -> bool {
        self.dirs[dir as usize].synced
    }

    /// The parser is fed `dir`'s bytes from now on.
    pub fn set_synced(&mut self, dir: Dir) {
        self.dirs[dir as usize].synced = true;
    }

    /// Swaps the directions (the inspector swapped the session's ends).
    pub fn swap(&mut self) {
        self.dirs.swap(0, 1);
        self.walks.swap(0, 1);
        self.flip = false;
    }

    /// `len` bytes of `dir` were lost: its walks start over after them.
    pub fn gap(&mut self, dir: Dir, len: usize) {
        let d = &mut self.dirs[dir as usize];
        let at = d.seen.wrapping_add(len as u32);
        d.base = at;
        d.seen = at;
        d.scan = at;
        d.boundary = None;
        for w in &mut self.walks[dir as usize] {
            w.chain = 0;
        }
    }

    /// The detected parser (registry index `cand`) rejected `dir`'s bytes: detection starts
    /// again without it. A direction the parser was fed starts over (its offsets were not
    /// followed; the rejected bytes are a boundary); a direction still walked keeps its walks
    /// (they never depended on the rejected parser).
    pub fn restart(&mut self, dir: Dir, cand: usize) {
        if let Some((m, _, _)) = framed().find(|(_, i, _)| *i == cand) {
            self.mask &= !(1 << m);
        }
        self.probes &= !(1u64 << (cand & 63));
        self.chosen = None;
        self.decided = false;
        for d in 0..2 {
            if self.dirs[d].synced || d == dir as usize {
                self.dirs[d] = MidDir { turn: true, ..MidDir::default() };
                self.walks[d] = Default::default();
            }
        }
        if self.mask == 0 && self.probes == 0 {
            self.turns = MAX_TURNS.saturating_add(1);
        }
    }

    /// Detection decided candidate `cand` (registry index): only its walks go on.
    pub fn choose(&mut self, cand: usize) {
        self.decided = true;
        match framed().find(|(_, i, _)| *i == cand) {
            Some((m, _, _)) => {
                self.chosen = Some(m as u8);
                self.mask = 1 << m;
            }
            None => {
                self.chosen = None;
                self.mask = 0;
            }
        }
    }

    /// Bytes `b` of `dir` are presented (the first `n` of them were presented before, kept):
    /// marks a turn boundary where the new bytes start if the other direction spoke since.
    pub fn present(&mut self, dir: Dir, b: &[u8]) {
        let (d, o) = (dir as usize, 1 - dir as usize);
        let md = &mut self.dirs[d];
        let n = b.len() as u32;
        let end = md.base.wrapping_add(n);
        let fresh = if within(md.seen, md.base, n) { md.seen } else { md.base };
        if md.turn && end != fresh {
            md.turn = false;
            md.boundary = Some(fresh);
            md.tries = 0;
            if !self.decided {
                self.turns = self.turns.saturating_add(1);
            }
        }
        if end != md.seen {
            self.dirs[o].turn = true;
        }
        self.dirs[d].seen = end;
    }

    /// Looks for heads in `b` (the bytes of `dir` presented now, [`Mid::present`] called):
    /// see the module docs. `limits`: how many presentations and bytes a boundary is held.
    pub fn search(&mut self, dir: Dir, b: &[u8], limits: (u32, usize)) -> Outcome {
        let d = dir as usize;
        let n = b.len() as u32;
        let base = self.dirs[d].base;
        let end = base.wrapping_add(n);
        if !self.decided && self.turns > MAX_TURNS {
            return Outcome::GiveUp;
        }
        // Bytes from `keep` on (offset) are needed again.
        let mut keep = end;
        let bpos = self.dirs[d].boundary.filter(|&p| within(p, base, n));
        // 1. The turn boundary.
        if let Some(p) = bpos {
            self.dirs[d].tries = self.dirs[d].tries.saturating_add(1);
            if self.decided && self.chosen.is_none() {
                // A protocol without a framing: its messages start at turns.
                self.dirs[d].boundary = None;
                return Outcome::Synced { at: p.wrapping_sub(base) as usize, role: Role::Either };
            }
            let mut pending = false;
            for (m, cand, f) in framed() {
                let w = self.walks[d][m];
                if self.mask & (1 << m) == 0 || (w.chain > 0 && w.next == p) {
                    continue;
                }
                match (f.head)(&b[p.wrapping_sub(base) as usize..], true) {
                    Head::No => {}
                    Head::Need(_) => pending = true,
                    Head::Msg(msg) => {
                        if let Some(o) = self.take(dir, m, cand, f, p, base, msg, false, true) {
                            return o;
                        }
                    }
                }
            }
            if !self.decided {
                // First-message probes: a connection idle when Warden started resumes with a
                // message like the first one (a request, a command).
                let at = p.wrapping_sub(base) as usize;
                for (i, c) in super::engine::CANDIDATES.iter().enumerate().take(64) {
                    if self.probes & (1 << i) == 0 {
                        continue;
                    }
                    match (c.probe)(dir, &b[at..]) {
                        super::Probe::Match => {
                            return Outcome::Found { cand: i, at, role: Role::Either, start: true, first: true };
                        }
                        super::Probe::NeedMore => pending = true,
                        super::Probe::NoMatch => {}
                    }
                }
            }
            let held = end.wrapping_sub(p) as usize;
            if pending && u32::from(self.dirs[d].tries) <= limits.0.saturating_mul(4) && held <= limits.1 {
                keep = p;
            } else {
                self.dirs[d].boundary = None;
            }
        }
        // 2. Chains: heads at the offsets the previous heads announced.
        for (m, cand, f) in framed() {
            if self.mask & (1 << m) == 0 {
                continue;
            }
            match self.follow(dir, m, cand, f, b, base, bpos) {
                Ok(Some(o)) => return o,
                Ok(None) => {}
                Err(at) => keep = if keep.wrapping_sub(base) > at.wrapping_sub(base) { at } else { keep },
            }
        }
        // 3. Scanning every offset (bounded per direction).
        let md = self.dirs[d];
        let mut pos = if within(md.scan, base, n) { md.scan } else if md.scan == end { end } else { base };
        let mut scanned = md.scanned;
        'scan: while pos != end && scanned < SCAN_BYTES {
            let rest = &b[pos.wrapping_sub(base) as usize..];
            let mut need = false;
            for (m, cand, f) in framed() {
                if self.mask & (1 << m) == 0 || self.walks[d][m].chain > 0 {
                    continue;
                }
                match (f.head)(rest, false) {
                    Head::No => {}
                    Head::Need(_) => need = true,
                    Head::Msg(msg) => {
                        if let Some(o) = self.take(dir, m, cand, f, pos, base, msg, false, false) {
                            self.dirs[d].scan = pos;
                            self.dirs[d].scanned = scanned;
                            return o;
                        }
                        match self.follow(dir, m, cand, f, b, base, bpos) {
                            Ok(Some(o)) => {
                                self.dirs[d].scan = pos;
                                self.dirs[d].scanned = scanned;
                                return o;
                            }
                            Ok(None) => {}
                            Err(at) => {
                                if keep.wrapping_sub(base) > at.wrapping_sub(base) {
                                    keep = at;
                                }
                            }
                        }
                    }
                }
            }
            if need {
                if keep.wrapping_sub(base) > pos.wrapping_sub(base) {
                    keep = pos;
                }
                break 'scan;
            }
            pos = pos.wrapping_add(1);
            scanned += 1;
        }
        self.dirs[d].scan = pos;
        self.dirs[d].scanned = scanned;
        let k = keep.wrapping_sub(base);
        self.dirs[d].base = keep;
        Outcome::Keep(k as usize)
    }

    /// Follows candidate `m`'s chain in `b` while its next head lies in the presented bytes.
    /// `Err(offset)`: that head needs more bytes.
    #[allow(clippy::too_many_arguments)]
    fn follow(
        &mut self,
        dir: Dir,
        m: usize,
        cand: usize,
        f: Framing,
        b: &[u8],
        base: u32,
        bpos: Option<u32>,
    ) -> Result<Option<Outcome>, u32> {
        let d = dir as usize;
        let n = b.len() as u32;
        loop {
            let w = self.walks[d][m];
            if w.chain == 0 || !within(w.next, base, n) {
                return Ok(None);
            }
            let at = w.next;
            let boundary = bpos == Some(at);
            match (f.head)(&b[at.wrapping_sub(base) as usize..], boundary) {
                Head::No => {
                    self.walks[d][m].chain = 0;
                    return Ok(None);
                }
                Head::Need(_) => return Err(at),
                Head::Msg(msg) => {
                    let chained = (f.follows)(w.prev, &msg);
                    if let Some(o) = self.take(dir, m, cand, f, at, base, msg, chained, boundary) {
                        return Ok(Some(o));
                    }
                    if boundary {
                        self.dirs[d].boundary = None;
                    }
                }
            }
        }
    }

    /// Candidate `m` has a head `msg` at offset `at` of `dir` (`chained`: it follows the
    /// previous head of the walk): records it, and says what it proves.
    #[allow(clippy::too_many_arguments)]
    fn take(
        &mut self,
        dir: Dir,
        m: usize,
        cand: usize,
        f: Framing,
        at: u32,
        base: u32,
        msg: Msg,
        chained: bool,
        boundary: bool,
    ) -> Option<Outcome> {
        let (d, o) = (dir as usize, 1 - dir as usize);
        let w = &mut self.walks[d][m];
        let start = if chained { w.prev.ends } else { msg.starts };
        w.chain = if chained { w.chain.saturating_add(1) } else { 1 };
        w.prev = Prev { key: msg.key, len: u16::try_from(msg.len).unwrap_or(u16::MAX), ends: msg.ends };
        if msg.len > 0 {
            w.next = at.wrapping_add(msg.len);
        } else {
            w.chain = 0;
        }
        if let Some(r) = msg.request {
            w.id = r;
            w.has_id = true;
        }
        let chain = w.chain;
        let theirs = &self.walks[o][m];
        let matched = msg.answers.is_some_and(|a| theirs.has_id && theirs.id == a);
        let by_chain = f.chain > 0 && chain >= f.chain;
        let proof = msg.proof || matched || by_chain;
        let rel = at.wrapping_sub(base) as usize;
        let role = if matched { Role::Server } else { msg.role };
        if !self.decided {
            return proof.then_some(Outcome::Found { cand, at: rel, role, start, first: false });
        }
        (start && (proof || boundary || chain >= 2)).then_some(Outcome::Synced { at: rel, role })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_framed_candidate_fits() {
        let n = super::super::engine::CANDIDATES.iter().filter(|c| c.framing.is_some()).count();
        assert!(n <= MAX_MID, "{n} framed candidates, room for {MAX_MID}");
        assert!(n >= 2, "only {n} framed candidates");
        assert_eq!(framed().count(), n);
    }
}

/// Mid-stream detection through the engine on corpus flows picked up in the middle.
#[cfg(test)]
mod engine_tests {
    use crate::app::testutil::{corpus_flows, picked_up, picked_up_at_segments, run_midstream, Flow, Rng};
    use crate::app::{App, Dir};
    use serde_json::Map;

    fn l7(e: &crate::app::engine::Engine, i: u32) -> Map<String, serde_json::Value> {
        let mut m = Map::new();
        e.ctx(i).state.l7(&mut m);
        m
    }

    /// The largest flow of a corpus file (by bytes to the client).
    fn largest(file: &str) -> Flow {
        corpus_flows(file).into_iter().filter(|f| f.proto == 6).max_by_key(|f| f.to_client.len() + f.to_server.len()).unwrap()
    }

    #[test]
    fn tls_is_recognised_by_its_records_from_inside_a_record() {
        for file in ["tls.pcap", "tls12.pcap"] {
            let f = largest(file);
            // Cut inside the handshake and inside a record, both ways, any segmentation.
            let (s, c) = (f.to_server.len(), f.to_client.len());
            eprintln!("{file}: {s} bytes to the server, {c} to the client");
            for skip in [[s / 3, c / 3], [s / 5 + 3, c / 2 + 1], [0, 7]] {
                for piece in [1448, 100, 7] {
                    let chunks = picked_up(&f, skip);
                    let (e, i, flipped) = run_midstream(&chunks, f.server_port, piece, false);
                    let c = e.ctx(i);
                    assert_eq!(c.app, App::Tls, "{file} {skip:?} {piece} previous {:?} changes {} reason {:?} decided {}", c.previous, c.changes, c.unknown_reason, c.decided);
                    assert!(!flipped, "records say nothing of the orientation");
                    let m = l7(&e, i);
                    let records = m["records_to_client"].as_u64().unwrap() + m["records_to_server"].as_u64().unwrap();
                    assert!(records > 0, "{file} {skip:?}: {m:?}");
                    assert!(m.contains_key("record_version"), "{m:?}");
                }
            }
        }
    }

    /// The first `n` bytes of the flow's first request (to the server) and response (to the
    /// client) heads with their bodies: `(request, response)` lengths of the first exchange.
    fn first_exchange(f: &Flow) -> (usize, usize) {
        let req = crate::app::http::parser::request(&f.to_server);
        let crate::app::Parse::Ok(_, rn) = req else { panic!("no request") };
        let crate::app::Parse::Ok(resp, n) = crate::app::http::parser::response(&f.to_client) else { panic!("no response") };
        let body = resp.lengths.content_length_max as usize;
        (rn, n + body)
    }

    #[test]
    fn http_is_recognised_by_heads_at_turns_and_fixes_the_orientation() {
        let f = corpus_flows("http.pcap").into_iter().find(|f| f.client_port == 56874).unwrap();
        let (req1, resp1) = first_exchange(&f);
        // Picked up inside the first response's body (and after the first request): the
        // client's next request starts its turn.
        for (skip, swap) in [([req1, resp1 / 2], false), ([req1, resp1 / 2], true), ([req1 - 3, 1], false)] {
            for piece in [1448, 100] {
                let chunks = picked_up(&f, skip);
                let (e, i, flipped) = run_midstream(&chunks, 80, piece, swap);
                let c = e.ctx(i);
                assert_eq!(c.app, App::Http, "{skip:?} {swap}");
                assert_eq!(flipped, swap, "the request says who the client is");
                let m = l7(&e, i);
                assert_eq!(m["method"], "GET", "{m:?}");
                assert_eq!(m["path"], "/index.html", "{m:?}");
                assert_eq!(m["requests"], 1, "{m:?}");
                assert_eq!(m["responses"], 1, "{m:?}");
            }
        }
        // Only the server's side after a turn: its next response head (a status line) says it
        // is the server, and the response to an unseen request is counted apart.
        let chunks: Vec<(Dir, Vec<u8>)> =
            picked_up(&f, [req1, resp1 / 2]).into_iter().filter(|(d, _)| *d == Dir::ToClient).collect();
        let mut turned = vec![chunks[0].clone(), (Dir::ToServer, b"\r\n".to_vec())];
        let rest: Vec<u8> = chunks.iter().flat_map(|(_, b)| b.clone()).collect();
        let at = rest.windows(9).position(|w| w == b"HTTP/1.1 ").unwrap();
        turned[0].1 = rest[..at].to_vec();
        turned.push((Dir::ToClient, rest[at..].to_vec()));
        let (e, i, flipped) = run_midstream(&turned, 80, 1448, true);
        assert_eq!((e.ctx(i).app, flipped), (App::Http, true));
        let m = l7(&e, i);
        assert_eq!((m["responses"].as_u64(), m["unseen_requests"].as_u64()), (Some(1), Some(1)), "{m:?}");
    }

    /// A long download of random bytes (as `e2e_midstream` serves: the xorshift blob of
    /// `tests/common`'s `write_blob`) picked up at many points of its body, then the client's
    /// next request on the same connection: labelled `http`, never turned round by something
    /// the random body seems to say.
    #[test]
    fn a_random_body_picked_up_anywhere_is_http_at_the_next_request_and_keeps_its_ends() {
        let mut blob = Vec::with_capacity(4 << 20);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        while blob.len() < 4 << 20 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            blob.extend_from_slice(&x.to_le_bytes());
        }
        let req = b"GET /small.txt HTTP/1.1\r\nHost: 198.18.0.2:8080\r\nUser-Agent: curl/7.88.1\r\nAccept: */*\r\n\r\n".to_vec();
        let resp = b"HTTP/1.1 200 OK\r\nServer: nginx\r\nContent-Length: 6\r\n\r\nsmall\n".to_vec();
        let mut bad = Vec::new();
        for k in 0..40usize {
            // Segment boundaries after a 250-byte response head, picked up at segment k * 70 + 1.
            let at = (k * 70 + 1) * 1448 - 250;
            let end = (at + 96 * 1448).min(blob.len());
            let chunks = vec![(Dir::ToClient, blob[at..end].to_vec()), (Dir::ToServer, req.clone()), (Dir::ToClient, resp.clone())];
            let (e, i, flipped) = run_midstream(&chunks, 8080, 1448, false);
            if e.ctx(i).app != App::Http || flipped {
                bad.push((at, e.ctx(i).app, flipped));
            }
        }
        assert!(bad.is_empty(), "{} of 40 pickups: {:?}", bad.len(), &bad[..bad.len().min(10)]);
    }

    /// The length of the first `n` TDS messages of a direction (packets chained to EOM).
    fn tds_messages(b: &[u8], n: usize) -> usize {
        let (mut at, mut msgs) = (0, 0);
        while msgs < n && at + 8 <= b.len() {
            let len = usize::from(u16::from_be_bytes([b[at + 2], b[at + 3]]));
            if b[at + 1] & 1 != 0 {
                msgs += 1;
            }
            at += len;
        }
        at
    }

    #[test]
    fn tds_is_recognised_by_batches_and_results_after_the_login() {
        // tsql against the fake server: PRELOGIN and LOGIN7 are cut; the next SQL batch (or
        // its answer) starts a turn.
        let flows = crate::app::testutil::capture_flows("tds-login7.pcap");
        let (mut seen, mut errors) = (0, 0);
        for f in flows.iter().filter(|f| f.proto == 6 && f.to_server.len() > 300) {
            let skip = [tds_messages(&f.to_server, 2), tds_messages(&f.to_client, 2)];
            for swap in [false, true] {
                let (e, i, flipped) = run_midstream(&picked_up(f, skip), f.server_port, 1448, swap);
                assert_eq!((e.ctx(i).app, flipped), (App::Tds, swap), "{skip:?}");
                let m = l7(&e, i);
                assert!(m["query_count"].as_u64().unwrap() >= 1, "{m:?}");
                assert!(m["first_query"].as_str().unwrap().starts_with("SELECT"), "{m:?}");
                assert!(m["messages_to_client"].as_u64().unwrap() >= 1, "{m:?}");
                assert!(!m.contains_key("violation"), "{m:?}");
            }
            // Only the answers, each after a turn of the client: a tabular result opening with
            // ERROR (the fake server's answer to the batch naming `users`) proves TDS alone and
            // says who the server is.
            let mut turned = Vec::new();
            let mut error = false;
            for (d, b) in picked_up(f, skip).into_iter().filter(|(d, _)| *d == Dir::ToClient) {
                error |= b.get(8) == Some(&0xaa);
                turned.push((Dir::ToServer, b"x".to_vec()));
                turned.push((d, b));
            }
            let (e, i, flipped) = run_midstream(&turned, f.server_port, 1448, true);
            let want = if error { (App::Tds, true) } else { (App::Unknown, false) };
            assert_eq!((e.ctx(i).app, flipped), want);
            errors += usize::from(error);
            seen += 1;
        }
        assert!(seen >= 2 && errors >= 1, "{seen} TDS flows with batches, {errors} answered with ERROR");
        // A long result set picked up in its middle: 4096-byte tabular packets of one message
        // (MS-TDS 2.2.3: same type and SPID, packet ids counting up, status 0 until EOM) prove
        // TDS by their chain alone, from the server.
        let mut stream = Vec::new();
        for id in 1..=40u8 {
            let eom = u8::from(id == 40);
            stream.extend_from_slice(&[4, eom, 0x10, 0x00, 0x00, 0x34, id, 0]);
            stream.extend((0..4088u32).map(|k| (k.wrapping_mul(2_654_435_761) >> 13) as u8));
        }
        let chunks = vec![(Dir::ToClient, stream[10_000..].to_vec())];
        let (e, i, flipped) = run_midstream(&chunks, 1433, 1448, true);
        assert_eq!((e.ctx(i).app, flipped), (App::Tds, true));
    }

    #[test]
    fn kafka_is_recognised_by_a_response_matching_a_request() {
        // kafka-python's own requests (the corpus has no broker): each gets a response built
        // per the protocol guide (Response Header v0: size, correlation id; an ApiVersions v0
        // body: error code 0, an empty array).
        let mut seen = 0;
        for f in corpus_flows("kafka.pcap").into_iter().filter(|f| f.proto == 6 && !f.to_server.is_empty()) {
            let size = u32::from_be_bytes(f.to_server[..4].try_into().unwrap()) as usize;
            let req = f.to_server[..4 + size].to_vec();
            let corr = &req[8..12];
            let mut resp = vec![0, 0, 0, 10];
            resp.extend_from_slice(corr);
            resp.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            // Picked up in the middle of an earlier response (bytes that are no message
            // start), then the request and its answer.
            // The pair that proves Kafka went by before the parser started: the next pair (the
            // client's next correlation id) is parsed and matched.
            let (mut req2, mut resp2) = (req.clone(), resp.clone());
            let next = (u32::from_be_bytes(corr.try_into().unwrap()) + 1).to_be_bytes();
            req2[8..12].copy_from_slice(&next);
            resp2[4..8].copy_from_slice(&next);
            let chunks = vec![
                (Dir::ToClient, vec![0x41; 300]),
                (Dir::ToServer, req.clone()),
                (Dir::ToClient, resp.clone()),
                (Dir::ToServer, req2),
                (Dir::ToClient, resp2),
            ];
            for swap in [false, true] {
                let (e, i, flipped) = run_midstream(&chunks, 9092, 1448, swap);
                assert_eq!((e.ctx(i).app, flipped), (App::Kafka, swap));
                let m = l7(&e, i);
                assert_eq!((m["requests"].as_u64(), m["responses"].as_u64(), m["matched"].as_u64()), (Some(1), Some(2), Some(1)), "{m:?}");
                assert_eq!(m["client_id"].as_str().is_some(), f.to_server[14..16] != [0xff, 0xff], "{m:?}");
            }
            // A response with another correlation id proves nothing; nor does a request alone.
            let mut other = resp.clone();
            other[7] ^= 0x55;
            let (e, i, _) = run_midstream(&[(Dir::ToServer, req.clone()), (Dir::ToClient, other)], 9092, 1448, false);
            assert_eq!(e.ctx(i).app, App::Unknown);
            let (e, i, _) = run_midstream(&[(Dir::ToServer, req)], 9092, 1448, false);
            assert_eq!(e.ctx(i).app, App::Unknown);
            seen += 1;
        }
        assert!(seen >= 2);
    }

    /// No new false labels: random bytes and made-up line protocols, in many turns, both ways
    /// and in several segmentations, stay `unknown`; every corpus flow picked up at a segment
    /// (as Warden picks sessions up: the first frame it sees), after 1, 2, a third or half of
    /// each direction's segments, is its own app or `unknown`.
    #[test]
    fn nothing_else_is_labelled_mid_stream() {
        let mut rng = Rng(0x5eed_1234_abcd_0001);
        let mut random = |n: usize| (0..n).map(|_| rng.next() as u8).collect::<Vec<u8>>();
        let lines: [&[u8]; 6] = [
            b"EHLO mail.example.test\r\n",
            b"220 mail.example.test ESMTP ready\r\n",
            b"+OK POP3 server ready\r\n",
            b"{\"jsonrpc\":\"2.0\",\"method\":\"sum\",\"params\":[1,2]}\n",
            b"STAT pid 1\r\nEND\r\n",
            b"HELLO 1\r\nWELCOME 200 OK\r\n",
        ];
        let mut cases: Vec<Vec<(Dir, Vec<u8>)>> = Vec::new();
        for n in [5usize, 64, 1500, 40_000] {
            cases.push(vec![(Dir::ToClient, random(n)), (Dir::ToServer, random(n / 3 + 1)), (Dir::ToClient, random(n))]);
        }
        for k in 0..12 {
            let mut c = Vec::new();
            for t in 0..40 {
                let d = if t % 2 == 0 { Dir::ToServer } else { Dir::ToClient };
                c.push((d, lines[(k + t) % lines.len()].repeat(1 + t % 3)));
            }
            cases.push(c);
        }
        for c in &cases {
            for swap in [false, true] {
                for piece in [1448, 3] {
                    let (e, i, _) = run_midstream(c, 443, piece, swap);
                    assert_eq!(e.ctx(i).app, App::Unknown, "{:?}", &c[0].1[..c[0].1.len().min(40)]);
                }
            }
        }
        let labels: serde_json::Value =
            serde_json::from_slice(&std::fs::read(crate::app::testutil::corpus("labels.json")).unwrap()).unwrap();
        let mut flows = 0;
        for (file, v) in labels.as_object().unwrap() {
            let own = v["protocol"].as_str().unwrap().rsplit('/').next().unwrap().to_string();
            for f in corpus_flows(file).into_iter().filter(|f| f.proto == 6) {
                let n = |d: Dir| f.segments.iter().filter(|(x, _)| *x == d).count();
                let (s, c) = (n(Dir::ToServer), n(Dir::ToClient));
                for skip in [[1, 1], [2, 0], [0, 2], [s / 3, c / 3], [s / 2, c / 2]] {
                    for piece in [1448, 97] {
                        let (e, i, _) = run_midstream(&picked_up_at_segments(&f, skip), f.server_port, piece, false);
                        let app = e.ctx(i).app;
                        let ok = app == App::Unknown || app.as_str() == own || (own == "grpc" && app == App::Http2);
                        assert!(ok, "{file} port {} cut at {skip:?}: {app:?}", f.client_port);
                    }
                }
                flows += 1;
            }
        }
        assert!(flows > 50, "{flows}");
    }

    #[test]
    fn postgresql_is_recognised_by_typed_messages_in_a_row() {
        // psql's sessions picked up after their start-up and authentication: queries, result
        // rows and ReadyForQuery follow each other by their lengths.
        let mut seen = 0;
        for f in corpus_flows("postgresql.pcap").into_iter().filter(|f| f.to_server.len() > 900 && f.to_client.len() > 900) {
            let (s, c) = (f.to_server.len(), f.to_client.len());
            for skip in [[s / 3, c / 3], [s / 2 + 3, c / 2 + 1]] {
                for piece in [1448, 61] {
                    let (e, i, _) = run_midstream(&picked_up(&f, skip), f.server_port, piece, false);
                    assert_eq!(e.ctx(i).app, App::Postgresql, "{skip:?} {piece}");
                    let m = l7(&e, i);
                    assert!(m["messages_to_client"].as_u64().unwrap() > 0, "{m:?}");
                    assert!(!m.contains_key("violation"), "{m:?}");
                }
            }
            seen += 1;
        }
        assert!(seen >= 2, "{seen}");
    }

    #[test]
    fn mongodb_is_recognised_by_an_answer_to_a_request() {
        // pymongo's own first messages (the corpus has no server): each answered with an
        // OP_MSG whose responseTo is the request's requestID (wire protocol "Standard Message
        // Header"), after bytes inside an earlier message.
        let mut seen = 0;
        for f in corpus_flows("mongodb.pcap").into_iter().filter(|f| f.to_server.len() >= 16) {
            let len = u32::from_le_bytes(f.to_server[..4].try_into().unwrap()) as usize;
            let req = f.to_server[..len.min(f.to_server.len())].to_vec();
            let doc = [5u8, 0, 0, 0, 0]; // an empty BSON document
            let mut reply = Vec::new();
            reply.extend_from_slice(&((16 + 4 + 1 + doc.len()) as u32).to_le_bytes());
            reply.extend_from_slice(&77u32.to_le_bytes());
            reply.extend_from_slice(&req[4..8]);
            reply.extend_from_slice(&2013u32.to_le_bytes());
            reply.extend_from_slice(&[0, 0, 0, 0, 0]);
            reply.extend_from_slice(&doc);
            let chunks = vec![(Dir::ToClient, vec![0x61; 200]), (Dir::ToServer, req), (Dir::ToClient, reply)];
            for swap in [false, true] {
                let (e, i, flipped) = run_midstream(&chunks, 27017, 1448, swap);
                assert_eq!((e.ctx(i).app, flipped), (App::Mongodb, swap));
            }
            seen += 1;
        }
        assert!(seen >= 2, "{seen}");
    }
}
