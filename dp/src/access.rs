//! Who may use the control socket, and how much of it (`[control]` in `warden.toml`).
//!
//! - **Peer credentials.** Every accepted connection's uid, gid and pid are read with
//!   `SO_PEERCRED` (the kernel's record of the connecting process, which it cannot forge). The
//!   uid and its groups (the primary gid plus the supplementary groups the user database gives
//!   the uid) are matched against `admin_uids`/`admin_gids` and `read_uids`/`read_gids`. Root
//!   (uid 0) is always admin. Defaults: every list empty, so only root may connect (and the
//!   socket is mode 0600); with any list set the socket is mode 0666 and access is decided per
//!   connection here. A peer in no list gets one error line and the connection is closed.
//! - **Roles.** `read` may send the requests [`Request::needs_admin`] says do not need admin
//!   (status, counters, interfaces, sessions, subscribe, policy show/stats/learned); `admin`
//!   may send everything. A read-only client's admin request gets an error reply and the
//!   connection stays usable.
//! - **Socket directory.** Created mode 0755 when missing; an existing one must be owned by
//!   Warden's user or root and writable by nobody else (no group/other write bit), since
//!   whoever can write it can replace the socket.
//! - **Limits.** A connection that does not complete a request line within `read_timeout`
//!   seconds is closed (subscribers are not reading requests and are not timed out). At most
//!   `max_connections` connections at once; beyond, read-only connections are refused while
//!   admin connections still get one of `admin_reserve` more slots, so a flood of read-only
//!   clients never locks out an operator.
//!
//! [`Request::needs_admin`]: warden_control::Request::needs_admin

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Deserialize;

/// `[control]`: access to the control socket.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct ControlConfig {
    /// Users (numeric uids) with the admin role, besides root.
    pub admin_uids: Vec<u32>,
    /// Groups (numeric gids) whose members have the admin role.
    pub admin_gids: Vec<u32>,
    /// Users with the read-only role.
    pub read_uids: Vec<u32>,
    /// Groups whose members have the read-only role.
    pub read_gids: Vec<u32>,
    /// Most control connections at once (read-only ones beyond are refused). Default 64.
    pub max_connections: usize,
    /// Extra connections kept for admin clients beyond `max_connections`. Default 4.
    pub admin_reserve: usize,
    /// Seconds a connection may take to send a complete request line (idle included) before
    /// it is closed. Default 300.
    pub read_timeout: u64,
}

impl Default for ControlConfig {
    fn default() -> Self {
        ControlConfig {
            admin_uids: Vec::new(),
            admin_gids: Vec::new(),
            read_uids: Vec::new(),
            read_gids: Vec::new(),
            max_connections: 64,
            admin_reserve: 4,
            read_timeout: 300,
        }
    }
}

impl ControlConfig {
    /// Whether anyone but root may connect (then the socket is mode 0666, else 0600).
    pub fn opens_socket(&self) -> bool {
        !(self.admin_uids.is_empty() && self.admin_gids.is_empty() && self.read_uids.is_empty() && self.read_gids.is_empty())
    }

    /// The role of a peer with `uid` and `groups` (its primary and supplementary gids), if any.
    pub fn role(&self, uid: u32, groups: &[u32]) -> Option<Role> {
        let any = |list: &[u32]| groups.iter().any(|g| list.contains(g));
        if uid == 0 || self.admin_uids.contains(&uid) || any(&self.admin_gids) {
            Some(Role::Admin)
        } else if self.read_uids.contains(&uid) || any(&self.read_gids) {
            Some(Role::Read)
        } else {
            None
        }
    }
}

/// What a control client may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Read requests only.
    Read,
    /// Every request.
    Admin,
}

/// The connecting process, from `SO_PEERCRED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    /// Its effective uid.
    pub uid: u32,
    /// Its effective (primary) gid.
    pub gid: u32,
    /// Its pid.
    pub pid: i32,
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "uid {} gid {} pid {}", self.uid, self.gid, self.pid)
    }
}

