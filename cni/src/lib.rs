//! `warden-cni`: a chained CNI plugin (CNI spec 0.3.0–1.1.0,
//! <https://github.com/containernetworking/cni/blob/main/SPEC.md>) that puts Warden in front
//! of a new workload's interface before the runtime starts it.
//!
//! Put after the plugin that creates the interface (`bridge`, `ptp`, ...) in a network
//! configuration list. On **ADD** it sends Warden [`Request::Attach`] with
//! `kind: "netns"`, the namespace (`CNI_NETNS`), the interface (`CNI_IFNAME`), the addresses
//! of `prevResult` and the configured `mode`, waits for Warden's reply (Warden replies once the
//! interface forwards through it and every worker enforces the workload's policy) and only
//! then prints `prevResult` unchanged as its result, so the workload's first packet is
//! inspected. **DEL** sends [`Request::Detach`] (success when nothing is attached or Warden is
//! gone, as §2 requires), **CHECK** looks for the attachment in
//! [`Request::ListAttachments`], **STATUS** says whether Warden answers, **GC** has nothing
//! to collect (the plugin keeps no state; Warden ends an attachment whose interface goes),
//! **VERSION** lists [`conf::SUPPORTED_VERSIONS`]. Errors are the spec's error JSON on stdout
//! with exit status 1 ([`error::CniError`]).
//!
//! Its own configuration fields ([`conf::NetConf`]): `socket` (Warden's control socket),
//! `mode` (`learn`, `alert`, `protect`), `timeoutMs` (the budget for the whole command, ms),
//! `onUnreachable` (`fail`, the default: ADD fails when Warden does not answer, so no workload
//! starts unprotected; `allow`: ADD passes with a warning).
//!
//! [`Request::Attach`]: warden_control::Request::Attach
//! [`Request::Detach`]: warden_control::Request::Detach
//! [`Request::ListAttachments`]: warden_control::Request::ListAttachments

pub mod conf;
pub mod error;
pub mod warden;

#[cfg(test)]
mod tests;

use std::net::IpAddr;

use warden_control::AttachSpec;

use conf::{at_least, attachment_name, workload_ips, Env, NetConf, OnUnreachable, LATEST_VERSION, SUPPORTED_VERSIONS};
use error::{CniError, Code};
use warden::{Fail, Warden};

/// What a run of the plugin writes and how it exits.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Outcome {
    /// Standard output: the result (ADD, VERSION), the error JSON, or nothing.
    pub stdout: String,
    /// Standard error: log lines for people (warnings, what was attached).
    pub stderr: String,
    /// Exit status: 0 on success, 1 with an error result.
    pub status: i32,
}

impl Outcome {
    fn ok(stdout: String, stderr: String) -> Self {
        Self { stdout, stderr, status: 0 }
    }

    fn err(e: &CniError, stderr: String) -> Self {
        let stderr = format!("{stderr}warden-cni: {e}\n");
        Self { stdout: e.to_json() + "\n", stderr, status: 1 }
    }
}

/// Runs one plugin command: the CNI variables come from `get` (the process environment in
/// `main`), the network configuration is `stdin`.
pub fn run(get: impl Fn(&str) -> Option<String>, stdin: &[u8]) -> Outcome {
    let env = Env::read(get);
    let mut log = String::new();
    let command = match env.command.as_deref() {
        Some(c) => c.to_string(),
        None => {
            let e = CniError::new(Code::InvalidEnvironment, "required env variables [CNI_COMMAND] missing", String::new());
            log.push_str(&format!(
                "warden-cni: CNI plugin that attaches Warden to new workloads; CNI protocol versions supported: {}\n",
                SUPPORTED_VERSIONS.join(", ")
            ));
            return Outcome::err(&e, log);
        }
    };
    let result = match command.as_str() {
        "VERSION" => version(stdin),
        "ADD" | "DEL" | "CHECK" | "STATUS" | "GC" => command_with_conf(&command, &env, stdin, &mut log),
        other => Err(CniError::new(Code::InvalidEnvironment, format!("unknown CNI_COMMAND: {other}"), String::new())),
    };
    match result {
        Ok(out) => Outcome::ok(out, log),
        Err(e) => Outcome::err(&e, log),
    }
}

