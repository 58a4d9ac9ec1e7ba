//! tcpdump filter expressions: compiled by libpcap, run by our own classic BPF interpreter.
//!
//! `pcap_compile` is the only compiler of the tcpdump filter language that matters (every
//! operator knows its quirks), so the expression goes through libpcap itself, through the
//! `pcap` crate's safe wrapper (`Capture::dead(Ethernet).compile`), on the control thread
//! when a capture starts. The program it returns is copied out as plain instructions
//! ([`Program`]) and checked as the kernel checks a classic BPF program (`bpf_check_classic`:
//! known opcodes, jumps forward and inside the program, scratch memory indices below 16,
//! ending in a return), so a worker never calls into C: it runs the program with
//! [`Program::matches`], a safe interpreter with no allocation whose work is bounded by the
//! program's length (classic BPF only jumps forward). A load beyond the frame rejects the
//! frame, as in the kernel and libpcap; so does a division by zero.
//!
//! Frames are Ethernet frames as received (VLAN tags included): the language's usual rules
//! apply (`vlan and host 198.18.0.2` for tagged frames).

/// Most instructions a program may have (the kernel's `BPF_MAXINSNS`).
pub const MAX_INSNS: usize = 4096;

/// Scratch memory words (`BPF_MEMWORDS`).
const MEM_WORDS: usize = 16;

/// One classic BPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Opcode.
    pub code: u16,
    /// Jump offset if true.
    pub jt: u8,
    /// Jump offset if false.
    pub jf: u8,
    /// Generic field (constant, offset, memory index).
    pub k: u32,
}

/// A checked classic BPF program over Ethernet frames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Program {
    insns: Vec<Insn>,
}

/// Why a filter cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// libpcap refused the expression (its message).
    #[error("filter {expr:?}: {message}")]
    Compile {
        /// The expression.
        expr: String,
        /// libpcap's error text.
        message: String,
    },
    /// The compiled program failed the checks (should not happen with libpcap's output).
    #[error("filter program: {0}")]
    Invalid(String),
}

// Opcode fields (linux/filter.h, pcap/bpf.h).
const CLASS: u16 = 0x07;
const LD: u16 = 0x00;
const LDX: u16 = 0x01;
const ST: u16 = 0x02;
const STX: u16 = 0x03;
const ALU: u16 = 0x04;
const JMP: u16 = 0x05;
const RET: u16 = 0x06;
const MISC: u16 = 0x07;
const SIZE: u16 = 0x18;
const W: u16 = 0x00;
const H: u16 = 0x08;
const B: u16 = 0x10;
const MODE: u16 = 0xe0;
const IMM: u16 = 0x00;
const ABS: u16 = 0x20;
const IND: u16 = 0x40;
const MEM: u16 = 0x60;
const LEN: u16 = 0x80;
const MSH: u16 = 0xa0;
const OP: u16 = 0xf0;
const SRC_X: u16 = 0x08;
const RVAL: u16 = 0x18;
const RVAL_A: u16 = 0x10;
const MISCOP: u16 = 0xf8;
const TAX: u16 = 0x00;
const TXA: u16 = 0x80;

