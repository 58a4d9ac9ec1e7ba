//! The in-kernel forwarding ceiling: loads `redirect.bpf.c` onto interfaces A and B in native
//! mode, with A's frames sent out of B and B's out of A by a devmap redirect. The program
//! stays attached after this process exits (netlink attach); remove it with
//! `ip link set dev A xdp off` (and B) or by deleting the interfaces.
//!
//! veth only transmits a redirected frame if the *peer* of the egress veth has an XDP program
//! or GRO enabled; the rig attaches the sink there.
use std::mem::MaybeUninit;
use std::os::fd::AsFd;

use anyhow::{Context, Result};
use clap::Parser;
use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{MapCore, MapFlags, Xdp, XdpFlags};
use warden_perf::skel::redirect::RedirectSkelBuilder;

#[derive(Parser)]
struct Args {
    /// First interface of the pair.
    a: String,
    /// Second interface of the pair.
    b: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    let a = warden_perf::ifindex(&args.a)?;
    let b = warden_perf::ifindex(&args.b)?;
    let mut storage = MaybeUninit::uninit();
    let open = RedirectSkelBuilder::default()
        .open(&mut storage)
        .context("open redirect")?;
    let skel = open.load().context("load redirect")?;
    for (from, to) in [(a, b), (b, a)] {
        skel.maps
            .peers
            .update(&from.to_ne_bytes(), &to.to_ne_bytes(), MapFlags::ANY)
            .context("fill devmap")?;
    }
    let xdp = Xdp::new(skel.progs.redirect_xdp.as_fd());
    for (name, idx) in [(&args.a, a), (&args.b, b)] {
        xdp.attach(idx, XdpFlags::DRV_MODE)
            .with_context(|| format!("attach to {name}"))?;
    }
    Ok(())
}
