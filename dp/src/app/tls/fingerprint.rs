//! TLS client fingerprints of a ClientHello: JA3 (Salesforce, 2017: MD5 of
//! "version,ciphers,extensions,groups,point_formats", decimal, dash-joined) and JA4 (FoxIO
//! JA4 specification, `technical_details/JA4.md`: `t<ver><d|i><nn ciphers><nn ext><alpn>_<sha256
//! of sorted ciphers, 12 hex>_<sha256 of sorted extensions without SNI/ALPN + "_" + signature
//! algorithms, 12 hex>`). GREASE values (RFC 8701) are excluded from both.

use std::fmt::Write as _;

use md5::{Digest as _, Md5};
use sha2::Sha256;

use super::parser::{is_grease, ClientHello, EXT_ALPN, EXT_SERVER_NAME};

/// Lowercase hex of `bytes`.
fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Joins `items` with `sep`, formatting each with `f`.
fn join<T: Copy>(items: impl Iterator<Item = T>, sep: &str, f: impl Fn(&mut String, T)) -> String {
    let mut s = String::new();
    for (i, it) in items.enumerate() {
        if i > 0 {
            s.push_str(sep);
        }
        f(&mut s, it);
    }
    s
}

/// The JA3 string of a ClientHello.
pub fn ja3_string(ch: &ClientHello<'_>) -> String {
    let dec16 = |s: &mut String, v: u16| {
        let _ = write!(s, "{v}");
    };
    format!(
        "{},{},{},{},{}",
        ch.version,
        join(ch.ciphers.iter().copied().filter(|&c| !is_grease(c)), "-", dec16),
        join(ch.extensions.iter().copied().filter(|&e| !is_grease(e)), "-", dec16),
        join(ch.groups.iter().copied().filter(|&g| !is_grease(g)), "-", dec16),
        join(ch.point_formats.iter().copied(), "-", |s, v: u8| {
            let _ = write!(s, "{v}");
        }),
    )
}

/// MD5 of a JA3 string, lowercase hex (32 characters).
pub fn ja3_hash(ja3: &str) -> String {
    hex(&Md5::digest(ja3.as_bytes()))
}

/// JA4 two-character version code (highest supported_versions entry, else legacy_version).
fn ja4_version(ch: &ClientHello<'_>) -> &'static str {
    let v = ch.supported_versions.iter().copied().filter(|&v| !is_grease(v)).max().unwrap_or(ch.version);
    match v {
        0x0304 => "13",
        0x0303 => "12",
        0x0302 => "11",
        0x0301 => "10",
        0x0300 => "s3",
        0x0002 => "s2",
        0xfeff => "d1",
        0xfefd => "d2",
        0xfefc => "d3",
        _ => "00",
    }
}

/// JA4 ALPN code: first and last character of the first ALPN value when both are ASCII
/// alphanumeric, else the first hex digit of its first byte and the last hex digit of its last
/// byte; "00" without ALPN.
fn ja4_alpn(ch: &ClientHello<'_>) -> String {
    match ch.alpn.first() {
        Some(&&[first, .., last]) | Some(&&[first @ last]) => {
            if first.is_ascii_alphanumeric() && last.is_ascii_alphanumeric() {
                format!("{}{}", first as char, last as char)
            } else {
                format!("{:x}{:x}", first >> 4, last & 0x0f)
            }
        }
        _ => "00".into(),
    }
}

/// First 12 hex characters of the SHA-256 of `s`, or twelve zeros when `empty`.
fn sha12(s: &str, empty: bool) -> String {
    if empty {
        return "000000000000".into();
    }
    let mut h = hex(&Sha256::digest(s.as_bytes()));
    h.truncate(12);
    h
}

/// The JA4 fingerprint of a ClientHello seen over TCP (36 characters).
pub fn ja4(ch: &ClientHello<'_>) -> String {
    let mut ciphers: Vec<u16> = ch.ciphers.iter().copied().filter(|&c| !is_grease(c)).collect();
    let exts: Vec<u16> = ch.extensions.iter().copied().filter(|&e| !is_grease(e)).collect();
    let a = format!(
        "t{}{}{:02}{:02}{}",
        ja4_version(ch),
        if ch.sni.is_some() { 'd' } else { 'i' },
        ciphers.len().min(99),
        exts.len().min(99),
        ja4_alpn(ch),
    );
    ciphers.sort_unstable();
    let hex16 = |s: &mut String, v: u16| {
        let _ = write!(s, "{v:04x}");
    };
    let b = sha12(&join(ciphers.iter().copied(), ",", hex16), ciphers.is_empty());
    let mut sorted: Vec<u16> = exts.iter().copied().filter(|&e| e != EXT_SERVER_NAME && e != EXT_ALPN).collect();
    sorted.sort_unstable();
    let mut c_in = join(sorted.iter().copied(), ",", hex16);
    let sigs: Vec<u16> = ch.sig_algs.iter().copied().filter(|&s| !is_grease(s)).collect();
    if !sigs.is_empty() {
        c_in.push('_');
        c_in.push_str(&join(sigs.iter().copied(), ",", hex16));
    }
    let c = sha12(&c_in, sorted.is_empty());
    format!("{a}_{b}_{c}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A published JA4 example (raw form `t13d1516h2_<ciphers>_<extensions>_<sigalgs>`, the
    /// first ALPN being "h2", with SNI): checks the hashing and ordering rules independently of
    /// the corpus.
    #[test]
    fn ja4_published_example() {
        let ciphers = [
            0x002f, 0x0035, 0x009c, 0x009d, 0x1301, 0x1302, 0x1303, 0xc013, 0xc014, 0xc02b, 0xc02c, 0xc02f,
            0xc030, 0xcca8, 0xcca9,
        ];
        let exts = [
            0x0005, 0x000a, 0x000b, 0x000d, 0x0012, 0x0017, 0x001b, 0x0023, 0x002b, 0x002d, 0x0033, 0x44cd,
            0xfe0d, 0xff01, 0x0000, 0x0010, 0x0a0a,
        ];
        let ch = ClientHello {
            version: 0x0303,
            ciphers: ciphers.iter().rev().copied().chain([0x2a2a]).collect(),
            extensions: exts.to_vec(),
            sni: Some(b"example"),
            alpn: vec![b"h2"],
            supported_versions: vec![0x3a3a, 0x0304, 0x0303],
            sig_algs: vec![0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601],
            ..ClientHello::default()
        };
        assert_eq!(ja4(&ch), "t13d1516h2_8daaf6152771_d8a2da3f94cd");
    }

    #[test]
    fn alpn_codes() {
        let mut ch = ClientHello::default();
        assert_eq!(ja4_alpn(&ch), "00");
        ch.alpn = vec![b"http/1.1"];
        assert_eq!(ja4_alpn(&ch), "h1");
        ch.alpn = vec![b"\xab"];
        assert_eq!(ja4_alpn(&ch), "ab");
        ch.alpn = vec![b"x"];
        assert_eq!(ja4_alpn(&ch), "xx");
    }

    #[test]
    fn ja3_skips_grease() {
        let ch = ClientHello {
            version: 771,
            ciphers: vec![0x0a0a, 4865, 4866],
            extensions: vec![0x1a1a, 0, 11, 10],
            groups: vec![0x2a2a, 29, 23],
            point_formats: vec![0],
            ..ClientHello::default()
        };
        assert_eq!(ja3_string(&ch), "771,4865-4866,0-11-10,29-23,0");
        assert_eq!(ja3_hash("").len(), 32);
        assert_eq!(ja3_hash(""), "d41d8cd98f00b204e9800998ecf8427e");
    }
}