/// VERSION (§2): `{"cniVersion": <input's or the latest>, "supportedVersions": [...]}`.
fn version(stdin: &[u8]) -> Result<String, CniError> {
    let v = serde_json::from_slice::<serde_json::Value>(stdin)
        .ok()
        .and_then(|j| j.get("cniVersion").and_then(|v| v.as_str()).map(str::to_string))
        .unwrap_or_else(|| LATEST_VERSION.to_string());
    let out = serde_json::json!({ "cniVersion": v, "supportedVersions": SUPPORTED_VERSIONS });
    Ok(out.to_string() + "\n")
}

fn command_with_conf(command: &str, env: &Env, stdin: &[u8], log: &mut String) -> Result<String, CniError> {
    env.require(command)?;
    let conf = NetConf::parse(stdin)?;
    let v = conf.version().to_string();
    let min = match command {
        "CHECK" => "0.4.0",
        "GC" | "STATUS" => "1.1.0",
        _ => "0.3.0",
    };
    if !at_least(&v, min) {
        return Err(CniError::new(
            Code::IncompatibleVersion,
            format!("config version does not allow {command}"),
            format!("{command} needs cniVersion {min} or later, the configuration has {v}"),
        )
        .version(&v));
    }
    match command {
        "ADD" => add(env, &conf, log),
        "DEL" => del(env, &conf, log),
        "CHECK" => check(env, &conf, log),
        "STATUS" => status(&conf, log),
        _ => {
            log.push_str("warden-cni: GC: nothing to collect (the plugin keeps no state; Warden ends attachments whose interface is gone)\n");
            Ok(String::new())
        }
    }
    .map_err(|e| e.version(&v))
}

/// `prevResult` as the result: unchanged, with `cniVersion` added when it had none.
fn result_of(conf: &NetConf) -> Result<(String, &serde_json::Value), CniError> {
    let prev = conf.prev_result.as_ref().filter(|p| p.is_object()).ok_or_else(|| {
        CniError::new(
            Code::InvalidConfig,
            "missing prevResult",
            "warden-cni is a chained plugin: list it after the plugin that creates the interface (bridge, ptp, ...)",
        )
    })?;
    let mut out = prev.clone();
    if let Some(o) = out.as_object_mut() {
        o.entry("cniVersion").or_insert_with(|| conf.version().into());
    }
    Ok((out.to_string() + "\n", prev))
}

fn add(env: &Env, conf: &NetConf, log: &mut String) -> Result<String, CniError> {
    let (result, prev) = result_of(conf)?;
    let ifname = env.ifname.clone().unwrap_or_default();
    let netns = env.netns.clone().unwrap_or_default();
    let name = attachment_name(env);
    let ips = workload_ips(prev, &ifname);
    let spec = AttachSpec {
        target: netns.clone(),
        kind: Some("netns".into()),
        ifname: Some(ifname.clone()),
        mode: conf.mode.clone(),
        monitor: false,
        name: Some(name.clone()),
        ips: ips.iter().map(IpAddr::to_string).collect(),
    };
    let attached = Warden::connect(conf.socket(), conf.timeout()).and_then(|mut w| w.attach(spec));
    match attached {
        Ok(info) => {
            log.push_str(&format!(
                "warden-cni: {netns} {ifname} attached as {} (mode {}, host interface {}, addresses {})\n",
                info.name,
                info.mode,
                info.host_iface,
                info.ips.join(" ")
            ));
            Ok(result)
        }
        Err(Fail::Unreachable { why, timed_out }) => {
            if conf.on_unreachable == OnUnreachable::Allow {
                // A late attach is welcome here: the workload starts either way.
                log.push_str(&format!(
                    "warden-cni: WARNING: {why}; onUnreachable is \"allow\": {netns} {ifname} starts WITHOUT Warden in front of it\n"
                ));
                return Ok(result);
            }
            if timed_out {
                // ADD fails, but Warden may still carry the attachment out: ask it to undo it
                // (its control loop takes requests in order, so this comes after the attach).
                if let Ok(mut w) = Warden::connect(conf.socket(), std::time::Duration::from_secs(1)) {
                    let _ = w.detach(&name);
                }
            }
            Err(CniError::new(
                Code::TryAgainLater,
                "Warden is not reachable",
                format!("{why}; the workload is not started unprotected (onUnreachable \"fail\")"),
            ))
        }
        Err(Fail::Refused(m)) => Err(CniError::new(Code::WardenRefused, "Warden refused the attachment", m)),
        Err(Fail::Protocol(m)) => Err(CniError::new(Code::Protocol, "unexpected reply from Warden", m)),
    }
}

