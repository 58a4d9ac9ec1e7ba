//! How a worker waits for frames: it spins on its rings only while frames keep coming, and
//! otherwise sleeps in poll(2) on all of its sockets (`[dataplane] poll`, `spin_us`).
//!
//! **Adaptive polling** ([`Idle`]). A worker estimates the mean time between the frames it
//! handles from its own loops: a loop that finds `n` frames, `t` ns after the previous loop that
//! found any, is one sample of `t / n` ns (an exponentially weighted mean, weight 1/8). So the
//! estimate is the arrival rate however the frames were met: spinning (one frame per loop,
//! `t` = the gap), after a sleep (`t` includes the wake-up and the frames queued meanwhile are
//! counted), or at full load (back-to-back loops of whole batches: `t / n` is a fraction of a
//! microsecond). When the rings are empty the worker spins only while the estimate is at most
//! the spin budget (`spin_us`) and for at most that long after the last frame; otherwise it
//! sleeps at once. The budget is the latency/CPU trade-off: frames expected within it are
//! waited for by spinning (a core at 100 % while they come), frames further apart cost one
//! sleep and wake-up each (a few µs of CPU, tens of µs of added latency), so a worker's CPU
//! follows its load like the kernel's NAPI does. With `spin_us = 0` a worker never spins;
//! `poll = "busy"` spins always (a whole core whatever the load, the lowest latency).
//!
//! **Sleeping** (worker loop, [`crate::xsk::wait_rx`]). A worker sleeps in one poll(2) on the rx
//! rings of all its sockets and on its [`Waker`] (an eventfd), with a timeout that is its next
//! timer (fragment expiry, threat flush, reports: at most [`MAX_SLEEP`]). Everything else that
//! gives a sleeping worker work wakes it through its [`Waker`]: another worker that handed it
//! frames (once per batch, only when the target is asleep), the control thread after sending a
//! command or publishing a policy. Before sleeping the worker announces it
//! ([`Waker::prepare`]) and then looks at its handoff rings and command queue once more, so a
//! frame handed over between its last look and the announcement is never left waiting for the
//! timeout (the two sides order their writes and reads with `SeqCst` fences, Dekker style).
//! Tx rings with frames still queued, or frames just received, are work: a worker never sleeps
//! with them pending.

use std::sync::atomic::{fence, AtomicBool, Ordering};
use std::time::Duration;

use nix::sys::eventfd::{EfdFlags, EventFd};

/// Longest sleep of an idle worker: it then runs its timers and loops again (the watchdog's
/// loop counter moves at least this often).
pub const MAX_SLEEP: Duration = Duration::from_millis(100);

/// Default spin budget (µs) of adaptive polling. Frames closer than this come at 100 000
/// frames/s or more, where a worker's own work (about 5 µs per frame on the rig's VM, the
/// copy-mode transmit included) with a sleep and wake-up per frame on top would take most of
/// its core anyway, so spinning costs little more and saves the wake-ups; frames further apart
/// (33 µs at 30 000 frames/s) are slept for (perf/RESULTS.md, "CPU that follows the load").
pub const DEFAULT_SPIN_US: u32 = 10;

/// Largest `[dataplane] spin_us`.
pub const MAX_SPIN_US: u32 = 10_000;

/// How a worker waits when its rings are empty (`[dataplane] poll`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PollMode {
    /// Spin while frames keep coming (at most the spin budget), else sleep in poll(2).
    #[default]
    Adaptive,
    /// Spin always: a whole core per worker whatever the load, the lowest latency.
    Busy,
}

/// A worker's waiting settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PollConfig {
    /// Adaptive or busy.
    pub mode: PollMode,
    /// Spin budget (ns): frames expected at most this far apart are waited for by spinning,
    /// for at most this long after the last one.
    pub spin_ns: u64,
}

impl Default for PollConfig {
    fn default() -> Self {
        PollConfig { mode: PollMode::Adaptive, spin_ns: u64::from(DEFAULT_SPIN_US) * 1000 }
    }
}

/// What an idle loop does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Loop again at once.
    Spin,
    /// Sleep in poll(2) until frames, a wake-up or the next timer.
    Sleep,
}

/// Weight of a new sample in the inter-arrival estimate: 1 / 2^`EWMA_SHIFT`.
const EWMA_SHIFT: u32 = 3;

/// The adaptive polling decision of one worker (module docs): a pure function of the times
/// (ns, any monotonic origin) and frame counts of its loops.
#[derive(Debug, Clone)]
pub struct Idle {
    cfg: PollConfig,
    /// Estimated mean time between frames (ns).
    gap_ns: u64,
    /// Largest sample taken into the estimate (ns): far enough above the budget that a single
    /// long pause means "sleep", close enough that a few loads of frames bring it back down.
    cap_ns: u64,
    /// Start of the last loop that found frames.
    last_frames: Option<u64>,
    /// End of the last loop that did work (frames, handoffs, commands).
    last_work: u64,
}

