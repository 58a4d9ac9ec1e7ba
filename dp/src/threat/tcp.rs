//! Threats judged on one TCP segment's header: `bad_packet` (flag combinations no TCP sends),
//! `tcp_small_mss`, `tcp_syn_data` (data on a SYN without a Fast Open cookie),
//! `tcp_split_handshake` and `tcp_small_window` (judged against the session's handshake).
//!
//! Sources: RFC 9293 §3.1 (header, flags), §3.5 (handshake; a SYN answered by a SYN without
//! ACK is the simultaneous open of §3.5 figure 8, which real clients and servers do not do and
//! the "split handshake" evasion uses to make some IDSs swap client and server), RFC 7413 §4.1
//! (the Fast Open cookie option, kind 34, and the experimental kind 254 with magic 0xF989),
//! RFC 9293 §3.7.1 (MSS option, kind 2).

use crate::wire::tcpflag::{ACK, FIN, PSH, RST, SYN, URG};

/// The options of a SYN that the threat checks read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SynOptions {
    /// Maximum segment size announced (option kind 2), bytes.
    pub mss: Option<u16>,
    /// A TCP Fast Open option (kind 34, or 254 with magic 0xF989) is present.
    pub fast_open: bool,
}

/// Reads the MSS and Fast Open options of a TCP header's option bytes (`segment[20..offset]`).
/// A malformed option list ends the walk with what was read before it.
pub fn syn_options(options: &[u8]) -> SynOptions {
    let mut out = SynOptions::default();
    let mut i = 0;
    while let Some(&kind) = options.get(i) {
        match kind {
            0 => break,
            1 => i += 1,
            _ => {
                let Some(&len) = options.get(i + 1) else { break };
                let len = usize::from(len);
                if len < 2 || i + len > options.len() {
                    break;
                }
                let body = &options[i + 2..i + len];
                match kind {
                    2 if body.len() == 2 => out.mss = Some(u16::from_be_bytes([body[0], body[1]])),
                    34 => out.fast_open = true,
                    254 if body.len() >= 2 && body[..2] == [0xf9, 0x89] => out.fast_open = true,
                    _ => {}
                }
                i += len;
            }
        }
    }
    out
}

/// The option bytes of a TCP segment (`segment` from the TCP header on), empty when the data
/// offset is inconsistent.
pub fn options_of(segment: &[u8]) -> &[u8] {
    let off = segment.get(12).map_or(0, |b| usize::from(b >> 4) * 4);
    segment.get(20..off).unwrap_or_default()
}

/// Why a flag combination cannot come from a TCP (RFC 9293 §3.1, §3.10.7): `None` when it
/// can. SYN with FIN or RST, no flag at all (null scan), and FIN or URG without ACK (every
/// segment after the first SYN carries ACK; FIN/Xmas scans do not).
pub fn bad_flags(flags: u8) -> Option<&'static str> {
    let f = flags & (SYN | FIN | RST | ACK | PSH | URG);
    if f & SYN != 0 && f & FIN != 0 {
        Some("syn_fin")
    } else if f & SYN != 0 && f & RST != 0 {
        Some("syn_rst")
    } else if f == 0 {
        Some("null_flags")
    } else if f & ACK == 0 && f & (FIN | URG) != 0 && f & RST == 0 {
        if f & (FIN | PSH | URG) == FIN | PSH | URG {
            Some("xmas")
        } else {
            Some("fin_without_ack")
        }
    } else {
        None
    }
}

/// `tcp_small_mss`: the MSS a SYN announces when it is below `min_mss`.
pub fn small_mss(flags: u8, segment: &[u8], min_mss: u16) -> Option<u16> {
    if flags & SYN == 0 {
        return None;
    }
    syn_options(options_of(segment)).mss.filter(|&m| m < min_mss)
}

/// `tcp_syn_data`: a SYN carries `payload` without a Fast Open cookie. (With a cookie the
/// data is the server's to accept; a SYN|ACK that does not acknowledge it is the detection
/// then, made where the data is dropped from the stream.)
pub fn syn_data_without_cookie(flags: u8, segment: &[u8], payload: &[u8]) -> bool {
    flags & SYN != 0 && !payload.is_empty() && !syn_options(options_of(segment)).fast_open
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_combinations() {
        for (f, want) in [
            (SYN, None),
            (SYN | ACK, None),
            (ACK, None),
            (FIN | ACK, None),
            (RST, None),
            (RST | ACK, None),
            (PSH | ACK | URG, None),
            (SYN | FIN, Some("syn_fin")),
            (SYN | FIN | ACK, Some("syn_fin")),
            (SYN | RST, Some("syn_rst")),
            (0, Some("null_flags")),
            (FIN, Some("fin_without_ack")),
            (FIN | PSH | URG, Some("xmas")),
            (URG, Some("fin_without_ack")),
        ] {
            assert_eq!(bad_flags(f), want, "{f:#04x}");
        }
        // ECE/CWR/NS bits do not change the verdict.
        assert_eq!(bad_flags(SYN | 0xc0), None);
    }

    #[test]
    fn options_are_read_and_bad_lists_end_the_walk() {
        // MSS 1460, SACK permitted, timestamps, NOP, wscale 7 (a Linux SYN).
        let linux = [2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 3, 7];
        assert_eq!(syn_options(&linux), SynOptions { mss: Some(1460), fast_open: false });
        assert_eq!(syn_options(&[2, 4, 0, 48, 34, 10, 1, 2, 3, 4, 5, 6, 7, 8]), SynOptions { mss: Some(48), fast_open: true });
        assert!(syn_options(&[254, 4, 0xf9, 0x89]).fast_open);
        assert!(!syn_options(&[254, 4, 0xf9, 0x88]).fast_open);
        // Zero length, length past the end, a truncated MSS: nothing read from there on.
        assert_eq!(syn_options(&[1, 2, 0, 2, 4, 0, 48]), SynOptions::default());
        assert_eq!(syn_options(&[2, 9, 0, 48]), SynOptions::default());
        assert_eq!(syn_options(&[2, 3, 0]).mss, None);
        for cut in 0..linux.len() {
            let _ = syn_options(&linux[..cut]);
        }
    }
}
