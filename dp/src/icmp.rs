//! ICMP and ICMPv6 on the packet path: errors and redirects judged against the session they
//! quote, and echo requests and replies told apart. [`stage`] runs before the frame's own
//! session is tracked; [`owner_key`] tells a worker which worker owns a frame.
//!
//! **Errors** (RFC 792; RFC 4443 §2.4, §3) quote the header of the packet that caused them. An
//! error counts toward the session it quotes (frame and bytes in the direction it travels,
//! `icmp.errors` of the session, `errors_related`) only when it is about that session *as the
//! error travels*:
//! - it goes to the end that sent the quoted packet (the quoted source is the error's
//!   destination): an error travels back to the sender of the packet it is about;
//! - for TCP, the quoted sequence number lies in what that end has sent and not had
//!   acknowledged ([`crate::tcpseq::TcpSeq::quoted_in_window`], RFC 5927 §4.1), so an
//!   off-path attacker who knows a session's addresses and ports still has to guess it.
//!
//! Who sent the error cannot be checked (any router on the path may), so that is all a
//! middlebox can require. An error failing a check is counted by [`Reject`] reason and in the
//! session's `icmp.rejected`; it is dropped when the session's deciding mode, or the mode of the
//! workload it is addressed to, is `protect` (and then counted as a frame of the session seen
//! and dropped, without refreshing it: [`SessionTable::count_rejected`]), and forwarded (so
//! flagged, not blocked, and not counted in the session's frames) in `alert` and `learn`. Any
//! error about a session denied by policy is dropped with it. An error quoting no live session
//! is not about a flow Warden knows: the pipeline goes on with it as an ICMP flow of its own,
//! opened by its sender and decided by the policy like any other. (The pipeline's origin check,
//! anti-spoofing, runs before this stage for every frame, errors included.)
//!
//! **Redirects** (ICMPv4 type 5, ICMPv6 type 137, RFC 4861 §8) rewrite a host's routes:
//! addressed to a `protect`-mode workload they are dropped, whoever sent them. Otherwise an
//! ICMPv4 redirect is judged as an error about the packet it quotes, an ICMPv6 redirect is
//! forwarded as link control; both are counted.
//!
//! **Echo** (and ICMPv4 timestamp) requests and replies are keyed apart by the decoder
//! ([`crate::wire::icmp_ports`]): the requester's end carries the identifier, the responder's
//! end 0. So a session's client is the sender of its echo request, its replies travel to the
//! client, and a request sent from outside with the identifier of a workload's own ping is a
//! flow of its own, decided for its sender. Two cases remain in which a frame would travel
//! against its session: a reply that opens a session (no request seen) is not trusted as a
//! reply: the session is opened by the reply's sender and decided as its flow (counted
//! `echo_reply_opened`); and a request arriving in the server→client direction (a session a
//! reply opened, or identifier 0 both ways) makes its sender the session's client, and the
//! session is decided again as a flow opened by that sender (`echo_reversed`).
//!
//! **Ownership.** With several workers a frame belongs to the worker that owns its flow; an
//! error or ICMPv4 redirect belongs to the owner of the flow it quotes ([`owner_key`]), so it
//! meets that flow's session.
//!
//! Nothing here allocates; everything is O(1) per frame (one or two hash lookups).

use crate::flow::{Addr, FlowKey};
use crate::inspect::{DropReason, FrameMeta, InspectStats, Verdict};
use crate::policy::{CompiledPolicy, Mode};
use crate::session::{Dir, Session, SessionTable};
use crate::wire::{icmp_class, ipproto, Frame, IcmpClass, InnerTuple, Ip, L4};

/// Why an ICMP error quoting a live session did not count toward it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// The error is not addressed to the end that sent the quoted packet.
    Direction = 0,
    /// The quote of a TCP segment ends before its sequence number.
    SeqMissing = 1,
    /// The quoted TCP sequence number is not in what that end has sent and not had
    /// acknowledged.
    SeqOutOfWindow = 2,
}