impl Idle {
    /// A worker that has seen no frames yet (it sleeps until some come).
    pub fn new(cfg: PollConfig, now: u64) -> Self {
        let cap_ns = cfg.spin_ns.saturating_mul(8).max(100_000);
        Idle { cfg, gap_ns: cap_ns, cap_ns, last_frames: None, last_work: now }
    }

    /// A loop that started at `start` and ended at `end` did work; `frames` of it were frames
    /// (received, or handed over by another worker).
    pub fn work(&mut self, start: u64, end: u64, frames: u64) {
        self.last_work = end;
        if frames == 0 {
            return;
        }
        if let Some(prev) = self.last_frames {
            let sample = (start.saturating_sub(prev) / frames).min(self.cap_ns);
            // gap += (sample - gap) / 8, in integers.
            self.gap_ns = if sample >= self.gap_ns {
                self.gap_ns + ((sample - self.gap_ns) >> EWMA_SHIFT)
            } else {
                self.gap_ns - ((self.gap_ns - sample) >> EWMA_SHIFT)
            };
        }
        self.last_frames = Some(start);
    }

    /// A loop at `now` found nothing to do: spin again or sleep.
    pub fn idle(&self, now: u64) -> Wait {
        match self.cfg.mode {
            PollMode::Busy => Wait::Spin,
            PollMode::Adaptive => {
                if self.gap_ns <= self.cfg.spin_ns && now.saturating_sub(self.last_work) < self.cfg.spin_ns {
                    Wait::Spin
                } else {
                    Wait::Sleep
                }
            }
        }
    }

    /// The estimated mean time between frames (ns).
    pub fn gap_ns(&self) -> u64 {
        self.gap_ns
    }
}

/// Wakes a sleeping worker: an eventfd in its poll set and a flag saying it sleeps, so those who
/// give it work make the system call only when it is needed (module docs).
#[derive(Debug)]
pub struct Waker {
    fd: EventFd,
    asleep: AtomicBool,
}

impl Waker {
    /// A non-blocking eventfd.
    ///
    /// # Errors
    /// eventfd(2) failed (out of file descriptors).
    pub fn new() -> std::io::Result<Self> {
        let fd = EventFd::from_value_and_flags(0, EfdFlags::EFD_NONBLOCK | EfdFlags::EFD_CLOEXEC)?;
        Ok(Waker { fd, asleep: AtomicBool::new(false) })
    }

    /// Called after giving the worker work (frames pushed to its handoff ring, a command sent,
    /// a policy published): wakes it if it sleeps or is about to. One fence and one load when it
    /// is awake.
    pub fn wake(&self) {
        fence(Ordering::SeqCst);
        if self.asleep.load(Ordering::Relaxed) && self.asleep.swap(false, Ordering::SeqCst) {
            let _ = self.fd.write(1);
        }
    }

    /// The worker is about to sleep: after this it must look at its queues once more, and sleep
    /// only if they are empty (a producer that pushed before this may not have seen the flag).
    pub fn prepare(&self) {
        self.asleep.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
    }

    /// The worker is awake again (it found work after [`Self::prepare`], or poll returned).
    pub fn awake(&self) {
        self.asleep.store(false, Ordering::Relaxed);
    }

    /// Consumes a pending wake-up (non-blocking).
    pub fn drain(&self) {
        let _ = self.fd.read();
    }

    /// The eventfd, for poll(2).
    pub fn fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.fd.as_raw_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const US: u64 = 1000;

    fn adaptive(spin_us: u64) -> PollConfig {
        PollConfig { mode: PollMode::Adaptive, spin_ns: spin_us * US }
    }

    /// Feeds frames arriving every `gap` ns, each met by a loop `proc` ns long, for `n` frames;
    /// returns the idle decisions right after the last frame and half a gap later.
    fn steady(idle: &mut Idle, t: &mut u64, gap: u64, proc: u64, n: usize) -> (Wait, Wait) {
        for _ in 0..n {
            *t += gap;
            idle.work(*t, *t + proc, 1);
        }
        (idle.idle(*t + proc), idle.idle(*t + proc + gap / 2))
    }

    #[test]
    fn sleeps_between_frames_at_30000_per_second() {
        let mut i = Idle::new(adaptive(10), 0);
        let mut t = 0;
        let (now, later) = steady(&mut i, &mut t, 33 * US, 2 * US, 200);
        assert_eq!((now, later), (Wait::Sleep, Wait::Sleep));
        assert!((30 * US..=35 * US).contains(&i.gap_ns()), "{}", i.gap_ns());
    }

