//! Pure parsing functions for Kafka request and response headers (no state, no allocation).
//!
//! Follows the Kafka protocol guide (kafka.apache.org/protocol), sections "Common Request and
//! Response Structure" (`Size => INT32` then the message), "Request Header v0/v1/v2"
//! (`api_key INT16, api_version INT16, correlation_id INT32, client_id NULLABLE_STRING` and, in
//! v2, `TAG_BUFFER`), "Response Header v0/v1" (`correlation_id INT32` [+ `TAG_BUFFER`]),
//! "Protocol Primitive Types" (STRING, COMPACT_STRING, UNSIGNED_VARINT, ARRAY, COMPACT_ARRAY) and
//! "Api Keys" (names of keys 0..=74), plus the Produce and Fetch request schemas for the first
//! topic name.

pub use crate::app::Parse;

/// Largest message size accepted (bytes after the 4-byte size field): 100 MB.
pub const MAX_SIZE: usize = 100 * 1024 * 1024;
/// Smallest request (header v1: api_key, api_version, correlation_id, client_id length).
pub const MIN_REQUEST: usize = 10;
/// Smallest response (correlation_id).
pub const MIN_RESPONSE: usize = 4;
/// Highest API key known (ListClientMetricsResources).
pub const MAX_API_KEY: i16 = 74;
/// Highest API version the probe believes (current brokers stop below 20).
pub const MAX_API_VERSION: i16 = 20;
/// Longest client id the probe accepts (bytes).
pub const MAX_PROBE_CLIENT_ID: usize = 1024;

const NAMES: [&str; 75] = [
    "Produce", "Fetch", "ListOffsets", "Metadata", "LeaderAndIsr", "StopReplica", "UpdateMetadata",
    "ControlledShutdown", "OffsetCommit", "OffsetFetch", "FindCoordinator", "JoinGroup", "Heartbeat",
    "LeaveGroup", "SyncGroup", "DescribeGroups", "ListGroups", "SaslHandshake", "ApiVersions",
    "CreateTopics", "DeleteTopics", "DeleteRecords", "InitProducerId", "OffsetForLeaderEpoch",
    "AddPartitionsToTxn", "AddOffsetsToTxn", "EndTxn", "WriteTxnMarkers", "TxnOffsetCommit",
    "DescribeAcls", "CreateAcls", "DeleteAcls", "DescribeConfigs", "AlterConfigs",
    "AlterReplicaLogDirs", "DescribeLogDirs", "SaslAuthenticate", "CreatePartitions",
    "CreateDelegationToken", "RenewDelegationToken", "ExpireDelegationToken",
    "DescribeDelegationToken", "DeleteGroups", "ElectLeaders", "IncrementalAlterConfigs",
    "AlterPartitionReassignments", "ListPartitionReassignments", "OffsetDelete",
    "DescribeClientQuotas", "AlterClientQuotas", "DescribeUserScramCredentials",
    "AlterUserScramCredentials", "Vote", "BeginQuorumEpoch", "EndQuorumEpoch", "DescribeQuorum",
    "AlterPartition", "UpdateFeatures", "Envelope", "FetchSnapshot", "DescribeCluster",
    "DescribeProducers", "BrokerRegistration", "BrokerHeartbeat", "UnregisterBroker",
    "DescribeTransactions", "ListTransactions", "AllocateProducerIds", "ConsumerGroupHeartbeat",
    "ConsumerGroupDescribe", "ControllerRegistration", "GetTelemetrySubscriptions", "PushTelemetry",
    "AssignReplicasToDirs", "ListClientMetricsResources",
];

/// Name of an API key ("Api Keys" table); `None` for unknown keys (still a value, not an error).
pub fn api_name(key: i16) -> Option<&'static str> {
    usize::try_from(key).ok().and_then(|k| NAMES.get(k).copied())
}

/// Big-endian i16 at `off`.
pub fn be16(b: &[u8], off: usize) -> Option<i16> {
    b.get(off..off.checked_add(2)?).map(|s| i16::from_be_bytes([s[0], s[1]]))
}

/// Big-endian i32 at `off`.
pub fn be32(b: &[u8], off: usize) -> Option<i32> {
    b.get(off..off.checked_add(4)?).map(|s| i32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// The 4-byte size prefix: the message length after it, if within `min..=MAX_SIZE`.
pub fn size(b: &[u8], min: usize) -> Parse<usize> {
    match be32(b, 0) {
        None => Parse::Incomplete(4),
        Some(s) => match usize::try_from(s) {
            Ok(s) if (min..=MAX_SIZE).contains(&s) => Parse::Ok(s, 4),
            _ => Parse::Invalid,
        },
    }
}

/// A request header (request header v1/v2 fields, borrowed client id).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHeader<'a> {
    /// API key.
    pub api_key: i16,
    /// API version.
    pub api_version: i16,
    /// Correlation id.
    pub correlation_id: i32,
    /// Client id (`None` when null); truncated to what `b` holds.
    pub client_id: Option<&'a [u8]>,
}

/// Parses a request header from `b`, which starts after the size field. Returns the header and
/// the offset just after the client id (the tagged fields of header v2 are not consumed). A
/// client id longer than `b` is truncated and `b.len()` returned.
pub fn request_header(b: &[u8]) -> Parse<RequestHeader<'_>> {
    let (Some(api_key), Some(api_version), Some(correlation_id), Some(len)) =
        (be16(b, 0), be16(b, 2), be32(b, 4), be16(b, 8))
    else {
        return Parse::Incomplete(MIN_REQUEST);
    };
    let (client_id, end) = if len < 0 {
        (None, MIN_REQUEST)
    } else {
        let end = MIN_REQUEST.saturating_add(len as usize).min(b.len());
        (b.get(MIN_REQUEST..end), end)
    };
    Parse::Ok(RequestHeader { api_key, api_version, correlation_id, client_id }, end)
}

