//! The threat catalogue: every threat Warden detects, with its id (as written in records,
//! events, `warden.toml` and the docs), severity and default action.
//!
//! The ids are those of the system Warden replaces (NeuVector's dp), so that rules, dashboards
//! and runbooks written for it keep their names. Unlike it, every threat is detected by
//! default; the default action says what protect mode does with it (`docs/threats.md` gives
//! the reasoning per threat).

/// A kind of threat.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum ThreatId {
    /// SYNs to one server above a rate with few completed handshakes.
    TcpSynFlood,
    /// ICMP echo requests to one destination above a rate.
    IcmpFlood,
    /// One source holding more than N sessions at once.
    IpSrcSessionLimit,
    /// A frame that cannot be valid (malformed header, bad lengths, invalid flag combinations).
    BadPacket,
    /// Overlapping IP fragments with different data.
    IpTeardrop,
    /// Data on a SYN (outside TCP Fast Open the server accepted).
    TcpSynData,
    /// Split or simultaneous-open handshakes used for evasion.
    TcpSplitHandshake,
    /// A server that talks first and a client that never sends (per app expectations).
    TcpNoClientData,
    /// Advertised windows so small they pin server memory (sockstress).
    TcpSmallWindow,
    /// A tiny MSS (SACK panic, CVE-2019-11477).
    TcpSmallMss,
    /// A reassembled IP datagram over 65 535 bytes.
    PingOfDeath,
    /// DNS name compression pointers that loop.
    DnsLoopPointer,
    /// SSH protocol 1.x.
    SshV1,
    /// TLS heartbeat requests whose length exceeds the record (CVE-2014-0160).
    TlsHeartbleed,
    /// A cipher-suite list or record length that overflows its container.
    TlsCipherOverflow,
    /// SSLv2 or SSLv3 negotiated or offered as the highest version.
    TlsSslv2Sslv3,
    /// A session that negotiates TLS 1.0.
    Tls1_0,
    /// A session that negotiates TLS 1.1.
    Tls1_1,
    /// A negative or overflowing HTTP Content-Length.
    HttpNegativeBodyLength,
    /// Conflicting HTTP message framing (RFC 9112 §6.3) and the other smuggling forms.
    HttpRequestSmuggling,
    /// Many connections holding partial HTTP request headers open.
    HttpSlowloris,
    /// DNS names or labels beyond RFC 1035 limits, oversized messages.
    DnsOverflow,
    /// Repeated MySQL authentication failures (error 1045) from one client.
    MysqlAccessDenied,
    /// DNS AXFR / IXFR requests.
    DnsZoneTransfer,
    /// ICMP echo carrying data that is not a ping pattern.
    IcmpTunneling,
    /// DNS queries of type NULL.
    DnsNullType,
    /// SQL injection in SQL text or an HTTP request.
    SqlInjection,
    /// OGNL expressions in HTTP headers (CVE-2017-5638 and kin).
    ApacheStrutsRce,
    /// Data exfiltration in DNS names.
    DnsTunneling,
    /// Traffic to a Kubernetes Service externalIP that another workload owns (CVE-2020-8554).
    K8sExternalIpMitm,
}

/// How bad a threat is (events and metrics carry it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth knowing (deprecated protocol versions, reconnaissance).
    Low,
    /// Suspicious, may be benign (tunnelling heuristics, floods below damage).
    Medium,
    /// An attack form with no benign use.
    High,
    /// Remote code execution, memory disclosure, denial of service of the host.
    Critical,
}

impl Severity {
    /// Name in events (`"low"`, `"medium"`, `"high"`, `"critical"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// What protect mode does with a threat (`[threats.<id>] action`); alert and learn modes only
/// report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Report only.
    #[default]
    Alert,
    /// Drop the offending frames (the session's, or the source's/tuple's for floods and limits).
    Drop,
    /// As `drop`, and reset both ends of the TCP session.
    Reset,
    /// Not detected at all.
    Off,
}

impl Action {
    /// Name in config and events (`"alert"`, `"drop"`, `"reset"`, `"off"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Alert => "alert",
            Action::Drop => "drop",
            Action::Reset => "reset",
            Action::Off => "off",
        }
    }

    /// True when protect mode stops the offending frames.
    pub fn blocks(self) -> bool {
        matches!(self, Action::Drop | Action::Reset)
    }
}

