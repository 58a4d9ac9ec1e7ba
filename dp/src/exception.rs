//! Exception policy: what happens to a session when Warden cannot inspect what its verdict
//! depends on (after Suricata's IPS exception policies, `exception-policy` in its
//! `suricata.yaml`, written here for Warden's sessions and modes).
//!
//! An *exception* is one of [`ExceptionReason`]: the session was picked up mid-stream (its
//! TCP handshake was not seen, so nothing says which side opened it), no app context was free
//! on the core, the stream buffers of the core or the session were full, or too many
//! out-of-order segments waited before the app was known (or, after it, made the stream skip a
//! hole the parser could not frame across: [`crate::app::AppParser::gap`]). The action taken is configured per
//! mode of the session's strictest workload end ([`ExceptionPolicy`]):
//!
//! | action | frames | inspection | policy |
//! |---|---|---|---|
//! | `drop_flow` | every frame of the session dropped (TCP reset at both ends if it had forwarded data) | none | verdict `denied` |
//! | `pass_flow` | forwarded | stops; a mid-stream pickup is inspected mid-stream | the L3/L4 verdict still applies and follows policy changes; a mid-stream pickup's with its app once found |
//! | `bypass` | forwarded | stops (also for a mid-stream pickup) | not evaluated again for the session's life |
//!
//! **Mid-stream pickup** (`[sessions] midstream`) is the one reason whose inspection can go on:
//! the bytes are all there, only their start is missing. With `pass_flow` the session is
//! inspected by [`crate::app::midstream`] (framing instead of first messages: TLS records, HTTP
//! heads at turns, TDS packets, Kafka responses matched to requests), its parsers' threats and
//! SQL injection checks run, and the policy is evaluated again when its app is found (an `apps`
//! rule then allows or denies it as any session); while the app stays unknown the exception
//! stands for what cannot be known and the session is forwarded on its L3/L4 verdict. The
//! content may swap the session's guessed ends once ([`crate::app::midstream`], orientation).
//! `bypass` keeps its meaning: no inspection, no evaluation, the cheapest path (nothing is
//! looked at). `drop_flow`, protect mode's default, drops the session before any inspection,
//! so skipping the handshake gets no uninspected (or self-oriented) traffic through. The record
//! of a mid-stream session says `midstream: true`; one inspected under `pass_flow` reports its
//! inspection (`active`/`done`) instead of `bypassed`, with `exception_action: "pass_flow"`.
//!
//! Mid-stream pickup uses `[sessions] midstream`; the inspection exceptions use
//! `[inspection] exception_policy` and apply only to sessions whose verdict still depends on
//! the app (an `apps` rule could decide them): a session the L3/L4 policy already allowed for
//! good loses inspection (reported as `bypassed`) but keeps its verdict. Sessions with no
//! workload end are not policed: exceptions only stop inspection there.
//!
//! Defaults: `drop_flow` in protect, `pass_flow` in alert and learn. Every exception applied to
//! a policed session is counted per reason and reported once as an `exception` event; the
//! record carries `inspection: "bypassed"`, `inspection_reason` and `exception_action`.

use serde::{Deserialize, Serialize};

use crate::policy::Mode;

/// What to do with a session Warden cannot inspect as its verdict needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExceptionAction {
    /// Drop every frame of the session.
    DropFlow,
    /// Forward the session without further inspection; the L3/L4 verdict still applies.
    PassFlow,
    /// Forward the session without further inspection or policy evaluation.
    Bypass,
}

impl ExceptionAction {
    /// Name used in records, events and config (`drop_flow`, `pass_flow`, `bypass`).
    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionAction::DropFlow => "drop_flow",
            ExceptionAction::PassFlow => "pass_flow",
            ExceptionAction::Bypass => "bypass",
        }
    }
}

/// Why Warden could not inspect a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExceptionReason {
    /// A TCP session whose SYN was not seen (first frame SYN|ACK, ACK, data, FIN or RST).
    Midstream,
    /// No app context was free on the core (`[inspection] max_sessions`).
    AppPoolFull,
    /// The core's stream buffers were full (`stream_core_cap`).
    StreamCoreCap,
    /// The session's stream buffer cap was reached (`stream_session_cap`).
    StreamSessionCap,
    /// Too many out-of-order segments waited for a hole.
    OutOfOrder,
    /// An IP datagram could not be reassembled for lack of room (`[defrag]` datagrams, held
    /// frames or bytes, or fragments per datagram): its fragments are released uninspected
    /// or dropped ([`crate::defrag`]).
    DefragFull,
    /// An IP datagram was not complete within `[defrag] timeout`.
    DefragTimeout,
    /// The inner packet of a tunnel nested deeper than `[tunnels] max_depth`, or an IP
    /// fragment inside a tunnel (not reassembled there; [`crate::tunnel`]).
    TunnelUninspected,
}

