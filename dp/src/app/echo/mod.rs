//! Echo (RFC 862, TCP and UDP): the server sends back whatever it receives.
//!
//! Echo has no syntax of its own, so it cannot be probed from one direction: the engine
//! watches both directions' first bytes ([`Mirror`]) and calls a session echo when the
//! server's stream repeats the client's, on any port, then hands the session to this state,
//! which counts the bytes each way. Written here (there is nothing to parse with a library).
//!
//! **What counts as a repeat** ([`Mirror`]). The compared bytes must start each direction's
//! stream at its real start: for TCP, a SYN of that direction was seen before its first byte
//! (the stream starts at ISN + 1, RFC 9293 §3.4) and no hole was skipped before the compared
//! bytes, so a session picked up mid-stream, where the first bytes seen are whatever rode on
//! the next segment (a 1-byte keep-alive, RFC 9293 §3.8.4, the tail of a record), is never an
//! echo; for UDP, the first datagram each way. At least [`MIN_ECHO`] bytes must be compared,
//! and the server may not have sent more bytes than the client (an echo server sends nothing
//! it did not receive), nor speak first. Bytes are accumulated per direction from the
//! stream's start up to [`HEAD`], whatever the segmentation, so a request split into a 1-byte
//! segment riding on the handshake's ACK is compared by its first [`HEAD`] bytes, not by that
//! byte. Why 4: one to three equal bytes are common between unrelated first messages (TLS
//! records both start `16 03 0x`, DNS over TCP repeats the length and id, two keep-alive
//! bytes are both `00`, `\r\n` leads both HTTP directions), while four equal bytes at the
//! start of both streams, with the client's extending them, are not what two different
//! protocol roles send (and a greeting both sides send, such as SSH's identification line, is
//! recognised by its parser's probe and excluded). A real echo session whose client sends
//! fewer than 4 bytes in all (`printf 'a\n' | nc host 7`) is not recognised: the price of not
//! labelling tiny payloads.

use serde_json::{Map, Value};

use super::{App, AppParser, Dir, Feed, Probe, Transport};

/// Bytes of the client's first message the engine keeps to recognise an echo.
pub const HEAD: usize = 32;

/// Per-session state.
#[derive(Debug, Clone, Default)]
pub struct Echo {
    bytes: [u64; 2],
    messages: [u32; 2],
}

impl AppParser for Echo {
    const APP: App = App::Echo;
    const PORTS: &'static [u16] = &[7];
    const TRANSPORT: Transport = Transport::Both;

    /// Never matches on one direction: the engine recognises echo (see [`mirrors`]).
    fn probe(_dir: Dir, _data: &[u8]) -> Probe {
        Probe::NoMatch
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        self.bytes[d] = self.bytes[d].saturating_add(data.len() as u64);
        self.messages[d] = self.messages[d].saturating_add(1);
        Feed::Consumed(data.len())
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        out.insert("bytes_to_server".into(), self.bytes[0].into());
        out.insert("bytes_to_client".into(), self.bytes[1].into());
        out.insert("segments_to_server".into(), self.messages[0].into());
        out.insert("segments_to_client".into(), self.messages[1].into());
    }
}

/// Fewest bytes of each direction's start that must be equal before a session is an echo
/// (see the module docs for why 4).
pub const MIN_ECHO: usize = 4;

/// True when `server_first` (the server's first bytes, at most [`HEAD`]) repeats
/// `client_head` (the client's first bytes, at most [`HEAD`]): at least [`MIN_ECHO`] bytes
/// compared, all equal, and the server's bytes no more than the client's (unless the client's
/// fill [`HEAD`]).
pub fn mirrors(client_head: &[u8], server_first: &[u8]) -> bool {
    let n = client_head.len().min(server_first.len());
    let within = server_first.len() <= client_head.len() || client_head.len() >= HEAD;
    n >= MIN_ECHO && within && client_head[..n] == server_first[..n]
}

/// Where the comparison of a session stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum Watch {
    /// Still collecting first bytes.
    #[default]
    Watching,
    /// The session is an echo.
    Echo,
    /// It is not (or can no longer be told).
    Not,
}

