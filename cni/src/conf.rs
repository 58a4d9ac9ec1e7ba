//! What a CNI runtime hands the plugin: the environment (CNI spec §2 "Parameters") and the
//! network configuration on stdin (§1, §3 "Deriving request configuration"), with
//! `warden-cni`'s own fields, and what is read out of `prevResult` (§5 "ADD Success").

use std::net::IpAddr;
use std::time::Duration;

use serde::Deserialize;

use crate::error::{CniError, Code};

/// The CNI specification versions this plugin speaks (the `supportedVersions` of VERSION).
/// Versions before 0.3.0 have no chaining (`prevResult`), so a chained plugin cannot serve
/// them; CHECK needs 0.4.0, GC and STATUS 1.1.0.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"];

/// The newest version in [`SUPPORTED_VERSIONS`]: what errors and VERSION answer carry when
/// the input names no version.
pub const LATEST_VERSION: &str = "1.1.0";

/// Default of `timeoutMs`: how long the plugin waits for Warden's reply, in ms.
pub const DEFAULT_TIMEOUT_MS: u64 = 10_000;

/// Longest accepted `timeoutMs` (10 min), so a typo cannot hang a runtime for days.
pub const MAX_TIMEOUT_MS: u64 = 600_000;

/// Longest attachment name built by [`attachment_name`], in bytes: Warden's limit (an
/// attachment's name names its state file and its implicit policy workload: 1 to 64 of
/// `[A-Za-z0-9._-]`).
pub const MAX_NAME: usize = 64;

/// `(major, minor, patch)` of a `"X.Y.Z"` version string; `None` when it is not three
/// decimal numbers.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let mut it = v.split('.').map(|p| p.parse::<u32>().ok());
    let r = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(r)
}

/// Whether version `v` is at least `min` (both `"X.Y.Z"`; an unparsable `v` is not).
pub fn at_least(v: &str, min: &str) -> bool {
    matches!((parse_version(v), parse_version(min)), (Some(a), Some(b)) if a >= b)
}

/// What the plugin does when Warden cannot be reached (no socket, nobody listening, no reply
/// within `timeoutMs`, the connection broke): the `onUnreachable` field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnUnreachable {
    /// ADD (and CHECK, STATUS) fail, so no workload starts without Warden in front of it.
    #[default]
    Fail,
    /// ADD passes `prevResult` on with a warning on stderr: the workload starts unprotected.
    Allow,
}

/// The plugin configuration object a runtime writes to stdin (§3): the protocol's fields
/// and `warden-cni`'s own. Unknown fields (other plugins' settings, `runtimeConfig`, `args`,
/// `dns`, ...) are ignored, as the spec asks runtimes to pass them through.
#[derive(Debug, Clone, Deserialize)]
pub struct NetConf {
    /// The protocol version the runtime selected (`"1.0.0"`); absent in configurations older
    /// than any version this plugin supports.
    #[serde(rename = "cniVersion", default)]
    pub cni_version: Option<String>,
    /// The network's name (required by §1).
    #[serde(default)]
    pub name: Option<String>,
    /// The plugin type (`"warden-cni"`), unused.
    #[serde(rename = "type", default)]
    pub kind: Option<String>,
    /// The result of the plugins before this one in the chain (§3): passed on unchanged by
    /// ADD, its addresses sent to Warden.
    #[serde(rename = "prevResult", default)]
    pub prev_result: Option<serde_json::Value>,
    /// Warden's control socket (absolute path; default [`warden_control::DEFAULT_SOCKET`]).
    #[serde(default)]
    pub socket: Option<String>,
    /// Mode of the new workload when no policy workload selects it: `learn`, `alert` or
    /// `protect` (absent: Warden's `[attach] default_mode`).
    #[serde(default)]
    pub mode: Option<String>,
    /// How long to wait for Warden, in ms, for the whole command (default
    /// [`DEFAULT_TIMEOUT_MS`], at most [`MAX_TIMEOUT_MS`]).
    #[serde(rename = "timeoutMs", default)]
    pub timeout_ms: Option<u64>,
    /// What to do when Warden is not reachable (default [`OnUnreachable::Fail`]).
    #[serde(rename = "onUnreachable", default)]
    pub on_unreachable: OnUnreachable,
}

