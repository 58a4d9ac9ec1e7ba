//! `warden replay`: the inspection pipeline over a capture file, no root needed.
//!
//! Reads pcap (any byte order, micro- or nanosecond timestamps) and pcapng, with Ethernet
//! (LINKTYPE 1) or Linux cooked capture (LINKTYPE 113, converted to an Ethernet header) frames,
//! through the same [`Inspector`] the workers use, with the pcap timestamps as the clock. At the
//! end every session, live or ended, yields one connection record. IP fragments are reassembled
//! as inline ([`crate::defrag`]): the frames the pipeline holds are only counted as released.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::{Block, PcapNgReader};
use pcap_file::DataLink;
use warden_control::ConnectionRecord;

use crate::config::Config;
use crate::expect::ExpectTable;
use crate::inspect::{FrameMeta, Inspector};
use crate::record::to_record;
use crate::session::SessionSnapshot;

/// Totals of one replay.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ReplaySummary {
    /// Frames read.
    pub frames: u64,
    /// Bytes of those frames (captured length).
    pub bytes: u64,
    /// Sessions reported.
    pub sessions: u64,
    /// Malformed frames.
    pub malformed: u64,
    /// Frames skipped because of an unsupported link type.
    pub skipped: u64,
    /// Frames claiming a workload's address from a MAC not in its `macs` (dropped in protect
    /// mode; they belong to no session, so no record counts them).
    pub spoofed: u64,
    /// IP datagrams reassembled from fragments (each inspected as one packet).
    pub reassembled: u64,
    /// Fragment frames released with a forward verdict (their datagram's).
    pub fragments_forwarded: u64,
    /// Fragment frames released with a drop verdict: their datagram's, or, for datagrams that
    /// could not be reassembled (including those incomplete at the end of the capture, which
    /// time out then), the exception or malformed policy's.
    pub fragments_dropped: u64,
    /// Wall-clock seconds the replay took.
    pub seconds: f64,
}

/// Errors of a replay.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// File path.
        path: String,
        /// I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a readable pcap/pcapng.
    #[error("{path}: {message}")]
    Format {
        /// File path.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// The policy file could not be loaded.
    #[error("{message}")]
    Policy {
        /// What is wrong (file, line, field).
        message: String,
    },
}

