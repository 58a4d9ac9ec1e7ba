//! VM name of a tap from libvirt's live domain XML (the status files libvirtd's QEMU driver
//! keeps under `/run/libvirt/qemu/<name>.xml`: `<domstatus><domain><name>` and each
//! `<devices><interface><target dev='vnet0'/>`), parsed with `roxmltree`. Source: libvirt's
//! `src/qemu/qemu_domain.c` (status XML) and its domain XML format (`formatdomain.html`,
//! "Network interfaces": `target dev` is the host-side tap).

use std::path::Path;

/// Largest status file read (bytes).
const MAX_XML: u64 = 4 << 20;

/// The domain name in `xml` whose interfaces include a `target dev` equal to `tap`. `None`
/// when no interface is that tap or the XML does not parse.
pub fn vm_of_tap(xml: &str, tap: &str) -> Option<String> {
    let doc = roxmltree::Document::parse(xml).ok()?;
    let iface = doc.descendants().find(|n| {
        n.has_tag_name("interface")
            && n.children().any(|t| t.has_tag_name("target") && t.attribute("dev") == Some(tap))
    })?;
    let domain = iface.ancestors().find(|n| n.has_tag_name("domain"))?;
    let name = domain.children().find(|n| n.has_tag_name("name"))?.text()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}

/// The VM whose live XML under `root/run/libvirt/qemu` has tap `tap` (files in name order;
/// unreadable or malformed ones skipped).
pub fn find(root: &Path, tap: &str) -> Option<String> {
    let dir = root.join("run/libvirt/qemu");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "xml"))
        .collect();
    files.sort();
    files.iter().find_map(|p| {
        let md = std::fs::metadata(p).ok()?;
        if md.len() > MAX_XML {
            return None;
        }
        vm_of_tap(&std::fs::read_to_string(p).ok()?, tap)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/identity/root").into()
    }

    #[test]
    fn taps_of_two_domains() {
        assert_eq!(find(&root(), "vnet0").as_deref(), Some("web-vm"));
        assert_eq!(find(&root(), "vnet2").as_deref(), Some("web-vm"), "a bridge-type interface");
        assert_eq!(find(&root(), "vnet1").as_deref(), Some("db-vm"));
        assert_eq!(find(&root(), "vnet9"), None);
        assert_eq!(find(&root().join("nowhere"), "vnet0"), None);
    }

    #[test]
    fn only_interface_targets_count() {
        // A `target dev` of a disk is not a tap; the name is the domain's, not the monitor's.
        let xml = "<domstatus><domain type='kvm'><name> vm-a </name><devices>\
            <disk><target dev='vda'/></disk><interface type='ethernet'><target dev='tap7'/></interface>\
            </devices></domain></domstatus>";
        assert_eq!(vm_of_tap(xml, "vda"), None);
        assert_eq!(vm_of_tap(xml, "tap7").as_deref(), Some("vm-a"));
        assert_eq!(vm_of_tap("<domain><name>x", "tap7"), None);
    }
}