/// What the engine keeps per session to recognise an echo: the first [`HEAD`] bytes of each
/// direction's stream, collected from its real start across segments (fixed size, no heap).
///
/// The engine calls [`Mirror::syn`] when a SYN starts a TCP direction, [`Mirror::observe`]
/// with the bytes it presents to detection (a TCP direction's unconsumed bytes, from the
/// offset the mirror tracks; a UDP datagram), [`Mirror::consumed`] with what the parser took,
/// and [`Mirror::gap`] when a hole was skipped.
#[derive(Debug, Clone, Copy, Default)]
pub struct Mirror {
    heads: [[u8; HEAD]; 2],
    lens: [u8; 2],
    /// Offset from the direction's first byte of the next bytes presented (TCP).
    at: [u32; 2],
    /// A SYN started the direction's stream (TCP): its bytes start at the real start.
    syn: [bool; 2],
    /// A hole was skipped in the direction before its head was complete.
    broken: [bool; 2],
    watch: Watch,
}

impl Mirror {
    /// A SYN of `dir` was seen before any of its bytes: its stream starts at ISN + 1.
    pub fn syn(&mut self, dir: Dir) {
        self.syn[dir as usize] = true;
    }

    /// True while the session may still turn out an echo.
    pub fn watching(&self) -> bool {
        self.watch == Watch::Watching
    }

    /// True while the session may still turn out an echo and only the server's first bytes
    /// can tell: the client's head is complete (its first datagram, or [`HEAD`] bytes of its
    /// stream) and the server has sent nothing yet. More client bytes change nothing then.
    pub fn awaits_server(&self, datagram: bool) -> bool {
        self.watching()
            && self.lens[1] == 0
            && self.lens[0] > 0
            && (datagram || usize::from(self.lens[0]) == HEAD)
    }

    /// Stops watching: the session will not be called echo any more.
    pub fn stop(&mut self) {
        if self.watch == Watch::Watching {
            self.watch = Watch::Not;
        }
    }

    /// The client's first bytes collected (at most [`HEAD`]).
    pub fn client_head(&self) -> &[u8] {
        &self.heads[0][..usize::from(self.lens[0])]
    }

    /// The parser took `n` of the bytes presented last in `dir` (TCP): the next bytes
    /// presented start that much further.
    pub fn consumed(&mut self, dir: Dir, n: usize) {
        let d = dir as usize;
        self.at[d] = self.at[d].saturating_add(u32::try_from(n).unwrap_or(u32::MAX));
    }

    /// A hole was skipped in `dir`: what follows is not contiguous with what was collected.
    pub fn gap(&mut self, dir: Dir) {
        let d = dir as usize;
        if usize::from(self.lens[d]) < HEAD {
            self.broken[d] = true;
        }
    }

    /// Bytes `data` of `dir` presented to detection: a UDP datagram (`datagram`), or a TCP
    /// direction's unconsumed bytes. `claimed` says whether another parser's probe claims
    /// bytes as the server's side of its protocol (a greeting both sides send alike). True
    /// when the session has just been found an echo.
    pub fn observe(&mut self, dir: Dir, data: &[u8], datagram: bool, claimed: impl Fn(&[u8]) -> bool) -> bool {
        if self.watch != Watch::Watching {
            return false;
        }
        let d = dir as usize;
        if datagram {
            // The first datagram each way.
            if self.lens[d] == 0 {
                let n = data.len().min(HEAD);
                self.heads[d][..n].copy_from_slice(&data[..n]);
                self.lens[d] = n as u8;
            }
        } else {
            if !self.syn[d] || self.broken[d] {
                // Picked up mid-stream, or a hole before the head was complete: the bytes
                // are not the direction's first ones.
                self.watch = Watch::Not;
                return false;
            }
            let (at, have) = (self.at[d] as usize, usize::from(self.lens[d]));
            if at <= have {
                let skip = have - at;
                let n = data.len().saturating_sub(skip).min(HEAD - have);
                if n > 0 {
                    self.heads[d][have..have + n].copy_from_slice(&data[skip..skip + n]);
                    self.lens[d] = (have + n) as u8;
                }
            }
        }
        if dir == Dir::ToServer {
            return false;
        }
        self.judge(datagram, claimed)
    }