impl ThreatId {
    /// Every threat kind, in declaration order (index = `id as usize`).
    pub const ALL: &'static [ThreatId] = &[
        ThreatId::TcpSynFlood,
        ThreatId::IcmpFlood,
        ThreatId::IpSrcSessionLimit,
        ThreatId::BadPacket,
        ThreatId::IpTeardrop,
        ThreatId::TcpSynData,
        ThreatId::TcpSplitHandshake,
        ThreatId::TcpNoClientData,
        ThreatId::TcpSmallWindow,
        ThreatId::TcpSmallMss,
        ThreatId::PingOfDeath,
        ThreatId::DnsLoopPointer,
        ThreatId::SshV1,
        ThreatId::TlsHeartbleed,
        ThreatId::TlsCipherOverflow,
        ThreatId::TlsSslv2Sslv3,
        ThreatId::Tls1_0,
        ThreatId::Tls1_1,
        ThreatId::HttpNegativeBodyLength,
        ThreatId::HttpRequestSmuggling,
        ThreatId::HttpSlowloris,
        ThreatId::DnsOverflow,
        ThreatId::MysqlAccessDenied,
        ThreatId::DnsZoneTransfer,
        ThreatId::IcmpTunneling,
        ThreatId::DnsNullType,
        ThreatId::SqlInjection,
        ThreatId::ApacheStrutsRce,
        ThreatId::DnsTunneling,
        ThreatId::K8sExternalIpMitm,
    ];

    /// Name used in records, events, config and docs (`"sql_injection"`).
    pub fn as_str(self) -> &'static str {
        match self {
            ThreatId::TcpSynFlood => "tcp_syn_flood",
            ThreatId::IcmpFlood => "icmp_flood",
            ThreatId::IpSrcSessionLimit => "ip_src_session_limit",
            ThreatId::BadPacket => "bad_packet",
            ThreatId::IpTeardrop => "ip_teardrop",
            ThreatId::TcpSynData => "tcp_syn_data",
            ThreatId::TcpSplitHandshake => "tcp_split_handshake",
            ThreatId::TcpNoClientData => "tcp_no_client_data",
            ThreatId::TcpSmallWindow => "tcp_small_window",
            ThreatId::TcpSmallMss => "tcp_small_mss",
            ThreatId::PingOfDeath => "ping_of_death",
            ThreatId::DnsLoopPointer => "dns_loop_pointer",
            ThreatId::SshV1 => "ssh_v1",
            ThreatId::TlsHeartbleed => "tls_heartbleed",
            ThreatId::TlsCipherOverflow => "tls_cipher_overflow",
            ThreatId::TlsSslv2Sslv3 => "tls_sslv2_sslv3",
            ThreatId::Tls1_0 => "tls_1_0",
            ThreatId::Tls1_1 => "tls_1_1",
            ThreatId::HttpNegativeBodyLength => "http_negative_body_length",
            ThreatId::HttpRequestSmuggling => "http_request_smuggling",
            ThreatId::HttpSlowloris => "http_slowloris",
            ThreatId::DnsOverflow => "dns_overflow",
            ThreatId::MysqlAccessDenied => "mysql_access_denied",
            ThreatId::DnsZoneTransfer => "dns_zone_transfer",
            ThreatId::IcmpTunneling => "icmp_tunneling",
            ThreatId::DnsNullType => "dns_null_type",
            ThreatId::SqlInjection => "sql_injection",
            ThreatId::ApacheStrutsRce => "apache_struts_rce",
            ThreatId::DnsTunneling => "dns_tunneling",
            ThreatId::K8sExternalIpMitm => "k8s_external_ip_mitm",
        }
    }

    /// The id named `s` (as [`ThreatId::as_str`] writes it).
    pub fn parse(s: &str) -> Option<ThreatId> {
        ThreatId::ALL.iter().copied().find(|t| t.as_str() == s)
    }

    /// One-line description (`wardenctl threats`, docs).
    pub fn summary(self) -> &'static str {
        match self {
            ThreatId::TcpSynFlood => "SYNs to one server above a rate with few completed handshakes",
            ThreatId::IcmpFlood => "ICMP echo requests to one destination above a rate",
            ThreatId::IpSrcSessionLimit => "one source holding more than N sessions at once",
            ThreatId::BadPacket => "a frame that cannot be valid (header, lengths, flag combinations)",
            ThreatId::IpTeardrop => "overlapping IP fragments with different data",
            ThreatId::TcpSynData => "data on a SYN the server did not accept (not TCP Fast Open)",
            ThreatId::TcpSplitHandshake => "split or simultaneous-open TCP handshake",
            ThreatId::TcpNoClientData => "the server talks first and the client never sends",
            ThreatId::TcpSmallWindow => "advertised windows so small they pin server memory",
            ThreatId::TcpSmallMss => "tiny TCP MSS (SACK panic, CVE-2019-11477)",
            ThreatId::PingOfDeath => "a reassembled IP datagram over 65535 bytes",
            ThreatId::DnsLoopPointer => "DNS compression pointers that loop",
            ThreatId::SshV1 => "SSH protocol 1.x",
            ThreatId::TlsHeartbleed => "TLS heartbeat longer than its record (CVE-2014-0160)",
            ThreatId::TlsCipherOverflow => "TLS cipher-suite list or record length overflowing its container",
            ThreatId::TlsSslv2Sslv3 => "SSLv2 or SSLv3 offered as highest or negotiated",
            ThreatId::Tls1_0 => "TLS 1.0 negotiated",
            ThreatId::Tls1_1 => "TLS 1.1 negotiated",
            ThreatId::HttpNegativeBodyLength => "negative or overflowing HTTP Content-Length",
            ThreatId::HttpRequestSmuggling => "conflicting HTTP message framing (request smuggling)",
            ThreatId::HttpSlowloris => "many connections holding partial HTTP headers open",
            ThreatId::DnsOverflow => "DNS names or labels beyond RFC 1035 limits, oversized messages",
            ThreatId::MysqlAccessDenied => "repeated MySQL authentication failures from one client",
            ThreatId::DnsZoneTransfer => "DNS AXFR / IXFR request",
            ThreatId::IcmpTunneling => "ICMP echo carrying data that is not a ping pattern",
            ThreatId::DnsNullType => "DNS query of type NULL",
            ThreatId::SqlInjection => "SQL injection in SQL text or an HTTP request",
            ThreatId::ApacheStrutsRce => "OGNL expression in HTTP headers (CVE-2017-5638 and kin)",
            ThreatId::DnsTunneling => "data exfiltration in DNS names",
            ThreatId::K8sExternalIpMitm => "traffic to a Service externalIP another workload owns (CVE-2020-8554)",
        }
    }

    /// Default severity.
    pub fn severity(self) -> Severity {
        use ThreatId::*;
        match self {
            Tls1_0 | Tls1_1 | DnsZoneTransfer | DnsNullType | TcpNoClientData => Severity::Low,
            TcpSynData | IcmpTunneling | DnsTunneling | MysqlAccessDenied | TlsSslv2Sslv3 | IpSrcSessionLimit => {
                Severity::Medium
            }
            TcpSynFlood | IcmpFlood | BadPacket | TcpSplitHandshake | TcpSmallWindow | HttpSlowloris | SshV1
            | DnsOverflow | HttpNegativeBodyLength | HttpRequestSmuggling | IpTeardrop | K8sExternalIpMitm => {
                Severity::High
            }
            PingOfDeath | TcpSmallMss | DnsLoopPointer | TlsHeartbleed | TlsCipherOverflow | SqlInjection
            | ApacheStrutsRce => Severity::Critical,
        }
    }

    /// What protect mode does by default: forms with no benign use are dropped (a session
    /// carrying them is reset when it already forwarded data); weak protocol versions and
    /// heuristics that can hit benign traffic are reported only.
    pub fn default_action(self) -> Action {
        use ThreatId::*;
        match self {
            // The session limit alerts: a busy client (a node-local DNS cache, a NAT'd node
            // address) holds thousands of live UDP sessions legitimately.
            Tls1_0 | Tls1_1 | DnsZoneTransfer | DnsNullType | TcpNoClientData | TcpSynData | IcmpTunneling
            | DnsTunneling | MysqlAccessDenied | HttpSlowloris | IpSrcSessionLimit => Action::Alert,
            TlsSslv2Sslv3 | SshV1 | TlsHeartbleed | TlsCipherOverflow | SqlInjection | ApacheStrutsRce
            | HttpRequestSmuggling | HttpNegativeBodyLength => Action::Reset,
            TcpSynFlood | IcmpFlood | BadPacket | IpTeardrop | TcpSplitHandshake
            | TcpSmallWindow | TcpSmallMss | PingOfDeath | DnsLoopPointer | DnsOverflow | K8sExternalIpMitm => {
                Action::Drop
            }
        }
    }

    /// Bit of this id in a [`ThreatSet`].
    pub fn bit(self) -> u32 {
        1 << (self as u32)
    }
}

