//! Warden's dataplane library: everything the `warden` binary runs.
//!
//! Where to look (the packet's path, in order; see ARCHITECTURE.md for the whole picture):
//! - [`xsk`]: AF_XDP sockets and UMEM (the only `unsafe` code);
//! - [`worker`]: the per-core loop: rx batch → inspect → tx batch on the peer, handoff of frames
//!   whose flow another worker owns; [`poll`]: how it waits (adaptive polling, its waker);
//! - [`wire`]: L2–L4 decoding;
//! - [`defrag`]: IPv4/IPv6 reassembly before any L4 decision (fragments held, the datagram
//!   decided once, its fragments released together);
//! - [`flow`]: canonical flow keys;
//! - [`inspect`]: the pipeline shared by workers and replay (decode → session → verdict);
//! - [`origin`]: which interface and workload side a frame came from, anti-spoofing;
//! - [`icmp`]: ICMP errors judged against the session they quote, redirects, echo direction;
//! - [`session`]: the per-core session table ([`tcpseq`]: per-direction TCP sequence state);
//! - [`exception`]: the exception policy for what cannot be inspected (mid-stream pickup,
//!   exhausted pools and caps);
//! - [`expect`]: flows announced by other flows (TFTP transfers), shared by all workers;
//! - [`names`]: DNS names for `fqdn` rules, learned from answers, shared by all workers;
//! - [`seqlock`]: the lock-free cell those shared tables are built of;
//! - [`record`]: connection records;
//! - [`control`]: the control socket server and report fan-out;
//! - [`daemon`]: start-up, inline pairs, XDP attach/detach, shutdown;
//! - [`replay`]: the offline pipeline over pcap files;
//! - [`policy`]: workloads, modes and rules, and the matcher giving a connection's verdict;
//! - [`config`], `warden.toml`;
//! - [`app`], [`stream`]: TCP stream tracking, app detection and the protocol parsers;
//!   [`rescan`]: resumable searches that keep parsers linear when bytes trickle in.

pub mod access;
pub mod attach;
pub mod app;
pub mod capture;
pub mod checksum;
pub mod config;
pub mod control;
pub mod daemon;
pub mod defrag;
#[cfg(test)]
mod defrag_tests;
pub mod detect;
pub mod threat;
pub mod enforce;
pub mod exception;
pub mod export;
pub mod fastpath;
pub mod expect;
pub mod flow;
pub mod icmp;
pub mod logging;
pub mod inspect;
pub mod metrics;
pub mod origin;
pub mod poll;
pub mod policy;
#[cfg(test)]
mod protect_tests;
pub mod record;
pub mod replay;
pub mod names;
pub mod normalize;
#[cfg(test)]
mod normalize_tests;
pub mod rescan;
pub mod rst;
pub mod seqlock;
pub mod service;
pub mod shadow;
pub mod session;
pub mod stream;
pub mod tcpseq;
pub mod tunnel;
pub mod worker;
pub mod xsk;
pub mod wire;
