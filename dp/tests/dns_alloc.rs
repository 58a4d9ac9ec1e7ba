//! The DNS parser's threat checks (the message scan, loop pointers, overflows, zone transfers,
//! NULL queries), the queries it hands out and the tunnelling detector allocate nothing per
//! message, counted by a global allocator wrapper on this thread only, over the threat
//! captures (crafted attacks, dig, an iodine tunnel).


use warden_dp::app::dns::Dns;
use warden_dp::app::{AppParser, Dir};
use warden_dp::detect::dns_tunnel::{Config, DnsTunnel};
use warden_dp::wire::{self, L4};

mod alloc_count;

#[global_allocator]
static GLOBAL: alloc_count::Counting = alloc_count::Counting;

/// (direction, UDP payload, client address, time) of every DNS datagram of a threat capture.
fn datagrams(name: &str) -> Vec<(Dir, Vec<u8>, warden_dp::flow::Addr, u64)> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/captures/threats").join(name);
    let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(&path).unwrap()).unwrap();
    let mut out = Vec::new();
    while let Some(Ok(p)) = r.next_packet() {
        let Ok(f) = wire::decode(&p.data) else { continue };
        let Some(ip) = f.ip else { continue };
        if !matches!(ip.l4, L4::Udp) || ip.payload.is_empty() {
            continue;
        }
        let (dir, client) = if ip.dport == 53 { (Dir::ToServer, ip.src) } else { (Dir::ToClient, ip.dst) };
        out.push((dir, ip.payload.to_vec(), client, p.timestamp.as_nanos() as u64));
    }
    out
}

#[test]
fn dns_threats_and_tunnel_detection_allocate_nothing() {
    let mut all = Vec::new();
    for f in ["dns-attacks.pcap", "dig-axfr-null.pcap", "iodine-txt.pcap", "iodine-null.pcap", "exfil-dig.pcap", "dnscat-style.pcap"] {
        all.extend(datagrams(f));
    }
    assert!(all.len() > 500);
    let mut tunnel = DnsTunnel::new(Config::default());
    let mut parsers: Vec<Dns> = vec![Dns::default(); all.len()];
    let (mut threats, mut queries, mut findings) = (0u32, 0u32, 0u32);
    // Warm up thread-locals (the keyed hashes' per-process keys).
    let mut warm = Dns::default();
    warm.feed(all[0].0, &all[0].1);
    let ((), allocs) = alloc_count::counted(|| {
        // One parser per datagram (as one flow per query) and one for all (one long flow).
        let mut long = Dns::default();
        for ((dir, m, client, t), p) in all.iter().zip(parsers.iter_mut()) {
            for d in [&mut *p, &mut long] {
                d.feed(*dir, m);
                for (name, qtype) in d.queries().iter() {
                    queries += 1;
                    findings += u32::from(tunnel.observe(0, *client, name, qtype, *t).is_some());
                }
                d.clear_queries();
            }
            threats += p.threats().map_or(0, |t| t.count);
        }
    });
    assert_eq!(allocs, 0);
    assert!(threats > 100 && queries > 500 && findings > 100, "{threats} {queries} {findings}");
}