fn del(env: &Env, conf: &NetConf, log: &mut String) -> Result<String, CniError> {
    let name = attachment_name(env);
    let gone = |log: &mut String, why: &str| {
        log.push_str(&format!("warden-cni: DEL {name}: {why}; nothing to undo here\n"));
        Ok(String::new())
    };
    let mut w = match Warden::connect(conf.socket(), conf.timeout()) {
        Ok(w) => w,
        Err(Fail::Unreachable { why, .. }) => return gone(log, &why),
        Err(Fail::Refused(m)) => return Err(CniError::new(Code::WardenRefused, "Warden refused the detachment", m)),
        Err(Fail::Protocol(m)) => return Err(CniError::new(Code::Protocol, "unexpected reply from Warden", m)),
    };
    let present = |w: &mut Warden| w.attachments().map(|l| l.iter().any(|a| a.name == name));
    let failed = |f: Fail| match f {
        Fail::Unreachable { why, .. } => Ok(Err(why)),
        Fail::Refused(m) => Err(CniError::new(Code::WardenRefused, "Warden refused the detachment", m)),
        Fail::Protocol(m) => Err(CniError::new(Code::Protocol, "unexpected reply from Warden", m)),
    };
    match present(&mut w) {
        Ok(false) => return gone(log, "not attached"),
        Ok(true) => {}
        Err(f) => return failed(f)?.or_else(|why| gone(log, &why)),
    }
    match w.detach(&name) {
        Ok(()) => {
            log.push_str(&format!("warden-cni: {name} detached\n"));
            Ok(String::new())
        }
        Err(Fail::Refused(m)) => match present(&mut w) {
            // Gone meanwhile (its interface went and Warden ended it): what DEL wanted.
            Ok(false) => gone(log, "no longer attached"),
            _ => Err(CniError::new(Code::WardenRefused, "Warden refused the detachment", m)),
        },
        Err(f) => failed(f)?.or_else(|why| gone(log, &why)),
    }
}

fn check(env: &Env, conf: &NetConf, log: &mut String) -> Result<String, CniError> {
    let (_, prev) = result_of(conf)?;
    let name = attachment_name(env);
    let listed = Warden::connect(conf.socket(), conf.timeout()).and_then(|mut w| w.attachments());
    let list = match listed {
        Ok(l) => l,
        Err(Fail::Unreachable { why, .. }) if conf.on_unreachable == OnUnreachable::Allow => {
            log.push_str(&format!("warden-cni: WARNING: CHECK {name}: {why}; onUnreachable is \"allow\"\n"));
            return Ok(String::new());
        }
        Err(Fail::Unreachable { why, .. }) => {
            return Err(CniError::new(Code::TryAgainLater, "Warden is not reachable", why))
        }
        Err(Fail::Refused(m)) => return Err(CniError::new(Code::WardenRefused, "Warden refused the request", m)),
        Err(Fail::Protocol(m)) => return Err(CniError::new(Code::Protocol, "unexpected reply from Warden", m)),
    };
    let Some(info) = list.iter().find(|a| a.name == name) else {
        return Err(CniError::new(
            Code::NotAttached,
            "not attached to Warden",
            format!("Warden has no attachment {name} (of {} attachments)", list.len()),
        ));
    };
    let have: Vec<IpAddr> =
        info.ips.iter().filter_map(|s| s.split_once('/').map_or(s.as_str(), |(h, _)| h).parse().ok()).collect();
    let missing: Vec<String> = workload_ips(prev, env.ifname.as_deref().unwrap_or(""))
        .into_iter()
        .filter(|a| !have.contains(a))
        .map(|a| a.to_string())
        .collect();
    if !missing.is_empty() {
        return Err(CniError::new(
            Code::AttachmentDiffers,
            "the attachment does not cover the workload's addresses",
            format!("{name} has [{}], prevResult also has [{}]", info.ips.join(", "), missing.join(", ")),
        ));
    }
    Ok(String::new())
}

fn status(conf: &NetConf, log: &mut String) -> Result<String, CniError> {
    match Warden::connect(conf.socket(), conf.timeout()) {
        Ok(_) => Ok(String::new()),
        Err(Fail::Unreachable { why, .. }) if conf.on_unreachable == OnUnreachable::Allow => {
            log.push_str(&format!("warden-cni: WARNING: {why}; onUnreachable is \"allow\": ADD would pass\n"));
            Ok(String::new())
        }
        Err(f) => Err(CniError::new(Code::Unavailable, "Warden is not available", f.to_string())),
    }
}