/// Replays `path` and returns one record per session, ordered by first frame, plus totals.
///
/// # Errors
/// [`ReplayError`] when the file cannot be read or is not a capture file. A truncated last
/// packet ends the replay without error (tcpdump leaves such files when killed).
pub fn replay_file(
    path: &Path,
    cfg: &Config,
) -> Result<(Vec<ConnectionRecord>, ReplaySummary), ReplayError> {
    let p = path.display().to_string();
    let start = Instant::now();
    let mut file = BufReader::new(
        File::open(path).map_err(|source| ReplayError::Io { path: p.clone(), source })?,
    );
    let mut magic = [0u8; 4];
    file.read_exact(&mut magic).map_err(|source| ReplayError::Io { path: p.clone(), source })?;
    let reader = std::io::Cursor::new(magic).chain(file);

    let mut insp = Inspector::with_engine(
        cfg.sessions.max,
        cfg.sessions.timeouts(),
        cfg.dataplane.malformed,
        cfg.inspection.engine(),
    );
    if cfg.policy.file.is_some() || cfg.policy.default_mode.is_some() {
        let policy = crate::daemon::load_policy(cfg).map_err(|message| ReplayError::Policy { message })?;
        let compiled = crate::policy::CompiledPolicy::compile(&policy)
            .map_err(|e| ReplayError::Policy { message: e.to_string() })?;
        insp.set_policy(std::sync::Arc::new(compiled), 1);
    }
    insp.set_exceptions(cfg.exceptions());
    insp.set_normalization(cfg.normalization.resolve(true));
    insp.set_defrag(cfg.defrag.config());
    // The same kind of table the daemon shares between its workers (one pipeline here).
    insp.share_expectations(Arc::new(ExpectTable::default()));
    insp.share_names(Arc::new(crate::names::NameTable::new(cfg.policy.names())));
    let mut summary = ReplaySummary::default();
    let mut out: Vec<SessionSnapshot> = Vec::new();
    let mut last_ns = 0u64;
    let mut eth = Vec::with_capacity(65536);

    let mut feed = |insp: &mut Inspector, link: DataLink, ts_ns: u64, data: &[u8]| {
        summary.frames += 1;
        summary.bytes += data.len() as u64;
        let frame: &[u8] = match link {
            DataLink::ETHERNET => data,
            DataLink::LINUX_SLL => match sll_to_ethernet(data, &mut eth) {
                Some(()) => &eth,
                None => {
                    summary.skipped += 1;
                    return;
                }
            },
            _ => {
                summary.skipped += 1;
                return;
            }
        };
        last_ns = last_ns.max(ts_ns);
        insp.expire_fragments(ts_ns);
        insp.process_frame(frame, FrameMeta { zone: 0, iface: 0, now_ns: ts_ns }, 0);
        count_releases(insp, &mut summary);
        if insp.sessions.ended_pending() > 0 || summary.frames % 1024 == 0 {
            insp.sessions.expire(ts_ns, usize::MAX);
            insp.drain_ended(&mut out);
        }
    };

    let fmt_err = |e: pcap_file::PcapError| ReplayError::Format { path: p.clone(), message: e.to_string() };
    if magic == [0x0a, 0x0d, 0x0d, 0x0a] {
        let mut r = PcapNgReader::new(reader).map_err(fmt_err)?;
        let mut links: Vec<DataLink> = Vec::new();
        let mut ng_last = 0u64;
        while let Some(block) = r.next_block() {
            let block = match block {
                Ok(b) => b,
                Err(pcap_file::PcapError::IncompleteBuffer) => break,
                Err(e) => return Err(fmt_err(e)),
            };
            match block {
                Block::InterfaceDescription(idb) => links.push(idb.linktype),
                Block::EnhancedPacket(epb) => {
                    let link = links.get(epb.interface_id as usize).copied().unwrap_or(DataLink::ETHERNET);
                    ng_last = epb.timestamp.as_nanos() as u64;
                    feed(&mut insp, link, ng_last, &epb.data);
                }
                Block::SimplePacket(spb) => {
                    let link = links.first().copied().unwrap_or(DataLink::ETHERNET);
                    feed(&mut insp, link, ng_last, &spb.data);
                }
                _ => {}
            }
        }
    } else {
        let mut r = PcapReader::new(reader).map_err(fmt_err)?;
        let link = r.header().datalink;
        while let Some(pkt) = r.next_packet() {
            let pkt = match pkt {
                Ok(p) => p,
                Err(pcap_file::PcapError::IncompleteBuffer) => break,
                Err(e) => return Err(fmt_err(e)),
            };
            feed(&mut insp, link, pkt.timestamp.as_nanos() as u64, &pkt.data);
        }
    }

    // Datagrams still incomplete at the end of the capture fail as timed out.
    insp.expire_fragments(u64::MAX);
    count_releases(&mut insp, &mut summary);
    summary.reassembled = insp.defrag_stats().reassembled;
    insp.sessions.expire(last_ns, usize::MAX);
    insp.drain_ended(&mut out);
    out.extend(insp.snapshot(usize::MAX));
    out.sort_by_key(|s| (s.session.first_ns, s.session.id));
    summary.sessions = out.len() as u64;
    summary.malformed = insp.stats.malformed.iter().sum();
    summary.spoofed = insp.stats.spoofed;
    summary.seconds = start.elapsed().as_secs_f64();
    let records = out.iter().map(|s| to_record(s, |_| "pcap".to_string())).collect();
    Ok((records, summary))
}

/// Counts the frames the pipeline released (a capture has nothing to transmit) and clears them.
fn count_releases(insp: &mut Inspector, summary: &mut ReplaySummary) {
    for (r, tokens) in insp.releases().iter() {
        let n = tokens.len() as u64;
        if r.verdict == crate::inspect::Verdict::Forward {
            summary.fragments_forwarded += n;
        } else {
            summary.fragments_dropped += n;
        }
    }
    insp.clear_releases();
}

