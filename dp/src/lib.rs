//! Warden's dataplane library: everything the `warden` binary runs.
//!
//! Where to look (the packet's path, in order; see ARCHITECTURE.md for the whole picture):
//! - [`xsk`]: AF_XDP sockets and UMEM (the only `unsafe` code);
//! - [`worker`]: the per-core loop: rx batch → inspect → tx batch on the peer, handoff of frames
//!   whose flow another worker owns;
//! - [`wire`]: L2–L4 decoding;
//! - [`flow`]: canonical flow keys;
//! - [`inspect`]: the pipeline shared by workers and replay (decode → session → verdict);
//! - [`session`]: the per-core session table;
//! - [`expect`]: flows announced by other flows (TFTP transfers), shared by all workers;
//! - [`record`]: connection records;
//! - [`control`]: the control socket server and report fan-out;
//! - [`daemon`]: start-up, inline pairs, XDP attach/detach, shutdown;
//! - [`replay`]: the offline pipeline over pcap files;
//! - [`policy`]: workloads, modes and rules, and the matcher giving a connection's verdict;
//! - [`config`], `warden.toml`;
//! - [`app`], [`stream`]: TCP stream tracking, app detection and the protocol parsers;
//!   [`rescan`]: resumable searches that keep parsers linear when bytes trickle in.

pub mod app;
pub mod config;
pub mod control;
pub mod daemon;
pub mod detect;
pub mod enforce;
pub mod expect;
pub mod flow;
pub mod inspect;
pub mod policy;
pub mod record;
pub mod replay;
pub mod rescan;
pub mod rst;
pub mod session;
pub mod stream;
pub mod worker;
pub mod xsk;
pub mod wire;
