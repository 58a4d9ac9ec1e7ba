//! HPACK header block decoding (RFC 7541) without allocation.
//!
//! Written here rather than taken from a crate: the maintained HPACK decoders (`hpack`,
//! `fluke-hpack`/`loona-hpack`, `httlib-hpack`) keep the dynamic table on the heap and return
//! each header (and every Huffman-decoded string) in a freshly allocated `Vec`, and `h2`'s
//! decoder is not public; session state here must be fixed-size and allocation-free.
//!
//! Scope: integers (§5.1), string literals raw or Huffman-coded (§5.2, Appendix B), indexed
//! fields (§6.1), literal fields with and without indexing and never-indexed (§6.2) and dynamic
//! table size updates (§6.3). There is no dynamic table: the first header block of each
//! direction decodes completely (the table starts empty); in later blocks, fields that refer
//! to the dynamic table (index > 61) are skipped, literal fields still decode. Decoded names
//! and values are truncated to [`NAME_CAP`] / [`VALUE_CAP`] bytes.

/// Longest field name kept (bytes); longer names are truncated.
pub const NAME_CAP: usize = 64;
/// Longest field value kept (bytes); longer values are truncated.
pub const VALUE_CAP: usize = 256;
/// Most fragments (HEADERS + CONTINUATION frames) one header block may span.
pub const MAX_FRAGS: usize = 16;

/// The static table (RFC 7541 Appendix A), index 1..=61.
pub const STATIC: [(&str, &str); 61] = [
    (":authority", ""),
    (":method", "GET"),
    (":method", "POST"),
    (":path", "/"),
    (":path", "/index.html"),
    (":scheme", "http"),
    (":scheme", "https"),
    (":status", "200"),
    (":status", "204"),
    (":status", "206"),
    (":status", "304"),
    (":status", "400"),
    (":status", "404"),
    (":status", "500"),
    ("accept-charset", ""),
    ("accept-encoding", "gzip, deflate"),
    ("accept-language", ""),
    ("accept-ranges", ""),
    ("accept", ""),
    ("access-control-allow-origin", ""),
    ("age", ""),
    ("allow", ""),
    ("authorization", ""),
    ("cache-control", ""),
    ("content-disposition", ""),
    ("content-encoding", ""),
    ("content-language", ""),
    ("content-length", ""),
    ("content-location", ""),
    ("content-range", ""),
    ("content-type", ""),
    ("cookie", ""),
    ("date", ""),
    ("etag", ""),
    ("expect", ""),
    ("expires", ""),
    ("from", ""),
    ("host", ""),
    ("if-match", ""),
    ("if-modified-since", ""),
    ("if-none-match", ""),
    ("if-range", ""),
    ("if-unmodified-since", ""),
    ("last-modified", ""),
    ("link", ""),
    ("location", ""),
    ("max-forwards", ""),
    ("proxy-authenticate", ""),
    ("proxy-authorization", ""),
    ("range", ""),
    ("referer", ""),
    ("refresh", ""),
    ("retry-after", ""),
    ("server", ""),
    ("set-cookie", ""),
    ("strict-transport-security", ""),
    ("transfer-encoding", ""),
    ("user-agent", ""),
    ("vary", ""),
    ("via", ""),
    ("www-authenticate", ""),
];

