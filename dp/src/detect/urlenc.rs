//! URL decoding for the HTTP detectors: `application/x-www-form-urlencoded` splitting and
//! percent-decoding (WHATWG URL Standard §5.1 "application/x-www-form-urlencoded parsing":
//! split on `&`, name and value at the first `=`, `+` is a space, `%XX` is a byte, a `%` not
//! followed by two hex digits stays as it is).
//!
//! Written here (a dozen lines) rather than with `percent-encoding`: its decoder is an iterator
//! over the input and has no `+`-to-space mode, so form values would need a copy first; this
//! one decodes straight into a caller's fixed-size buffer, without allocation.

/// Longest decoded value checked (bytes); longer values are cut.
pub const MAX_VALUE: usize = 4096;

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decodes `raw` into `out` (`%XX` → byte; `+` → space when `plus` is set); returns the decoded
/// length, at most `out.len()` (the rest of `raw` is dropped).
pub fn decode_into(raw: &[u8], plus: bool, out: &mut [u8]) -> usize {
    let (mut i, mut n) = (0, 0);
    while i < raw.len() && n < out.len() {
        let c = raw[i];
        let (b, step) = match c {
            b'%' => match (raw.get(i + 1).copied().and_then(hex), raw.get(i + 2).copied().and_then(hex)) {
                (Some(h), Some(l)) => (h << 4 | l, 3),
                _ => (b'%', 1),
            },
            b'+' if plus => (b' ', 1),
            _ => (c, 1),
        };
        out[n] = b;
        n += 1;
        i += step;
    }
    n
}

/// Longest raw value decoded in the short buffer of [`with_decoded`] (bytes).
const SHORT: usize = 256;

/// Calls `f` with `raw` decoded ([`decode_into`], cut at [`MAX_VALUE`] bytes) in a stack buffer
/// sized to it: decoding never lengthens a value, so a value of at most 256 bytes is decoded
/// into a 256-byte buffer instead of a [`MAX_VALUE`] one (each buffer is zeroed first: a
/// 4 KiB zeroing per query-string value was a large part of checking short ones).
#[inline]
pub fn with_decoded<R>(raw: &[u8], plus: bool, f: impl FnOnce(&[u8]) -> R) -> R {
    if raw.len() <= SHORT {
        let mut buf = [0u8; SHORT];
        let n = decode_into(raw, plus, &mut buf);
        f(&buf[..n])
    } else {
        let mut buf = [0u8; MAX_VALUE];
        let n = decode_into(raw, plus, &mut buf);
        f(&buf[..n])
    }
}

/// Whether decoding `raw` changes it (it has a `%XX` or, with `plus`, a `+`).
pub fn needs_decoding(raw: &[u8], plus: bool) -> bool {
    raw.iter().any(|&c| c == b'%' || (plus && c == b'+'))
}

/// The raw values of a query string or form body (`a=1&b=2`): for each `&`-separated pair,
/// the part after the first `=` (a pair without `=` is a value of its own, as PHP and Python
/// read a bare `?1' OR 1=1`). Empty pairs are skipped.
pub fn values(query: &[u8]) -> impl Iterator<Item = &[u8]> {
    query.split(|&c| c == b'&').filter(|p| !p.is_empty()).map(|p| match p.iter().position(|&c| c == b'=') {
        Some(i) => &p[i + 1..],
        None => p,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(raw: &[u8]) -> Vec<u8> {
        let mut out = [0u8; 64];
        let n = decode_into(raw, true, &mut out);
        out[..n].to_vec()
    }

    #[test]
    fn decodes_percent_and_plus() {
        // The request line of the e2e injection: /item?id=1%27%20OR%20%271%27%3D%271
        assert_eq!(dec(b"1%27%20OR%20%271%27%3D%271"), b"1' OR '1'='1");
        assert_eq!(dec(b"O%27Reilly+books"), b"O'Reilly books");
        assert_eq!(dec(b"100%"), b"100%");
        assert_eq!(dec(b"%zz%4"), b"%zz%4");
        assert_eq!(dec(b"a%2Bb"), b"a+b");
        let mut small = [0u8; 3];
        assert_eq!(decode_into(b"abcdef", true, &mut small), 3);
        assert_eq!(&small, b"abc");
    }

    #[test]
    fn short_and_long_values_decode_alike() {
        for len in [0usize, 1, 255, 256, 257, 4095, 4096, 5000] {
            let raw: Vec<u8> = (0..len).map(|i| [b'%', b'4', b'1', b'+', b'x'][i % 5]).collect();
            let mut full = vec![0u8; MAX_VALUE];
            let n = decode_into(&raw, true, &mut full);
            with_decoded(&raw, true, |v| assert_eq!(v, &full[..n], "{len}"));
        }
    }

    #[test]
    fn splits_values() {
        let v: Vec<&[u8]> = values(b"id=1&RLmN=2338 AND 1=1&&bare").collect();
        assert_eq!(v, vec![&b"1"[..], b"2338 AND 1=1", b"bare"]);
        assert!(needs_decoding(b"a+b", true) && !needs_decoding(b"a+b", false) && !needs_decoding(b"ab", true));
    }
}
