//! The CNI error result (spec §5 "Error"): `{"cniVersion", "code", "msg", "details"}` on
//! stdout with a non-zero exit status.

use serde::Serialize;

use crate::conf::LATEST_VERSION;

/// Error codes: 1–11 and 50–51 are the spec's well-known codes (§5), 100 and up are
/// `warden-cni`'s own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Code {
    /// 1: the configuration's `cniVersion` is not one this plugin supports, or the command
    /// needs a newer one (CHECK: 0.4.0, GC and STATUS: 1.1.0).
    IncompatibleVersion = 1,
    /// 4: a required CNI_* variable is missing or malformed, or CNI_COMMAND is unknown.
    InvalidEnvironment = 4,
    /// 5: reading stdin failed.
    Io = 5,
    /// 6: stdin is not JSON, or a field has the wrong type.
    Decoding = 6,
    /// 7: a field has an invalid value, the network name or `prevResult` is missing.
    InvalidConfig = 7,
    /// 11: Warden is not reachable (no socket, nobody listening, no reply within
    /// `timeoutMs`): the runtime may try again later.
    TryAgainLater = 11,
    /// 50: STATUS: Warden is not reachable, so ADD would fail.
    Unavailable = 50,
    /// 100: Warden answered with an error (it refused the attachment or the detachment, or
    /// speaks another protocol major version).
    WardenRefused = 100,
    /// 101: CHECK: Warden has no attachment for this container and interface.
    NotAttached = 101,
    /// 102: CHECK: the attachment does not cover an address of `prevResult`.
    AttachmentDiffers = 102,
    /// 103: Warden sent a reply this plugin does not understand.
    Protocol = 103,
}

/// One CNI error result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CniError {
    /// The protocol version in use (the configuration's, else [`LATEST_VERSION`]).
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    /// The error code ([`Code`]).
    pub code: u32,
    /// A short message.
    pub msg: String,
    /// A longer description (what was seen, what to do); omitted when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error of `code` with `msg` and `details`, in version [`LATEST_VERSION`] until
    /// [`CniError::version`] sets the configuration's.
    pub fn new(code: Code, msg: impl Into<String>, details: impl Into<String>) -> Self {
        Self { cni_version: LATEST_VERSION.into(), code: code as u32, msg: msg.into(), details: details.into() }
    }

    /// The same error in protocol version `v`.
    pub fn version(mut self, v: &str) -> Self {
        self.cni_version = v.into();
        self
    }

    /// The JSON line written to stdout.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| format!("{{\"code\":{},\"msg\":\"error\"}}", self.code))
    }
}

impl std::fmt::Display for CniError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CNI error {}: {}", self.code, self.msg)?;
        if !self.details.is_empty() {
            write!(f, ": {}", self.details)?;
        }
        Ok(())
    }
}