impl NetConf {
    /// Decodes and checks the configuration: a supported `cniVersion`, a network `name`,
    /// valid `mode`, `timeoutMs` and `socket`.
    ///
    /// # Errors
    /// [`Code::Decoding`] (not JSON, a field of the wrong type), [`Code::IncompatibleVersion`]
    /// (absent or unsupported `cniVersion`), [`Code::InvalidConfig`] (the rest), each naming
    /// the field and its value.
    pub fn parse(stdin: &[u8]) -> Result<Self, CniError> {
        let conf: NetConf = serde_json::from_slice(stdin).map_err(|e| {
            CniError::new(Code::Decoding, "failed to decode the network configuration", e.to_string())
        })?;
        let version = conf.version().to_string();
        let err = |code, msg: &str, details: String| CniError::new(code, msg, details).version(&version);
        match conf.cni_version.as_deref() {
            None => {
                return Err(err(
                    Code::IncompatibleVersion,
                    "incompatible CNI versions",
                    format!("the configuration has no cniVersion; warden-cni supports {}", SUPPORTED_VERSIONS.join(", ")),
                ))
            }
            Some(v) if !SUPPORTED_VERSIONS.contains(&v) => {
                return Err(err(
                    Code::IncompatibleVersion,
                    "incompatible CNI versions",
                    format!("config is {v:?}, warden-cni supports {}", SUPPORTED_VERSIONS.join(", ")),
                ))
            }
            Some(_) => {}
        }
        match conf.name.as_deref() {
            None | Some("") => return Err(err(Code::InvalidConfig, "missing network name", String::new())),
            Some(_) => {}
        }
        if let Some(m) = &conf.mode {
            if !matches!(m.as_str(), "learn" | "alert" | "protect") {
                return Err(err(
                    Code::InvalidConfig,
                    "invalid warden-cni configuration",
                    format!("mode {m:?}: expected \"learn\", \"alert\" or \"protect\""),
                ));
            }
        }
        if let Some(t) = conf.timeout_ms {
            if t == 0 || t > MAX_TIMEOUT_MS {
                return Err(err(
                    Code::InvalidConfig,
                    "invalid warden-cni configuration",
                    format!("timeoutMs {t}: expected 1..={MAX_TIMEOUT_MS} (ms)"),
                ));
            }
        }
        if let Some(s) = &conf.socket {
            if !s.starts_with('/') {
                return Err(err(
                    Code::InvalidConfig,
                    "invalid warden-cni configuration",
                    format!("socket {s:?}: expected an absolute path"),
                ));
            }
        }
        Ok(conf)
    }

    /// The configuration's `cniVersion`, or [`LATEST_VERSION`] when it has none.
    pub fn version(&self) -> &str {
        self.cni_version.as_deref().unwrap_or(LATEST_VERSION)
    }

    /// The control socket path.
    pub fn socket(&self) -> &str {
        self.socket.as_deref().unwrap_or(warden_control::DEFAULT_SOCKET)
    }

    /// The time budget for talking to Warden.
    pub fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.unwrap_or(DEFAULT_TIMEOUT_MS))
    }
}

/// The CNI environment variables (§2 "Parameters"), read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Env {
    /// `CNI_COMMAND`: `ADD`, `DEL`, `CHECK`, `GC`, `STATUS` or `VERSION`.
    pub command: Option<String>,
    /// `CNI_CONTAINERID`.
    pub container_id: Option<String>,
    /// `CNI_NETNS`: the path of the container's network namespace.
    pub netns: Option<String>,
    /// `CNI_IFNAME`: the interface inside the namespace.
    pub ifname: Option<String>,
    /// `CNI_ARGS`: `K=V;K2=V2`.
    pub args: Option<String>,
}

impl Env {
    /// Reads the variables through `get` (empty values count as absent).
    pub fn read(get: impl Fn(&str) -> Option<String>) -> Self {
        let v = |k: &str| get(k).filter(|s| !s.is_empty());
        Self {
            command: v("CNI_COMMAND"),
            container_id: v("CNI_CONTAINERID"),
            netns: v("CNI_NETNS"),
            ifname: v("CNI_IFNAME"),
            args: v("CNI_ARGS"),
        }
    }

