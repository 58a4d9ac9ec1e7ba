use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use super::*;
use crate::app::dns::Dns;
use crate::app::testutil::{capture, corpus, other_corpus_files, Rng};
use crate::app::{AppParser, Dir, Feed};
use crate::wire::{self, L4};

/// A client query, as the inspector feeds it.
#[derive(Debug, Clone)]
struct Q {
    client: Addr,
    t_ns: u64,
    name: Vec<u8>,
    qtype: u16,
}

/// (protocol, client, client port, server, server port).
type FlowId = (u8, Addr, u16, Addr, u16);

/// The client queries of a capture, as the DNS parser hands them out ([`Dns::queries`],
/// taken after each packet), UDP and TCP on the DNS ports, in capture order.
fn pcap_queries(path: &Path) -> Vec<Q> {
    const PORTS: [u16; 3] = [53, 5353, 5355];
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut r = pcap_file::pcap::PcapReader::new(file).unwrap();
    // Flow -> parser, unconsumed bytes per direction.
    let mut flows: HashMap<FlowId, (Dns, [Vec<u8>; 2])> = HashMap::new();
    let mut out = Vec::new();
    while let Some(Ok(pkt)) = r.next_packet() {
        let Ok(f) = wire::decode(&pkt.data) else { continue };
        let Some(ip) = f.ip else { continue };
        let tcp = matches!(ip.l4, L4::Tcp { .. });
        if !tcp && !matches!(ip.l4, L4::Udp) || ip.payload.is_empty() {
            continue;
        }
        let (dir, key) = if PORTS.contains(&ip.dport) {
            (Dir::ToServer, (ip.proto, ip.src, ip.sport, ip.dst, ip.dport))
        } else if PORTS.contains(&ip.sport) {
            (Dir::ToClient, (ip.proto, ip.dst, ip.dport, ip.src, ip.sport))
        } else {
            continue;
        };
        let (dns, pending) = flows.entry(key).or_default();
        if tcp {
            let buf = &mut pending[dir as usize];
            buf.extend_from_slice(ip.payload);
            match dns.feed(dir, buf) {
                Feed::Consumed(n) | Feed::Need { consumed: n, .. } | Feed::Invalid { consumed: n } => {
                    buf.drain(..n.min(buf.len()));
                }
                Feed::Done => buf.clear(),
            }
        } else {
            dns.feed(dir, ip.payload);
        }
        let t_ns = pkt.timestamp.as_nanos() as u64;
        for (name, qtype) in dns.queries().iter() {
            out.push(Q { client: key.1, t_ns, name: name.to_vec(), qtype });
        }
        dns.clear_queries();
    }
    out
}

/// A name in presentation form (`a.b.c.`, bytes as they are) to wire form; `None` when a
/// label is empty or longer than 63 bytes.
fn to_wire(name: &[u8]) -> Option<Vec<u8>> {
    let mut w = Vec::new();
    for l in name.strip_suffix(b".").unwrap_or(name).split(|&c| c == b'.') {
        if l.is_empty() || l.len() > 63 {
            return None;
        }
        w.push(l.len() as u8);
        w.extend_from_slice(l);
    }
    w.push(0);
    (w.len() <= 255).then_some(w)
}

/// The names of a list (one a line) asked by `client` at `per_s` queries a second.
fn list_queries(path: &Path, client: Addr, qtype: u16, per_s: u64) -> Vec<Q> {
    let text = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    text.split(|&c| c == b'\n')
        .filter_map(|l| to_wire(l.strip_suffix(b"\r").unwrap_or(l)))
        .enumerate()
        .map(|(i, name)| Q { client, t_ns: 1_000 * NS + i as u64 * NS / per_s, name, qtype })
        .collect()
}

fn v4(last: u8) -> Addr {
    Addr::v4([198, 18, 7, last])
}

