//! IP reassembly allocates nothing per packet once running: fragments pushed, datagrams
//! assembled and released, timed out and evicted, through the stage alone and through the
//! whole pipeline, counted by a global allocator wrapper on this thread only.


use warden_dp::defrag::{Defrag, DefragConfig, Push, MAX_ASSEMBLED};
use warden_dp::inspect::{FrameMeta, Inspector, MalformedPolicy, Verdict};
use warden_dp::session::Timeouts;

mod alloc_count;

#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

fn counted(f: impl FnOnce()) -> u64 {
    alloc_count::counted(f).1
}

/// Ethernet + IPv4 fragment 198.18.0.1 -> 198.18.0.2 (UDP) with id `id`, data at `off`.
fn frag(id: u16, off: usize, more: bool, data: &[u8]) -> Vec<u8> {
    let mut f = vec![2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, 0x45, 0];
    f.extend_from_slice(&((20 + data.len()) as u16).to_be_bytes());
    f.extend_from_slice(&id.to_be_bytes());
    f.extend_from_slice(&(((off / 8) as u16) | if more { 0x2000 } else { 0 }).to_be_bytes());
    f.extend_from_slice(&[64, 17, 0, 0, 198, 18, 0, 1, 198, 18, 0, 2]);
    warden_dp::checksum::fill_ipv4_header(&mut f[14..34]);
    f.extend_from_slice(data);
    f
}

/// A 3000-byte UDP datagram 5000 -> 53 (no checksum) with id `id` in three fragments.
fn datagram(id: u16) -> Vec<Vec<u8>> {
    let mut udp = vec![0x13, 0x88, 0, 53];
    udp.extend_from_slice(&3008u16.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend((0..3000).map(|i| (i % 251) as u8));
    vec![
        frag(id, 0, true, &udp[..1480]),
        frag(id, 1480, true, &udp[1480..2960]),
        frag(id, 2960, false, &udp[2960..]),
    ]
}

#[test]
fn reassembly_does_not_allocate() {
    let cfg = DefragConfig {
        max_datagrams: 8,
        max_frames: 64,
        timeout_ns: 1_000,
        ..DefragConfig::default()
    };
    let mut d = Defrag::new(cfg);
    let mut out = Vec::with_capacity(MAX_ASSEMBLED);
    let sets: Vec<Vec<Vec<u8>>> = (0..64).map(datagram).collect();
    let decoded: Vec<Vec<_>> = sets
        .iter()
        .map(|s| {
            s.iter()
                .map(|f| warden_dp::wire::decode(f).unwrap())
                .collect()
        })
        .collect();
    let mut round = |d: &mut Defrag, now: u64| {
        for (k, set) in decoded.iter().enumerate() {
            // Most complete (in reverse order); every fourth loses its last fragment and
            // times out or is evicted.
            let n = if k % 4 == 0 { 2 } else { 3 };
            for (j, f) in set[..n].iter().rev().enumerate() {
                if let Push::Complete(idx) =
                    d.push(f, 0, 1, now, (k * 3 + j) as u64, f.raw.len() as u32)
                {
                    d.assemble(idx, &mut out);
                    d.release(idx, Verdict::Forward, None);
                }
            }
            d.releases.clear();
        }
        d.expire(now + 10_000);
        d.releases.clear();
    };
    round(&mut d, 0);
    let n = counted(|| {
        for r in 1..20 {
            round(&mut d, r * 100_000);
        }
    });
    assert_eq!(n, 0, "allocations in steady state");
    let s = d.stats();
    assert!(s.reassembled > 900 && s.timeouts + s.full > 200, "{s:?}");
}

#[test]
fn the_pipeline_allocates_nothing_for_fragments() {
    let mut i = Inspector::new(64, Timeouts::default(), MalformedPolicy::Drop);
    let sets: Vec<Vec<Vec<u8>>> = (0..32).map(datagram).collect();
    let mut now = 1_000_000_000u64;
    let mut round = |i: &mut Inspector| {
        for set in &sets {
            for f in set {
                now += 1_000;
                i.process_frame(
                    f,
                    FrameMeta::new(0, 1, now),
                    1,
                );
            }
            assert_eq!(i.releases().frames(), 3);
            i.clear_releases();
        }
    };
    round(&mut i);
    let n = counted(|| {
        for _ in 0..10 {
            round(&mut i);
        }
    });
    assert_eq!(n, 0, "allocations in steady state");
    assert_eq!(i.defrag_stats().reassembled, 11 * 32);
}