/// A set of threat ids as a bit mask (30 ids fit in a `u32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct ThreatSet(pub u32);

impl ThreatSet {
    /// Adds `id`; true when it was not in the set.
    pub fn insert(&mut self, id: ThreatId) -> bool {
        let new = self.0 & id.bit() == 0;
        self.0 |= id.bit();
        new
    }

    /// True when `id` is in the set.
    pub fn contains(self, id: ThreatId) -> bool {
        self.0 & id.bit() != 0
    }

    /// True when empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The ids in the set, in catalogue order.
    pub fn iter(self) -> impl Iterator<Item = ThreatId> {
        ThreatId::ALL.iter().copied().filter(move |t| self.contains(*t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_indexed_and_round_trip() {
        assert_eq!(ThreatId::ALL.len(), 30);
        assert!(ThreatId::ALL.len() <= 32, "a ThreatSet holds 32 ids");
        for (i, t) in ThreatId::ALL.iter().enumerate() {
            assert_eq!(*t as usize, i, "{t:?}");
            assert_eq!(ThreatId::parse(t.as_str()), Some(*t));
            assert!(!t.summary().is_empty());
        }
        let mut s = ThreatSet::default();
        assert!(s.insert(ThreatId::K8sExternalIpMitm) && !s.insert(ThreatId::K8sExternalIpMitm));
        s.insert(ThreatId::TcpSynFlood);
        assert_eq!(s.iter().collect::<Vec<_>>(), [ThreatId::TcpSynFlood, ThreatId::K8sExternalIpMitm]);
        assert_eq!(ThreatId::parse("sql-injection"), None);
    }
}
