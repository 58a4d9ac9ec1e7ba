//! Compiles the rig's XDP programs (`src/bpf/*.bpf.c`) with clang and generates their
//! libbpf-rs skeletons, the same way `xdp-prog/build.rs` does.
use std::{env, path::PathBuf, process::Command};

use libbpf_cargo::SkeletonBuilder;

const PROGS: [&str; 2] = ["redirect", "sink"];

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR is set by cargo"));
    // Debian keeps <asm/types.h> under the multiarch include directory, which clang's BPF
    // target does not search by itself.
    let multiarch = Command::new("gcc")
        .arg("-print-multiarch")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| format!("{}-linux-gnu", env::consts::ARCH));
    for name in PROGS {
        let src = format!("src/bpf/{name}.bpf.c");
        SkeletonBuilder::new()
            .source(&src)
            .clang_args([
                format!("-I/usr/include/{multiarch}"),
                "-O2".into(),
                "-g".into(),
            ])
            .build_and_generate(out.join(format!("{name}.skel.rs")))
            .unwrap_or_else(|e| {
                panic!("building {src} failed (needs clang and libbpf-dev): {e:#}")
            });
        println!("cargo:rerun-if-changed={src}");
    }
}