    /// Compares after the server's bytes arrived.
    fn judge(&mut self, datagram: bool, claimed: impl Fn(&[u8]) -> bool) -> bool {
        let (c, s) = (&self.heads[0][..usize::from(self.lens[0])], &self.heads[1][..usize::from(self.lens[1])]);
        let n = c.len().min(s.len());
        let within = s.len() <= c.len() || c.len() >= HEAD;
        if c.is_empty() || !within || c[..n] != s[..n] || datagram && c.len() != s.len() {
            // The server spoke first, sent more than it got, or sent other bytes.
            self.watch = Watch::Not;
            return false;
        }
        if n < MIN_ECHO {
            if datagram {
                self.watch = Watch::Not;
            }
            return false;
        }
        if claimed(s) {
            self.watch = Watch::Not;
            return false;
        }
        self.watch = Watch::Echo;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_rule() {
        assert!(!mirrors(b"", b"x"));
        assert!(!mirrors(b"PING\r\n", b"+PONG\r\n"));
        assert!(!mirrors(b"ab", b"ab"), "fewer than MIN_ECHO bytes");
        assert!(!mirrors(b"\x16\x03\x01", b"\x16\x03\x01"), "three bytes TLS records share");
        assert!(mirrors(b"abcd", b"abcd"));
        assert!(mirrors(b"hello echo server\n", b"hello"));
        assert!(!mirrors(b"hello echo server\n", b"hel"));
        assert!(!mirrors(b"abcd", b"abcde"), "the server sent more than it got");
    }

    /// TCP: bytes are collected from each direction's real start across segments and
    /// consumption; a direction without its SYN, or with a hole, is never compared.
    #[test]
    fn mirror_collects_from_the_real_start() {
        let no = |_: &[u8]| false;
        let mut m = Mirror::default();
        m.syn(Dir::ToServer);
        m.syn(Dir::ToClient);
        // One byte riding on the ACK, then the rest presented again with it (undecided).
        assert!(!m.observe(Dir::ToServer, b"h", false, no));
        assert!(!m.observe(Dir::ToServer, b"hello", false, no));
        // A parser consumed 3 bytes: the next presentation starts at offset 3.
        m.consumed(Dir::ToServer, 3);
        assert!(!m.observe(Dir::ToServer, b"lo world", false, no));
        assert_eq!(m.client_head(), b"hello world");
        assert!(!m.observe(Dir::ToClient, b"h", false, no), "one byte is not enough");
        assert!(m.watching());
        assert!(m.observe(Dir::ToClient, b"hello", false, no));
        assert!(!m.watching());
        // The same bytes without the server's SYN: picked up mid-stream.
        let mut m = Mirror::default();
        m.syn(Dir::ToServer);
        m.observe(Dir::ToServer, b"hello", false, no);
        assert!(!m.observe(Dir::ToClient, b"hello", false, no));
        assert!(!m.watching());
        // A hole before the head was complete.
        let mut m = Mirror::default();
        m.syn(Dir::ToServer);
        m.syn(Dir::ToClient);
        m.observe(Dir::ToServer, b"he", false, no);
        m.gap(Dir::ToServer);
        assert!(!m.observe(Dir::ToServer, b"llo", false, no));
        assert!(!m.watching());
        // The server speaking first; a claimed greeting.
        let mut m = Mirror::default();
        m.syn(Dir::ToServer);
        m.syn(Dir::ToClient);
        assert!(!m.observe(Dir::ToClient, b"SSH-2.0-x\r\n", false, no));
        assert!(!m.watching());
        let mut m = Mirror::default();
        m.syn(Dir::ToServer);
        m.syn(Dir::ToClient);
        m.observe(Dir::ToServer, b"SSH-2.0-x\r\n", false, no);
        assert!(!m.observe(Dir::ToClient, b"SSH-2.0-x\r\n", false, |_| true));
        // UDP: the first datagram each way, whole.
        let mut m = Mirror::default();
        m.observe(Dir::ToServer, b"ping-1\n", true, no);
        assert!(m.observe(Dir::ToClient, b"ping-1\n", true, no));
        let mut m = Mirror::default();
        m.observe(Dir::ToServer, b"ab", true, no);
        assert!(!m.observe(Dir::ToClient, b"ab", true, no));
        assert!(!m.watching(), "a datagram decides");
    }

    #[test]
    fn counts_both_ways() {
        let mut e = Echo::default();
        assert_eq!(e.feed(Dir::ToServer, b"abc"), Feed::Consumed(3));
        e.feed(Dir::ToClient, b"abc");
        let mut m = Map::new();
        e.l7(&mut m);
        assert_eq!((m["bytes_to_server"].clone(), m["bytes_to_client"].clone()), (3.into(), 3.into()));
    }
}

#[cfg(test)]
mod inspector_tests;