/// The group a query belongs to for measurement: (client, domain) as the detector buckets it.
fn group(q: &Q) -> (Addr, String) {
    let mut labels: Vec<&[u8]> = Vec::new();
    let mut at = 0;
    while q.name[at] != 0 {
        let n = usize::from(q.name[at]);
        labels.push(&q.name[at + 1..at + 1 + n]);
        at += 1 + n;
    }
    let domain = if labels.last().is_some_and(|l| tld_like(l)) {
        let k = base_labels(&labels);
        labels[labels.len() - k..].iter().map(|l| String::from_utf8_lossy(l).to_lowercase()).collect::<Vec<_>>().join(".")
    } else {
        ".".into()
    };
    (q.client, domain)
}

/// What one group's queries met.
#[derive(Debug, Default, Clone)]
struct Outcome {
    queries: usize,
    flagged: usize,
    /// Queries of the group up to and including its first finding.
    first: Option<usize>,
}

/// Feeds `qs` (in order) to a detector with `cfg`; outcomes per group.
fn evaluate(qs: &[Q], cfg: &Config) -> BTreeMap<(Addr, String), Outcome> {
    let mut d = DnsTunnel::new(cfg.clone());
    let mut out: BTreeMap<(Addr, String), Outcome> = BTreeMap::new();
    for q in qs {
        let o = out.entry(group(q)).or_default();
        o.queries += 1;
        if d.observe(0, q.client, &q.name, q.qtype, q.t_ns).is_some() {
            o.flagged += 1;
            o.first.get_or_insert(o.queries);
        }
    }
    out
}

fn wire_of(s: &str) -> Vec<u8> {
    to_wire(s.as_bytes()).unwrap()
}

#[test]
fn shapes() {
    let sh = |name: &str| {
        let w = wire_of(name);
        let mut labels: Vec<&[u8]> = Vec::new();
        let mut at = 0;
        while w[at] != 0 {
            labels.push(&w[at + 1..at + 1 + usize::from(w[at])]);
            at += 1 + usize::from(w[at]);
        }
        let k = base_labels(&labels);
        shape(&labels[..labels.len() - k], 12)
    };
    for plain in [
        "www.example.com",
        "static.xx.fbcdn.net",
        "ip-10-0-12-34.eu-west-1.compute.internal",
        "internal-payments-frontend-production.eu-west-1.elb.amazonaws.com",
        "accounts-and-billing.service.example.com",
        "_ldap._tcp.dc._msdcs.corp.example.com",
        "web01.prod.example.co.uk",
    ] {
        let s = sh(plain);
        assert!(s.score < 0.2, "{plain}: {s:?}");
    }
    for (encoded, class) in [
        ("d0e4d8603934af1dbcd91c0084cd7ac3.t.example.com", "hex"),
        ("mfrggzdfmztwq2lknnwg23tpobyxe43u.ov3ho6dzpi.t.example.com", "random"),
        ("0eaba822hbYbdn4yFplbyycYnihdSxeybaKw.iIX4PsKYEGPvvQU0oN3ngJXZddpz.t.example.com", "random"),
        ("q+aNuo3SCJ8wYXIb3lUmSCecugon18v2.hidemyself.org", "binary"),
    ] {
        let s = sh(encoded);
        assert_eq!(s.class, class, "{encoded}");
        assert!(s.score >= 0.5, "{encoded}: {s:?}");
    }
    assert_eq!(sh("abc.example.com").class, "short");
    // Binary (iodine Base128) labels.
    let w = [&[10u8][..], &[0xc3, 0xa9, b'a', 0xff, b'q', 0x80, b'z', b'1', b'2', b'3'], b"\x01t\x07example\x03com\x00"].concat();
    let mut d = DnsTunnel::new(Config::default());
    d.observe(0, v4(1), &w, 1, 0);
    assert_eq!(d.stats().invalid, 0);
}

#[test]
fn domains() {
    let b = |name: &str| {
        let labels: Vec<&[u8]> = name.split('.').map(str::as_bytes).collect();
        labels[labels.len() - base_labels(&labels)..].iter().map(|l| std::str::from_utf8(l).unwrap()).collect::<Vec<_>>().join(".")
    };
    assert_eq!(b("a.b.t.example.com"), "example.com");
    assert_eq!(b("x.y.bbc.co.uk"), "bbc.co.uk");
    assert_eq!(b("x.y.abc.com.au"), "abc.com.au");
    assert_eq!(b("x.y.abc.co.com"), "co.com");
    assert_eq!(b("localhost"), "localhost");
    assert!(tld_like(b"com") && tld_like(b"xn--p1ai") && !tld_like(b"3f2a") && !tld_like(b"c"));
}