/// Whether `c` is a printable ASCII byte (client ids in practice).
pub fn printable(c: u8) -> bool {
    (0x20..0x7f).contains(&c)
}

/// Reads an unsigned varint at `off` (at most 5 bytes); returns it and the offset after it.
pub fn uvarint(b: &[u8], mut off: usize) -> Option<(u32, usize)> {
    let mut v: u32 = 0;
    for shift in [0u32, 7, 14, 21, 28] {
        let c = *b.get(off)?;
        off += 1;
        v |= u32::from(c & 0x7f).checked_shl(shift)?;
        if c & 0x80 == 0 {
            return Some((v, off));
        }
    }
    None
}

/// Skips a `TAG_BUFFER` at `off`; returns the offset after it.
pub fn skip_tags(b: &[u8], off: usize) -> Option<usize> {
    let (n, mut off) = uvarint(b, off)?;
    for _ in 0..n.min(64) {
        let (_tag, o) = uvarint(b, off)?;
        let (len, o) = uvarint(b, o)?;
        off = o.checked_add(len as usize)?;
    }
    if n > 64 {
        return None;
    }
    (off <= b.len()).then_some(off)
}

/// Reads a STRING (`flexible == false`, INT16 length) or COMPACT_STRING (varint length + 1) at
/// `off`; null is `None` inside `Some`. Returns it and the offset after it.
fn string(b: &[u8], off: usize, flexible: bool) -> Option<(Option<&[u8]>, usize)> {
    let (len, off) = if flexible {
        let (l, o) = uvarint(b, off)?;
        (i64::from(l) - 1, o)
    } else {
        (i64::from(be16(b, off)?), off + 2)
    };
    if len < 0 {
        return Some((None, off));
    }
    let end = off.checked_add(usize::try_from(len).ok()?)?;
    Some((Some(b.get(off..end)?), end))
}

/// Reads an ARRAY length (INT32) or COMPACT_ARRAY length (varint + 1) at `off`.
fn array_len(b: &[u8], off: usize, flexible: bool) -> Option<(i64, usize)> {
    if flexible {
        uvarint(b, off).map(|(l, o)| (i64::from(l) - 1, o))
    } else {
        be32(b, off).map(|l| (i64::from(l), off + 4))
    }
}

/// Whether [`first_topic`] reads topic names for this API key and version.
pub fn names_topics(key: i16, version: i16) -> bool {
    matches!((key, version), (0 | 1, 0..=12))
}

/// Whether `t` is a legal topic name (`[a-zA-Z0-9._-]`, 1 to 249 bytes; Kafka `Topic.validate`).
pub fn topic_name(t: &[u8]) -> bool {
    (1..=249).contains(&t.len()) && t.iter().all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
}

/// First topic name of a Produce (key 0, versions 0..=12; flexible from v9) or Fetch (key 1,
/// versions 0..=12; flexible from v12; v13+ carry topic ids, not names) request. `b` is the
/// message after the size field, `after_client_id` the offset [`request_header`] returned.
/// `None` when the request has no topic, is another API, or is cut short in `b`.
pub fn first_topic<'a>(b: &'a [u8], h: &RequestHeader<'_>, after_client_id: usize) -> Option<&'a [u8]> {
    let v = h.api_version;
    let (flexible, mut off) = match (h.api_key, v) {
        (0, 0..=8) => (false, after_client_id),
        (0, 9..=12) => (true, skip_tags(b, after_client_id)?),
        (1, 0..=11) => (false, after_client_id),
        (1, 12) => (true, skip_tags(b, after_client_id)?),
        _ => return None,
    };
    if h.api_key == 0 {
        if v >= 3 {
            off = string(b, off, flexible)?.1; // transactional_id
        }
        off += 2 + 4; // acks, timeout_ms
    } else {
        off += 4 + 4 + 4; // replica_id, max_wait_ms, min_bytes
        if v >= 3 {
            off += 4; // max_bytes
        }
        if v >= 4 {
            off += 1; // isolation_level
        }
        if v >= 7 {
            off += 4 + 4; // session_id, session_epoch
        }
    }
    let (n, off) = array_len(b, off, flexible)?;
    if n < 1 {
        return None;
    }
    string(b, off, flexible)?.0
}