    /// Checks that the variables `command` needs are there and well formed: CNI_CONTAINERID
    /// and CNI_IFNAME for ADD, DEL and CHECK, CNI_NETNS for ADD and CHECK (§2; as the
    /// reference library's `skel` does).
    ///
    /// # Errors
    /// [`Code::InvalidEnvironment`] naming the missing or invalid variables.
    pub fn require(&self, command: &str) -> Result<(), CniError> {
        let (id, ns, ifname) = match command {
            "ADD" | "CHECK" => (true, true, true),
            "DEL" => (true, false, true),
            _ => (false, false, false),
        };
        let mut missing = Vec::new();
        if id && self.container_id.is_none() {
            missing.push("CNI_CONTAINERID");
        }
        if ns && self.netns.is_none() {
            missing.push("CNI_NETNS");
        }
        if ifname && self.ifname.is_none() {
            missing.push("CNI_IFNAME");
        }
        if !missing.is_empty() {
            return Err(CniError::new(
                Code::InvalidEnvironment,
                format!("required env variables [{}] missing", missing.join(",")),
                String::new(),
            ));
        }
        if let Some(c) = self.container_id.as_deref().filter(|_| id) {
            if !valid_container_id(c) {
                return Err(CniError::new(
                    Code::InvalidEnvironment,
                    "invalid characters in CNI_CONTAINERID",
                    format!("{c:?}: must start with a letter or digit, then letters, digits, '_', '.' or '-'"),
                ));
            }
        }
        if let Some(i) = self.ifname.as_deref().filter(|_| ifname) {
            if !valid_ifname(i) {
                return Err(CniError::new(
                    Code::InvalidEnvironment,
                    "invalid CNI_IFNAME",
                    format!("{i:?}: 1 to 15 bytes, no '/', ':' or white space, not \".\" or \"..\""),
                ));
            }
        }
        Ok(())
    }

    /// The value of `key` in `CNI_ARGS` (`K=V;K2=V2`).
    pub fn arg(&self, key: &str) -> Option<&str> {
        self.args.as_deref()?.split(';').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == key).map(|(_, v)| v)
    }
}

/// A container id as §2 allows it: a letter or digit, then letters, digits, `_`, `.`, `-`.
pub fn valid_container_id(id: &str) -> bool {
    let mut b = id.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// An interface name Linux accepts (`dev_valid_name`): 1 to 15 bytes, no `/`, `:` or white
/// space, not `.` or `..`.
pub fn valid_ifname(name: &str) -> bool {
    !name.is_empty()
        && name.len() < 16
        && name != "."
        && name != ".."
        && !name.bytes().any(|c| c == b'/' || c == b':' || c.is_ascii_whitespace() || c == 0)
}

/// The attachment's name in Warden, the same for ADD, CHECK and DEL of one CNI attachment
/// (§3: identified by container id and interface; runtimes pass the same `CNI_ARGS` to all
/// three): `k8s_<namespace>_<pod>_<id12>_<ifname>` when `CNI_ARGS` carries
/// `K8S_POD_NAMESPACE` and `K8S_POD_NAME` (containerd, cri-o), else `cni_<id12>_<ifname>`,
/// where `<id12>` ([`short_id`]) is the container id itself up to 12 characters, the first 12
/// of a longer hexadecimal id (as runtimes print ids), else 12 hexadecimal digits of a hash
/// of the whole id (so `pod-a-1` and `pod-a-2` style ids of other tools stay apart). Characters other than letters,
/// digits, `.` and `-` in the pod's names become `-` (so `_` only separates), and the pod
/// part is shortened so the name stays within [`MAX_NAME`] bytes.
pub fn attachment_name(env: &Env) -> String {
    let id = short_id(env.container_id.as_deref().unwrap_or(""));
    let ifname = env.ifname.as_deref().unwrap_or("");
    let clean = |s: &str| -> String {
        s.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '-' }).collect()
    };
    match (env.arg("K8S_POD_NAMESPACE"), env.arg("K8S_POD_NAME")) {
        (Some(ns), Some(pod)) if !ns.is_empty() && !pod.is_empty() => {
            let tail = format!("_{id}_{}", clean(ifname));
            let mut head = format!("k8s_{}_{}", clean(ns), clean(pod));
            head.truncate(MAX_NAME.saturating_sub(tail.len()));
            head + &tail
        }
        _ => format!("cni_{id}_{}", clean(ifname)),
    }
}