#[test]
fn a_tunnel_is_found_per_client_and_domain_and_decays() {
    let cfg = Config::default();
    let mut d = DnsTunnel::new(cfg.clone());
    let mut rng = Rng(7);
    let b32 = |rng: &mut Rng, n: usize| -> String {
        (0..n).map(|_| b"abcdefghijklmnopqrstuvwxyz234567"[rng.below(32)] as char).collect()
    };
    let mut first = None;
    // 60-byte base32 names, one a second, each from a new flow: found within ~20 names.
    for i in 0..40u64 {
        let name = wire_of(&format!("{}.{i}.t.exfil.test", b32(&mut rng, 60)));
        if let Some(f) = d.observe(1, v4(1), &name, 16, i * NS) {
            assert_eq!(f.domain.as_str(), "exfil.test");
            assert_eq!(f.reason, "encoded_names");
            assert_eq!(f.new, first.is_none());
            first.get_or_insert(i);
        }
    }
    let first = first.expect("found");
    assert!((8..25).contains(&first), "{first}");
    assert_eq!(d.stats().tunnels, 1);
    // Another client, another zone: their own buckets.
    assert!(d.observe(1, v4(2), &wire_of(&format!("{}.t.exfil.test", b32(&mut rng, 60))), 16, 41 * NS).is_none());
    assert!(d.observe(2, v4(1), &wire_of(&format!("{}.t.exfil.test", b32(&mut rng, 60))), 16, 41 * NS).is_none());
    // The same name again adds nothing; ten minutes later the evidence is gone.
    assert!(d.observe(1, v4(1), &wire_of(&format!("{}.t.exfil.test", b32(&mut rng, 60))), 16, 42 * NS).is_some());
    assert!(d.observe(1, v4(1), &wire_of(&format!("{}.t.exfil.test", b32(&mut rng, 60))), 16, 642 * NS).is_none());
    // Exempt suffixes, and names that are not wire form.
    assert!(d.observe(1, v4(1), &wire_of("4.3.2.1.in-addr.arpa"), 12, 700 * NS).is_none());
    assert_eq!(d.stats().exempt, 1);
    assert!(d.observe(1, v4(1), b"\x05abc", 1, 700 * NS).is_none());
    assert!(d.observe(1, v4(1), b"\x40aaaa", 1, 700 * NS).is_none());
    assert_eq!(d.stats().invalid, 2);
}

#[test]
fn short_pings_of_null_type_count() {
    // iodine's idle pings are short names of type NULL: found by their number.
    let mut d = DnsTunnel::new(Config::default());
    let found = (0..200u64).find(|i| d.observe(0, v4(1), &wire_of(&format!("p{i:07}.t.test")), 10, i * NS / 4).is_some());
    assert!(found.is_some_and(|i| i < 40), "{found:?}");
    // The same number of short A queries is nothing.
    let mut d = DnsTunnel::new(Config::default());
    assert!((0..200u64).all(|i| d.observe(0, v4(1), &wire_of(&format!("p{i:07}.t.test")), 1, i * NS / 4).is_none()));
}

#[test]
fn memory_is_bounded_and_a_tunnel_survives_a_flood_of_other_domains() {
    let cfg = Config { buckets: 64, ..Config::default() };
    let mut d = DnsTunnel::new(cfg);
    let mut rng = Rng(9);
    let mut t = 0;
    let hexname = |rng: &mut Rng| -> String { (0..40).map(|_| b"0123456789abcdef"[rng.below(16)] as char).collect() };
    for i in 0..30 {
        d.observe(0, v4(1), &wire_of(&format!("{}.{i}.t.tun.test", hexname(&mut rng))), 16, t);
        t += NS / 10;
    }
    assert_eq!(d.stats().tunnels, 1);
    // 10 000 other domains from other clients.
    for i in 0..10_000u32 {
        d.observe(0, Addr::v4([198, 19, (i >> 8) as u8, i as u8]), &wire_of(&format!("www.d{i}.test")), 1, t);
    }
    assert!(d.stats().evicted > 9000);
    assert!(d.observe(0, v4(1), &wire_of(&format!("{}.t.tun.test", hexname(&mut rng))), 16, t).is_some(), "the tunnel kept its bucket");
    assert_eq!(d.buckets.len(), 64);
}