impl ExceptionReason {
    /// Every reason, for counter arrays indexed by `reason as usize`.
    pub const ALL: [ExceptionReason; 8] = [
        ExceptionReason::Midstream,
        ExceptionReason::AppPoolFull,
        ExceptionReason::StreamCoreCap,
        ExceptionReason::StreamSessionCap,
        ExceptionReason::OutOfOrder,
        ExceptionReason::DefragFull,
        ExceptionReason::DefragTimeout,
        ExceptionReason::TunnelUninspected,
    ];

    /// Name used in records (`inspection_reason`), events and counters.
    pub fn as_str(self) -> &'static str {
        match self {
            ExceptionReason::Midstream => "midstream",
            ExceptionReason::AppPoolFull => "inspection_pool_full",
            ExceptionReason::StreamCoreCap => "stream_core_cap",
            ExceptionReason::StreamSessionCap => "stream_session_cap",
            ExceptionReason::OutOfOrder => "out_of_order_limit",
            ExceptionReason::DefragFull => "defrag_full",
            ExceptionReason::DefragTimeout => "defrag_timeout",
            ExceptionReason::TunnelUninspected => "tunnel_uninspected",
        }
    }

    /// The reason for a stream bypass.
    pub fn of_stream(b: crate::stream::Bypass) -> ExceptionReason {
        match b {
            crate::stream::Bypass::SessionCap => ExceptionReason::StreamSessionCap,
            crate::stream::Bypass::CoreCap => ExceptionReason::StreamCoreCap,
            crate::stream::Bypass::OutOfOrder => ExceptionReason::OutOfOrder,
        }
    }
}

/// One action per mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerMode {
    /// For sessions whose strictest workload end is in learn mode.
    pub learn: ExceptionAction,
    /// ... in alert mode.
    pub alert: ExceptionAction,
    /// ... in protect mode.
    pub protect: ExceptionAction,
}

impl Default for PerMode {
    fn default() -> Self {
        PerMode {
            learn: ExceptionAction::PassFlow,
            alert: ExceptionAction::PassFlow,
            protect: ExceptionAction::DropFlow,
        }
    }
}

impl PerMode {
    /// The same action in every mode.
    pub fn all(a: ExceptionAction) -> PerMode {
        PerMode { learn: a, alert: a, protect: a }
    }

    /// The action for `mode`.
    pub fn of(&self, mode: Mode) -> ExceptionAction {
        match mode {
            Mode::Learn => self.learn,
            Mode::Alert => self.alert,
            Mode::Protect => self.protect,
        }
    }
}

/// Config form: one action for every mode (`"drop_flow"`), or a table by mode
/// (`{ protect = "drop_flow", alert = "pass_flow", learn = "pass_flow" }`, missing modes take
/// their default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerModeConfig {
    /// One action for all modes.
    All(ExceptionAction),
    /// By mode.
    ByMode {
        /// Learn mode.
        learn: Option<ExceptionAction>,
        /// Alert mode.
        alert: Option<ExceptionAction>,
        /// Protect mode.
        protect: Option<ExceptionAction>,
    },
}

const EXPECTED: &str =
    "\"drop_flow\", \"pass_flow\" or \"bypass\", or a table { protect = ..., alert = ..., learn = ... }";

fn action_named<E: serde::de::Error>(v: &str) -> Result<ExceptionAction, E> {
    match v {
        "drop_flow" => Ok(ExceptionAction::DropFlow),
        "pass_flow" => Ok(ExceptionAction::PassFlow),
        "bypass" => Ok(ExceptionAction::Bypass),
        other => Err(E::custom(format!("unknown exception action {other:?}: expected {EXPECTED}"))),
    }
}

impl<'de> Deserialize<'de> for PerModeConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = PerModeConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PerModeConfig, E> {
                action_named(v).map(PerModeConfig::All)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<PerModeConfig, A::Error> {
                let (mut learn, mut alert, mut protect) = (None, None, None);
                while let Some(k) = m.next_key::<String>()? {
                    let v: String = m.next_value()?;
                    let a = action_named(&v)?;
                    match k.as_str() {
                        "learn" => learn = Some(a),
                        "alert" => alert = Some(a),
                        "protect" => protect = Some(a),
                        other => {
                            return Err(serde::de::Error::custom(format!(
                                "unknown mode {other:?}: expected protect, alert or learn"
                            )))
                        }
                    }
                }
                Ok(PerModeConfig::ByMode { learn, alert, protect })
            }
        }
        d.deserialize_any(V)
    }
}

