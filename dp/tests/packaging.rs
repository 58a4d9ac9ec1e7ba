//! The Debian package metadata (`[package.metadata.deb]` in dp/Cargo.toml) against the files it
//! ships: every asset exists (binaries: built by the workspace), the config is a conffile, the
//! unit starts the binary where the package puts it, and the image ships the same binaries.
//! `cargo deb` itself runs in scripts/package.sh; when cargo-deb and release binaries are
//! present, this test also builds the .deb and lists its contents with dpkg-deb.

use std::path::Path;
use std::process::Command;

fn manifest() -> toml::Value {
    toml::from_str(&std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml")).unwrap()).unwrap()
}

#[test]
fn deb_metadata_names_files_that_exist() {
    let m = manifest();
    let deb = &m["package"]["metadata"]["deb"];
    assert_eq!(deb["name"].as_str(), Some("warden"));
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dests = Vec::new();
    for a in deb["assets"].as_array().unwrap() {
        let a = a.as_array().unwrap();
        let (src, dst) = (a[0].as_str().unwrap(), a[1].as_str().unwrap());
        if let Some(bin) = src.strip_prefix("target/release/") {
            // cargo-deb maps target/release to the real target directory; the binary is one
            // the workspace builds.
            assert!(["warden", "wardenctl"].contains(&bin), "{src}");
            dests.push(format!("/{dst}{bin}"));
        } else {
            assert!(dir.join(src).is_file(), "asset {src} missing");
            dests.push(format!("/{dst}"));
        }
    }
    for c in deb["conf-files"].as_array().unwrap() {
        assert!(dests.iter().any(|d| d == c.as_str().unwrap()), "conffile {c} not installed by an asset");
    }
    let units = deb["systemd-units"]["unit-scripts"].as_str().unwrap();
    let unit = std::fs::read_to_string(dir.join(units).join("warden.service")).unwrap();
    for line in unit.lines().filter(|l| l.starts_with("ExecStart")) {
        let bin = line.split('=').nth(1).unwrap().split_whitespace().next().unwrap();
        assert!(dests.iter().any(|d| d == bin), "{line}: {bin} is not installed by the package ({dests:?})");
    }
    let image = std::fs::read_to_string(dir.join("../deploy/Containerfile")).unwrap();
    assert!(image.contains("target/release/warden /src/target/release/wardenctl /usr/bin/"));
}

#[test]
fn cargo_deb_builds_the_package_when_available() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let have_deb = Command::new("cargo").args(["deb", "--version"]).output().is_ok_and(|o| o.status.success());
    let built = ["warden", "wardenctl"].iter().all(|b| root.join("target/release").join(b).is_file());
    if !have_deb || !built {
        eprintln!("cargo-deb or release binaries absent: run scripts/package.sh to build the .deb");
        return;
    }
    let out = Command::new("cargo").current_dir(&root).args(["deb", "-p", "warden-dp", "--no-build"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let path = String::from_utf8_lossy(&out.stdout).lines().last().unwrap().trim().to_string();
    let list = Command::new("dpkg-deb").args(["-c", &path]).output().unwrap();
    let list = String::from_utf8_lossy(&list.stdout);
    for f in ["./usr/bin/warden", "./usr/bin/wardenctl", "./etc/warden/warden.toml", "warden.service"] {
        assert!(list.contains(f), "{f} not in {path}: {list}");
    }
}