/// The Huffman code (RFC 7541 Appendix B): `(code, bit length)` for symbols 0..=255 and EOS
/// (256). The code is canonical (codes of one length are consecutive, in symbol order), which
/// the decoding tables below rely on and a test checks.
pub const HUFFMAN: [(u32, u8); 257] = [
    (0x1ff8, 13), (0x7fffd8, 23), (0xfffffe2, 28), (0xfffffe3, 28), (0xfffffe4, 28), (0xfffffe5, 28), (0xfffffe6, 28), (0xfffffe7, 28),
    (0xfffffe8, 28), (0xffffea, 24), (0x3ffffffc, 30), (0xfffffe9, 28), (0xfffffea, 28), (0x3ffffffd, 30), (0xfffffeb, 28), (0xfffffec, 28),
    (0xfffffed, 28), (0xfffffee, 28), (0xfffffef, 28), (0xffffff0, 28), (0xffffff1, 28), (0xffffff2, 28), (0x3ffffffe, 30), (0xffffff3, 28),
    (0xffffff4, 28), (0xffffff5, 28), (0xffffff6, 28), (0xffffff7, 28), (0xffffff8, 28), (0xffffff9, 28), (0xffffffa, 28), (0xffffffb, 28),
    (0x14, 6), (0x3f8, 10), (0x3f9, 10), (0xffa, 12), (0x1ff9, 13), (0x15, 6), (0xf8, 8), (0x7fa, 11),
    (0x3fa, 10), (0x3fb, 10), (0xf9, 8), (0x7fb, 11), (0xfa, 8), (0x16, 6), (0x17, 6), (0x18, 6),
    (0x0, 5), (0x1, 5), (0x2, 5), (0x19, 6), (0x1a, 6), (0x1b, 6), (0x1c, 6), (0x1d, 6),
    (0x1e, 6), (0x1f, 6), (0x5c, 7), (0xfb, 8), (0x7ffc, 15), (0x20, 6), (0xffb, 12), (0x3fc, 10),
    (0x1ffa, 13), (0x21, 6), (0x5d, 7), (0x5e, 7), (0x5f, 7), (0x60, 7), (0x61, 7), (0x62, 7),
    (0x63, 7), (0x64, 7), (0x65, 7), (0x66, 7), (0x67, 7), (0x68, 7), (0x69, 7), (0x6a, 7),
    (0x6b, 7), (0x6c, 7), (0x6d, 7), (0x6e, 7), (0x6f, 7), (0x70, 7), (0x71, 7), (0x72, 7),
    (0xfc, 8), (0x73, 7), (0xfd, 8), (0x1ffb, 13), (0x7fff0, 19), (0x1ffc, 13), (0x3ffc, 14), (0x22, 6),
    (0x7ffd, 15), (0x3, 5), (0x23, 6), (0x4, 5), (0x24, 6), (0x5, 5), (0x25, 6), (0x26, 6),
    (0x27, 6), (0x6, 5), (0x74, 7), (0x75, 7), (0x28, 6), (0x29, 6), (0x2a, 6), (0x7, 5),
    (0x2b, 6), (0x76, 7), (0x2c, 6), (0x8, 5), (0x9, 5), (0x2d, 6), (0x77, 7), (0x78, 7),
    (0x79, 7), (0x7a, 7), (0x7b, 7), (0x7ffe, 15), (0x7fc, 11), (0x3ffd, 14), (0x1ffd, 13), (0xffffffc, 28),
    (0xfffe6, 20), (0x3fffd2, 22), (0xfffe7, 20), (0xfffe8, 20), (0x3fffd3, 22), (0x3fffd4, 22), (0x3fffd5, 22), (0x7fffd9, 23),
    (0x3fffd6, 22), (0x7fffda, 23), (0x7fffdb, 23), (0x7fffdc, 23), (0x7fffdd, 23), (0x7fffde, 23), (0xffffeb, 24), (0x7fffdf, 23),
    (0xffffec, 24), (0xffffed, 24), (0x3fffd7, 22), (0x7fffe0, 23), (0xffffee, 24), (0x7fffe1, 23), (0x7fffe2, 23), (0x7fffe3, 23),
    (0x7fffe4, 23), (0x1fffdc, 21), (0x3fffd8, 22), (0x7fffe5, 23), (0x3fffd9, 22), (0x7fffe6, 23), (0x7fffe7, 23), (0xffffef, 24),
    (0x3fffda, 22), (0x1fffdd, 21), (0xfffe9, 20), (0x3fffdb, 22), (0x3fffdc, 22), (0x7fffe8, 23), (0x7fffe9, 23), (0x1fffde, 21),
    (0x7fffea, 23), (0x3fffdd, 22), (0x3fffde, 22), (0xfffff0, 24), (0x1fffdf, 21), (0x3fffdf, 22), (0x7fffeb, 23), (0x7fffec, 23),
    (0x1fffe0, 21), (0x1fffe1, 21), (0x3fffe0, 22), (0x1fffe2, 21), (0x7fffed, 23), (0x3fffe1, 22), (0x7fffee, 23), (0x7fffef, 23),
    (0xfffea, 20), (0x3fffe2, 22), (0x3fffe3, 22), (0x3fffe4, 22), (0x7ffff0, 23), (0x3fffe5, 22), (0x3fffe6, 22), (0x7ffff1, 23),
    (0x3ffffe0, 26), (0x3ffffe1, 26), (0xfffeb, 20), (0x7fff1, 19), (0x3fffe7, 22), (0x7ffff2, 23), (0x3fffe8, 22), (0x1ffffec, 25),
    (0x3ffffe2, 26), (0x3ffffe3, 26), (0x3ffffe4, 26), (0x7ffffde, 27), (0x7ffffdf, 27), (0x3ffffe5, 26), (0xfffff1, 24), (0x1ffffed, 25),
    (0x7fff2, 19), (0x1fffe3, 21), (0x3ffffe6, 26), (0x7ffffe0, 27), (0x7ffffe1, 27), (0x3ffffe7, 26), (0x7ffffe2, 27), (0xfffff2, 24),
    (0x1fffe4, 21), (0x1fffe5, 21), (0x3ffffe8, 26), (0x3ffffe9, 26), (0xffffffd, 28), (0x7ffffe3, 27), (0x7ffffe4, 27), (0x7ffffe5, 27),
    (0xfffec, 20), (0xfffff3, 24), (0xfffed, 20), (0x1fffe6, 21), (0x3fffe9, 22), (0x1fffe7, 21), (0x1fffe8, 21), (0x7ffff3, 23),
    (0x3fffea, 22), (0x3fffeb, 22), (0x1ffffee, 25), (0x1ffffef, 25), (0xfffff4, 24), (0xfffff5, 24), (0x3ffffea, 26), (0x7ffff4, 23),
    (0x3ffffeb, 26), (0x7ffffe6, 27), (0x3ffffec, 26), (0x3ffffed, 26), (0x7ffffe7, 27), (0x7ffffe8, 27), (0x7ffffe9, 27), (0x7ffffea, 27),
    (0x7ffffeb, 27), (0xffffffe, 28), (0x7ffffec, 27), (0x7ffffed, 27), (0x7ffffee, 27), (0x7ffffef, 27), (0x7fffff0, 27), (0x3ffffee, 26),
    (0x3fffffff, 30),
];