impl Default for PerModeConfig {
    fn default() -> Self {
        PerModeConfig::ByMode { learn: None, alert: None, protect: None }
    }
}

impl PerModeConfig {
    /// The resolved actions.
    pub fn resolve(&self) -> PerMode {
        let d = PerMode::default();
        match *self {
            PerModeConfig::All(a) => PerMode::all(a),
            PerModeConfig::ByMode { learn, alert, protect } => PerMode {
                learn: learn.unwrap_or(d.learn),
                alert: alert.unwrap_or(d.alert),
                protect: protect.unwrap_or(d.protect),
            },
        }
    }
}

/// The exception policy of one pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExceptionPolicy {
    /// Sessions picked up mid-stream (`[sessions] midstream`).
    pub midstream: PerMode,
    /// App pool, stream buffers, out-of-order limit (`[inspection] exception_policy`).
    pub inspection: PerMode,
}

impl ExceptionPolicy {
    /// The action for `reason` in `mode`.
    pub fn action(&self, reason: ExceptionReason, mode: Mode) -> ExceptionAction {
        match reason {
            ExceptionReason::Midstream => self.midstream.of(mode),
            _ => self.inspection.of(mode),
        }
    }
}

/// A session's exception, once one applied (plain data, part of the session).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    /// Why.
    pub reason: ExceptionReason,
    /// What was done (`None`: the session is not policed, inspection just stopped).
    pub action: Option<ExceptionAction>,
}

impl Exception {
    /// True when the session is still inspected under this exception: a mid-stream pickup
    /// forwarded with `pass_flow` (or not policed) is inspected mid-stream
    /// ([`crate::app::midstream`]); `drop_flow` drops it and `bypass` forwards it uninspected,
    /// as every other reason's actions do (their inspection could not go on).
    pub fn inspects(&self) -> bool {
        self.reason == ExceptionReason::Midstream
            && !matches!(self.action, Some(ExceptionAction::DropFlow | ExceptionAction::Bypass))
    }
}

/// The strictest of two optional modes (protect > alert > learn).
pub fn strictest(a: Option<Mode>, b: Option<Mode>) -> Option<Mode> {
    let rank = |m: Mode| match m {
        Mode::Learn => 0,
        Mode::Alert => 1,
        Mode::Protect => 2,
    };
    match (a, b) {
        (Some(x), Some(y)) => Some(if rank(y) > rank(x) { y } else { x }),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    struct T {
        p: PerModeConfig,
    }

    #[test]
    fn config_forms() {
        let one: T = toml::from_str("p = \"bypass\"").unwrap();
        assert_eq!(one.p.resolve(), PerMode::all(ExceptionAction::Bypass));
        let some: T = toml::from_str("p = { alert = \"drop_flow\" }").unwrap();
        let r = some.p.resolve();
        assert_eq!((r.learn, r.alert, r.protect), (ExceptionAction::PassFlow, ExceptionAction::DropFlow, ExceptionAction::DropFlow));
        let e = toml::from_str::<T>("p = \"drop\"").unwrap_err().to_string();
        assert!(e.contains("unknown exception action \"drop\"") && e.contains("line 1"), "{e}");
        let e = toml::from_str::<T>("p = { protect = \"maybe\" }").unwrap_err().to_string();
        assert!(e.contains("\"maybe\""), "{e}");
        let e = toml::from_str::<T>("p = { defend = \"bypass\" }").unwrap_err().to_string();
        assert!(e.contains("unknown mode \"defend\""), "{e}");
        assert_eq!(PerModeConfig::default().resolve(), PerMode::default());
    }

    #[test]
    fn strictest_mode_and_actions() {
        assert_eq!(strictest(Some(Mode::Alert), Some(Mode::Protect)), Some(Mode::Protect));
        assert_eq!(strictest(Some(Mode::Alert), Some(Mode::Learn)), Some(Mode::Alert));
        assert_eq!(strictest(None, Some(Mode::Learn)), Some(Mode::Learn));
        assert_eq!(strictest(None, None), None);
        let p = ExceptionPolicy {
            midstream: PerMode::all(ExceptionAction::Bypass),
            inspection: PerMode::default(),
        };
        assert_eq!(p.action(ExceptionReason::Midstream, Mode::Protect), ExceptionAction::Bypass);
        assert_eq!(p.action(ExceptionReason::AppPoolFull, Mode::Protect), ExceptionAction::DropFlow);
        assert_eq!(p.action(ExceptionReason::OutOfOrder, Mode::Alert), ExceptionAction::PassFlow);
    }
}
