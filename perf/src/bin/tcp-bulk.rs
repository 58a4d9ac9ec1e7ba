//! The established flow of `perf/synflood.sh`: one TCP connection carrying a bulk transfer.
//!
//! `tcp-bulk serve --bind ADDR` accepts connections: the bulk one (first byte `B`) is read to
//! the end with one JSON line per `--interval-ms` (bytes received in that interval and its Unix
//! end time, ns) and the server exits when it closes; others (first byte `I`) are echoed.
//! `tcp-bulk idle --to ADDR --conns N --until FILE` holds N idle connections until FILE exists,
//! then checks that each still carries an echo (established sessions a flood must not evict). `tcp-bulk send --to ADDR` writes 64 KiB blocks for `--secs`
//! seconds (or until it is terminated), at most `--rate-mbit` Mbit/s when given (a token bucket
//! with 50 ms of credit: a stall is not made up by a burst).
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Receive one connection and print its throughput per interval.
    Serve {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long, default_value_t = 250)]
        interval_ms: u64,
    },
    /// Send to a `serve`r.
    Send {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 3600.0)]
        secs: f64,
        /// Cap in Mbit/s (payload); 0: as fast as TCP goes.
        #[arg(long, default_value_t = 0.0)]
        rate_mbit: f64,
    },
    /// Hold idle connections to a `serve`r, then check they still work.
    Idle {
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, default_value_t = 100)]
        conns: usize,
        /// The connections are checked once this file exists.
        #[arg(long)]
        until: std::path::PathBuf,
    },
}

fn unix_ns() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0)
}

fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Serve { bind, interval_ms } => serve(bind, Duration::from_millis(interval_ms)),
        Cmd::Send { to, secs, rate_mbit } => send(to, secs, rate_mbit),
        Cmd::Idle { to, conns, until } => idle(to, conns, &until),
    }
}

fn serve(bind: SocketAddr, interval: Duration) -> Result<()> {
    let listener = TcpListener::bind(bind).with_context(|| format!("bind {bind}"))?;
    eprintln!("tcp-bulk: listening on {bind}");
    loop {
        let (mut conn, peer) = listener.accept()?;
        let mut kind = [0u8; 1];
        conn.read_exact(&mut kind)?;
        match kind[0] {
            // The bulk transfer: measured; the server exits when it ends.
            b'B' => {
                eprintln!("tcp-bulk: bulk connection from {peer}");
                std::thread::spawn(move || {
                    let r = receive(conn, interval);
                    if let Err(e) = &r {
                        eprintln!("tcp-bulk: {e:#}");
                    }
                    std::process::exit(i32::from(r.is_err()));
                });
            }
            // An idle connection: echoes what it gets (rarely anything).
            _ => {
                std::thread::spawn(move || {
                    let mut buf = [0u8; 64];
                    while let Ok(n) = conn.read(&mut buf) {
                        if n == 0 || conn.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        }
    }
}

fn receive(mut conn: TcpStream, interval: Duration) -> Result<()> {
    conn.set_read_timeout(Some(interval / 4))?;
    let mut buf = vec![0u8; 256 * 1024];
    let (mut bytes, mut total) = (0u64, 0u64);
    let mut mark = Instant::now();
    let mut out = std::io::stdout().lock();
    loop {
        let n = match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => 0,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(e.into()),
        };
        bytes += n as u64;
        total += n as u64;
        let secs = mark.elapsed();
        if secs >= interval {
            writeln!(out, "{{\"end_unix_ns\":{},\"secs\":{},\"bytes\":{bytes}}}", unix_ns(), secs.as_secs_f64())?;
            out.flush()?;
            bytes = 0;
            mark = Instant::now();
        }
    }
    eprintln!("tcp-bulk: {total} bytes received");
    Ok(())
}

/// Opens `conns` connections, leaves them idle until `until` exists, then sends 4 bytes on each
/// and counts those whose echo comes back within 3 s.
fn idle(to: SocketAddr, conns: usize, until: &std::path::Path) -> Result<()> {
    let mut open = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5)).with_context(|| format!("connect {to}"))?;
        c.write_all(b"I")?;
        open.push(c);
    }
    eprintln!("tcp-bulk: {conns} idle connections open");
    while !until.exists() {
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut alive = 0;
    for c in &mut open {
        c.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut echo = [0u8; 4];
        if c.write_all(b"ping").is_ok() && c.read_exact(&mut echo).is_ok() && &echo == b"ping" {
            alive += 1;
        }
    }
    println!("{{\"conns\":{conns},\"alive\":{alive}}}");
    Ok(())
}

fn send(to: SocketAddr, secs: f64, rate_mbit: f64) -> Result<()> {
    let mut conn = TcpStream::connect_timeout(&to, Duration::from_secs(5)).with_context(|| format!("connect {to}"))?;
    conn.set_nodelay(true)?;
    conn.write_all(b"B")?;
    let block = vec![0x5au8; 64 * 1024];
    let start = Instant::now();
    let stop = start + Duration::from_secs_f64(secs);
    // Token bucket: the cap in bytes per second, with at most 50 ms of credit, so time lost
    // to a stall is not made up later by a burst above the cap.
    let rate = rate_mbit * 1e6 / 8.0;
    let burst = (rate * 0.05).max(2.0 * block.len() as f64);
    let (mut credit, mut last) = (block.len() as f64, start);
    while Instant::now() < stop {
        if rate > 0.0 {
            let now = Instant::now();
            credit = (credit + rate * (now - last).as_secs_f64()).min(burst);
            last = now;
            if credit < block.len() as f64 {
                std::thread::sleep(Duration::from_micros(500));
                continue;
            }
            credit -= block.len() as f64;
        }
        conn.write_all(&block)?;
    }
    Ok(())
}
