//! The rig's sink: `attach` loads `sink.bpf.c` (count, then XDP_DROP) onto an interface in
//! native mode and pins its counter map (and its latency histogram at `<pin>-lat`); `read`
//! prints the counters from the pinned map.
//! The program stays attached after this process exits (netlink attach); remove it with
//! `ip link set dev IFACE xdp off` or by deleting the interface.
use std::mem::MaybeUninit;
use std::os::fd::AsFd;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Xdp, XdpFlags};
use warden_perf::skel::sink::SinkSkelBuilder;

#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Attach the counting sink to IFACE and pin its counter map at --pin.
    Attach {
        iface: String,
        #[arg(long, default_value = warden_perf::SINK_PIN)]
        pin: PathBuf,
    },
    /// Print the pinned counters as JSON.
    Read {
        #[arg(long, default_value = warden_perf::SINK_PIN)]
        pin: PathBuf,
    },
}

fn main() -> Result<()> {
    match Args::parse().cmd {
        Cmd::Attach { iface, pin } => {
            let ifindex = warden_perf::ifindex(&iface)?;
            let mut storage = MaybeUninit::uninit();
            let open = SinkSkelBuilder::default()
                .open(&mut storage)
                .context("open sink")?;
            let mut skel = open.load().context("load sink")?;
            let _ = std::fs::remove_file(&pin);
            skel.maps
                .counts
                .pin(&pin)
                .with_context(|| format!("pin at {}", pin.display()))?;
            let lat = format!("{}-lat", pin.display());
            let _ = std::fs::remove_file(&lat);
            skel.maps.lat.pin(&lat).with_context(|| format!("pin at {lat}"))?;
            Xdp::new(skel.progs.sink_xdp.as_fd())
                .attach(ifindex, XdpFlags::DRV_MODE)
                .with_context(|| format!("attach sink to {iface}"))?;
        }
        Cmd::Read { pin } => {
            println!("{}", serde_json::to_string(&warden_perf::read_sink(&pin)?)?);
        }
    }
    Ok(())
}