/// The positive sets: real tools recorded in namespaces, dnscat2 shapes, and the query names of
/// iodine, dns2tcp and dnscapy from netrack/learn (asked 4 a second).
fn positives() -> Vec<(&'static str, Vec<Q>)> {
    let c = |f: &str| pcap_queries(&capture(&format!("threats/{f}.pcap")));
    let names = |f: &str, qtype| list_queries(&capture(&format!("threats/names/{f}.txt")), v4(200), qtype, 4);
    vec![
        ("iodine NULL (recorded)", c("iodine-null")),
        ("iodine TXT (recorded)", c("iodine-txt")),
        ("iodine CNAME (recorded)", c("iodine-cname")),
        ("iodine MX (recorded)", c("iodine-mx")),
        ("dig exfiltration hex/base32/base64 (recorded)", c("exfil-dig")),
        ("dnscat2 shapes (crafted)", c("dnscat-style")),
        ("iodine names (netrack/learn)", names("iodine", 10)),
        ("dns2tcp names (netrack/learn)", names("dns2tcp", 16)),
        ("dnscapy names (netrack/learn)", names("dnscapy", 16)),
    ]
}

/// Workloads whose DNS looks busy but carries no data: crafted from public naming patterns
/// (random parts from a seeded generator), asked over ten minutes by one client each.
fn busy_benign() -> Vec<(&'static str, Vec<Q>)> {
    let mut rng = Rng(0xbe9);
    let mut out = Vec::new();
    let mut series = |name: &'static str, n: usize, every_ms: u64, make: &mut dyn FnMut(&mut Rng, usize) -> (String, u16)| {
        let qs = (0..n)
            .map(|i| {
                let (s, qtype) = make(&mut rng, i);
                Q { client: v4(100 + out.len() as u8), t_ns: 2_000 * NS + i as u64 * every_ms * 1_000_000, name: wire_of(&s), qtype }
            })
            .collect();
        out.push((name, qs));
    };
    let alnum = |rng: &mut Rng, n: usize, set: &[u8]| -> String { (0..n).map(|_| set[rng.below(set.len())] as char).collect() };
    const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz";
    const LD: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    // A mail server's DNSBL lookups: A and TXT for each connecting address.
    series("mail server DNSBL lookups (A+TXT, 2/s)", 1200, 500, &mut |r, i| {
        let ip = format!("{}.{}.{}.{}", r.below(256), r.below(256), r.below(256), 1 + r.below(254));
        (format!("{ip}.zen.spamhaus.org"), if i % 2 == 0 { 1 } else { 16 })
    });
    // A browser and a build host: the common host names, and the generated ones of video CDNs,
    // cloud front ends, load balancers and storage.
    series("browser and build host names (1/s)", 1200, 1000, &mut |r, i| {
        let s = match i % 9 {
            8 => COMMON[r.below(COMMON.len())].to_string(),
            0 => format!("rr{}---sn-{}.googlevideo.com", 1 + r.below(5), alnum(r, 8, LD)),
            1 => format!("d{}.cloudfront.net", alnum(r, 13, LD)),
            2 => format!("e{}.dscx.akamaiedge.net", r.below(10000)),
            3 => format!("{}.execute-api.us-east-1.amazonaws.com", alnum(r, 10, LD)),
            4 => format!("internal-{}-{}.eu-west-1.elb.amazonaws.com", alnum(r, 8, LOWER), 1_000_000_000 + r.below(1_000_000_000)),
            5 => format!("{}.blob.core.windows.net", alnum(r, 12, LOWER)),
            6 => format!("scontent-{}{}-1.xx.fbcdn.net", alnum(r, 3, LOWER), r.below(3)),
            _ => format!("www.site{}.example.com", r.below(50)),
        };
        (s, if i % 3 == 0 { 28 } else { 1 })
    });
    // Kubernetes search-domain expansion, and reverse lookups.
    series("kubernetes search expansion (5/s)", 3000, 200, &mut |r, i| {
        let svc = ["api", "db", "cache", "auth", "web"][r.below(5)];
        let s = match i % 3 {
            0 => format!("{svc}.default.svc.cluster.local"),
            1 => format!("{svc}.svc.cluster.local"),
            _ => format!("{svc}.example.com.cluster.local"),
        };
        (s, 1)
    });
    series("PTR sweep (10/s)", 1000, 100, &mut |r, _| (format!("{}.{}.18.198.in-addr.arpa", r.below(256), r.below(256)), 12));
    out
}

