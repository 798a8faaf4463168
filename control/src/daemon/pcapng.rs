//! A pcapng writer for live captures: one section header, one Ethernet interface with
//! nanosecond timestamps, and an enhanced packet block per packet (with an `opt_comment`
//! naming the drop reason when there is one). Little-endian, as the format allows; tcpdump and
//! Wireshark read it. Written here rather than taken from a crate: three block types, and the
//! registry's pcapng writers are unmaintained or pull in far more than this needs.

use std::io::{self, Write};

const SHB: u32 = 0x0A0D_0D0A;
const IDB: u32 = 0x0000_0001;
const EPB: u32 = 0x0000_0006;
const LINKTYPE_ETHERNET: u16 = 1;
const OPT_END: u16 = 0;
const OPT_COMMENT: u16 = 1;
const IF_NAME: u16 = 2;
const IF_TSRESOL: u16 = 9;
const SHB_USERAPPL: u16 = 4;

fn pad4(n: usize) -> usize {
    (4 - n % 4) % 4
}

fn option(body: &mut Vec<u8>, code: u16, value: &[u8]) {
    body.extend_from_slice(&code.to_le_bytes());
    body.extend_from_slice(&u16::try_from(value.len()).unwrap_or(u16::MAX).to_le_bytes());
    body.extend_from_slice(&value[..value.len().min(usize::from(u16::MAX))]);
    body.resize(body.len() + pad4(value.len()), 0);
}

fn end_options(body: &mut Vec<u8>) {
    body.extend_from_slice(&OPT_END.to_le_bytes());
    body.extend_from_slice(&0u16.to_le_bytes());
}

/// Writes pcapng to `W`.
#[derive(Debug)]
pub struct Writer<W: Write> {
    out: W,
    block: Vec<u8>,
}

impl<W: Write> Writer<W> {
    /// Writes the section header and the interface (Ethernet, `snaplen`, nanoseconds).
    ///
    /// # Errors
    /// Writing failed.
    pub fn new(out: W, snaplen: u16) -> io::Result<Self> {
        let mut w = Self {
            out,
            block: Vec::with_capacity(4096),
        };
        let mut body = Vec::new();
        body.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        body.extend_from_slice(&1u16.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&(-1i64).to_le_bytes()); // section length unknown
        option(&mut body, SHB_USERAPPL, b"switchyard-control capture");
        end_options(&mut body);
        w.block(SHB, &body)?;
        let mut body = Vec::new();
        body.extend_from_slice(&LINKTYPE_ETHERNET.to_le_bytes());
        body.extend_from_slice(&0u16.to_le_bytes());
        body.extend_from_slice(&u32::from(snaplen).to_le_bytes());
        option(&mut body, IF_NAME, b"switchyard");
        option(&mut body, IF_TSRESOL, &[9]);
        end_options(&mut body);
        w.block(IDB, &body)?;
        Ok(w)
    }

    fn block(&mut self, kind: u32, body: &[u8]) -> io::Result<u64> {
        let total = u32::try_from(12 + body.len())
            .map_err(|_| io::Error::other("pcapng block too large"))?;
        self.block.clear();
        self.block.extend_from_slice(&kind.to_le_bytes());
        self.block.extend_from_slice(&total.to_le_bytes());
        self.block.extend_from_slice(body);
        self.block.extend_from_slice(&total.to_le_bytes());
        self.out.write_all(&self.block)?;
        Ok(u64::from(total))
    }

    /// One packet: `data` as captured (cut to the snap length), `wire` its length on the wire,
    /// `time_ns` since the Unix epoch. Returns the bytes written.
    ///
    /// # Errors
    /// Writing failed.
    pub fn packet(
        &mut self,
        time_ns: u64,
        wire: u32,
        data: &[u8],
        comment: Option<&str>,
    ) -> io::Result<u64> {
        let mut body = Vec::with_capacity(32 + data.len());
        body.extend_from_slice(&0u32.to_le_bytes()); // interface 0
        #[allow(clippy::cast_possible_truncation)] // the two halves of the timestamp
        {
            body.extend_from_slice(&((time_ns >> 32) as u32).to_le_bytes());
            body.extend_from_slice(&(time_ns as u32).to_le_bytes());
        }
        let captured = u32::try_from(data.len()).map_err(io::Error::other)?;
        body.extend_from_slice(&captured.to_le_bytes());
        body.extend_from_slice(&wire.max(captured).to_le_bytes());
        body.extend_from_slice(data);
        body.resize(body.len() + pad4(data.len()), 0);
        if let Some(c) = comment {
            option(&mut body, OPT_COMMENT, c.as_bytes());
            end_options(&mut body);
        }
        self.block(EPB, &body)
    }

    /// # Errors
    /// Flushing failed.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(n: u8) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2, 0x08, 0x00];
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[3] = 28;
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[10, 0, 0, n]);
        ip[16..20].copy_from_slice(&[203, 0, 113, 10]);
        f.extend_from_slice(&ip);
        f.extend_from_slice(&[0x9c, 0x40, 0x01, 0xbb, 0, 8, 0, 0]);
        f
    }

    /// tcpdump (installed by ci/setup) reads the file back: every packet, the nanosecond
    /// timestamps and the truncation.
    #[test]
    fn tcpdump_reads_what_it_writes() {
        let path = std::env::temp_dir().join(format!("sy-pcapng-{}.pcapng", std::process::id()));
        let mut w = Writer::new(std::fs::File::create(&path).unwrap(), 38).unwrap();
        w.packet(
            1_700_000_000_123_456_789,
            42,
            &frame(1)[..38],
            Some("drop_acl"),
        )
        .unwrap();
        w.packet(1_700_000_001_000_000_000, 42, &frame(2)[..38], None)
            .unwrap();
        w.flush().unwrap();
        drop(w);
        let out = std::process::Command::new("tcpdump")
            .args(["-nn", "-tt", "--nano", "-r"])
            .arg(&path)
            .output()
            .expect("tcpdump is installed by ci/setup");
        let _ = std::fs::remove_file(&path);
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with("1700000000.123456789 IP 10.0.0.1"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("1700000001.000000000 IP 10.0.0.2"),
            "{text}"
        );
    }
}
