//! The service-manager side of `warden run` (systemd `Type=notify`, `sd_notify(3)`).
//!
//! - `READY=1` once every configured inline pair is attached and the control socket serves
//!   (sent by [`crate::daemon::run`] through [`Service::ready`]);
//! - `STATUS=` every second from the control loop: pairs, live sessions, frames, policy
//!   generation, and the stalled worker when there is one ([`Service::tick`]);
//! - `WATCHDOG=1` from the control loop, every third of `WATCHDOG_USEC`, and only while every
//!   worker has gone round its loop since the previous ping ([`Pulse`]): a worker stuck in a
//!   bug stops the pings, systemd kills and restarts Warden, and meanwhile the kernel puts the
//!   pairs in their fail mode. A blocked control loop stops them as well;
//! - `RELOADING=1` (with `MONOTONIC_USEC`) then `READY=1` around a SIGHUP reload;
//!   `STOPPING=1` at shutdown.
//!
//! Without `NOTIFY_SOCKET` in the environment every message is a no-op (`sd-notify` checks), so
//! Warden runs the same outside systemd.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;

/// One worker's liveness: its loop count and the totals `STATUS=` shows. The worker stores
/// them once per loop (relaxed atomics, no lock, nothing per packet); the control loop reads.
#[derive(Debug, Default)]
pub struct Pulse {
    loops: AtomicU64,
    sessions: AtomicU64,
    frames: AtomicU64,
}

impl Pulse {
    /// Called by the worker at the top of each loop with its live sessions and frames
    /// processed so far.
    pub fn beat(&self, sessions: u64, frames: u64) {
        self.loops.fetch_add(1, Ordering::Relaxed);
        self.sessions.store(sessions, Ordering::Relaxed);
        self.frames.store(frames, Ordering::Relaxed);
    }

    /// Loops the worker has started.
    pub fn loops(&self) -> u64 {
        self.loops.load(Ordering::Relaxed)
    }

    /// Live sessions at the worker's last loop.
    pub fn sessions(&self) -> u64 {
        self.sessions.load(Ordering::Relaxed)
    }

    /// Frames processed, at the worker's last loop.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
}

/// How often `STATUS=` is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// The notify state of the control loop: the workers' pulses, the watchdog interval and when
/// the next ping is due.
pub struct Service {
    pulses: Vec<Arc<Pulse>>,
    /// Loop counts at the previous watchdog check.
    seen: Vec<u64>,
    /// `WATCHDOG_USEC` (for this process), if systemd set one.
    watchdog: Option<Duration>,
    next_ping: Instant,
    next_status: Instant,
    /// The worker that did not loop at the last check (logged once per stall).
    stalled: Option<usize>,
    pings: u64,
}

impl Service {
    /// Reads `WATCHDOG_USEC`/`WATCHDOG_PID` (ignored when they name another process).
    pub fn new(pulses: Vec<Arc<Pulse>>) -> Self {
        let watchdog = sd_notify::watchdog_enabled().filter(|d| !d.is_zero());
        if let Some(w) = watchdog {
            tracing::info!("systemd watchdog: {} ms, pinged every {} ms while every worker loops", w.as_millis(), (w / 3).as_millis());
        }
        let seen = pulses.iter().map(|p| p.loops()).collect();
        let now = Instant::now();
        Service { pulses, seen, watchdog, next_ping: now, next_status: now, stalled: None, pings: 0 }
    }