/// Canonical decoding tables derived from [`HUFFMAN`] at compile time.
struct Canon {
    /// First code of each bit length.
    first: [u32; 31],
    /// Number of codes of each bit length.
    count: [u16; 31],
    /// Index into `syms` of the first symbol of each bit length.
    offset: [u16; 31],
    /// Symbols sorted by (length, symbol).
    syms: [u16; 257],
}

const fn canon() -> Canon {
    let mut count = [0u16; 31];
    let mut s = 0;
    while s < 257 {
        count[HUFFMAN[s].1 as usize] += 1;
        s += 1;
    }
    let mut offset = [0u16; 31];
    let mut first = [0u32; 31];
    let mut code = 0u32;
    let mut at = 0u16;
    let mut len = 1;
    while len < 31 {
        code <<= 1;
        first[len] = code;
        offset[len] = at;
        code += count[len] as u32;
        at += count[len];
        len += 1;
    }
    let mut syms = [0u16; 257];
    let mut fill = offset;
    let mut len = 1;
    while len < 31 {
        let mut s = 0;
        while s < 257 {
            if HUFFMAN[s].1 as usize == len {
                syms[fill[len] as usize] = s as u16;
                fill[len] += 1;
            }
            s += 1;
        }
        len += 1;
    }
    Canon { first, count, offset, syms }
}

static CANON: Canon = canon();

/// Decoding error: the block is malformed (a decoding error per RFC 7541 §5, §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The block ends inside a representation.
    Truncated,
    /// An integer exceeds 2^28 (RFC 7541 §5.1 leaves the limit to implementations).
    Integer,
    /// Index 0, or past the static table where the dynamic table cannot be used.
    Index,
    /// Invalid Huffman code, EOS symbol, or padding longer than 7 bits / not all ones.
    Huffman,
}

/// Bytes of one header block, spread over up to [`MAX_FRAGS`] frame fragments.
#[derive(Debug, Clone, Copy)]
pub struct Frags<'a> {
    parts: [&'a [u8]; MAX_FRAGS],
    n: usize,
    part: usize,
    pos: usize,
}

impl Default for Frags<'_> {
    fn default() -> Self {
        Frags { parts: [&[]; MAX_FRAGS], n: 0, part: 0, pos: 0 }
    }
}

impl<'a> Frags<'a> {
    /// A block in one piece.
    pub fn one(b: &'a [u8]) -> Self {
        let mut f = Frags::default();
        f.push(b);
        f
    }

    /// Appends a fragment; `false` when [`MAX_FRAGS`] are already held.
    pub fn push(&mut self, b: &'a [u8]) -> bool {
        match self.parts.get_mut(self.n) {
            Some(slot) => {
                *slot = b;
                self.n += 1;
                true
            }
            None => false,
        }
    }