    #[test]
    fn spins_while_frames_come_closer_than_the_budget_then_sleeps() {
        let mut i = Idle::new(adaptive(10), 0);
        let mut t = 0;
        // 250 000 frames/s: 4 µs apart.
        let (now, later) = steady(&mut i, &mut t, 4 * US, US, 200);
        assert_eq!((now, later), (Wait::Spin, Wait::Spin));
        // The traffic stops: spin until 10 µs after the last work, then sleep.
        assert_eq!(i.idle(t + US + 9 * US), Wait::Spin);
        assert_eq!(i.idle(t + US + 10 * US), Wait::Sleep);
    }

    #[test]
    fn full_batches_after_a_sleep_mean_spin() {
        let mut i = Idle::new(adaptive(10), 0);
        // First frame after a long silence: no sample yet, the worker keeps sleeping.
        i.work(1_000_000_000, 1_000_000_500, 1);
        assert_eq!(i.idle(1_000_000_600), Wait::Sleep);
        // Then it wakes 40 µs later to 64 frames each time: 0.6 µs per frame.
        let mut t = 1_000_000_000;
        for _ in 0..40 {
            t += 40 * US;
            i.work(t, t + 20 * US, 64);
        }
        assert!(i.gap_ns() < 2 * US, "{}", i.gap_ns());
        assert_eq!(i.idle(t + 21 * US), Wait::Spin);
    }

    #[test]
    fn a_long_pause_turns_spinning_into_sleeping_quickly() {
        let mut i = Idle::new(adaptive(10), 0);
        let mut t = 0;
        steady(&mut i, &mut t, 2 * US, US, 100);
        assert_eq!(i.idle(t + 2 * US), Wait::Spin);
        // One frame 5 s later: the sample is capped, so the estimate is above the budget at once
        // but comes back within a few dozen busy loops.
        t += 5_000_000_000;
        i.work(t, t + US, 1);
        assert_eq!(i.idle(t + 2 * US), Wait::Sleep);
        let mut loops = 0;
        while i.idle(t + 2 * US) == Wait::Sleep {
            t += 2 * US;
            i.work(t, t + US, 1);
            loops += 1;
            assert!(loops < 40, "still sleeping after {loops} loops at 500 000 frames/s");
        }
    }

    #[test]
    fn loops_without_frames_end_the_idle_period_but_are_no_sample() {
        let mut i = Idle::new(adaptive(10), 0);
        let mut t = 0;
        steady(&mut i, &mut t, 3 * US, US, 100);
        let g = i.gap_ns();
        // A command answered 1 ms later: no frames, the estimate stays, the spin restarts.
        i.work(t + 1_000_000, t + 1_000_000 + US, 0);
        assert_eq!(i.gap_ns(), g);
        assert_eq!(i.idle(t + 1_000_000 + 2 * US), Wait::Spin);
    }

    #[test]
    fn zero_budget_never_spins_and_busy_always_does() {
        let mut z = Idle::new(adaptive(0), 0);
        let mut b = Idle::new(PollConfig { mode: PollMode::Busy, spin_ns: 0 }, 0);
        for t in (1..100).map(|k| k * 100) {
            z.work(t, t + 10, 64);
            b.work(t, t + 10, 64);
            assert_eq!(z.idle(t + 11), Wait::Sleep);
            assert_eq!(b.idle(t + 11), Wait::Spin);
        }
        assert_eq!(b.idle(u64::MAX), Wait::Spin);
    }

    #[test]
    fn the_budget_is_the_trade_off() {
        // 60 000 frames/s: sleep with the default budget, spin with 50 µs.
        for (spin_us, want) in [(10, Wait::Sleep), (50, Wait::Spin)] {
            let mut i = Idle::new(adaptive(spin_us), 0);
            let mut t = 0;
            let (now, _) = steady(&mut i, &mut t, 16_667, 2 * US, 200);
            assert_eq!(now, want, "spin_us {spin_us}");
        }
    }

    #[test]
    fn a_waker_wakes_only_a_sleeper_once() {
        let w = Waker::new().unwrap();
        // poll(2) on the eventfd alone, without waiting: is a wake-up pending?
        let readable = |w: &Waker| crate::xsk::wait_rx(&[], w.fd(), 0).waker;
        // Awake: no system call, nothing pending.
        w.wake();
        assert!(!readable(&w));
        // Asleep: one wake-up however many producers call.
        w.prepare();
        w.wake();
        w.wake();
        assert!(readable(&w));
        w.drain();
        assert!(!readable(&w));
        w.awake();
        w.wake();
        assert!(!readable(&w));
    }

    #[test]
    fn a_sleeper_is_woken_by_another_thread() {
        let w = std::sync::Arc::new(Waker::new().unwrap());
        w.prepare();
        let t = std::time::Instant::now();
        let other = {
            let w = w.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                w.wake();
            })
        };
        let woken = crate::xsk::wait_rx(&[], w.fd(), 5000);
        w.awake();
        other.join().unwrap();
        assert!(woken.waker && !woken.rx);
        assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
    }
}