/// Compiles tcpdump expression `expr` for Ethernet frames with libpcap (optimised) and checks
/// the program.
///
/// # Errors
/// [`FilterError::Compile`] with libpcap's message (syntax, unknown host or protocol name);
/// [`FilterError::Invalid`] if the program fails the checks.
pub fn compile(expr: &str) -> Result<Program, FilterError> {
    let err = |e: pcap::Error| FilterError::Compile { expr: expr.to_string(), message: e.to_string() };
    let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).map_err(err)?;
    let prog = dead.compile(expr, true).map_err(err)?;
    // The crate exposes instructions only through `Display` ("code jt jf k").
    let insns = prog
        .get_instructions()
        .iter()
        .map(|i| {
            let text = i.to_string();
            let f: Vec<u32> = text.split(' ').filter_map(|x| x.parse().ok()).collect();
            match f[..] {
                [code, jt, jf, k] => Ok(Insn { code: code as u16, jt: jt as u8, jf: jf as u8, k }),
                _ => Err(FilterError::Invalid(format!("unreadable instruction {text:?}"))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Program::new(insns)
}

impl Program {
    /// A program of `insns` after the kernel's checks.
    ///
    /// # Errors
    /// [`FilterError::Invalid`] naming the first failing instruction.
    pub fn new(insns: Vec<Insn>) -> Result<Program, FilterError> {
        if insns.is_empty() || insns.len() > MAX_INSNS {
            return Err(FilterError::Invalid(format!("{} instructions (1..={MAX_INSNS})", insns.len())));
        }
        let n = insns.len();
        for (pc, i) in insns.iter().enumerate() {
            let bad = |why: &str| Err(FilterError::Invalid(format!("instruction {pc} ({i:?}): {why}")));
            let ok = match i.code & CLASS {
                LD => matches!(i.code & MODE, IMM | ABS | IND | MEM | LEN) && matches!(i.code & SIZE, W | H | B)
                    && (i.code & MODE != MEM || (i.k as usize) < MEM_WORDS)
                    && (matches!(i.code & MODE, ABS | IND) || i.code & SIZE == W),
                LDX => match i.code & MODE {
                    IMM | LEN => i.code & SIZE == W,
                    MEM => i.code & SIZE == W && (i.k as usize) < MEM_WORDS,
                    MSH => i.code & SIZE == B,
                    _ => false,
                },
                ST | STX => (i.k as usize) < MEM_WORDS && i.code & !CLASS == 0,
                ALU => match i.code & OP {
                    0x00 | 0x10 | 0x20 | 0x40 | 0x50 | 0x60 | 0x70 | 0xa0 => true,
                    // Division and modulo by a constant zero never run.
                    0x30 | 0x90 => i.code & SRC_X != 0 || i.k != 0,
                    0x80 => i.code & SRC_X == 0,
                    _ => false,
                },
                JMP => match i.code & OP {
                    0x00 => (i.k as usize) < n - pc - 1,
                    0x10 | 0x20 | 0x30 | 0x40 => usize::from(i.jt.max(i.jf)) < n - pc - 1,
                    _ => false,
                },
                RET => matches!(i.code & RVAL, 0x00 | RVAL_A) && i.code & !(CLASS | RVAL) == 0,
                MISC => matches!(i.code & MISCOP, TAX | TXA),
                _ => false,
            };
            if !ok {
                return bad("not a valid classic BPF instruction here");
            }
        }
        if insns[n - 1].code & CLASS != RET {
            return Err(FilterError::Invalid("the program does not end with a return".into()));
        }
        Ok(Program { insns })
    }

    /// The instructions.
    pub fn insns(&self) -> &[Insn] {
        &self.insns
    }

    /// True when the program accepts `frame` (returns a non-zero length). At most one pass
    /// over the program (jumps only go forward); no allocation.
    pub fn matches(&self, frame: &[u8]) -> bool {
        let (mut a, mut x) = (0u32, 0u32);
        let mut mem = [0u32; MEM_WORDS];
        let mut pc = 0usize;
        let load = |off: u32, size: u16| -> Option<u32> {
            let off = off as usize;
            let b = |n: usize| frame.get(off..off.checked_add(n)?);
            match size {
                W => b(4).map(|s| u32::from_be_bytes([s[0], s[1], s[2], s[3]])),
                H => b(2).map(|s| u32::from(u16::from_be_bytes([s[0], s[1]]))),
                _ => b(1).map(|s| u32::from(s[0])),
            }
        };
        while let Some(i) = self.insns.get(pc) {
            pc += 1;
            match i.code & CLASS {
                LD => {
                    a = match i.code & MODE {
                        IMM => i.k,
                        ABS => match load(i.k, i.code & SIZE) {
                            Some(v) => v,
                            None => return false,
                        },
                        IND => match x.checked_add(i.k).and_then(|o| load(o, i.code & SIZE)) {
                            Some(v) => v,
                            None => return false,
                        },
                        MEM => mem[i.k as usize % MEM_WORDS],
                        _ => frame.len() as u32,
                    }
                }
                LDX => {
                    x = match i.code & MODE {
                        IMM => i.k,
                        MEM => mem[i.k as usize % MEM_WORDS],
                        LEN => frame.len() as u32,
                        _ => match load(i.k, B) {
                            Some(v) => 4 * (v & 0x0f),
                            None => return false,
                        },
                    }
                }
                ST => mem[i.k as usize % MEM_WORDS] = a,
                STX => mem[i.k as usize % MEM_WORDS] = x,
                ALU => {
                    let v = if i.code & SRC_X != 0 { x } else { i.k };
                    a = match i.code & OP {
                        0x00 => a.wrapping_add(v),
                        0x10 => a.wrapping_sub(v),
                        0x20 => a.wrapping_mul(v),
                        0x30 => match a.checked_div(v) {
                            Some(q) => q,
                            None => return false,
                        },
                        0x40 => a | v,
                        0x50 => a & v,
                        0x60 => a.checked_shl(v).unwrap_or(0),
                        0x70 => a.checked_shr(v).unwrap_or(0),
                        0x80 => a.wrapping_neg(),
                        0x90 => match a.checked_rem(v) {
                            Some(r) => r,
                            None => return false,
                        },
                        _ => a ^ v,
                    }
                }
                JMP => {
                    let v = if i.code & SRC_X != 0 { x } else { i.k };
                    let taken = match i.code & OP {
                        0x00 => {
                            pc += i.k as usize;
                            continue;
                        }
                        0x10 => a == v,
                        0x20 => a > v,
                        0x30 => a >= v,
                        _ => a & v != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                RET => return (if i.code & RVAL == RVAL_A { a } else { i.k }) != 0,
                _ => {
                    if i.code & MISCOP == TAX {
                        x = a;
                    } else {
                        a = x;
                    }
                }
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real frames of the corpus (HTTP, DNS, TLS) and IPv6 ones.
    fn frames() -> Vec<Vec<u8>> {
        let mut v = Vec::new();
        for f in ["http.pcap", "dns.pcap", "tls.pcap", "ntp.pcap"] {
            let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../corpus").join(f);
            let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(path).unwrap()).unwrap();
            while let Some(p) = r.next_packet() {
                v.push(p.unwrap().data.into_owned());
            }
        }
        v.push(crate::wire::tests::udp6_ext(b"hello"));
        v.push(crate::wire::tests::tcp4(&[7], crate::wire::tcpflag::SYN, b""));
        v
    }

    /// Our interpreter agrees with libpcap's own (`pcap_offline_filter`) on every frame for
    /// a spread of expressions (addresses, nets, ports, flags, lengths, VLAN, IPv6, byte
    /// offsets, arithmetic), and each expression matches some frames and not others.
    #[test]
    fn the_interpreter_agrees_with_libpcap() {
        let frames = frames();
        let exprs = [
            "tcp port 80",
            "host 198.18.0.2 and tcp",
            "net 198.18.0.0/24 and not port 53",
            "udp and dst port 53",
            "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
            "greater 200",
            "less 80",
            "ip6",
            "ip6 and ip6[6] == 0",
            "vlan 7",
            "tcp and (((ip[2:2] - ((ip[0]&0xf)<<2)) - ((tcp[12]&0xf0)>>2)) != 0)",
            "ip[8] > 60 and ip[8] % 2 == 0",
            "portrange 1-1024 or icmp",
            "ether dst 02:00:00:00:00:02",
        ];
        let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        for e in exprs {
            let ours = compile(e).unwrap();
            let theirs = dead.compile(e, true).unwrap();
            let mut hits = 0;
            for f in &frames {
                assert_eq!(ours.matches(f), theirs.filter(f), "{e:?} on a frame of {} bytes", f.len());
                hits += usize::from(ours.matches(f));
            }
            assert!(hits > 0 && hits < frames.len(), "{e:?} matched {hits} of {}", frames.len());
        }
    }

    /// Frames an attacker writes: random bytes of every length from 0 to 160 behind a valid
    /// or a random Ethernet type, through programs with loads at variable offsets. No panic,
    /// and the same answer as libpcap.
    #[test]
    fn random_frames_agree_and_never_panic() {
        let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        let exprs = ["tcp port 80", "ip6 and ip6[6] == 0", "tcp[tcpflags] & tcp-syn != 0", "udp[8:4] = 0x01020304", "ip[6:2] & 0x1fff != 0"];
        let progs: Vec<_> = exprs.iter().map(|e| (compile(e).unwrap(), dead.compile(e, true).unwrap())).collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for len in 0..160usize {
            for round in 0..40 {
                let mut f: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                if len >= 24 && round % 2 == 0 {
                    // IPv4 or IPv6 with a random header behind it.
                    let (t, v) = if round % 4 == 0 { (0x0800u16, 0x45u8) } else { (0x86dd, 0x60) };
                    f[12..14].copy_from_slice(&t.to_be_bytes());
                    f[14] = v;
                }
                for ((ours, theirs), e) in progs.iter().zip(exprs) {
                    assert_eq!(ours.matches(&f), theirs.filter(&f), "{e:?} on {f:02x?}");
                }
            }
        }
    }

    #[test]
    fn libpcap_errors_are_reported() {
        let e = compile("tcp port eighty").unwrap_err();
        assert!(matches!(&e, FilterError::Compile { message, .. } if !message.is_empty()), "{e}");
        assert!(compile("host 198.18.0.2 and and").is_err());
    }

    /// Programs written by hand: what the checks refuse, and loads past the frame reject it.
    #[test]
    fn checks_and_bounds() {
        let ret = |k| Insn { code: RET, jt: 0, jf: 0, k };
        assert!(Program::new(vec![]).is_err());
        assert!(Program::new(vec![Insn { code: LD | W | ABS, jt: 0, jf: 0, k: 0 }]).is_err(), "no return");
        assert!(Program::new(vec![Insn { code: JMP, jt: 0, jf: 0, k: 5 }, ret(1)]).is_err(), "jump out");
        assert!(Program::new(vec![Insn { code: JMP | 0x10, jt: 1, jf: 0, k: 0 }, ret(1)]).is_err(), "jt out");
        assert!(Program::new(vec![Insn { code: ST, jt: 0, jf: 0, k: 16 }, ret(1)]).is_err(), "memory index");
        assert!(Program::new(vec![Insn { code: ALU | 0x30, jt: 0, jf: 0, k: 0 }, ret(1)]).is_err(), "div by 0");
        assert!(Program::new(vec![Insn { code: 0xff, jt: 0, jf: 0, k: 0 }, ret(1)]).is_err(), "opcode");
        // ld [1000]; ret #1: a short frame is rejected, a long one accepted.
        let p = Program::new(vec![Insn { code: LD | B | ABS, jt: 0, jf: 0, k: 1000 }, ret(1)]).unwrap();
        assert!(!p.matches(&[0; 64]));
        assert!(p.matches(&[0; 1001]));
        // ldx #0xffffffff; ld [x + 2]: the offset overflows, rejected, no panic.
        let p = Program::new(vec![
            Insn { code: LDX | W | IMM, jt: 0, jf: 0, k: u32::MAX },
            Insn { code: LD | H | IND, jt: 0, jf: 0, k: 2 },
            ret(1),
        ])
        .unwrap();
        assert!(!p.matches(&[0; 64]));
        // Division by X = 0 at run time rejects.
        let p = Program::new(vec![Insn { code: ALU | 0x30 | SRC_X, jt: 0, jf: 0, k: 0 }, ret(1)]).unwrap();
        assert!(!p.matches(&[0; 64]));
        assert!(!Program::new(vec![ret(0)]).unwrap().matches(&[0; 64]));
    }
}
