//! The Debian package metadata (`[package.metadata.deb]` in dp/Cargo.toml) against the files it
//! ships: every asset exists (binaries: built by the workspace), the config is a conffile, the
//! unit starts the binary where the package puts it, and the image ships the same binaries.
//! `deb_builds_installs_with_apt_and_purges_clean` builds the .deb with scripts/package.sh
//! (cargo-deb), checks its contents and maintainer scripts, installs it with apt as a user would
//! and purges it, leaving the machine as it found it.

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
            assert!(["warden", "wardenctl", "warden-cni"].contains(&bin), "{src}");
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
    assert!(dests.iter().any(|d| d == "/opt/cni/bin/warden-cni"), "the CNI plugin is not where runtimes look: {dests:?}");
    assert!(image.contains("target/release/warden-cni /opt/cni/bin/"));
}

/// Runs `cmd`, returns its stdout; panics with its stderr when it fails.
fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn apt_get(args: &[&str]) -> Command {
    let mut c = Command::new("apt-get");
    c.env("DEBIAN_FRONTEND", "noninteractive").args(["-o", "DPkg::Lock::Timeout=120"]).args(args);
    c
}

/// dpkg's status of `pkg` ("install ok installed"), or None when dpkg does not know it.
fn dpkg_status(pkg: &str) -> Option<String> {
    let out = Command::new("dpkg-query").args(["-W", "-f=${Status}", pkg]).output().unwrap();
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Every path the installed package may leave behind: its files, the unit's enablement links and
/// deb-systemd-helper's state (the masks postrm writes on remove).
fn warden_leftovers() -> Vec<String> {
    let mut left: Vec<String> = [
        "/usr/bin/warden",
        "/usr/bin/wardenctl",
        "/opt/cni/bin/warden-cni",
        "/etc/warden",
        "/usr/lib/systemd/system/warden.service",
        "/etc/systemd/system/warden.service",
        "/etc/systemd/system/multi-user.target.wants/warden.service",
        "/usr/share/doc/warden",
        "/var/lib/systemd/deb-systemd-helper-enabled/warden.service.dsh-also",
        "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/warden.service",
        "/var/lib/systemd/deb-systemd-helper-masked/warden.service",
    ]
    .iter()
    .filter(|p| Path::new(p).symlink_metadata().is_ok())
    .map(|p| p.to_string())
    .collect();
    if let Some(s) = dpkg_status("warden").filter(|s| !s.ends_with("not-installed")) {
        left.push(format!("dpkg status of warden: {s}"));
    }
    left
}

/// Purges the package when the test ends, also after a failed assertion.
struct Purge;
impl Drop for Purge {
    fn drop(&mut self) {
        let _ = apt_get(&["purge", "-y", "-qq", "warden"]).output();
    }
}

/// Builds the .deb (scripts/package.sh: the release binaries, then `cargo deb --no-build`),
/// checks what it holds with dpkg-deb, resolves it with `apt-get install --simulate` (only warden
/// itself is installed: its dependencies are already there), installs it for real with
/// `apt-get install ./warden_*.deb` (what `apt install` does), runs the installed binary, checks
/// the unit is neither enabled nor started, then purges it and checks nothing is left.
///
/// `dpkg --root=<tmp>` is not used: an empty root has neither the dependencies nor the /bin/sh
/// the maintainer scripts run under, and it is not how users install.
///
/// Takes about 5 minutes on a 2-core machine when the release binaries are not built yet
/// (`cargo build --release` of warden and wardenctl, about 4 of them), about 30 s after.
/// Needs root (apt); skipped otherwise. Fails rather than touching a warden package that is
/// already installed.
#[test]
fn deb_builds_installs_with_apt_and_purges_clean() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: installing the .deb with apt needs root (CI runs the tests as root)");
        return;
    }
    let before = warden_leftovers();
    assert!(before.is_empty(), "warden is already installed or left files on this machine; not touching it: {before:?}");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = run(Command::new(root.join("scripts/package.sh")).current_dir(&root));
    let deb = root.join(out.lines().last().unwrap().trim());
    assert!(deb.is_file(), "package.sh printed {out}");
    let deb = deb.canonicalize().unwrap();
    let deb_s = deb.to_str().unwrap();
    let version = env!("CARGO_PKG_VERSION");

    // The control file: name, version, and only the shared libraries the binaries link.
    let field = |f: &str| run(Command::new("dpkg-deb").args(["-f", deb_s, f])).trim().to_string();
    assert_eq!(field("Package"), "warden");
    assert!(field("Version").starts_with(version), "{}", field("Version"));
    let depends = field("Depends");
    let mut names: Vec<&str> = depends.split(',').map(|d| d.split_whitespace().next().unwrap()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names, ["libc6", "libelf1", "libpcap0.8", "zlib1g"], "Depends: {depends}");
    let info = run(Command::new("dpkg-deb").args(["-I", deb_s]));
    for script in ["conffiles", "postinst", "prerm", "postrm"] {
        assert!(info.lines().any(|l| l.split_whitespace().any(|w| w == script)), "no {script} in {info}");
    }

    // The files, where Debian puts them (on merged-/usr systems /lib is /usr/lib).
    let list = run(Command::new("dpkg-deb").args(["-c", deb_s]));
    let entry = |path: &str| list.lines().find(|l| l.ends_with(path)).unwrap_or_else(|| panic!("{path} not in the package:\n{list}"));
    for bin in ["./usr/bin/warden", "./usr/bin/wardenctl", "./opt/cni/bin/warden-cni"] {
        assert!(entry(bin).starts_with("-rwxr-xr-x root/root") || entry(bin).starts_with("-rwxr-xr-x 0/0"), "{}", entry(bin));
    }
    assert!(list.lines().any(|l| l.ends_with("./lib/systemd/system/warden.service") || l.ends_with("./usr/lib/systemd/system/warden.service")), "{list}");
    for f in [
        "./etc/warden/warden.toml",
        "./usr/share/doc/warden/examples/policy.toml",
        "./usr/share/doc/warden/examples/10-warden.conflist",
        "./usr/share/doc/warden/copyright",
    ] {
        assert!(entry(f).starts_with("-rw-r--r--"), "{}", entry(f));
    }

    // The maintainer scripts: the config names interfaces, so a fresh install neither enables
    // nor starts the unit; an upgrade restarts it only if running; remove stops it; purge
    // removes its enablement state.
    let script = |n: &str| run(Command::new("dpkg-deb").args(["-I", deb_s, n]));
    assert_eq!(script("conffiles").trim(), "/etc/warden/warden.toml");
    let postinst = script("postinst");
    for forbidden in ["deb-systemd-invoke start", "deb-systemd-invoke restart", "systemctl start", "--now"] {
        assert!(!postinst.contains(forbidden), "postinst starts the unit ({forbidden}):\n{postinst}");
    }
    assert!(postinst.contains("if deb-systemd-helper --quiet was-enabled warden.service; then"), "{postinst}");
    let enables: Vec<&str> = postinst.lines().filter(|l| l.contains(" enable ")).collect();
    assert_eq!(enables.len(), 1, "postinst enables the unit other than on was-enabled: {enables:?}");
    assert!(postinst.contains("try-restart warden.service"), "{postinst}");
    assert!(script("prerm").contains("[ \"$1\" = remove ]") && script("prerm").contains("deb-systemd-invoke stop warden.service"), "{}", script("prerm"));
    assert!(script("postrm").contains("deb-systemd-helper purge warden.service"), "{}", script("postrm"));

    // apt resolves it as `apt install ./warden_*.deb` would: warden is the only package to install.
    let sim = run(&mut apt_get(&["install", "--simulate", "--no-install-recommends", deb_s]));
    let inst: Vec<&str> = sim.lines().filter(|l| l.starts_with("Inst ")).collect();
    assert!(inst.len() == 1 && inst[0].starts_with("Inst warden "), "apt would install more than warden:\n{sim}");

    // Installed for real; purged when the test ends, whatever happens.
    let _purge = Purge;
    run(&mut apt_get(&["install", "-y", "-qq", "--no-install-recommends", deb_s]));
    assert_eq!(dpkg_status("warden").as_deref(), Some("install ok installed"));
    assert_eq!(run(Command::new("/usr/bin/warden").arg("--version")).trim(), format!("warden {version}"));
    assert_eq!(run(Command::new("/usr/bin/wardenctl").arg("--version")).trim(), format!("wardenctl {version}"));
    // The CNI plugin answers VERSION as a runtime asks it (CNI spec: the JSON on stdout).
    let mut cni = Command::new("/opt/cni/bin/warden-cni");
    cni.env("CNI_COMMAND", "VERSION").stdin(std::process::Stdio::null());
    let v: serde_json::Value = serde_json::from_str(&run(&mut cni)).unwrap();
    assert!(v["supportedVersions"].as_array().unwrap().iter().any(|x| x == "1.0.0"), "{v}");
    let check = run(Command::new("/usr/bin/warden").args(["check-config", "/etc/warden/warden.toml"]));
    assert!(check.contains("/etc/warden/warden.toml: ok"), "{check}");
    // Not enabled (is-enabled reads the unit files, systemd running or not) and not running.
    let enabled = Command::new("systemctl").args(["is-enabled", "warden.service"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "disabled", "{enabled:?}");
    assert!(!Path::new("/etc/systemd/system/multi-user.target.wants/warden.service").exists());
    if Path::new("/run/systemd/system").is_dir() {
        let active = Command::new("systemctl").args(["is-active", "warden.service"]).output().unwrap();
        assert_eq!(String::from_utf8_lossy(&active.stdout).trim(), "inactive", "{active:?}");
    }

    run(&mut apt_get(&["purge", "-y", "-qq", "warden"]));
    let after = warden_leftovers();
    assert!(after.is_empty(), "left after purge: {after:?}");
}