/// Host names seen on every desktop and build host (written down by hand).
const COMMON: &[&str] = &[
    "clients4.google.com", "safebrowsing.googleapis.com", "mobile.events.data.microsoft.com", "settings-win.data.microsoft.com",
    "login.microsoftonline.com", "outlook.office365.com", "graph.facebook.com", "edge-chat.facebook.com",
    "pagead2.googlesyndication.com", "securepubads.g.doubleclick.net", "connectivitycheck.gstatic.com", "api.segment.io",
    "sessions.bugsnag.com", "browser-intake-datadoghq.com", "cdn.jsdelivr.net", "fonts.googleapis.com", "ocsp.digicert.com",
    "r3.o.lencr.org", "x1.c.lencr.org", "firebaseinstallations.googleapis.com", "incoming.telemetry.mozilla.org",
    "push.services.mozilla.com", "detectportal.firefox.com", "contile.services.mozilla.com", "kinesis.us-east-1.amazonaws.com",
    "sts.amazonaws.com", "ec2.us-west-2.amazonaws.com", "registry-1.docker.io", "production.cloudflare.docker.com",
    "auth.docker.io", "ghcr.io", "pkg-containers.githubusercontent.com", "objects.githubusercontent.com", "api.github.com",
    "deb.debian.org", "security.debian.org", "archive.ubuntu.com", "pypi.org", "files.pythonhosted.org", "registry.npmjs.org",
    "proxy.golang.org", "sum.golang.org", "index.crates.io", "static.crates.io", "storage.googleapis.com",
    "oauth2.googleapis.com", "gateway.icloud.com", "p108-caldav.icloud.com", "e6858.dsce9.akamaiedge.net",
    "d1f8f9xcsvx3ha.cloudfront.net", "www.googletagmanager.com", "analytics.tiktok.com", "sync.outbrain.com",
    "cm.g.doubleclick.net", "pixel.rubiconproject.com", "ib.adnxs.com", "match.adsrvr.org", "dpm.demdex.net",
    "sb.scorecardresearch.com", "bat.bing.com", "ad.doubleclick.net", "stats.g.doubleclick.net", "api.amplitude.com",
    "o123456.ingest.sentry.io", "rum.browser-intake-datadoghq.eu", "js-agent.newrelic.com", "bam.nr-data.net",
    "static.cloudflareinsights.com", "challenges.cloudflare.com", "www.recaptcha.net", "accounts.google.com",
    "play.googleapis.com", "android.clients.google.com", "mtalk.google.com", "time.cloudflare.com", "pool.ntp.org",
    "2.debian.pool.ntp.org", "time.windows.com", "ctldl.windowsupdate.com", "fe2cr.update.microsoft.com",
    "slscr.update.microsoft.com", "v10.events.data.microsoft.com", "self.events.data.microsoft.com",
    "nexusrules.officeapps.live.com", "ecs.office.com", "teams.microsoft.com", "presence.teams.microsoft.com",
    "zoom.us", "us05web.zoom.us", "slack.com", "wss-primary.slack.com", "edgeapi.slack.com", "discord.com",
    "gateway.discord.gg", "cdn.discordapp.com", "api.spotify.com", "spclient.wg.spotify.com", "audio-ak-spotify-com.akamaized.net",
    "i.ytimg.com", "yt3.ggpht.com", "lh3.googleusercontent.com", "rr4---sn-5hne6nzy.googlevideo.com",
    "scontent-ams2-1.xx.fbcdn.net", "static.xx.fbcdn.net", "video-ams2-1.xx.fbcdn.net", "pbs.twimg.com", "abs.twimg.com",
    "api.twitter.com", "www.reddit.com", "gql.reddit.com", "preview.redd.it", "external-preview.redd.it",
    "en.wikipedia.org", "upload.wikimedia.org", "login.wikimedia.org", "news.ycombinator.com", "stackoverflow.com",
    "cdn.sstatic.net", "i.stack.imgur.com", "kubernetes.default.svc", "ip-10-0-1-23.ec2.internal",
    "my-bucket-logs-eu.s3.eu-west-1.amazonaws.com", "prod-xyz-cluster.abc123def456.eu-west-1.rds.amazonaws.com",
    "a1b2c3d4e5f6g7.gr7.eu-west-1.eks.amazonaws.com", "myapp-prod.azurewebsites.net", "myvault.vault.azure.net",
    "storageacct01.blob.core.windows.net", "login.windows.net", "management.azure.com", "console.cloud.google.com",
    "us-docker.pkg.dev", "europe-west1-docker.pkg.dev", "gcr.io", "quay.io", "cdn01.quay.io", "public.ecr.aws",
];