/// Reads the peer's credentials.
///
/// # Errors
/// The `getsockopt` error.
pub fn peer(stream: &UnixStream) -> std::io::Result<Peer> {
    let c = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)?;
    Ok(Peer { uid: c.uid(), gid: c.gid(), pid: c.pid() })
}

/// The peer's gid and the supplementary groups of its uid in the user database (only the gid
/// when the uid has no entry).
pub fn groups(peer: &Peer) -> Vec<u32> {
    let mut out = vec![peer.gid];
    let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(peer.uid)).ok().flatten();
    if let Some(u) = user {
        if let Ok(name) = std::ffi::CString::new(u.name) {
            if let Ok(gs) = nix::unistd::getgrouplist(&name, u.gid) {
                out.extend(gs.iter().map(|g| g.as_raw()));
            }
        }
    }
    out.sort_unstable();
    out.dedup();
    out
}

/// Makes sure `dir` (the socket's directory) is safe: created mode 0755 when missing (parents
/// as needed); else it must be a directory owned by this process's user or root with no group
/// or other write permission.
///
/// # Errors
/// A message naming the directory, its owner and mode, and the fix.
pub fn check_dir(dir: &Path) -> Result<(), String> {
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(|e| format!("create socket directory {}: {e}", dir.display())),
        Err(e) => Err(format!("socket directory {}: {e}", dir.display())),
        Ok(m) => {
            if !m.is_dir() {
                return Err(format!("socket directory {} is not a directory", dir.display()));
            }
            let me = nix::unistd::geteuid().as_raw();
            if m.uid() != me && m.uid() != 0 {
                return Err(format!(
                    "socket directory {} is owned by uid {} (not root or warden's uid {me}): refusing it, its owner could replace the socket",
                    dir.display(),
                    m.uid()
                ));
            }
            if m.mode() & 0o022 != 0 {
                return Err(format!(
                    "socket directory {} has mode {:04o}: writable by other users, who could replace the socket; refusing it (chmod go-w it, or choose another [dataplane] socket)",
                    dir.display(),
                    m.mode() & 0o7777
                ));
            }
            Ok(())
        }
    }
}

/// The access settings shared by the acceptor and the control loop (replaced on SIGHUP), and
/// the connection counts.
#[derive(Debug)]
pub struct Gate {
    cfg: RwLock<ControlConfig>,
    active: AtomicUsize,
    /// Connections refused (no role, or over the cap).
    pub refused: AtomicU64,
}

