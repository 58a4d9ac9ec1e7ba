//! Warden's control protocol: the typed messages exchanged over the control socket, a blocking
//! client, and (in `src/bin/wardenctl.rs`) the command-line tool.
//!
//! # Wire format
//! Newline-delimited JSON over a Unix stream socket (default [`DEFAULT_SOCKET`], mode 0600).
//! Each line from a client is one [`Request`], tagged by `"cmd"`:
//! `{"cmd":"status"}`, `{"cmd":"add_inline_pair","a":"veth0","b":"veth1"}`.
//! Each request gets exactly one [`Response`] line: `{"ok":true,"<kind>":...}` on success, where
//! `<kind>` is one [`Reply`] variant, or `{"ok":false,"error":"..."}`. After `subscribe` the
//! server keeps writing the report stream: `{"ok":true,"report":{...}}` ([`ReportBatch`]),
//! `{"ok":true,"event":{...}}` ([`SeqEvent`]) and `{"ok":true,"lost":{...}}` ([`Lost`]) lines,
//! each batch and event with its sequence number; the connection takes no further requests.
//! `hello` ([`Request::Hello`]) exchanges [`PROTOCOL_VERSION`]s. JSON Schemas of every message
//! are in `control/schema/` ([`schema::schemas`], `wardenctl schema`).

#![forbid(unsafe_code)]

pub mod client;
pub mod render;
pub mod schema;
mod types;

pub use client::{Client, ClientError};
pub use types::*;

/// Default path of the control socket.
pub const DEFAULT_SOCKET: &str = "/run/warden/warden.sock";
