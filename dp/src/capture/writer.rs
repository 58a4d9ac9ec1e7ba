//! The capture writer thread: drains every worker's ring into the captures' outputs.
//!
//! It owns the outputs (pcapng files, stream buffers), the limits (duration, size, frames)
//! and the disk budget: the bytes of the capture directory's files, plus what every running
//! output may still write (a capture's `max_size`, a pre-trigger file's bound) reserved when
//! it starts, never more than `[capture] max_disk_bytes`. A stream's bytes wait in a backlog
//! of at most [`STREAM_BACKLOG`] bytes for its connection thread; frames beyond are counted
//! lost (whole blocks are skipped, so the stream stays a valid pcapng). When no capture or
//! pre-trigger file is open it sleeps on its command channel; while one is, it looks at the
//! rings every [`POLL`].

use std::collections::HashMap;
use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam::channel::{Receiver, Sender, TrySendError};

use super::pcapng::{block_len, iface_block_len, Pcapng};
use super::ring::{Consumer, Kind, Record};
use super::{Shared, StopReason};

/// How often the writer looks at the rings while something is open.
pub const POLL: Duration = Duration::from_millis(5);
/// Most bytes a stream's reader may be behind.
pub const STREAM_BACKLOG: usize = 4 << 20;
/// A stream's bytes are handed over once this many wait, or every [`FLUSH`].
const CHUNK: usize = 64 << 10;
/// Files and streams are flushed at least this often (a streamed capture decodes live).
const FLUSH: Duration = Duration::from_millis(100);

/// Where a capture's pcapng goes.
pub enum Output {
    /// A new file (created here, 0600, never replacing one).
    File(PathBuf),
    /// The connection that asked: chunks of pcapng bytes, then the end.
    Stream(Sender<StreamMsg>),
}

/// What a stream's connection thread receives.
#[derive(Debug)]
pub enum StreamMsg {
    /// The next pcapng bytes.
    Data(Vec<u8>),
    /// The capture ended.
    End,
}

/// Limits of a capture.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// When it ends.
    pub until: Instant,
    /// Most pcapng bytes.
    pub max_size: u64,
    /// Most frames (None: no limit).
    pub max_packets: Option<u64>,
    /// Snap length (for the interface blocks).
    pub snaplen: u32,
}

/// Messages to the writer.
pub enum Msg {
    /// Start capture `id`; the reply says whether its output could be opened within the
    /// budget (the error otherwise).
    Start {
        /// Capture id.
        id: u32,
        /// Its output.
        output: Output,
        /// Its limits.
        limits: Limits,
        /// Shared counters.
        shared: Arc<Shared>,
        /// The section comment (what the capture is).
        comment: String,
        /// Reply.
        reply: std::sync::mpsc::Sender<Result<(), String>>,
    },
    /// Stop capture `id` (acknowledged once its output is complete).
    Stop {
        /// Capture id.
        id: u32,
        /// Why.
        why: StopReason,
        /// Acknowledgement.
        reply: std::sync::mpsc::Sender<()>,
    },
    /// A file of `bytes` bytes was deleted from the directory.
    Deleted(u64),
    /// End every output and exit.
    Shutdown,
}

/// Static settings of the writer.
pub struct WriterConfig {
    /// The capture directory.
    pub dir: PathBuf,
    /// `[capture] max_disk_bytes`.
    pub max_disk: u64,
    /// Bound of a pre-trigger file (bytes): its frames × their largest block.
    pub pretrigger_file_max: u64,
    /// Interface slot → name.
    pub names: Arc<dyn Fn(u16) -> String + Send + Sync>,
}

/// Disk accounting shared with the control thread (`status`, `capture list`).
#[derive(Debug, Default)]
pub struct Disk {
    /// Bytes of the directory's files (as scanned at start, plus written, less deleted).
    pub used: std::sync::atomic::AtomicU64,
    /// Bytes reserved by open outputs and not written yet.
    pub reserved: std::sync::atomic::AtomicU64,
    /// Pre-trigger files refused for the budget or an error.
    pub pretrigger_refused: std::sync::atomic::AtomicU64,
    /// Records of captures that had already ended (dropped).
    pub orphans: std::sync::atomic::AtomicU64,
}

enum Sink {
    File(Pcapng<BufWriter<File>>),
    Stream(Pcapng<Vec<u8>>, Sender<StreamMsg>),
}