/// The DaemonSet manifest parses as Kubernetes YAML (python3-yaml), runs the image's warden on
/// the ConfigMap's config mounted where its `--config` points, with the capabilities and mounts
/// Warden needs; and that config passes `warden check-config`.
#[test]
fn daemonset_manifest_is_consistent_and_its_config_checks() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/warden-daemonset.yaml");
    let script = "import json, sys, yaml; print(json.dumps(list(yaml.safe_load_all(open(sys.argv[1])))))";
    let docs: serde_json::Value = serde_json::from_str(&run(Command::new("python3").args(["-c", script]).arg(&dir))).unwrap();
    let docs = docs.as_array().unwrap();
    let kind = |k: &str| docs.iter().find(|d| d["kind"] == k).unwrap_or_else(|| panic!("no {k} in the manifest"));
    let (cm, ds) = (kind("ConfigMap"), kind("DaemonSet"));
    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true, "Warden attaches to the node's interfaces");
    let c = pod["containers"].as_array().unwrap().iter().find(|c| c["args"][0] == "run").expect("a container running `warden run`");
    let args: Vec<&str> = c["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    let config = args[args.iter().position(|a| *a == "--config").unwrap() + 1];
    let caps: Vec<&str> = c["securityContext"]["capabilities"]["add"].as_array().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
    for cap in ["NET_ADMIN", "BPF", "NET_RAW"] {
        assert!(caps.contains(&cap), "capability {cap} missing: {caps:?}");
    }
    let mounts: Vec<&str> = c["volumeMounts"].as_array().unwrap().iter().map(|m| m["mountPath"].as_str().unwrap()).collect();
    for m in ["/sys/fs/bpf", "/run/warden"] {
        assert!(mounts.contains(&m), "mount {m} missing: {mounts:?}");
    }
    let conf_dir = Path::new(config).parent().unwrap().to_str().unwrap();
    assert!(mounts.contains(&conf_dir), "--config {config} is not under a mount: {mounts:?}");
    // The init container installs the image's CNI plugin into the node's /opt/cni/bin.
    let init = pod["initContainers"].as_array().unwrap().iter().find(|c| c["name"] == "install-cni").expect("install-cni");
    let cmd = init["command"].to_string();
    assert!(cmd.contains("cp /opt/cni/bin/warden-cni /host/opt/cni/bin/") && cmd.contains("/host/opt/cni/bin/warden-cni"), "{cmd}");
    let vol = init["volumeMounts"].as_array().unwrap().iter().find(|m| m["mountPath"] == "/host/opt/cni/bin").expect("mount");
    let host = pod["volumes"].as_array().unwrap().iter().find(|v| v["name"] == vol["name"]).expect("volume");
    assert_eq!(host["hostPath"]["path"], "/opt/cni/bin");
    // The ConfigMap's config is valid for the warden this tree builds.
    let toml_text = cm["data"]["warden.toml"].as_str().expect("ConfigMap data warden.toml");
    let tmp = std::env::temp_dir().join(format!("warden-ds-{}.toml", std::process::id()));
    std::fs::write(&tmp, toml_text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_warden")).arg("check-config").arg(&tmp).output().unwrap();
    std::fs::remove_file(&tmp).unwrap();
    assert!(out.status.success(), "check-config: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}