    /// The next byte.
    fn byte(&mut self) -> Option<u8> {
        while self.part < self.n {
            let p = self.parts.get(self.part).copied().unwrap_or_default();
            if let Some(&c) = p.get(self.pos) {
                self.pos += 1;
                return Some(c);
            }
            self.part += 1;
            self.pos = 0;
        }
        None
    }

    /// No bytes left.
    fn at_end(&mut self) -> bool {
        while self.part < self.n {
            let len = self.parts.get(self.part).map_or(0, |p| p.len());
            if self.pos < len {
                return false;
            }
            self.part += 1;
            self.pos = 0;
        }
        true
    }
}

/// Decodes an integer with an `n`-bit prefix whose first byte is `first` (RFC 7541 §5.1).
fn integer(first: u8, n: u32, src: &mut Frags<'_>) -> Result<u32, Error> {
    let max = (1u32 << n) - 1;
    let mut v = u32::from(first) & max;
    if v < max {
        return Ok(v);
    }
    let mut shift = 0;
    loop {
        let b = src.byte().ok_or(Error::Truncated)?;
        if shift > 21 {
            return Err(Error::Integer);
        }
        v += u32::from(b & 0x7f) << shift;
        shift += 7;
        if b & 0x80 == 0 {
            return Ok(v);
        }
    }
}

/// A bounded output buffer for a decoded string.
struct Out<const N: usize> {
    buf: [u8; N],
    len: usize,
}

impl<const N: usize> Out<N> {
    fn new() -> Self {
        Out { buf: [0; N], len: 0 }
    }