struct Open {
    sink: Sink,
    limits: Limits,
    shared: Arc<Shared>,
    reserved: u64,
    /// A file sink's path (removed if it could not be written at all).
    last_flush: Instant,
}

/// Bytes of the `*.pcapng` files in `dir` (what the budget starts from).
pub fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".pcapng"))
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Creates the capture directory `dir` (mode 0700, parents as needed) when it does not exist.
///
/// # Errors
/// It cannot be created.
pub fn ensure_dir(dir: &Path) -> Result<(), String> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| format!("capture directory {}: {e}", dir.display()))
}

/// Creates `path` for writing: a new file (never an existing one or a link), mode 0600.
///
/// # Errors
/// The file exists or cannot be created.
pub fn create_file(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).custom_flags(libc::O_NOFOLLOW).open(path)
}

/// The writer thread's body: runs until [`Msg::Shutdown`] or until `rx` closes.
pub fn run(cfg: WriterConfig, mut rings: Vec<Consumer>, rx: Receiver<Msg>, disk: Arc<Disk>) {
    disk.used.store(dir_bytes(&cfg.dir), Ordering::Relaxed);
    let mut open: HashMap<u32, Open> = HashMap::new();
    let mut buf = Vec::with_capacity(65_536);
    let mut w = Writer { cfg, disk, pending: Vec::new() };
    loop {
        let wait = if open.is_empty() && rings.iter().all(|r| r.pending() == 0) { Duration::from_millis(500) } else { POLL };
        match rx.recv_timeout(wait) {
            Ok(Msg::Shutdown) | Err(crossbeam::channel::RecvTimeoutError::Disconnected) => break,
            Ok(m) => w.control(m, &mut open),
            Err(crossbeam::channel::RecvTimeoutError::Timeout) => {}
        }
        while let Ok(m) = rx.try_recv() {
            if matches!(m, Msg::Shutdown) {
                w.finish_all(&mut open, StopReason::Shutdown);
                return;
            }
            w.control(m, &mut open);
        }
        for ring in rings.iter_mut() {
            // Bounded per ring and pass, so one busy worker does not starve the others.
            for _ in 0..4096 {
                let Some(rec) = ring.pop(&mut buf) else { break };
                if !open.contains_key(&rec.id) && rec.kind != Kind::Open {
                    // Its start may still be in the channel.
                    while let Ok(m) = rx.try_recv() {
                        w.control(m, &mut open);
                    }
                }
                w.record(&rec, &buf, &mut open);
            }
        }
        w.housekeeping(&mut open);
    }
    w.finish_all(&mut open, StopReason::Shutdown);
}

struct Writer {
    cfg: WriterConfig,
    disk: Arc<Disk>,
    /// Stops the control thread waits for, answered once the output is closed.
    pending: Vec<std::sync::mpsc::Sender<()>>,
}

impl Writer {
    fn room(&self, want: u64) -> bool {
        let used = self.disk.used.load(Ordering::Relaxed) + self.disk.reserved.load(Ordering::Relaxed);
        used.saturating_add(want) <= self.cfg.max_disk
    }

