//! Compiles `src/bpf/warden.bpf.c` with clang and generates the libbpf-rs skeleton.
use std::{env, path::PathBuf, process::Command};

use libbpf_cargo::SkeletonBuilder;

const SRC: &str = "src/bpf/warden.bpf.c";

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
    SkeletonBuilder::new()
        .source(SRC)
        .clang_args([format!("-I/usr/include/{multiarch}"), "-O2".to_string(), "-g".to_string()])
        .build_and_generate(out.join("warden.skel.rs"))
        .unwrap_or_else(|e| {
            panic!("building {SRC} failed (needs clang and libbpf-dev: run scripts/install-deps.sh): {e:#}")
        });
    println!("cargo:rerun-if-changed={SRC}");
}