impl Reject {
    /// All reasons, for counter tables indexed by `self as usize`.
    pub const ALL: [Reject; 3] = [Reject::Direction, Reject::SeqMissing, Reject::SeqOutOfWindow];

    /// Stable snake_case name used in counters.
    pub fn as_str(self) -> &'static str {
        match self {
            Reject::Direction => "wrong_direction",
            Reject::SeqMissing => "seq_missing",
            Reject::SeqOutOfWindow => "seq_out_of_window",
        }
    }
}

/// ICMP errors about one session (part of [`Session`], reported in its record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IcmpCounts {
    /// Errors that quoted the session and passed the checks (counted toward it).
    pub errors: u32,
    /// Errors that quoted the session and failed a check ([`Reject`]).
    pub rejected: u32,
}

/// ICMP counters of one pipeline (frames).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IcmpStats {
    /// Errors counted toward the session they quote.
    pub errors_related: u64,
    /// Errors quoting a live session that failed a check, by [`Reject`] reason.
    pub rejected: [u64; Reject::ALL.len()],
    /// Rejected errors dropped (protect mode); the others were forwarded.
    pub rejected_dropped: u64,
    /// Errors (and ICMPv4 redirects) quoting no live session.
    pub errors_unmatched: u64,
    /// Redirects seen.
    pub redirects: u64,
    /// Redirects dropped because they were addressed to a protect-mode workload.
    pub redirects_dropped: u64,
    /// Echo requests sent in the server→client direction of a session: their sender became
    /// the client and the session was decided again.
    pub echo_reversed: u64,
    /// Echo replies that opened a session (decided as a flow opened by their sender).
    pub echo_reply_opened: u64,
}