    fn control(&mut self, m: Msg, open: &mut HashMap<u32, Open>) {
        match m {
            Msg::Start { id, output, limits, shared, comment, reply } => {
                let r = self.start(id, output, limits, shared, &comment, open);
                let _ = reply.send(r);
            }
            Msg::Stop { id, why, reply } => {
                if let Some(o) = open.remove(&id) {
                    self.finish(o, why);
                }
                self.pending.push(reply);
                for p in self.pending.drain(..) {
                    let _ = p.send(());
                }
            }
            Msg::Deleted(bytes) => {
                let _ = self.disk.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| Some(u.saturating_sub(bytes)));
            }
            Msg::Shutdown => {}
        }
    }

    fn start(&mut self, id: u32, output: Output, limits: Limits, shared: Arc<Shared>, comment: &str, open: &mut HashMap<u32, Open>) -> Result<(), String> {
        let sink = match output {
            Output::File(path) => {
                if !self.room(limits.max_size) {
                    return Err(format!(
                        "the capture directory's budget ([capture] max_disk_bytes = {}) has no room for {} more bytes (delete captures or lower --max-size)",
                        self.cfg.max_disk, limits.max_size
                    ));
                }
                let f = create_file(&path).map_err(|e| format!("{}: {e}", path.display()))?;
                Sink::File(Pcapng::new(BufWriter::with_capacity(256 << 10, f), comment, limits.snaplen).map_err(|e| e.to_string())?)
            }
            Output::Stream(tx) => Sink::Stream(Pcapng::new(Vec::with_capacity(CHUNK), comment, limits.snaplen).map_err(|e| e.to_string())?, tx),
        };
        let reserved = match &sink {
            Sink::File(p) => {
                let r = limits.max_size.saturating_sub(p.bytes());
                self.disk.used.fetch_add(p.bytes(), Ordering::Relaxed);
                self.disk.reserved.fetch_add(r, Ordering::Relaxed);
                r
            }
            Sink::Stream(..) => 0,
        };
        let bytes = match &sink {
            Sink::File(p) => p.bytes(),
            Sink::Stream(p, _) => p.bytes(),
        };
        shared.bytes.store(bytes, Ordering::Relaxed);
        open.insert(id, Open { sink, limits, shared, reserved, last_flush: Instant::now() });
        Ok(())
    }

    /// A pre-trigger file opens: within the budget and the directory, or refused (counted).
    fn open_pretrigger(&mut self, id: u32, name: &str, open: &mut HashMap<u32, Open>) {
        let max = self.cfg.pretrigger_file_max;
        let ok_name = super::manager::check_name(name).is_ok();
        if !ok_name || !self.room(max) {
            self.disk.pretrigger_refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let path = self.cfg.dir.join(name);
        let made = ensure_dir(&self.cfg.dir)
            .map_err(std::io::Error::other)
            .and_then(|()| create_file(&path))
            .and_then(|f| Pcapng::new(BufWriter::new(f), &format!("warden pre-trigger capture: {name}"), 65_535));
        let p = match made {
            Ok(p) => p,
            Err(e) => {
                crate::warn_limited!("pre-trigger capture {}: {e}", path.display());
                self.disk.pretrigger_refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
        };
        let reserved = max.saturating_sub(p.bytes());
        self.disk.used.fetch_add(p.bytes(), Ordering::Relaxed);
        self.disk.reserved.fetch_add(reserved, Ordering::Relaxed);
        let limits = Limits { until: Instant::now() + Duration::from_secs(3600), max_size: max, max_packets: None, snaplen: 65_535 };
        open.insert(id, Open { sink: Sink::File(p), limits, shared: Arc::default(), reserved, last_flush: Instant::now() });
    }

    fn record(&mut self, rec: &Record, data: &[u8], open: &mut HashMap<u32, Open>) {
        match rec.kind {
            Kind::Open => {
                let name = String::from_utf8_lossy(data).to_string();
                self.open_pretrigger(rec.id, &name, open);
            }
            Kind::Close => {
                if let Some(o) = open.remove(&rec.id) {
                    self.finish(o, StopReason::Complete);
                }
            }
            Kind::Frame => {
                let Some(o) = open.get_mut(&rec.id) else {
                    self.disk.orphans.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                if let Some(why) = self.frame(o, rec, data) {
                    if let Some(o) = open.remove(&rec.id) {
                        self.finish(o, why);
                    }
                }
            }
        }
    }

    /// Writes one frame into `o`; the reason to end it when a limit is reached.
    fn frame(&mut self, o: &mut Open, rec: &Record, data: &[u8]) -> Option<StopReason> {
        let frames = o.shared.frames.load(Ordering::Relaxed);
        if o.limits.max_packets.is_some_and(|m| frames >= m) {
            return Some(StopReason::MaxPackets);
        }
        let comment = rec.dropped.map(|r| format!("warden: dropped ({})", r.as_str()));
        let name = (self.cfg.names)(rec.slot);
        let (known, before) = match &o.sink {
            Sink::File(p) => (p.knows(rec.slot), p.bytes()),
            Sink::Stream(p, _) => (p.knows(rec.slot), p.bytes()),
        };
        let need = block_len(data.len(), comment.as_ref().map_or(0, String::len)) + if known { 0 } else { iface_block_len(&name) };
        if before + need > o.limits.max_size {
            return Some(StopReason::MaxSize);
        }
        let r = match &mut o.sink {
            Sink::File(p) => p.frame(rec.slot, &name, rec.ts_ns, rec.orig_len, data, comment.as_deref()),
            Sink::Stream(p, _) => {
                if p.inner_mut().len() + need as usize > STREAM_BACKLOG {
                    o.shared.lost.fetch_add(1, Ordering::Relaxed);
                    return None;
                }
                p.frame(rec.slot, &name, rec.ts_ns, rec.orig_len, data, comment.as_deref())
            }
        };
        if let Err(e) = r {
            crate::warn_limited!("capture {}: {e}", rec.id);
            return Some(StopReason::WriteError);
        }
        let after = match &o.sink {
            Sink::File(p) => p.bytes(),
            Sink::Stream(p, _) => p.bytes(),
        };
        let wrote = after - before;
        if matches!(o.sink, Sink::File(_)) {
            self.disk.used.fetch_add(wrote, Ordering::Relaxed);
            let take = wrote.min(o.reserved);
            o.reserved -= take;
            self.disk.reserved.fetch_sub(take, Ordering::Relaxed);
        }
        o.shared.frames.fetch_add(1, Ordering::Relaxed);
        o.shared.bytes.store(after, Ordering::Relaxed);
        if o.limits.max_packets.is_some_and(|m| frames + 1 >= m) {
            return Some(StopReason::MaxPackets);
        }
        None
    }

    /// Deadlines, flushes, stream hand-over, stops asked for by the control thread.
    fn housekeeping(&mut self, open: &mut HashMap<u32, Open>) {
        let now = Instant::now();
        let mut ended = Vec::new();
        for (id, o) in open.iter_mut() {
            if o.shared.stopped.load(Ordering::Acquire) {
                ended.push((*id, o.shared.reason().unwrap_or(StopReason::Stopped)));
                continue;
            }
            if now >= o.limits.until {
                ended.push((*id, StopReason::Duration));
                continue;
            }
            match &mut o.sink {
                Sink::Stream(p, tx) => {
                    let n = p.inner_mut().len();
                    if n >= CHUNK || (n > 0 && now.duration_since(o.last_flush) >= FLUSH) {
                        let chunk = std::mem::replace(p.inner_mut(), Vec::with_capacity(CHUNK));
                        match tx.try_send(StreamMsg::Data(chunk)) {
                            Ok(()) => o.last_flush = now,
                            Err(TrySendError::Full(StreamMsg::Data(chunk))) => *p.inner_mut() = chunk,
                            Err(TrySendError::Full(StreamMsg::End)) => {}
                            Err(TrySendError::Disconnected(_)) => ended.push((*id, StopReason::ClientGone)),
                        }
                    }
                }
                Sink::File(p) => {
                    if now.duration_since(o.last_flush) >= Duration::from_secs(1) {
                        let _ = p.flush();
                        o.last_flush = now;
                    }
                }
            }
        }
        for (id, why) in ended {
            if let Some(o) = open.remove(&id) {
                self.finish(o, why);
            }
        }
    }

    /// Closes `o`'s output: a file flushed and synced, a stream's last bytes and its end;
    /// the budget gets back what was reserved and not written.
    fn finish(&mut self, o: Open, why: StopReason) {
        o.shared.finish(why);
        self.disk.reserved.fetch_sub(o.reserved.min(self.disk.reserved.load(Ordering::Relaxed)), Ordering::Relaxed);
        match o.sink {
            Sink::File(mut p) => {
                if let Err(e) = p.flush() {
                    crate::warn_limited!("capture file: {e}");
                }
                let _ = p.inner_mut().get_ref().sync_data();
            }
            Sink::Stream(mut p, tx) => {
                let rest = std::mem::take(p.inner_mut());
                // The connection thread drains the backlog; the end waits its turn (bounded).
                let deadline = Instant::now() + Duration::from_secs(2);
                let mut msg = (!rest.is_empty()).then_some(StreamMsg::Data(rest));
                for m in [msg.take(), Some(StreamMsg::End)].into_iter().flatten() {
                    let mut m = m;
                    loop {
                        match tx.try_send(m) {
                            Ok(()) | Err(TrySendError::Disconnected(_)) => break,
                            Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                                m = back;
                                std::thread::sleep(Duration::from_millis(5));
                            }
                            Err(TrySendError::Full(_)) => break,
                        }
                    }
                }
            }
        }
    }

    fn finish_all(&mut self, open: &mut HashMap<u32, Open>, why: StopReason) {
        for (_, o) in open.drain() {
            self.finish(o, why);
        }
        for p in self.pending.drain(..) {
            let _ = p.send(());
        }
    }
}
