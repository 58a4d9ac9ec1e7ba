//! Resumable searches for parsers under the stream engine's contract: a parser that answers
//! `Feed::Need` is presented the same unconsumed bytes again, with more appended
//! ([`crate::app::Feed`]).
//!
//! A parser waiting for a delimiter (the end of a line, of an HTTP/1 head) that searched the
//! whole unconsumed part again at every call would examine a message trickled in one-byte
//! segments n²/2 times. A [`Resume`] remembers how far the last search got in the part presented
//! again, so each byte is searched once however TCP segmented the message; its counter of
//! examined bytes lets tests check that bound without timing (`examined() <= c * n`).

/// How far a search for a delimiter got in the unconsumed bytes a parser will be presented
/// again: the bytes before that offset are known not to hold it. Also counts the bytes it
/// examined (never reset). 16 bytes, `Copy`, no heap.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Resume {
    /// Bytes of the unconsumed part already searched.
    at: u32,
    /// Bytes examined by every search so far.
    examined: u64,
}

impl Resume {
    /// Finds the first `byte` in `b[..max]` (`b`: the unconsumed bytes, starting where they
    /// started at the last call), searching only what earlier calls did not. Returns its index
    /// in `b`; once found (or when the caller [`Resume::reset`]s after consuming), the next
    /// search starts over at the start of what it is given. When `b` is shorter than what was
    /// already searched (a caller that broke the contract), the search starts over.
    pub fn find(&mut self, b: &[u8], max: usize, byte: u8) -> Option<usize> {
        let end = b.len().min(max);
        let start = self.start(end);
        let window = b.get(start..end).unwrap_or_default();
        let found = memchr::memchr(byte, window);
        self.count(found.map_or(window.len(), |i| i + 1));
        match found {
            Some(i) => {
                self.at = 0;
                Some(start + i)
            }
            None => {
                self.at = u32::try_from(end).unwrap_or(u32::MAX);
                None
            }
        }
    }

    /// As [`Resume::find`] for a sequence of bytes (`needle`, at least one byte) that must end
    /// within `b[..max]`: returns the index where it starts. A partial match at the end of
    /// what was searched is searched again next time.
    pub fn find_seq(&mut self, b: &[u8], max: usize, needle: &[u8]) -> Option<usize> {
        let end = b.len().min(max);
        let start = self.start(end);
        let window = b.get(start..end).unwrap_or_default();
        let found = memchr::memmem::find(window, needle);
        self.count(found.map_or(window.len(), |i| i + needle.len()));
        match found {
            Some(i) => {
                self.at = 0;
                Some(start + i)
            }
            None => {
                let keep = needle.len().saturating_sub(1);
                self.at = u32::try_from(end.saturating_sub(keep).max(start)).unwrap_or(u32::MAX);
                None
            }
        }
    }

    fn count(&mut self, n: usize) {
        self.examined = self.examined.saturating_add(n as u64);
    }

    /// Where the next search of `b[..end]` starts.
    fn start(&self, end: usize) -> usize {
        let at = self.at as usize;
        if at <= end {
            at
        } else {
            0
        }
    }

    /// Bytes of the unconsumed part already searched (and found not to hold what was
    /// searched for): a parser checking each byte of a pending item for something else
    /// (a NUL) checks only what follows.
    pub fn searched(&self) -> usize {
        self.at as usize
    }

    /// Forgets how far the search got (the caller consumed bytes or moved to another item);
    /// keeps the count of examined bytes.
    pub fn reset(&mut self) {
        self.at = 0;
    }

    /// Bytes examined by every search so far (a measure of work, for tests and benchmarks).
    pub fn examined(&self) -> u64 {
        self.examined
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_trickled_byte_by_byte_is_searched_once() {
        let line = b"0123456789abcdef\r\nnext";
        let mut r = Resume::default();
        let end = line.iter().position(|&c| c == b'\n').unwrap();
        for n in 1..=end {
            assert_eq!(r.find(&line[..n], 4096, b'\n'), None);
        }
        assert_eq!(r.find(&line[..end + 1], 4096, b'\n'), Some(end));
        assert_eq!(r.examined(), end as u64 + 1, "each byte examined once");
        // Found: the next search starts over (the caller consumed the line).
        assert_eq!(r.find(&line[end + 1..], 4096, b'\n'), None);
        assert_eq!(r.examined(), line.len() as u64);
    }

    #[test]
    fn bounded_window_and_broken_contract() {
        let mut r = Resume::default();
        assert_eq!(r.find(b"aaaa", 3, b'a'), Some(0));
        assert_eq!(r.find(b"bbbbb\n", 3, b'\n'), None, "the newline is past max");
        assert_eq!(r.examined(), 1 + 3);
        // Shorter than what was searched: start over rather than skip or panic.
        assert_eq!(r.find(b"\n", 3, b'\n'), Some(0));
    }

    #[test]
    fn sequences_straddling_two_calls_are_found() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\nrest";
        let end = head.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let mut r = Resume::default();
        let mut found = None;
        for n in 1..=head.len() {
            if let Some(i) = r.find_seq(&head[..n], 8192, b"\r\n\r\n") {
                found = Some((i, n));
                break;
            }
        }
        assert_eq!(found, Some((end, end + 4)));
        assert!(r.examined() <= 4 * (end as u64 + 4), "{}", r.examined());
    }
}