    /// The watchdog interval systemd asked for.
    pub fn watchdog(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Live sessions over all workers (as of their last loop).
    pub fn sessions(&self) -> u64 {
        self.pulses.iter().map(|p| p.sessions()).sum()
    }

    /// Frames processed over all workers.
    pub fn frames(&self) -> u64 {
        self.pulses.iter().map(|p| p.frames()).sum()
    }

    fn status_line(&self, pairs: usize, generation: u32) -> String {
        let mut s = format!(
            "{pairs} inline pair(s), {} session(s), {} frame(s), policy generation {generation}",
            self.sessions(),
            self.frames()
        );
        if let Some(w) = self.stalled {
            s.push_str(&format!("; worker {w} is not looping: watchdog pings stopped"));
        }
        s
    }

    fn send(states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(states) {
            tracing::debug!("sd_notify: {e}");
        }
    }

    /// `READY=1` with a first `STATUS=`.
    pub fn ready(&mut self, pairs: usize, generation: u32) {
        let status = self.status_line(pairs, generation);
        Self::send(&[NotifyState::Ready, NotifyState::Status(&status)]);
        self.next_status = Instant::now() + STATUS_EVERY;
    }

    /// `RELOADING=1` and `MONOTONIC_USEC` (as systemd ≥ 253 requires), before a reload.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(t) => Self::send(&[NotifyState::Reloading, t]),
            Err(_) => Self::send(&[NotifyState::Reloading]),
        }
    }

    /// `READY=1` after a reload, with `STATUS=` saying how it went.
    pub fn reloaded(&self, pairs: usize, generation: u32, outcome: &str) {
        let status = format!("{}; reload: {outcome}", self.status_line(pairs, generation));
        Self::send(&[NotifyState::Ready, NotifyState::Status(&status)]);
    }

    /// `STOPPING=1`.
    pub fn stopping(&self) {
        Self::send(&[NotifyState::Stopping, NotifyState::Status("stopping: detaching XDP")]);
    }

    /// Called by the control loop between requests: refreshes `STATUS=` every second and pings
    /// the watchdog when due and every worker looped since the last check. Returns how long
    /// the loop may wait before calling again.
    pub fn tick(&mut self, pairs: usize, generation: u32) -> Duration {
        let now = Instant::now();
        let mut states: Vec<NotifyState> = Vec::new();
        let mut ping = false;
        if let Some(w) = self.watchdog {
            if now >= self.next_ping {
                self.next_ping = now + w / 3;
                let stuck = self
                    .pulses
                    .iter()
                    .zip(&mut self.seen)
                    .enumerate()
                    .find_map(|(i, (p, seen))| {
                        let loops = p.loops();
                        let moved = loops != *seen;
                        *seen = loops;
                        (!moved).then_some(i)
                    });
                // Every counter is re-read above, so the next check judges the next interval.
                match (stuck, self.stalled) {
                    (Some(i), None) => tracing::error!(
                        worker = i,
                        "worker {i} has not looped for {} ms: watchdog pings stop (systemd restarts warden; the pairs fall to their fail mode)",
                        (w / 3).as_millis()
                    ),
                    (None, Some(i)) => tracing::warn!(worker = i, "worker {i} loops again: watchdog pings resume"),
                    _ => {}
                }
                self.stalled = stuck;
                ping = stuck.is_none();
            }
        }
        let status;
        if now >= self.next_status || ping {
            self.next_status = now + STATUS_EVERY;
            status = self.status_line(pairs, generation);
            states.push(NotifyState::Status(&status));
        }
        if ping {
            states.push(NotifyState::Watchdog);
            self.pings += 1;
        }
        if !states.is_empty() {
            Self::send(&states);
        }
        let next = match self.watchdog {
            Some(_) => self.next_ping.min(self.next_status),
            None => self.next_status,
        };
        next.saturating_duration_since(Instant::now()).max(Duration::from_millis(10))
    }

    /// Watchdog pings sent so far.
    pub fn pings(&self) -> u64 {
        self.pings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_worker_that_does_not_loop_stops_the_pings() {
        let pulses: Vec<Arc<Pulse>> = (0..2).map(|_| Arc::new(Pulse::default())).collect();
        let mut s = Service::new(pulses.clone());
        s.watchdog = Some(Duration::from_millis(30));
        // Both loop: a ping.
        pulses[0].beat(3, 100);
        pulses[1].beat(4, 200);
        s.tick(1, 1);
        assert_eq!(s.pings(), 1);
        assert_eq!(s.stalled, None);
        assert_eq!((s.sessions(), s.frames()), (7, 300));
        // Worker 1 stops looping: no ping at the next check, and STATUS says which one.
        std::thread::sleep(Duration::from_millis(15));
        pulses[0].beat(3, 101);
        s.tick(1, 1);
        assert_eq!(s.pings(), 1);
        assert_eq!(s.stalled, Some(1));
        assert!(s.status_line(1, 1).contains("worker 1 is not looping"));
        // It loops again: pings resume.
        std::thread::sleep(Duration::from_millis(15));
        pulses[0].beat(3, 102);
        pulses[1].beat(4, 201);
        s.tick(1, 1);
        assert_eq!(s.pings(), 2);
        assert_eq!(s.stalled, None);
    }
}
