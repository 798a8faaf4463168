//! The packet pipeline: what a worker does to each received packet.
//!
//! It is pure Rust over a [`PacketBuf`] (an mbuf in the appliance, a `Vec` with headroom in
//! tests), so every stage runs in-process in tests and fuzzing exactly as on the NIC.

/// A packet's bytes plus the headroom in front of them, as an mbuf has.
pub trait PacketBuf {
    /// The frame, from the Ethernet header on.
    fn data(&self) -> &[u8];
    fn data_mut(&mut self) -> &mut [u8];
    /// Grows the frame at the front by `n` bytes (taken from the headroom); false when the
    /// headroom is too small, in which case nothing changed.
    fn prepend(&mut self, n: usize) -> bool;
    /// Removes `n` bytes from the front; false when the frame is shorter.
    fn adj(&mut self, n: usize) -> bool;
    /// Cuts the frame to `len` bytes (no-op when already shorter or equal).
    fn truncate(&mut self, len: usize);
    /// Grows the frame at the tail by `n` bytes; false when there is no tailroom.
    fn append(&mut self, n: usize) -> bool;
}

/// Which appliance port (index into the appliance's port list) a packet leaves on.
pub type PortIndex = u16;

/// What happens to a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Transmit the (rewritten) frame on this port.
    Forward(PortIndex),
    /// Hand to the host kernel through the exception-path port.
    Kernel,
    /// Drop; the reason has already been counted.
    Drop,
}

/// How ports map to the policy's interfaces and roles, fixed for the life of a run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PortMap {
    /// For each appliance port: the name of the policy interface bound to it (`None` for the
    /// exception-path port).
    pub interface: Vec<Option<String>>,
    /// The port encapsulated traffic to backends leaves on; `None` = back out of the RX port
    /// (one-armed).
    pub backend: Option<PortIndex>,
    /// The exception-path port to the kernel, if any.
    pub kernel: Option<PortIndex>,
}

/// A `Vec`-backed [`PacketBuf`] with headroom, for tests and fuzzing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VecPacket {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl VecPacket {
    /// Headroom an mbuf has by default (`RTE_PKTMBUF_HEADROOM`).
    pub const HEADROOM: usize = 128;
    /// Room after the data, like a 2048-byte mbuf data room.
    pub const CAPACITY: usize = 2048;

    pub fn new(frame: &[u8]) -> Self {
        let cap = (Self::HEADROOM + frame.len()).max(Self::HEADROOM + Self::CAPACITY);
        let mut buf = vec![0u8; cap];
        buf[Self::HEADROOM..Self::HEADROOM + frame.len()].copy_from_slice(frame);
        Self {
            buf,
            start: Self::HEADROOM,
            end: Self::HEADROOM + frame.len(),
        }
    }
}

impl PacketBuf for VecPacket {
    fn data(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
    fn data_mut(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }
    fn prepend(&mut self, n: usize) -> bool {
        if n > self.start {
            return false;
        }
        self.start -= n;
        true
    }
    fn adj(&mut self, n: usize) -> bool {
        if n > self.end - self.start {
            return false;
        }
        self.start += n;
        true
    }
    fn truncate(&mut self, len: usize) {
        if len < self.end - self.start {
            self.end = self.start + len;
        }
    }
    fn append(&mut self, n: usize) -> bool {
        if self.end + n > self.buf.len() {
            return false;
        }
        self.end += n;
        true
    }
}

#[cfg(test)]
mod vec_packet_tests {
    use super::*;

    #[test]
    fn headroom_and_tailroom_behave_like_an_mbuf() {
        let mut p = VecPacket::new(&[1, 2, 3]);
        assert!(p.prepend(2));
        assert_eq!(p.data(), &[0, 0, 1, 2, 3]);
        assert!(!p.prepend(VecPacket::HEADROOM));
        assert!(p.adj(3));
        assert_eq!(p.data(), &[2, 3]);
        assert!(!p.adj(3));
        p.truncate(1);
        assert_eq!(p.data(), &[2]);
        assert!(p.append(1));
        assert_eq!(p.data().len(), 2);
    }
}
