//! Echo (RFC 862, TCP and UDP): the server sends back whatever it receives.
//!
//! Echo has no syntax of its own, so it cannot be probed from one direction: the engine
//! recognises it when the server's first bytes repeat the client's first bytes (at least 4 of
//! them, or all of a shorter first message), on any port, and then hands the session to this
//! state, which counts the bytes each way and how many of the server's bytes matched. Written
//! here (there is nothing to parse with a library).

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

/// True when `server_first` (the server's first bytes) repeats `client_head` (the client's
/// first bytes, at most [`HEAD`]): at least 4 bytes equal, or the whole of a shorter client
/// message.
pub fn mirrors(client_head: &[u8], server_first: &[u8]) -> bool {
    let n = client_head.len().min(server_first.len());
    n > 0 && n >= client_head.len().min(4) && client_head[..n] == server_first[..n]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirror_rule() {
        assert!(!mirrors(b"", b"x"));
        assert!(!mirrors(b"PING\r\n", b"+PONG\r\n"));
        assert!(mirrors(b"ab", b"ab"));
        assert!(mirrors(b"hello echo server\n", b"hello"));
        assert!(!mirrors(b"hello echo server\n", b"hel"));
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