/// Rewrites a Linux cooked capture v1 frame (16-byte SLL header) as Ethernet into `out`.
fn sll_to_ethernet(data: &[u8], out: &mut Vec<u8>) -> Option<()> {
    if data.len() < 16 {
        return None;
    }
    out.clear();
    out.extend_from_slice(&[0u8; 6]);
    let alen = usize::from(data[5]).min(8);
    let mut src = [0u8; 6];
    src[..alen.min(6)].copy_from_slice(&data[6..6 + alen.min(6)]);
    out.extend_from_slice(&src);
    out.extend_from_slice(&data[14..16]);
    out.extend_from_slice(&data[16..]);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn corpus() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../corpus")
    }

    #[test]
    fn reads_every_corpus_file_and_accounts_every_frame() {
        let dir = corpus();
        let labels: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("labels.json")).unwrap()).unwrap();
        let mut files = 0;
        for (name, label) in labels.as_object().unwrap() {
            let (recs, sum) = replay_file(&dir.join(name), &Config::default()).unwrap();
            files += 1;
            assert_eq!(sum.frames, label["packets"].as_u64().unwrap(), "{name}");
            assert_eq!(sum.skipped, 0, "{name}");
            // Every frame lands in exactly one session (non-IP excepted).
            let counted: u64 = recs.iter().map(|r| r.packets_to_server + r.packets_to_client).sum();
            assert!(counted <= sum.frames && counted + 16 >= sum.frames, "{name}: {counted} of {}", sum.frames);
            // The labelled server port is seen as a server port, on the right transport.
            let port = label["server_port"].as_u64().unwrap() as u16;
            assert!(
                recs.iter().any(|r| r.server_port == port),
                "{name}: no session with server port {port}"
            );
        }
        assert_eq!(files, 24);
    }

    #[test]
    fn http_capture_counts_match_the_file() {
        let (recs, sum) = replay_file(&corpus().join("http.pcap"), &Config::default()).unwrap();
        let bytes: u64 = recs.iter().map(|r| r.bytes_to_server + r.bytes_to_client).sum();
        assert_eq!(bytes, sum.bytes);
        for r in recs.iter().filter(|r| r.server_port == 80) {
            assert_eq!(r.client_ip, "198.18.0.1");
            assert_eq!(r.server_ip, "198.18.0.2");
            assert!(r.packets_to_server > 0 && r.packets_to_client > 0);
        }
    }

    #[test]
    fn tftp_transfers_are_joined_to_their_requests() {
        let (recs, _) = replay_file(&corpus().join("tftp.pcap"), &Config::default()).unwrap();
        assert_eq!(recs.len(), 10);
        for r in &recs {
            assert_eq!(r.app, "tftp", "{r:?}");
            assert_eq!((r.client_ip.as_str(), r.server_ip.as_str()), ("198.18.0.1", "198.18.0.2"));
            let l7 = r.l7.as_ref().unwrap();
            if r.server_port == 69 {
                continue;
            }
            assert_eq!(l7["request_flow"], format!("198.18.0.1:{} -> 198.18.0.2:69", r.client_port));
            let req = recs.iter().find(|q| q.server_port == 69 && q.client_port == r.client_port).unwrap();
            assert_eq!(req.l7.as_ref().unwrap()["file"], l7["file"]);
        }
    }

    /// `warden replay --policy` on a real capture of a client that sends an HTTP request, gets
    /// the answer, then sends a RESP `SET` on the same connection (port 8080): where only
    /// `http` is allowed the record shows the app change and a denial (protect) or a
    /// violation (alert); with `redis` allowed too (control) it is allowed.
    #[test]
    fn http_then_resp_capture_under_app_rules() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/captures");
        let run = |file: &str, mode: &str| {
            let mut cfg = Config::default();
            cfg.policy.file = Some(dir.join(file).display().to_string());
            cfg.policy.default_mode = Some(mode.into());
            let (recs, _) = replay_file(&dir.join("http-then-resp.pcap"), &cfg).unwrap();
            assert_eq!(recs.len(), 1, "{recs:?}");
            let r = recs.into_iter().next().unwrap();
            assert_eq!((r.app.as_str(), r.previous_app.as_deref(), r.app_changes), ("redis", Some("http"), Some(1)), "{r:?}");
            (r.verdict, r.rule_id)
        };
        assert_eq!(run("http-then-resp.http-only.toml", "protect"), (Some("denied".into()), None));
        assert_eq!(run("http-then-resp.http-only.toml", "alert"), (Some("violation".into()), None));
        assert_eq!(run("http-then-resp.http-redis.toml", "protect"), (Some("allowed".into()), Some(30)));
    }

    /// A capture with a UDP datagram in three fragments (sent out of order) and the first
    /// fragment of another that never completes: one session, one packet, the bytes of the
    /// three frames; all four fragment frames released (forwarded: no workload).
    #[test]
    fn fragments_are_reassembled_and_counted() {
        use crate::defrag::tests::{frag4, ip4, udp, A4, B4};
        let big = ip4(17, A4, B4, &udp(5000, 9999, &[5; 3000]));
        let mut frames = frag4(&big, 1, &[(2960, 48), (0, 1480), (1480, 1480)]);
        frames.extend(frag4(&big, 2, &[(0, 1480)]));
        let p = std::env::temp_dir().join(format!("warden-frag-{}.pcap", std::process::id()));
        {
            let f = std::fs::File::create(&p).unwrap();
            let mut w = pcap_file::pcap::PcapWriter::new(f).unwrap();
            for (i, data) in frames.iter().enumerate() {
                let ts = std::time::Duration::from_millis(1 + i as u64);
                w.write_packet(&pcap_file::pcap::PcapPacket::new(ts, data.len() as u32, data)).unwrap();
            }
        }
        let (recs, sum) = replay_file(&p, &Config::default()).unwrap();
        std::fs::remove_file(&p).ok();
        assert_eq!((sum.frames, sum.reassembled, sum.fragments_forwarded, sum.fragments_dropped), (4, 1, 4, 0));
        assert_eq!(recs.len(), 1, "{recs:?}");
        let r = &recs[0];
        assert_eq!((r.server_port, r.packets_to_server), (9999, 1));
        assert_eq!(r.bytes_to_server, frames[..3].iter().map(|f| f.len() as u64).sum::<u64>());
    }

    #[test]
    fn not_a_capture_is_a_clear_error() {
        let p = std::env::temp_dir().join(format!("warden-notpcap-{}", std::process::id()));
        std::fs::write(&p, b"hello world, not a pcap").unwrap();
        let e = replay_file(&p, &Config::default()).unwrap_err();
        std::fs::remove_file(&p).ok();
        assert!(e.to_string().contains("warden-notpcap"), "{e}");
    }
}