/// Lookup services that put hashes in names by design: a known false alarm (exempt them).
fn hash_lookups() -> Vec<Q> {
    let mut rng = Rng(0x5a5);
    (0..120u64)
        .map(|i| {
            let md5: String = (0..32).map(|_| b"0123456789abcdef"[rng.below(16)] as char).collect();
            Q { client: v4(150), t_ns: 3_000 * NS + i * NS, name: wire_of(&format!("{md5}.malware.hash.cymru.com")), qtype: 16 }
        })
        .collect()
}

/// The benign captures: the corpus, the link-type recordings, Zeek's DNS traces.
fn benign_captures() -> Vec<(String, Vec<Q>)> {
    let mut files: Vec<PathBuf> = other_corpus_files(&[]).iter().map(|f| corpus(f)).collect();
    for dir in ["linktypes", "threats/zeek"] {
        let mut v: Vec<PathBuf> = std::fs::read_dir(capture(dir)).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "pcap")).collect();
        v.sort();
        files.extend(v);
    }
    files.into_iter().map(|p| (p.file_name().unwrap().to_string_lossy().into_owned(), pcap_queries(&p))).filter(|(_, q)| !q.is_empty()).collect()
}

#[test]
fn every_positive_set_is_found() {
    let cfg = Config::default();
    for (name, qs) in positives() {
        assert!(qs.len() > 20, "{name}: {} queries", qs.len());
        for ((_, domain), o) in evaluate(&qs, &cfg) {
            // Groups of a handful of queries (iodine's first probes of other names) are not tunnels.
            if o.queries >= 20 {
                assert!(o.first.is_some(), "{name} {domain}: {o:?}");
            }
        }
    }
}

#[test]
fn benign_traffic_raises_no_finding() {
    let cfg = Config::default();
    for (name, qs) in benign_captures().into_iter().chain(busy_benign().into_iter().map(|(n, q)| (n.to_string(), q))) {
        for ((_, domain), o) in evaluate(&qs, &cfg) {
            assert_eq!(o.flagged, 0, "{name} {domain}: {o:?}");
        }
    }
    // Hash lookup services are found (a known false alarm), and not once exempted.
    let hits = evaluate(&hash_lookups(), &cfg);
    assert!(hits.values().all(|o| o.first.is_some()));
    let exempt = Config { exempt: vec!["arpa".into(), "local".into(), "hash.cymru.com".into()], ..cfg };
    assert!(evaluate(&hash_lookups(), &exempt).values().all(|o| o.flagged == 0));
}

