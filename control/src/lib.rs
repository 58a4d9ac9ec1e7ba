//! Warden's control protocol: the typed messages exchanged over the control socket, a blocking
//! client, and (in `src/bin/wardenctl.rs`) the command-line tool.
//!
//! # Wire format
//! Newline-delimited JSON over a Unix stream socket (default [`DEFAULT_SOCKET`], mode 0600).
//! Each line from a client is one [`Request`], tagged by `"cmd"`:
//! `{"cmd":"status"}`, `{"cmd":"add_inline_pair","a":"veth0","b":"veth1"}`.
//! Each request gets exactly one [`Response`] line: `{"ok":true,"<kind>":...}` on success, where
//! `<kind>` is one [`Reply`] variant, or `{"ok":false,"error":"..."}`. After `subscribe` the
//! server keeps writing `{"ok":true,"report":{...}}` lines ([`ReportBatch`]) every report
//! interval; the connection takes no further requests.

#![forbid(unsafe_code)]

pub mod client;
mod types;

pub use client::{Client, ClientError};
pub use types::*;

/// Default path of the control socket.
pub const DEFAULT_SOCKET: &str = "/run/warden/warden.sock";
