//! Classic little-endian pcap files (microsecond timestamps, Ethernet link type), what
//! DPDK's net_pcap reads and writes.

use std::io::{self, Write};
use std::path::Path;

/// Writes frames to a pcap stream; the file header goes out on creation.
#[derive(Debug)]
pub struct PcapWriter<W: Write> {
    out: W,
}

impl<W: Write> PcapWriter<W> {
    pub fn new(mut out: W) -> io::Result<Self> {
        let mut header = Vec::with_capacity(24);
        header.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
        header.extend_from_slice(&2u16.to_le_bytes()); // version 2.4
        header.extend_from_slice(&4u16.to_le_bytes());
        header.extend_from_slice(&0i32.to_le_bytes()); // UTC
        header.extend_from_slice(&0u32.to_le_bytes()); // timestamp accuracy
        header.extend_from_slice(&65_535u32.to_le_bytes()); // snap length
        header.extend_from_slice(&1u32.to_le_bytes()); // Ethernet
        out.write_all(&header)?;
        Ok(Self { out })
    }

    /// One frame, captured whole, at `seconds` + `micros`.
    pub fn write(&mut self, seconds: u32, micros: u32, frame: &[u8]) -> io::Result<()> {
        let len = u32::try_from(frame.len()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let mut record = [0u8; 16];
        record[0..4].copy_from_slice(&seconds.to_le_bytes());
        record[4..8].copy_from_slice(&micros.to_le_bytes());
        record[8..12].copy_from_slice(&len.to_le_bytes());
        record[12..16].copy_from_slice(&len.to_le_bytes());
        self.out.write_all(&record)?;
        self.out.write_all(frame)
    }

    pub fn into_inner(self) -> W {
        self.out
    }
}

/// A file of `frames`, timestamps increasing with the index.
pub fn write_file(path: &Path, frames: &[Vec<u8>]) -> io::Result<()> {
    let mut w = PcapWriter::new(io::BufWriter::new(std::fs::File::create(path)?))?;
    for (i, f) in (0u32..).zip(frames) {
        w.write(i / 1000, i % 1000, f)?;
    }
    w.into_inner().flush()
}