/// A connection's slot: counted while it lives.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<Gate>,
    /// The peer's role.
    pub role: Role,
    /// The peer.
    pub peer: Peer,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.gate.active.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gate {
    /// A gate with `cfg`.
    pub fn new(cfg: ControlConfig) -> Arc<Self> {
        Arc::new(Gate { cfg: RwLock::new(cfg), active: AtomicUsize::new(0), refused: AtomicU64::new(0) })
    }

    /// The current settings.
    pub fn config(&self) -> ControlConfig {
        self.cfg.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// Replaces the settings (SIGHUP); connections already open keep their role.
    pub fn set_config(&self, cfg: ControlConfig) {
        if let Ok(mut c) = self.cfg.write() {
            *c = cfg;
        }
    }

    /// Connections open now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// Admits a connection from `peer` (with `groups`), or says why not.
    ///
    /// # Errors
    /// The message sent to the client before closing.
    pub fn admit(self: &Arc<Self>, peer: Peer, groups: &[u32]) -> Result<Slot, String> {
        let cfg = self.config();
        let refuse = |msg: String| {
            let n = self.refused.fetch_add(1, Ordering::Relaxed);
            // Logged for the first refusal and every 1000th after: a local client looping on
            // connect must not flood the journal.
            if n % 1000 == 0 {
                tracing::warn!("control connection refused ({} so far): {msg}", n + 1);
            }
            Err(msg)
        };
        let Some(role) = cfg.role(peer.uid, groups) else {
            return refuse(format!(
                "permission denied: {peer} is not allowed on the control socket (warden.toml [control] admin_uids, admin_gids, read_uids, read_gids)"
            ));
        };
        let cap = match role {
            Role::Read => cfg.max_connections,
            Role::Admin => cfg.max_connections + cfg.admin_reserve,
        };
        let prev = self.active.fetch_add(1, Ordering::Relaxed);
        if prev >= cap {
            self.active.fetch_sub(1, Ordering::Relaxed);
            return refuse(format!(
                "too many control connections ({prev} open, {} for read-only clients, {} more kept for admin clients)",
                cfg.max_connections, cfg.admin_reserve
            ));
        }
        Ok(Slot { gate: self.clone(), role, peer })
    }
}

/// A socket reader that gives each request line `timeout` from its first read
/// ([`Self::arm`]): a client that trickles bytes or goes silent cannot hold a connection
/// thread for longer.
pub struct Deadline {
    stream: UnixStream,
    timeout: Duration,
    deadline: Instant,
}

impl Deadline {
    /// Reads `stream` with `timeout` per request line.
    pub fn new(stream: UnixStream, timeout: Duration) -> Self {
        Deadline { stream, timeout, deadline: Instant::now() + timeout }
    }

    /// Starts the clock for the next request line.
    pub fn arm(&mut self) {
        self.deadline = Instant::now() + self.timeout;
    }
}

impl Read for Deadline {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "control request read timeout"));
        }
        self.stream.set_read_timeout(Some(left))?;
        self.stream.read(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn roles_from_uids_and_groups() {
        let c = ControlConfig { admin_gids: vec![50], read_uids: vec![1000], read_gids: vec![60], ..Default::default() };
        assert_eq!(c.role(0, &[0]), Some(Role::Admin));
        assert_eq!(c.role(1000, &[1000]), Some(Role::Read));
        assert_eq!(c.role(1001, &[1001, 50]), Some(Role::Admin));
        assert_eq!(c.role(1002, &[60]), Some(Role::Read));
        assert_eq!(c.role(1003, &[1003]), None);
        assert!(c.opens_socket());
        // Defaults: root only.
        let d = ControlConfig::default();
        assert_eq!(d.role(1000, &[1000]), None);
        assert_eq!(d.role(0, &[0]), Some(Role::Admin));
        assert!(!d.opens_socket());
    }

    #[test]
    fn the_cap_keeps_a_reserve_for_admin() {
        let g = Gate::new(ControlConfig { max_connections: 2, admin_reserve: 1, read_uids: vec![7], ..Default::default() });
        let read = Peer { uid: 7, gid: 7, pid: 1 };
        let root = Peer { uid: 0, gid: 0, pid: 1 };
        let a = g.admit(read, &[7]).unwrap();
        let b = g.admit(read, &[7]).unwrap();
        assert!(g.admit(read, &[7]).unwrap_err().contains("too many"));
        let admin = g.admit(root, &[0]).unwrap();
        assert_eq!(admin.role, Role::Admin);
        assert!(g.admit(root, &[0]).is_err());
        drop(a);
        assert_eq!(g.active(), 2);
        let _c = g.admit(read, &[7]).unwrap_err(); // still 2 = cap with the admin's slot
        drop(admin);
        drop(b);
        assert!(g.admit(read, &[7]).is_ok());
        assert!(g.admit(Peer { uid: 9, gid: 9, pid: 1 }, &[9]).unwrap_err().contains("permission denied"));
        assert_eq!(g.refused.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn unsafe_socket_directories_are_refused() {
        let base = std::env::temp_dir().join(format!("warden-access-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let fresh = base.join("run/warden");
        check_dir(&fresh).unwrap();
        assert_eq!(std::fs::metadata(&fresh).unwrap().mode() & 0o777, 0o755);
        check_dir(&fresh).unwrap();
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_dir(&fresh).unwrap_err().contains("writable by other users"));
        std::fs::set_permissions(&fresh, std::fs::Permissions::from_mode(0o775)).unwrap();
        assert!(check_dir(&fresh).is_err());
        let file = base.join("file");
        std::fs::write(&file, b"").unwrap();
        assert!(check_dir(&file).unwrap_err().contains("not a directory"));
        std::fs::remove_dir_all(&base).unwrap();
    }
}
