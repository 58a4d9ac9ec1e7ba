//! `[threats.<id>]` in `warden.toml`: per threat, the action protect mode takes and the
//! detector's thresholds.
//!
//! ```toml
//! [threats.tls_1_0]
//! action = "drop"          # alert | drop | reset | off
//!
//! [threats.tcp_small_mss]
//! min_mss = 200            # bytes
//! ```
//!
//! Every id of the catalogue has its table (a test checks); unknown ids and unknown keys are
//! errors naming the line and the field, like the rest of the file.

use serde::Deserialize;

use super::{Limits, ThreatPolicy};
use crate::detect::{Action, ThreatId};

macro_rules! threat_tables {
    ($( $id:ident => $Table:ident { $( $(#[doc = $d:literal])* $k:ident : $t:ty => $($lim:ident).+ ),* $(,)? } ),* $(,)?) => {
        /// `[threats]`: one optional table per threat id.
        #[derive(Debug, Clone, Default, Deserialize, PartialEq)]
        #[serde(deny_unknown_fields)]
        pub struct ThreatsConfig {
            $(
                #[doc = concat!("`[threats.", stringify!($id), "]`.")]
                #[serde(default)]
                pub $id: Option<$Table>,
            )*
        }

        $(
            #[doc = concat!("`[threats.", stringify!($id), "]`: its action and thresholds.")]
            #[derive(Debug, Clone, Default, Deserialize, PartialEq)]
            #[serde(deny_unknown_fields)]
            pub struct $Table {
                /// What protect mode does (`alert`, `drop`, `reset`, `off`); the catalogue's
                /// default when absent.
                pub action: Option<Action>,
                $( $(#[doc = $d])* pub $k: Option<$t>, )*
            }
        )*

        impl ThreatsConfig {
            /// The actions and thresholds: the catalogue's defaults, overridden by what the
            /// file sets.
            pub fn resolve(&self) -> ThreatPolicy {
                let mut p = ThreatPolicy::default();
                $(
                    if let Some(t) = &self.$id {
                        if let (Some(a), Some(id)) = (t.action, ThreatId::parse(stringify!($id))) {
                            p.actions[id as usize] = a;
                        }
                        $( if let Some(v) = t.$k { p.limits.$($lim).+ = v; } )*
                    }
                )*
                p
            }

            /// The ids that have a table (every id of the catalogue; tests).
            pub fn ids() -> &'static [&'static str] {
                &[$( stringify!($id) ),*]
            }
        }
    };
}

threat_tables! {
    tcp_syn_flood => TcpSynFloodTable {
        /// SYNs/s to one (zone, server, port) that start a flood when few handshakes complete
        /// (default 1000).
        rate: u32 => syn_flood.rate,
        /// SYNs/s under which a flood ends (default 750).
        end_rate: u32 => syn_flood.end_rate,
        /// A flood needs fewer completed handshakes than this % of the SYNs (default 50).
        min_handshake_pct: u8 => syn_flood.min_handshake_pct,
        /// SYNs/s admitted from unproven sources during a flood, shared (default 100).
        allowed_rate: u32 => syn_flood.allowed_rate,
        /// SYNs/s admitted per source that completed a handshake (default 100).
        proven_rate: u32 => syn_flood.proven_rate,
        /// Seconds a completed handshake proves its client (default 300).
        proven_ttl_s: u32 => syn_flood.proven_ttl_s,
    },
    icmp_flood => IcmpFloodTable {
        /// Echo requests/s to one destination that start a flood (default 100).
        rate: u32 => icmp_flood.rate,
        /// Requests/s under which it ends (default 75).
        end_rate: u32 => icmp_flood.end_rate,
        /// Requests/s admitted from unanswered sources during a flood, shared (default 10).
        allowed_rate: u32 => icmp_flood.allowed_rate,
        /// Requests/s admitted per source answered before the flood (default 10).
        proven_rate: u32 => icmp_flood.proven_rate,
    },
    ip_src_session_limit => IpSrcSessionLimitTable {
        /// Sessions one source may hold at once (default 2000).
        max_sessions: u32 => session_limit.max_sessions,
    },
    bad_packet => BadPacketTable {},
    ip_teardrop => IpTeardropTable {},
    tcp_syn_data => TcpSynDataTable {},
    tcp_split_handshake => TcpSplitHandshakeTable {},
    tcp_no_client_data => TcpNoClientDataTable {
        /// Seconds after the server's first data without a client byte (default 30).
        timeout_s: u32 => no_client_data_s,
    },
    tcp_small_window => TcpSmallWindowTable {
        /// Smallest window (bytes, scaled) a client may advertise when its handshake
        /// completes (default 64).
        min_window: u32 => min_window,
    },
    tcp_small_mss => TcpSmallMssTable {
        /// Smallest MSS (bytes) a SYN may announce (default 88).
        min_mss: u16 => min_mss,
    },
    ping_of_death => PingOfDeathTable {},
    dns_loop_pointer => DnsLoopPointerTable {},
    ssh_v1 => SshV1Table {},
    tls_heartbleed => TlsHeartbleedTable {},
    tls_cipher_overflow => TlsCipherOverflowTable {},
    tls_sslv2_sslv3 => TlsSslv2Sslv3Table {},
    tls_1_0 => Tls10Table {},
    tls_1_1 => Tls11Table {},
    http_negative_body_length => HttpNegativeBodyLengthTable {},
    http_request_smuggling => HttpRequestSmugglingTable {},
    http_slowloris => HttpSlowlorisTable {
        /// Slow request heads open at once to one server that are a finding (default 10).
        min_sessions: u32 => slowloris.min_sessions,
        /// A head open 5 s or more is slow below this many bytes/s (default 500).
        max_rate: u32 => slowloris.max_rate,
    },
    dns_overflow => DnsOverflowTable {},
    mysql_access_denied => MysqlAccessDeniedTable {
        /// Authentication failures of one client to one server within 60 s that are a
        /// finding (default 5, at most 32).
        threshold: u32 => auth_fail.threshold,
    },
    dns_zone_transfer => DnsZoneTransferTable {},
    icmp_tunneling => IcmpTunnelingTable {
        /// Seconds over which unexplained bytes and mismatches add up (default 60).
        window_s: u32 => icmp_tunnel.window_s,
        /// Unexplained echo payload bytes per pair and window that are a finding (default 4096).
        opaque_bytes: u32 => icmp_tunnel.opaque_bytes,
        /// Replies differing from their request that are a finding (default 3).
        mismatches: u32 => icmp_tunnel.mismatches,
    },
    dns_null_type => DnsNullTypeTable {},
    sql_injection => SqlInjectionTable {},
    apache_struts_rce => ApacheStrutsRceTable {},
    dns_tunneling => DnsTunnelingTable {
        /// Suspect query-name bytes per (client, domain), decayed with a 60 s half-life, that
        /// are a finding (default 1024).
        threshold_bytes: u32 => dns_tunnel_bytes,
        /// Queries per (client, domain) before a finding (default 8).
        min_queries: u32 => dns_tunnel_queries,
    },
    k8s_external_ip_mitm => K8sExternalIpMitmTable {},
}

impl Default for ThreatPolicy {
    fn default() -> Self {
        let mut actions = [Action::Alert; ThreatId::ALL.len()];
        for t in ThreatId::ALL {
            actions[*t as usize] = t.default_action();
        }
        ThreatPolicy { actions, limits: Limits::default() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_has_a_table_and_the_file_overrides_defaults() {
        let ids = ThreatsConfig::ids();
        assert_eq!(ids.len(), ThreatId::ALL.len());
        for t in ThreatId::ALL {
            assert!(ids.contains(&t.as_str()), "{t:?}");
        }
        let file: String = ids.iter().map(|id| format!("[{id}]\naction = \"off\"\n")).collect();
        let cfg: ThreatsConfig = toml::from_str(&file).unwrap();
        assert!(cfg.resolve().actions.iter().all(|a| *a == Action::Off));

        let cfg: ThreatsConfig = toml::from_str("[tls_1_0]\naction = \"reset\"\n[tcp_small_mss]\nmin_mss = 200\n").unwrap();
        let p = cfg.resolve();
        assert_eq!(p.actions[ThreatId::Tls1_0 as usize], Action::Reset);
        assert_eq!(p.actions[ThreatId::Tls1_1 as usize], ThreatId::Tls1_1.default_action());
        assert_eq!(p.limits.min_mss, 200);
        assert_eq!(p.limits.min_window, Limits::default().min_window);
        let cfg: ThreatsConfig = toml::from_str("[tcp_syn_flood]\nrate = 5000\n[ip_src_session_limit]\nmax_sessions = 10\n").unwrap();
        let p = cfg.resolve();
        assert_eq!((p.limits.syn_flood.rate, p.limits.session_limit.max_sessions), (5000, 10));
    }

    #[test]
    fn unknown_ids_keys_and_actions_name_line_and_field() {
        for (text, want) in [
            ("[tls_1_0]\naction = \"block\"\n", "line 2"),
            ("[tls_1_0]\n\nmin_mss = 3\n", "unknown field `min_mss`"),
            ("[tls_1_9]\naction = \"drop\"\n", "unknown field `tls_1_9`"),
        ] {
            let e = toml::from_str::<ThreatsConfig>(text).unwrap_err().to_string();
            assert!(e.contains(want), "{text:?}: {e}");
        }
    }
}