impl IcmpStats {
    /// The counters by stable name (`errors_related`, `rejected_<reason>`, ...).
    pub fn named(&self) -> [(&'static str, u64); 10] {
        [
            ("errors_related", self.errors_related),
            ("rejected_wrong_direction", self.rejected[Reject::Direction as usize]),
            ("rejected_seq_missing", self.rejected[Reject::SeqMissing as usize]),
            ("rejected_seq_out_of_window", self.rejected[Reject::SeqOutOfWindow as usize]),
            ("rejected_dropped", self.rejected_dropped),
            ("errors_unmatched", self.errors_unmatched),
            ("redirects", self.redirects),
            ("redirects_dropped", self.redirects_dropped),
            ("echo_reversed", self.echo_reversed),
            ("echo_reply_opened", self.echo_reply_opened),
        ]
    }
}

/// The key of the flow that owns a decoded frame (which worker processes it): for an ICMP
/// error or ICMPv4 redirect, the flow it quotes; otherwise the frame's own flow. `None` for
/// frames that are not IP.
#[inline]
pub fn owner_key(frame: &Frame<'_>, zone: u16) -> Option<FlowKey> {
    let ip = frame.ip.as_ref()?;
    let (proto, src, sport, dst, dport) = match ip.l4 {
        L4::Icmp { invoking: Some(t), .. } => (t.proto, t.src, t.sport, t.dst, t.dport),
        _ => (ip.proto, ip.src, ip.sport, ip.dst, ip.dport),
    };
    Some(FlowKey::new(zone, proto, src, sport, dst, dport).0)
}

/// The ICMP stage of the pipeline, for an IP packet `ip` of `len` frame bytes, before its own
/// session is tracked. `Some(verdict)`: the frame is decided here (an error or redirect judged
/// against the session it quotes, or a redirect dropped); `None`: the pipeline goes on with
/// the frame's own flow (an echo request that moved its session's client goes on as that
/// session's first frame of the new orientation). See the module docs.
pub fn stage(
    sessions: &mut SessionTable,
    policy: &CompiledPolicy,
    stats: &mut InspectStats,
    ip: &Ip<'_>,
    len: u32,
    meta: FrameMeta,
) -> Option<Verdict> {
    let L4::Icmp { kind, invoking, .. } = ip.l4 else { return None };
    match icmp_class(ip.proto, kind) {
        IcmpClass::Redirect => {
            stats.icmp.redirects += 1;
            if mode_of(policy, ip.dst) == Some(Mode::Protect) {
                stats.icmp.redirects_dropped += 1;
                return Some(Verdict::Drop(DropReason::Icmp));
            }
            match invoking {
                Some(t) => error(sessions, policy, stats, ip, &t, len, meta),
                // ICMPv6 redirects are neighbour discovery: link control.
                None => Some(Verdict::Forward),
            }
        }
        IcmpClass::Error => {
            let t = invoking?;
            error(sessions, policy, stats, ip, &t, len, meta)
        }
        IcmpClass::Request => {
            let (k, from) = meta.key(ip.proto, ip.src, ip.sport, ip.dst, ip.dport);
            if let Some((idx, Dir::ToClient)) = sessions.find(&k, from) {
                sessions.set_client(idx, from);
                // Generation 0 is "never evaluated": the pipeline decides the session again.
                sessions.get_mut(idx).policy.generation = 0;
                stats.icmp.echo_reversed += 1;
            }
            None
        }
        IcmpClass::Reply => {
            let (k, from) = meta.key(ip.proto, ip.src, ip.sport, ip.dst, ip.dport);
            if sessions.find(&k, from).is_none() {
                stats.icmp.echo_reply_opened += 1;
            }
            None
        }
        IcmpClass::Other => None,
    }
}

/// Judges an error quoting `t` (module docs); `None` when `t` is no live session.
fn error(
    sessions: &mut SessionTable,
    policy: &CompiledPolicy,
    stats: &mut InspectStats,
    ip: &Ip<'_>,
    t: &InnerTuple,
    len: u32,
    meta: FrameMeta,
) -> Option<Verdict> {
    let (k, sender) = meta.key(t.proto, t.src, t.sport, t.dst, t.dport);
    let Some((idx, quoted_dir)) = sessions.find(&k, sender) else {
        stats.icmp.errors_unmatched += 1;
        return None;
    };
    let s = sessions.get(idx);
    let reject = check(s, quoted_dir, ip, t);
    let blocked = s.policy.blocked;
    let protect = s.policy.mode == Some(Mode::Protect) || mode_of(policy, ip.dst) == Some(Mode::Protect);
    // The error travels back towards the sender of the quoted packet.
    let back = match quoted_dir {
        Dir::ToServer => Dir::ToClient,
        Dir::ToClient => Dir::ToServer,
    };
    if let Some(r) = reject {
        // The way it travels: to the end it is addressed to.
        let travel = if ip.dst == s.client_end().0 && ip.dst != s.server_end().0 {
            Dir::ToClient
        } else if ip.dst == s.server_end().0 && ip.dst != s.client_end().0 {
            Dir::ToServer
        } else {
            back
        };
        let c = &mut sessions.get_mut(idx).icmp;
        c.rejected = c.rejected.saturating_add(1);
        stats.icmp.rejected[r as usize] += 1;
        if blocked || protect {
            // Seen and dropped, without touching the session's state or idle timer.
            sessions.count_rejected(idx, travel, len);
            if blocked {
                stats.policy_dropped += 1;
                return Some(Verdict::Drop(DropReason::PolicyDenied));
            }
            stats.icmp.rejected_dropped += 1;
            return Some(Verdict::Drop(DropReason::Icmp));
        }
        return Some(Verdict::Forward);
    }
    sessions.account(idx, back, len, meta.now_ns);
    let c = &mut sessions.get_mut(idx).icmp;
    c.errors = c.errors.saturating_add(1);
    stats.icmp.errors_related += 1;
    if blocked {
        // Errors follow their session's verdict.
        stats.policy_dropped += 1;
        sessions.count_dropped(idx, back, len);
        return Some(Verdict::Drop(DropReason::PolicyDenied));
    }
    Some(Verdict::Forward)
}

/// The checks an error quoting session `s` (the quoted packet travelling `quoted_dir`) must
/// pass to count toward it.
fn check(s: &Session, quoted_dir: Dir, ip: &Ip<'_>, t: &InnerTuple) -> Option<Reject> {
    if ip.dst != t.src {
        return Some(Reject::Direction);
    }
    if t.proto == ipproto::TCP {
        let seq = match t.seq {
            Some(seq) => seq,
            None => return Some(Reject::SeqMissing),
        };
        if !s.seq.quoted_in_window(quoted_dir, seq) {
            return Some(Reject::SeqOutOfWindow);
        }
    }
    None
}

/// The mode of the workload `addr` belongs to, if it is one.
#[inline]
fn mode_of(policy: &CompiledPolicy, addr: Addr) -> Option<Mode> {
    policy.workload_of(addr.ip()).map(|w| policy.workload_mode(w))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::inspect::{Inspector, MalformedPolicy};
    use crate::policy::{CompiledPolicy, Policy};
    use crate::session::Timeouts;
    use crate::wire::{self, ethertype::{IPV4, IPV6}};
    use crate::wire::ipproto::{ICMP, ICMPV6, TCP, UDP};
    use crate::wire::tcpflag::*;
    use crate::wire::tests::{eth, icmp, ipv4, ipv6, query, tcp, udp, v6};

    /// The client (outside), the workload, a router and a third party.
    const C: [u8; 4] = [198, 18, 0, 1];
    const W: [u8; 4] = [198, 18, 0, 2];
    const R: [u8; 4] = [198, 18, 0, 254];
    const X: [u8; 4] = [198, 18, 0, 77];
    const C6: u8 = 1;
    const W6: u8 = 2;
    const R6: u8 = 0xfe;

    /// Workload `srv` (W, 2001:db8::2) in `mode`: anyone may reach its TCP port 8080, it may
    /// ping and send UDP anywhere; nothing else is allowed.
    fn policy(mode: &str) -> Arc<CompiledPolicy> {
        let text = format!(
            "[[workload]]\nid = \"srv\"\nips = [\"198.18.0.2\", \"2001:db8::2\"]\nmode = \"{mode}\"\n\
             [[rule]]\nid = 1\nfrom = \"any\"\nto = \"srv\"\nip_proto = \"tcp\"\nports = [\"8080\"]\naction = \"allow\"\n\
             [[rule]]\nid = 2\nfrom = \"srv\"\nto = \"any\"\nip_proto = \"icmp\"\naction = \"allow\"\n\
             [[rule]]\nid = 3\nfrom = \"srv\"\nto = \"any\"\nip_proto = \"icmpv6\"\naction = \"allow\"\n\
             [[rule]]\nid = 4\nfrom = \"srv\"\nto = \"any\"\nip_proto = \"udp\"\naction = \"allow\"\n"
        );
        Arc::new(CompiledPolicy::compile(&Policy::from_toml(&text).unwrap()).unwrap())
    }

    struct Rig {
        i: Inspector,
        now: u64,
    }

    impl Rig {
        fn new(mode: &str) -> Rig {
            let mut i = Inspector::new(256, Timeouts::default(), MalformedPolicy::Drop);
            i.set_policy(policy(mode), 1);
            Rig { i, now: 1_000_000_000 }
        }

        fn send(&mut self, frame: &[u8]) -> Verdict {
            self.now += 1_000_000;
            self.i.process(frame, FrameMeta::new(0, 1, self.now))
        }

        /// The session of `frame`'s own flow.
        fn session(&self, frame: &[u8]) -> crate::session::SessionView {
            let f = wire::decode(frame).unwrap();
            let k = owner_key(&f, 0).unwrap();
            let (idx, _) = self.i.sessions.find(&k, crate::flow::End::Lo).unwrap();
            self.i.sessions.view(idx)
        }
    }

    fn f4(src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
        eth(IPV4, &ipv4(src, dst, proto, l4))
    }

    fn f6(src: u8, dst: u8, proto: u8, l4: &[u8]) -> Vec<u8> {
        eth(IPV6, &ipv6(v6(src), v6(dst), proto, l4))
    }

    /// The first 28 bytes of the workload's TCP segment to the client with sequence number
    /// `seq` (what an ICMPv4 error quotes at least, RFC 792).
    fn quote4(seq: u32) -> Vec<u8> {
        ipv4(W, C, TCP, &tcp(8080, 40000, seq, 1006, ACK, 502, None, b"world"))[..28].to_vec()
    }

    /// An IPv4 error of `kind`/`code` from `from` to `to` quoting `quote`.
    fn err4(from: [u8; 4], to: [u8; 4], kind: u8, code: u8, quote: &[u8]) -> Vec<u8> {
        f4(from, to, ICMP, &icmp(kind, code, [0, 0, 0x05, 0x00], quote))
    }

    /// C:40000 → W:8080 handshake (ISNs 1000 and 5000, window scale 7), 5 bytes each way; the
    /// client has not yet acknowledged the workload's 5 bytes, so they (5001..=5006) are in
    /// flight. Returns the frames.
    fn tcp_session(r: &mut Rig) -> Vec<Vec<u8>> {
        let frames = vec![
            f4(C, W, TCP, &tcp(40000, 8080, 1000, 0, SYN, 64240, Some(7), b"")),
            f4(W, C, TCP, &tcp(8080, 40000, 5000, 1001, SYN | ACK, 65160, Some(7), b"")),
            f4(C, W, TCP, &tcp(40000, 8080, 1001, 5001, ACK, 502, None, b"")),
            f4(C, W, TCP, &tcp(40000, 8080, 1001, 5001, ACK | PSH, 502, None, b"hello")),
            f4(W, C, TCP, &tcp(8080, 40000, 5001, 1006, ACK | PSH, 509, None, b"world")),
        ];
        for f in &frames {
            assert_eq!(r.send(f), Verdict::Forward);
        }
        frames
    }

    #[test]
    fn legitimate_errors_from_the_peer_or_a_router_count_toward_their_session() {
        for mode in ["protect", "alert"] {
            let mut r = Rig::new(mode);
            let frames = tcp_session(&mut r);
            let before = r.session(&frames[0]);
            // A router beyond Warden: fragmentation needed (packet too big) for the workload's
            // segment, sequence number in flight.
            let ptb = err4(R, W, 3, 4, &quote4(5001));
            assert_eq!(r.send(&ptb), Verdict::Forward, "{mode}");
            // The peer itself, quoting the next sequence number (a zero-length segment's).
            let unreach = err4(C, W, 3, 1, &quote4(5006));
            assert_eq!(r.send(&unreach), Verdict::Forward, "{mode}");
            let s = r.session(&frames[0]);
            assert_eq!(s.icmp, IcmpCounts { errors: 2, rejected: 0 });
            // Counted toward the session in the direction the errors travel (to the server).
            assert_eq!(s.packets[0], before.packets[0] + 2);
            assert_eq!(s.bytes[0], before.bytes[0] + ptb.len() as u64 + unreach.len() as u64);
            assert_eq!(r.i.stats.icmp.errors_related, 2);
            assert_eq!(r.i.sessions.len(), 1, "an error about a session opens none of its own");
            let rec = crate::record::to_record(&crate::session::SessionSnapshot {
                session: s,
                ended: None,
                app: None,
                policy: None,
            }, |_| String::new());
            assert_eq!((rec.icmp_errors, rec.icmp_errors_rejected), (Some(2), None));
        }
        // A UDP port unreachable from the peer for the workload's datagram.
        let mut r = Rig::new("protect");
        let dgram = f4(W, C, UDP, &udp(5353, 9999, b"q"));
        assert_eq!(r.send(&dgram), Verdict::Forward);
        let quote = ipv4(W, C, UDP, &udp(5353, 9999, b"q"));
        assert_eq!(r.send(&err4(C, W, 3, 3, &quote)), Verdict::Forward);
        assert_eq!(r.session(&dgram).icmp.errors, 1);
    }

    #[test]
    fn forged_errors_are_dropped_in_protect_and_flagged_in_alert() {
        for (mode, want) in [("protect", Verdict::Drop(DropReason::Icmp)), ("alert", Verdict::Forward)] {
            let mut r = Rig::new(mode);
            let frames = tcp_session(&mut r);
            let before = r.session(&frames[0]);
            // A third party quoting the session's 4-tuple with a sequence number it guessed.
            let oow = err4(X, W, 3, 4, &quote4(5001 ^ 0x8000_0000));
            assert_eq!(r.send(&oow), want, "{mode}: out of window");
            // Just outside the range on both sides.
            assert_eq!(r.send(&err4(R, W, 3, 4, &quote4(5000))), want, "{mode}: acknowledged");
            assert_eq!(r.send(&err4(R, W, 3, 4, &quote4(5007))), want, "{mode}: not sent yet");
            // An error about the client's segment sent to the workload: it travels the wrong way.
            let client_seg = ipv4(C, W, TCP, &tcp(40000, 8080, 1001, 5001, ACK, 502, None, b""));
            assert_eq!(r.send(&err4(X, W, 3, 1, &client_seg[..28])), want, "{mode}: direction");
            // A quote cut before the sequence number.
            assert_eq!(r.send(&err4(X, W, 3, 1, &quote4(5001)[..24])), want, "{mode}: no seq");
            let s = r.session(&frames[0]);
            assert_eq!(s.icmp, IcmpCounts { errors: 0, rejected: 5 }, "{mode}");
            // Never refreshed by them; in protect counted as seen and dropped towards the
            // workload (the server), in alert not counted at all.
            assert_eq!(s.last_ns, before.last_ns);
            let dropped = if mode == "protect" { 5 } else { 0 };
            assert_eq!(s.packets, [before.packets[0] + dropped, before.packets[1]], "{mode}");
            assert_eq!(s.dropped_packets, [dropped, 0], "{mode}");
            let st = r.i.stats.icmp;
            assert_eq!(st.rejected, [1, 1, 3], "{mode}");
            assert_eq!(st.rejected_dropped, if mode == "protect" { 5 } else { 0 });
            assert_eq!(st.errors_related, 0);
            // The legitimate error still passes afterwards.
            assert_eq!(r.send(&err4(R, W, 3, 4, &quote4(5003))), Verdict::Forward, "{mode}");
        }
    }

    #[test]
    fn errors_about_a_denied_session_are_dropped_with_it() {
        let mut r = Rig::new("protect");
        let syn = f4(C, W, TCP, &tcp(40001, 7777, 1000, 0, SYN, 64240, None, b""));
        assert_eq!(r.send(&syn), Verdict::Drop(DropReason::PolicyDenied));
        // An error to the client about its own SYN (valid direction and sequence number).
        let quote = &ipv4(C, W, TCP, &tcp(40001, 7777, 1000, 0, SYN, 64240, None, b""))[..28];
        assert_eq!(r.send(&err4(R, C, 3, 4, quote)), Verdict::Drop(DropReason::PolicyDenied));
        assert_eq!(r.session(&syn).icmp.errors, 1);
    }

    #[test]
    fn errors_quoting_no_session_are_flows_of_their_own() {
        let mut r = Rig::new("protect");
        let err = err4(R, W, 3, 4, &quote4(5001));
        // No session for the quote: an ICMP flow from the router to the workload, denied.
        assert_eq!(r.send(&err), Verdict::Drop(DropReason::PolicyDenied));
        assert_eq!(r.i.stats.icmp.errors_unmatched, 1);
        let s = r.i.sessions.snapshot(8);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].session.key.proto, s[0].session.client_end().0), (ICMP, Addr::v4(R)));
    }

    #[test]
    fn redirects_to_protect_workloads_are_dropped() {
        for (mode, want) in [("protect", Verdict::Drop(DropReason::Icmp)), ("alert", Verdict::Forward)] {
            let mut r = Rig::new(mode);
            tcp_session(&mut r);
            // ICMPv4 redirect from the router, quoting an in-window segment of the workload.
            let redirect = f4(R, W, ICMP, &icmp(5, 1, X, &quote4(5001)));
            assert_eq!(r.send(&redirect), want, "{mode}");
            // ICMPv6 redirect (target, destination) to the workload.
            let mut body = v6(0x77).to_vec();
            body.extend_from_slice(&v6(C6));
            let redirect6 = f6(R6, W6, ICMPV6, &icmp(137, 0, [0; 4], &body));
            assert_eq!(r.send(&redirect6), want, "{mode}");
            assert_eq!(r.i.stats.icmp.redirects, 2);
            assert_eq!(r.i.stats.icmp.redirects_dropped, if mode == "protect" { 2 } else { 0 });
        }
        // A redirect to a host that is no workload is not Warden's to judge by mode.
        let mut r = Rig::new("protect");
        let mut body = v6(0x77).to_vec();
        body.extend_from_slice(&v6(W6));
        assert_eq!(r.send(&f6(R6, C6, ICMPV6, &icmp(137, 0, [0; 4], &body))), Verdict::Forward);
    }

    #[test]
    fn icmpv6_packet_too_big_in_and_out_of_window() {
        let mut r = Rig::new("protect");
        let frames = [
            f6(C6, W6, TCP, &tcp(40000, 8080, 70, 0, SYN, 64800, Some(7), b"")),
            f6(W6, C6, TCP, &tcp(8080, 40000, 900, 71, SYN | ACK, 64800, Some(7), b"")),
            f6(C6, W6, TCP, &tcp(40000, 8080, 71, 901, ACK, 507, None, b"GET")),
            f6(W6, C6, TCP, &tcp(8080, 40000, 901, 74, ACK, 507, None, b"200")),
        ];
        for f in &frames {
            assert_eq!(r.send(f), Verdict::Forward);
        }
        let quote = |seq: u32| ipv6(v6(W6), v6(C6), TCP, &tcp(8080, 40000, seq, 74, ACK, 507, None, b"200"));
        let ptb = |seq: u32| f6(R6, W6, ICMPV6, &icmp(2, 0, [0, 0, 0x05, 0x00], &quote(seq)));
        assert_eq!(r.send(&ptb(901)), Verdict::Forward);
        assert_eq!(r.send(&ptb(901 + 0x4000_0000)), Verdict::Drop(DropReason::Icmp));
        assert_eq!(r.session(&frames[0]).icmp, IcmpCounts { errors: 1, rejected: 1 });
    }

    /// The workload pings the client with identifier 0x4242; echo frames from the client with
    /// that identifier.
    fn ping(from: [u8; 4], to: [u8; 4], kind: u8, ident: u16, seq: u16) -> Vec<u8> {
        f4(from, to, ICMP, &icmp(kind, 0, query(ident, seq), b"abcdefgh"))
    }

    #[test]
    fn an_echo_request_from_outside_cannot_ride_a_workloads_ping() {
        let mut r = Rig::new("protect");
        assert_eq!(r.send(&ping(W, C, 8, 0x4242, 1)), Verdict::Forward);
        assert_eq!(r.send(&ping(C, W, 0, 0x4242, 1)), Verdict::Forward, "the reply");
        // The client (or anyone) sends a request with the workload's identifier: a flow of its
        // own, opened by its sender, which no rule allows.
        let spoof = ping(C, W, 8, 0x4242, 2);
        assert_eq!(r.send(&spoof), Verdict::Drop(DropReason::PolicyDenied));
        let s = r.session(&spoof);
        assert_eq!(s.client_end(), (Addr::v4(C), 0x4242));
        assert!(s.policy.blocked);
        // The workload's own ping goes on.
        assert_eq!(r.send(&ping(W, C, 8, 0x4242, 2)), Verdict::Forward);
        assert_eq!(r.send(&ping(C, W, 0, 0x4242, 2)), Verdict::Forward);
        let own = r.session(&ping(W, C, 8, 0x4242, 3));
        assert_eq!((own.client_end().0, own.packets), (Addr::v4(W), [2, 2]));
        // The same over ICMPv6.
        let p6 = |from: u8, to: u8, kind: u8| f6(from, to, ICMPV6, &icmp(kind, 0, query(9, 1), b"x"));
        assert_eq!(r.send(&p6(W6, C6, 128)), Verdict::Forward);
        assert_eq!(r.send(&p6(C6, W6, 129)), Verdict::Forward);
        assert_eq!(r.send(&p6(C6, W6, 128)), Verdict::Drop(DropReason::PolicyDenied));
    }

    #[test]
    fn a_reply_that_opens_a_session_is_not_trusted_as_one() {
        let mut r = Rig::new("protect");
        // An unsolicited reply is a flow opened by its sender: denied.
        let reply = ping(C, W, 0, 7, 1);
        assert_eq!(r.send(&reply), Verdict::Drop(DropReason::PolicyDenied));
        assert_eq!(r.i.stats.icmp.echo_reply_opened, 1);
        assert_eq!(r.session(&reply).client_end().0, Addr::v4(C));
        // The workload's request with that identifier travels against that session: its
        // sender becomes the client and the session is decided again, for the workload.
        assert_eq!(r.send(&ping(W, C, 8, 7, 1)), Verdict::Forward);
        assert_eq!(r.i.stats.icmp.echo_reversed, 1);
        let s = r.session(&reply);
        assert_eq!((s.client_end(), s.policy.blocked, s.policy.rule_id()), ((Addr::v4(W), 7), false, Some(2)));
        // Replies now answer the workload's request.
        assert_eq!(r.send(&reply), Verdict::Forward);
        // In alert mode the unsolicited reply is forwarded and reported as a violation.
        let mut r = Rig::new("alert");
        assert_eq!(r.send(&reply), Verdict::Forward);
        assert_eq!(r.session(&reply).policy.verdict, Some(crate::policy::PolicyVerdict::Violation));
    }

    #[test]
    fn identifier_zero_requests_both_ways_are_each_decided_for_their_sender() {
        // With identifier 0 a request each way has the same key: each request that travels
        // against the session turns it round and is decided for its own sender.
        let mut r = Rig::new("protect");
        assert_eq!(r.send(&ping(W, C, 8, 0, 1)), Verdict::Forward);
        assert_eq!(r.send(&ping(C, W, 8, 0, 1)), Verdict::Drop(DropReason::PolicyDenied));
        assert_eq!(r.send(&ping(W, C, 8, 0, 2)), Verdict::Forward);
        assert_eq!(r.i.stats.icmp.echo_reversed, 2);
    }

    /// Two pipelines owning flows as two workers do (`spread % 2` of [`owner_key`]): an error
    /// reaches the pipeline that holds the session it quotes, whichever worker its own
    /// addresses would pick.
    #[test]
    fn errors_reach_the_worker_that_owns_the_quoted_flow() {
        let mut w: Vec<Rig> = (0..2).map(|_| Rig::new("protect")).collect();
        let owner = |f: &[u8]| owner_key(&wire::decode(f).unwrap(), 0).unwrap().spread() as usize % 2;
        let mut frames = Vec::new();
        {
            let mut scratch = Rig::new("protect");
            frames.extend(tcp_session(&mut scratch));
        }
        let o = owner(&frames[0]);
        for f in &frames {
            assert_eq!(owner(f), o, "both directions of the flow have one owner");
            assert_eq!(w[o].send(f), Verdict::Forward);
        }
        // Find a router address whose error frame, keyed by its own addresses, would belong to
        // the other worker: the quoted flow decides.
        let mut crossed = 0;
        for last in 1..=254u8 {
            let router = [198, 18, 1, last];
            let err = err4(router, W, 3, 4, &quote4(5001));
            let own = FlowKey::new(0, ICMP, Addr::v4(router), 0, Addr::v4(W), 0).0.spread() as usize % 2;
            assert_eq!(owner(&err), o);
            if own != o {
                crossed += 1;
                assert_eq!(w[o].send(&err), Verdict::Forward);
            }
        }
        assert!(crossed > 0);
        assert_eq!(w[o].session(&frames[0]).icmp.errors, crossed);
        assert_eq!(w[1 - o].i.sessions.len(), 0, "the other worker never saw the errors");
    }
}
