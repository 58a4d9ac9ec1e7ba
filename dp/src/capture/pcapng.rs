//! pcapng output (draft-ietf-opsawg-pcapng): one section, one Interface Description Block per
//! interface the capture saw frames on (added before that interface's first frame, named by
//! `if_name`, nanosecond timestamps by `if_tsresol` 9, Ethernet), one Enhanced Packet Block
//! per frame with `epb_flags` inbound (every frame was received on the interface it names) and,
//! for frames Warden dropped, an `opt_comment` with the verdict.
//!
//! The blocks are written by the `pcap-file` crate (already Warden's pcap reader), whose
//! `PcapNgWriter` writes interface blocks and comments; this module only keeps the interface
//! table and counts bytes, so limits can be checked before a block is written
//! ([`block_len`]). Written from the capture writer thread, never from a worker.

use std::borrow::Cow;
use std::io::Write;
use std::time::Duration;

use pcap_file::pcapng::blocks::enhanced_packet::{EnhancedPacketBlock, EnhancedPacketOption};
use pcap_file::pcapng::blocks::interface_description::{InterfaceDescriptionBlock, InterfaceDescriptionOption};
use pcap_file::pcapng::blocks::section_header::{SectionHeaderBlock, SectionHeaderOption};
use pcap_file::pcapng::{PcapNgBlock, PcapNgWriter};
use pcap_file::{DataLink, Endianness};

/// A writer that counts the bytes written through it.
pub struct Counting<W> {
    inner: W,
    bytes: u64,
}

impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A pcapng stream being written to `W` (a file, or a buffer drained to a socket).
pub struct Pcapng<W: Write> {
    w: PcapNgWriter<Counting<W>>,
    /// Interface slot → interface id in this section.
    ifaces: Vec<(u16, u32)>,
    snaplen: u32,
}

/// Bytes an Enhanced Packet Block of `captured` bytes with a comment of `comment` bytes takes
/// (header 28, data padded to 4, flags option 8, comment option 4 + padded text, end of
/// options 4, trailer 4).
pub fn block_len(captured: usize, comment: usize) -> u64 {
    let pad = |n: usize| n.div_ceil(4) * 4;
    let comment = if comment > 0 { 4 + pad(comment) } else { 0 };
    (28 + pad(captured) + 8 + comment + 4 + 4) as u64
}

/// Bytes an Interface Description Block naming `name` takes (at most).
pub fn iface_block_len(name: &str) -> u64 {
    (16 + 4 + name.len().div_ceil(4) * 4 + 8 + 4 + 4) as u64
}

impl<W: Write> Pcapng<W> {
    /// Starts a section on `out` (Section Header Block naming Warden, with `comment`);
    /// `snaplen` goes into each interface block.
    ///
    /// # Errors
    /// Writing to `out` failed.
    pub fn new(out: W, comment: &str, snaplen: u32) -> std::io::Result<Self> {
        let shb = SectionHeaderBlock {
            endianness: Endianness::native(),
            major_version: 1,
            minor_version: 0,
            section_length: -1,
            options: vec![
                SectionHeaderOption::UserApplication(Cow::Owned(format!("warden {}", env!("CARGO_PKG_VERSION")))),
                SectionHeaderOption::Comment(Cow::Owned(comment.to_string())),
            ],
        };
        let w = PcapNgWriter::with_section_header(Counting { inner: out, bytes: 0 }, shb).map_err(io)?;
        Ok(Pcapng { w, ifaces: Vec::new(), snaplen })
    }

    /// Bytes written so far.
    pub fn bytes(&self) -> u64 {
        self.w.get_ref().bytes
    }

    /// True when interface `slot` has its block already.
    pub fn knows(&self, slot: u16) -> bool {
        self.ifaces.iter().any(|(s, _)| *s == slot)
    }