/// Detection and false-alarm rates on every set (printed; `--no-capture` shows them).
#[test]
fn detection_and_false_alarm_rates() {
    let cfg = Config::default();
    let row = |name: &str, groups: &BTreeMap<(Addr, String), Outcome>| {
        let big: Vec<&Outcome> = groups.values().filter(|o| o.queries >= 20).collect();
        let found = big.iter().filter(|o| o.first.is_some()).count();
        let (q, f): (usize, usize) = groups.values().fold((0, 0), |(q, f), o| (q + o.queries, f + o.flagged));
        let mut firsts: Vec<usize> = big.iter().filter_map(|o| o.first).collect();
        firsts.sort();
        let median = firsts.get(firsts.len() / 2).map_or("-".to_string(), |m| m.to_string());
        eprintln!("| {name} | {} | {found}/{} | {q} | {f} ({:.1}%) | {median} |", groups.len(), big.len(), 100.0 * f as f64 / q.max(1) as f64);
        (groups.len(), big.len(), found, q, f)
    };
    eprintln!("\n| set | (client, domain) groups | tunnels found (groups of 20+ queries) | queries | queries flagged | median queries to detection |");
    eprintln!("| --- | --- | --- | --- | --- | --- |");
    let (mut pg, mut pf, mut pq, mut pflag) = (0, 0, 0, 0);
    for (name, qs) in positives() {
        let (_, big, found, q, f) = row(name, &evaluate(&qs, &cfg));
        pg += big;
        pf += found;
        pq += q;
        pflag += f;
    }
    let (mut bg, mut bf, mut bq, mut bflag) = (0, 0, 0, 0);
    let mut all_benign: Vec<Q> = Vec::new();
    for (_, qs) in benign_captures() {
        all_benign.extend(qs);
    }
    let mut sets: Vec<(String, Vec<Q>)> = vec![("benign captures (corpus, link types, Zeek DNS traces)".into(), all_benign)];
    sets.extend(busy_benign().into_iter().map(|(n, q)| (format!("{n} (crafted)"), q)));
    for (name, qs) in sets {
        let groups = evaluate(&qs, &cfg);
        row(&name, &groups);
        bg += groups.len();
        bf += groups.values().filter(|o| o.flagged > 0).count();
        bq += qs.len();
        bflag += groups.values().map(|o| o.flagged).sum::<usize>();
    }
    row("hash lookup service (crafted; known false alarm)", &evaluate(&hash_lookups(), &cfg));
    eprintln!(
        "\ndetection: {pf}/{pg} tunnels ({:.0}%), {pflag}/{pq} tunnel queries flagged ({:.1}%); false alarms: {bf}/{bg} benign groups, {bflag}/{bq} benign queries",
        100.0 * pf as f64 / pg.max(1) as f64,
        100.0 * pflag as f64 / pq.max(1) as f64
    );
    assert_eq!(pf, pg);
    assert_eq!((bf, bflag), (0, 0));
    // The margin: the same sets under other thresholds.
    eprintln!("\n| threshold (suspect bytes) | tunnels found | median queries to detection | benign groups flagged (busy sets included) | hash lookups flagged |");
    eprintln!("| --- | --- | --- | --- | --- |");
    let benign: Vec<Vec<Q>> = benign_captures().into_iter().map(|(_, q)| q).chain(busy_benign().into_iter().map(|(_, q)| q)).collect();
    for threshold in [128, 256, 512, 1024, 2048, 4096] {
        let cfg = Config { threshold_bytes: threshold, ..Config::default() };
        let mut firsts = Vec::new();
        let (mut found, mut total) = (0, 0);
        for (_, qs) in positives() {
            for o in evaluate(&qs, &cfg).values().filter(|o| o.queries >= 20) {
                total += 1;
                if let Some(f) = o.first {
                    found += 1;
                    firsts.push(f);
                }
            }
        }
        firsts.sort();
        let flagged: usize = benign.iter().map(|qs| evaluate(qs, &cfg).values().filter(|o| o.flagged > 0).count()).sum();
        let hash = evaluate(&hash_lookups(), &cfg).values().any(|o| o.flagged > 0);
        eprintln!("| {threshold} | {found}/{total} | {} | {flagged} | {hash} |", firsts.get(firsts.len() / 2).copied().unwrap_or(0));
    }
}