    fn push(&mut self, c: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = c;
            self.len += 1;
        }
    }

    fn full(&self) -> bool {
        self.len >= N
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// Decodes a string literal (RFC 7541 §5.2) into `out` (truncated at its capacity).
fn string<const N: usize>(src: &mut Frags<'_>, out: &mut Out<N>) -> Result<(), Error> {
    let first = src.byte().ok_or(Error::Truncated)?;
    let len = integer(first, 7, src)?;
    if first & 0x80 == 0 {
        for _ in 0..len {
            out.push(src.byte().ok_or(Error::Truncated)?);
        }
        return Ok(());
    }
    // Huffman (Appendix B), bit by bit over the canonical code.
    let (mut code, mut bits) = (0u32, 0usize);
    for _ in 0..len {
        let b = src.byte().ok_or(Error::Truncated)?;
        if out.full() {
            continue; // past the cap: skip the rest of the encoded bytes
        }
        for i in (0..8).rev() {
            code = (code << 1) | u32::from((b >> i) & 1);
            bits += 1;
            let (Some(&first), Some(&count), Some(&offset)) =
                (CANON.first.get(bits), CANON.count.get(bits), CANON.offset.get(bits))
            else {
                return Err(Error::Huffman); // longer than 30 bits
            };
            if code >= first && code - first < u32::from(count) {
                let idx = usize::from(offset) + (code - first) as usize;
                match CANON.syms.get(idx) {
                    Some(&s) if s < 256 => out.push(s as u8),
                    _ => return Err(Error::Huffman), // EOS inside a string
                }
                code = 0;
                bits = 0;
            }
        }
    }
    // Padding: at most 7 bits, all ones (a prefix of EOS).
    if !out.full() && (bits > 7 || code != (1u32 << bits) - 1) {
        return Err(Error::Huffman);
    }
    Ok(())
}

/// Decodes one complete header block, calling `field(name, value)` for every field it can
/// resolve (names and values truncated to [`NAME_CAP`] / [`VALUE_CAP`]). Returns the number
/// of fields skipped because they refer to the dynamic table.
pub fn decode(mut src: Frags<'_>, mut field: impl FnMut(&[u8], &[u8])) -> Result<u32, Error> {
    let mut skipped = 0u32;
    while !src.at_end() {
        let b = src.byte().ok_or(Error::Truncated)?;
        if b & 0x80 != 0 {
            // §6.1 indexed field.
            let idx = integer(b, 7, &mut src)?;
            match idx {
                0 => return Err(Error::Index),
                1..=61 => {
                    let (n, v) = STATIC.get(idx as usize - 1).copied().unwrap_or_default();
                    field(n.as_bytes(), v.as_bytes());
                }
                _ => skipped += 1,
            }
            continue;
        }
        if b & 0xe0 == 0x20 {
            // §6.3 dynamic table size update.
            integer(b, 5, &mut src)?;
            continue;
        }
        // §6.2: with incremental indexing (01xxxxxx, 6-bit index), without indexing
        // (0000xxxx) or never indexed (0001xxxx), both with a 4-bit index.
        let idx = if b & 0x40 != 0 { integer(b, 6, &mut src)? } else { integer(b, 4, &mut src)? };
        let mut name = Out::<NAME_CAP>::new();
        let mut known = true;
        match idx {
            0 => string(&mut src, &mut name)?,
            1..=61 => {
                let (n, _) = STATIC.get(idx as usize - 1).copied().unwrap_or_default();
                for &c in n.as_bytes() {
                    name.push(c);
                }
            }
            _ => known = false,
        }
        let mut value = Out::<VALUE_CAP>::new();
        string(&mut src, &mut value)?;
        if known {
            field(name.bytes(), value.bytes());
        } else {
            skipped += 1;
        }
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        let s: Vec<u8> = s.bytes().filter(u8::is_ascii_hexdigit).collect();
        s.chunks(2).map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap()).collect()
    }

    fn fields(b: &[u8]) -> Result<Vec<(String, String)>, Error> {
        let mut v = Vec::new();
        decode(Frags::one(b), |n, x| {
            v.push((String::from_utf8_lossy(n).into_owned(), String::from_utf8_lossy(x).into_owned()))
        })?;
        Ok(v)
    }

    #[test]
    fn huffman_code_is_canonical() {
        let mut order: Vec<usize> = (0..257).collect();
        order.sort_by_key(|&s| (HUFFMAN[s].1, s));
        let mut code = 0u32;
        let mut prev = HUFFMAN[order[0]].1;
        for (i, &s) in order.iter().enumerate() {
            let len = HUFFMAN[s].1;
            if i > 0 {
                code = (code + 1) << (len - prev);
            }
            prev = len;
            assert_eq!(code, HUFFMAN[s].0, "symbol {s}");
        }
    }

    #[test]
    fn rfc7541_c3_request_without_huffman() {
        // C.3.1 first request.
        let f = fields(&hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d")).unwrap();
        let want = [(":method", "GET"), (":scheme", "http"), (":path", "/"), (":authority", "www.example.com")];
        assert_eq!(f, want.map(|(a, b)| (a.to_string(), b.to_string())));
    }

    #[test]
    fn rfc7541_c4_request_with_huffman() {
        // C.4.1 first request.
        let f = fields(&hex("8286 8441 8cf1 e3c2 e5f2 3a6b a0ab 90f4 ff")).unwrap();
        assert_eq!(f[3], (":authority".into(), "www.example.com".into()));
        // C.4.2: the dynamic-table reference (0xbe = index 62) is skipped, the rest decodes.
        let f = fields(&hex("8286 84be 5886 a8eb 1064 9cbf")).unwrap();
        assert_eq!(f.len(), 4);
        assert_eq!(f[3], ("cache-control".into(), "no-cache".into()));
    }

    #[test]
    fn rfc7541_c6_response_with_huffman() {
        // C.6.1 first response.
        let b = hex(
            "4882 6402 5885 aec3 771a 4b61 96d0 7abe 9410 54d4 44a8 2005 9504 0b81 66e0 82a6 2d1b ff6e 919d 29ad 1718 63c7 8f0b 97c8 e9ae 82ae 43d3",
        );
        let f = fields(&b).unwrap();
        assert_eq!(f[0], (":status".into(), "302".into()));
        assert_eq!(f[1], ("cache-control".into(), "private".into()));
        assert_eq!(f[2], ("date".into(), "Mon, 21 Oct 2013 20:13:21 GMT".into()));
        assert_eq!(f[3], ("location".into(), "https://www.example.com".into()));
    }

    #[test]
    fn fragments_and_errors() {
        let b = hex("8286 8441 0f77 7777 2e65 7861 6d70 6c65 2e63 6f6d");
        for cut in 0..b.len() {
            let mut f = Frags::default();
            f.push(&b[..cut]);
            f.push(&b[cut..]);
            let mut n = 0;
            decode(f, |_, _| n += 1).unwrap();
            assert_eq!(n, 4);
            // Truncated blocks are errors, never panics.
            if cut > 0 {
                let _ = fields(&b[..cut]);
            }
        }
        assert_eq!(fields(&[0x80]), Err(Error::Index));
        assert_eq!(fields(&[0x3f, 0xff, 0xff, 0xff, 0xff, 0xff]), Err(Error::Integer));
        assert_eq!(fields(&[0x00, 0x81, 0x00]), Err(Error::Huffman));
        assert_eq!(fields(&[0x40, 0x81]), Err(Error::Truncated));
    }
}