/// The container id part of [`attachment_name`]: `id` when at most 12 characters, its first 12
/// when it is all hexadecimal digits (runtimes' random ids: 64 digits), else the FNV-1a 64-bit
/// hash of `id` as 12 hexadecimal digits (48 bits).
pub fn short_id(id: &str) -> String {
    if id.len() <= 12 {
        id.to_string()
    } else if id.bytes().all(|b| b.is_ascii_hexdigit()) {
        id[..12].to_string()
    } else {
        let h = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3));
        format!("{:012x}", h >> 16)
    }
}

/// The workload's addresses in `prevResult` (§5): each `ips[].address` (CIDR notation, the
/// prefix length dropped) whose `interface` index names the interface `ifname` inside a
/// sandbox, or that names no interface. Addresses a plugin gave a host-side interface (a
/// bridge) are not the workload's and are left out. Unparsable entries are skipped.
pub fn workload_ips(prev: &serde_json::Value, ifname: &str) -> Vec<IpAddr> {
    let ifaces = prev.get("interfaces").and_then(|v| v.as_array());
    let mut out: Vec<IpAddr> = Vec::new();
    for ip in prev.get("ips").and_then(|v| v.as_array()).into_iter().flatten() {
        if let Some(i) = ip.get("interface").and_then(|v| v.as_u64()) {
            let iface = ifaces.and_then(|a| a.get(i as usize));
            let name = iface.and_then(|f| f.get("name")).and_then(|v| v.as_str());
            let sandbox = iface.and_then(|f| f.get("sandbox")).and_then(|v| v.as_str()).unwrap_or("");
            if name != Some(ifname) || sandbox.is_empty() {
                continue;
            }
        }
        let Some(addr) = ip.get("address").and_then(|v| v.as_str()) else { continue };
        let host = addr.split_once('/').map_or(addr, |(h, _)| h);
        if let Ok(a) = host.parse::<IpAddr>() {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn versions_compare_numerically() {
        assert_eq!(parse_version("1.10.0"), Some((1, 10, 0)));
        assert_eq!(parse_version("1.0"), None);
        assert_eq!(parse_version("1.0.0.0"), None);
        assert!(at_least("1.10.0", "1.9.0"));
        assert!(at_least("0.4.0", "0.4.0"));
        assert!(!at_least("0.3.1", "0.4.0"));
        assert!(!at_least("x", "0.1.0"));
    }

    #[test]
    fn names_are_stable_and_safe() {
        let mut env = Env {
            container_id: Some("0123456789abcdef0123".into()),
            ifname: Some("eth0".into()),
            ..Env::default()
        };
        assert_eq!(attachment_name(&env), "cni_0123456789ab_eth0");
        env.args = Some("IgnoreUnknown=1;K8S_POD_NAMESPACE=shop;K8S_POD_NAME=web-7f9/../x;K8S_POD_UID=u".into());
        assert_eq!(attachment_name(&env), "k8s_shop_web-7f9-..-x_0123456789ab_eth0");
        env.args = Some(format!("K8S_POD_NAMESPACE=ns;K8S_POD_NAME={}", "p".repeat(300)));
        let n = attachment_name(&env);
        assert_eq!(n.len(), MAX_NAME);
        assert!(n.ends_with("_0123456789ab_eth0"), "{n}");
        // Only one of the two: not a pod.
        env.args = Some("K8S_POD_NAME=x".into());
        assert_eq!(attachment_name(&env), "cni_0123456789ab_eth0");
        // Long ids that are not hexadecimal differ after their 12th character too.
        let (a, b) = (short_id("e2e-test-container-a"), short_id("e2e-test-container-b"));
        assert_ne!(a, b);
        assert!(a.len() == 12 && a.bytes().all(|c| c.is_ascii_hexdigit()), "{a}");
        assert_eq!(short_id("e2e-test-container-a"), a, "stable");
        assert_eq!(short_id("abc-1"), "abc-1");
    }

    #[test]
    fn only_the_sandbox_interface_addresses_are_the_workload_s() {
        let prev = json!({
            "cniVersion": "1.0.0",
            "interfaces": [
                {"name": "cni-w0", "mac": "aa:bb:cc:dd:ee:01"},
                {"name": "veth1234", "mac": "aa:bb:cc:dd:ee:02"},
                {"name": "eth0", "mac": "aa:bb:cc:dd:ee:03", "sandbox": "/run/netns/x"},
                {"name": "net1", "sandbox": "/run/netns/x"}
            ],
            "ips": [
                {"address": "198.18.7.1/24", "interface": 0},
                {"address": "198.18.7.2/24", "gateway": "198.18.7.1", "interface": 2},
                {"address": "2001:db8:7::2/64", "interface": 2},
                {"address": "198.18.8.2/24", "interface": 3},
                {"address": "198.18.9.9/24"},
                {"address": "garbage", "interface": 2},
                {"address": "198.18.7.2/24", "interface": 2}
            ]
        });
        let ips: Vec<String> = workload_ips(&prev, "eth0").iter().map(|a| a.to_string()).collect();
        assert_eq!(ips, ["198.18.7.2", "2001:db8:7::2", "198.18.9.9"]);
        assert!(workload_ips(&json!({}), "eth0").is_empty());
    }

    #[test]
    fn config_fields_are_checked() {
        let ok = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n","type":"warden-cni","mode":"protect","timeoutMs":500,"socket":"/run/w.sock","onUnreachable":"allow","extra":{"x":1}}"#).unwrap();
        assert_eq!(ok.mode.as_deref(), Some("protect"));
        assert_eq!(ok.timeout(), Duration::from_millis(500));
        assert_eq!(ok.socket(), "/run/w.sock");
        assert_eq!(ok.on_unreachable, OnUnreachable::Allow);
        let d = NetConf::parse(br#"{"cniVersion":"1.0.0","name":"n"}"#).unwrap();
        assert_eq!((d.socket(), d.timeout(), d.on_unreachable), (warden_control::DEFAULT_SOCKET, Duration::from_secs(10), OnUnreachable::Fail));
        let code = |s: &str| NetConf::parse(s.as_bytes()).unwrap_err().code;
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"n","mode":"block"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"n","timeoutMs":0}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"n","timeoutMs":"5"}"#), 6);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"n","socket":"rel.sock"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"1.0.0","name":"n","onUnreachable":"ignore"}"#), 6);
        assert_eq!(code(r#"{"cniVersion":"1.0.0"}"#), 7);
        assert_eq!(code(r#"{"cniVersion":"0.2.0","name":"n"}"#), 1);
        assert_eq!(code(r#"{"name":"n"}"#), 1);
        assert_eq!(code("not json"), 6);
    }

    #[test]
    fn environment_is_checked_per_command() {
        let env = |pairs: &[(&str, &str)]| {
            let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            Env::read(move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
        };
        let e = env(&[("CNI_COMMAND", "ADD"), ("CNI_CONTAINERID", "abc"), ("CNI_NETNS", "")]);
        let err = e.require("ADD").unwrap_err();
        assert_eq!((err.code, err.msg.as_str()), (4, "required env variables [CNI_NETNS,CNI_IFNAME] missing"));
        let e = env(&[("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "eth0")]);
        assert!(e.require("DEL").is_ok(), "DEL needs no namespace");
        assert!(e.require("VERSION").is_ok());
        let e = env(&[("CNI_CONTAINERID", "-abc"), ("CNI_IFNAME", "eth0"), ("CNI_NETNS", "/x")]);
        assert_eq!(e.require("ADD").unwrap_err().msg, "invalid characters in CNI_CONTAINERID");
        let e = env(&[("CNI_CONTAINERID", "abc"), ("CNI_IFNAME", "a/b"), ("CNI_NETNS", "/x")]);
        assert_eq!(e.require("CHECK").unwrap_err().msg, "invalid CNI_IFNAME");
        assert!(!valid_ifname("0123456789abcdef"));
        assert!(valid_ifname("0123456789abcde"));
        let e = env(&[("CNI_ARGS", "A=1;B=2=3;C")]);
        assert_eq!((e.arg("A"), e.arg("B"), e.arg("C")), (Some("1"), Some("2=3"), None));
    }
}