    /// Writes one frame received on interface `slot` (named `name`) at `ts_ns` (Unix ns):
    /// `data` is what was kept of its `orig_len` bytes; `comment` (dropped frames) goes into
    /// the block. Adds the interface's block first if it is new.
    ///
    /// # Errors
    /// Writing failed.
    pub fn frame(&mut self, slot: u16, name: &str, ts_ns: u64, orig_len: u32, data: &[u8], comment: Option<&str>) -> std::io::Result<()> {
        let id = match self.ifaces.iter().find(|(s, _)| *s == slot) {
            Some((_, id)) => *id,
            None => {
                let id = self.ifaces.len() as u32;
                let idb = InterfaceDescriptionBlock {
                    linktype: DataLink::ETHERNET,
                    snaplen: self.snaplen,
                    options: vec![InterfaceDescriptionOption::IfName(Cow::Owned(name.to_string())), InterfaceDescriptionOption::IfTsResol(9)],
                };
                self.w.write_pcapng_block(idb).map_err(io)?;
                self.ifaces.push((slot, id));
                id
            }
        };
        // epb_flags: direction inbound (bits 0-1 = 01).
        let mut options = vec![EnhancedPacketOption::Flags(1)];
        if let Some(c) = comment {
            options.push(EnhancedPacketOption::Comment(Cow::Borrowed(c)));
        }
        let epb = EnhancedPacketBlock {
            interface_id: id,
            timestamp: Duration::from_nanos(ts_ns),
            original_len: orig_len,
            data: Cow::Borrowed(data),
            options,
        };
        self.w.write_block(&epb.into_block()).map_err(io)?;
        Ok(())
    }

    /// Flushes the underlying writer.
    ///
    /// # Errors
    /// Flushing failed.
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.w.get_mut().flush()
    }

    /// The underlying writer (a stream's buffer, to drain it).
    pub fn inner_mut(&mut self) -> &mut W {
        &mut self.w.get_mut().inner
    }
}

fn io(e: pcap_file::PcapError) -> std::io::Error {
    match e {
        pcap_file::PcapError::IoError(e) => e,
        e => std::io::Error::other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What we write reads back through pcap-file's reader: interfaces with their names and
    /// resolution, nanosecond timestamps, original lengths, comments; the byte counts match
    /// [`block_len`] and [`iface_block_len`].
    #[test]
    fn blocks_read_back_and_sizes_are_predicted() {
        let mut p = Pcapng::new(Vec::new(), "test", 96).unwrap();
        let start = p.bytes();
        assert_eq!(start as usize, p.inner_mut().len());
        let before = p.bytes();
        p.frame(3, "veth-a", 1_700_000_000_123_456_789, 120, &[0xaa; 96], None).unwrap();
        let first = p.bytes() - before;
        assert_eq!(first, iface_block_len("veth-a") + block_len(96, 0), "interface block + packet block");
        let before = p.bytes();
        p.frame(3, "veth-a", 1_700_000_000_200_000_000, 61, &[0xbb; 61], Some("warden: dropped (policy_denied)")).unwrap();
        assert_eq!(p.bytes() - before, block_len(61, "warden: dropped (policy_denied)".len()));
        p.frame(9, "veth-b", 1_700_000_000_300_000_000, 60, &[0xcc; 60], None).unwrap();
        let bytes = p.inner_mut().clone();
        let mut r = pcap_file::pcapng::PcapNgReader::new(&bytes[..]).unwrap();
        let mut names = Vec::new();
        let mut packets = Vec::new();
        while let Some(b) = r.next_block() {
            match b.unwrap() {
                pcap_file::pcapng::Block::InterfaceDescription(i) => {
                    assert!(i.options.contains(&InterfaceDescriptionOption::IfTsResol(9)));
                    names.extend(i.options.iter().filter_map(|o| match o {
                        InterfaceDescriptionOption::IfName(n) => Some(n.to_string()),
                        _ => None,
                    }));
                }
                pcap_file::pcapng::Block::EnhancedPacket(e) => packets.push((
                    e.interface_id,
                    e.timestamp.as_nanos(),
                    e.original_len,
                    e.data.len(),
                    e.options.iter().any(|o| matches!(o, EnhancedPacketOption::Comment(c) if c.contains("policy_denied"))),
                )),
                _ => {}
            }
        }
        assert_eq!(names, ["veth-a", "veth-b"]);
        assert_eq!(
            packets,
            [
                (0, 1_700_000_000_123_456_789, 120, 96, false),
                (0, 1_700_000_000_200_000_000, 61, 61, true),
                (1, 1_700_000_000_300_000_000, 60, 60, false)
            ]
        );
    }
}
