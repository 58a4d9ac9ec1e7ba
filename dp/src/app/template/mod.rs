//! The template protocol: a complete, tested example of an app module. Copy this directory to
//! add a protocol: `parser.rs` holds pure functions over `&[u8]`, this file the per-session state
//! implementing [`AppParser`]. Written here because it is invented (see `parser.rs` for its
//! wire format); real protocols use a field library where a good one exists.

pub mod parser;

use serde_json::{Map, Value};

use super::{text, App, AppParser, Dir, Feed, Probe, Text, Transport};
use parser::Parse;

/// Per-session state: fixed size, no heap.
#[derive(Debug, Clone, Default)]
pub struct Template {
    version: Option<u8>,
    hello_seen: [bool; 2],
    frames: [u32; 2],
    first_payload: Option<Text<32>>,
    violation: bool,
}

impl AppParser for Template {
    const APP: App = App::Template;
    const PORTS: &'static [u16] = &[4999];
    const TRANSPORT: Transport = Transport::Tcp;

    fn probe(_dir: Dir, data: &[u8]) -> Probe {
        match parser::hello(data) {
            Parse::Ok(..) => Probe::Match,
            Parse::Incomplete(_) => Probe::NeedMore,
            Parse::Invalid => Probe::NoMatch,
        }
    }

    fn feed(&mut self, dir: Dir, data: &[u8]) -> Feed {
        let d = dir as usize;
        let mut off = 0;
        loop {
            let rest = &data[off..];
            if rest.is_empty() {
                return Feed::Consumed(off);
            }
            let step = if !self.hello_seen[d] {
                match parser::hello(rest) {
                    Parse::Ok(v, n) => {
                        self.hello_seen[d] = true;
                        self.version.get_or_insert(v);
                        Parse::Ok((), n)
                    }
                    Parse::Incomplete(k) => Parse::Incomplete(k),
                    Parse::Invalid => Parse::Invalid,
                }
            } else {
                match parser::frame(rest) {
                    Parse::Ok(p, n) => {
                        self.frames[d] = self.frames[d].saturating_add(1);
                        if self.first_payload.is_none() {
                            self.first_payload = Some(text(p));
                        }
                        Parse::Ok((), n)
                    }
                    Parse::Incomplete(k) => Parse::Incomplete(k),
                    Parse::Invalid => Parse::Invalid,
                }
            };
            match step {
                Parse::Ok((), n) => off += n,
                Parse::Incomplete(k) => return Feed::Need { consumed: off, at_least: k },
                // Not the protocol from here: the engine drops this parser and detects the
                // app again on the rest of the stream.
                Parse::Invalid => {
                    self.violation = true;
                    return Feed::Invalid { consumed: off };
                }
            }
        }
    }

    fn gap(&mut self, _dir: Dir, _len: usize) -> bool {
        // Length-framed: after a gap the frame boundaries are unknown.
        self.violation = true;
        false
    }

    fn l7(&self, out: &mut Map<String, Value>) {
        if let Some(v) = self.version {
            out.insert("version".into(), v.into());
        }
        out.insert("frames_to_server".into(), self.frames[0].into());
        out.insert("frames_to_client".into(), self.frames[1].into());
        if let Some(p) = &self.first_payload {
            out.insert("first_payload".into(), p.as_str().into());
        }
        if self.violation {
            out.insert("violation".into(), true.into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::app::testutil::{check_every_prefix, check_every_split, feed_all};

    fn client_bytes() -> Vec<u8> {
        let mut b = b"WTPL\x01".to_vec();
        for p in [&b"GET thing"[..], b"PUT other"] {
            b.extend_from_slice(&(p.len() as u16).to_be_bytes());
            b.extend_from_slice(p);
        }
        b
    }

    #[test]
    fn parses_hello_and_frames() {
        let mut t = Template::default();
        feed_all(&mut t, Dir::ToServer, &client_bytes());
        let mut m = Map::new();
        t.l7(&mut m);
        assert_eq!(m["version"], 1);
        assert_eq!(m["frames_to_server"], 2);
        assert_eq!(m["first_payload"], "GET thing");
    }

    #[test]
    fn probe_decides_by_content() {
        assert_eq!(Template::probe(Dir::ToServer, b"WT"), Probe::NeedMore);
        assert_eq!(Template::probe(Dir::ToServer, b"GET / HTTP/1.1\r\n"), Probe::NoMatch);
    }

    #[test]
    fn every_prefix_and_every_split() {
        check_every_prefix::<Template>(Dir::ToServer, &client_bytes());
        check_every_split::<Template>(Dir::ToServer, &client_bytes());
    }

    #[test]
    fn oversized_length_is_invalid_not_a_panic() {
        let mut t = Template::default();
        // The hello (5 bytes) is the protocol; the impossible frame after it is not.
        assert_eq!(t.feed(Dir::ToServer, b"WTPL\x01\xff\xff"), Feed::Invalid { consumed: 5 });
    }
}
