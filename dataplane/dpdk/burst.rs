//! Bursts of received packet buffers, the unit of work of a poll-mode worker.

use std::ptr::NonNull;

use super::{sys, PortId, QueueId};
use crate::pipeline::PacketBuf;

/// Packets per RX/TX burst.
pub const BURST_SIZE: usize = 32;

/// Up to [`BURST_SIZE`] mbufs owned by one worker. Whatever it still holds when dropped goes
/// back to its pool in one bulk call.
///
/// A `Burst` is not `Send`: it lives and dies on the lcore that received it.
pub struct Burst {
    pkts: [*mut sys::rte_mbuf; BURST_SIZE],
    len: usize,
}

impl Default for Burst {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Burst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Burst").field("len", &self.len).finish()
    }
}

/// Bytes of the first segment of `m`.
///
/// # Safety
/// `m` must be a valid mbuf owned by the caller.
#[inline]
unsafe fn segment(m: *mut sys::rte_mbuf) -> (*mut u8, usize) {
    // SAFETY: the caller guarantees `m` is valid; data_off + data_len lie inside buf_addr's
    // buffer by the mbuf invariants DPDK maintains.
    unsafe {
        let base = (*m).buf_addr.cast::<u8>().add(usize::from((*m).data_off));
        (base, usize::from((*m).data_len))
    }
}

impl Burst {
    pub const fn new() -> Self {
        Self {
            pkts: [std::ptr::null_mut(); BURST_SIZE],
            len: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Receives into the free room of this burst from one RX queue; returns how many arrived.
    #[inline]
    pub fn rx(&mut self, port: PortId, queue: QueueId) -> usize {
        let room = BURST_SIZE - self.len;
        #[allow(clippy::cast_possible_truncation)] // room <= BURST_SIZE (32)
        let room = room as u16;
        // SAFETY: the pointer is to `room` writable slots at the end of `pkts`; the driver writes at
        // most `room` mbuf pointers, which this burst then owns.
        let n = unsafe {
            sys::sy_rx_burst(port.0, queue.0, self.pkts.as_mut_ptr().add(self.len), room)
        };
        self.len += usize::from(n);
        usize::from(n)
    }

    /// Appends a new mbuf from the pool named `pool` holding a copy of `bytes` (a frame the
    /// appliance originates). `false` when the burst is full, the frame longer than 64 KiB, or
    /// the pool has no such pool, buffer or room.
    pub fn push_copy(&mut self, pool: &std::ffi::CStr, bytes: &[u8]) -> bool {
        if self.len == BURST_SIZE {
            return false;
        }
        let Ok(len) = u16::try_from(bytes.len()) else {
            return false;
        };
        // SAFETY: `pool` is a valid C string and `bytes` readable for `len` bytes; the shim looks
        // the pool up by name (NULL when there is none) and returns a new mbuf this burst owns,
        // or NULL.
        let m = unsafe { sys::sy_mbuf_from_bytes(pool.as_ptr(), bytes.as_ptr(), len) };
        if m.is_null() {
            return false;
        }
        self.pkts[self.len] = m;
        self.len += 1;
        true
    }

    /// Sends everything held on one TX queue, retrying up to `retries` more times while the queue
    /// is full. What still did not fit is freed. Returns `(sent, dropped)`.
    #[inline]
    pub fn tx(&mut self, port: PortId, queue: QueueId, retries: u32) -> (usize, usize) {
        let mut sent = 0usize;
        let mut attempts = 0u32;
        while sent < self.len {
            #[allow(clippy::cast_possible_truncation)] // len <= BURST_SIZE (32)
            let want = (self.len - sent) as u16;
            // SAFETY: slots [sent, len) hold valid mbufs this burst owns; the driver takes
            // ownership of the first `n` of them and leaves the rest to us.
            let n = unsafe {
                sys::sy_tx_burst(port.0, queue.0, self.pkts.as_mut_ptr().add(sent), want)
            };
            sent += usize::from(n);
            if n == 0 {
                if attempts >= retries {
                    break;
                }
                attempts += 1;
            }
        }
        let dropped = self.len - sent;
        if dropped > 0 {
            self.free_range(sent, self.len);
        }
        self.len = 0;
        (sent, dropped)
    }

    /// Returns every held mbuf to its pool; returns how many.
    #[inline]
    pub fn free_all(&mut self) -> usize {
        let n = self.len;
        self.free_range(0, n);
        self.len = 0;
        n
    }

    #[inline]
    fn free_range(&mut self, from: usize, to: usize) {
        if from >= to {
            return;
        }
        #[allow(clippy::cast_possible_truncation)] // to - from <= BURST_SIZE
        let count = (to - from) as u32;
        // SAFETY: slots [from, to) hold valid mbufs this burst owns; after the call they are gone
        // and the caller resets `len` so they are never touched again.
        unsafe { sys::rte_pktmbuf_free_bulk(self.pkts.as_mut_ptr().add(from), count) };
    }

    /// The held packets as [`PacketBuf`]s for the pipeline.
    #[inline]
    pub fn packets_mut(&mut self) -> &mut [PacketRef] {
        let len = self.len;
        // SAFETY: PacketRef is repr(transparent) over NonNull<rte_mbuf>, which has the layout of
        // *mut rte_mbuf; slots [0, len) hold non-null mbufs this burst owns. The slice borrows
        // self mutably, so the burst cannot free or move them meanwhile.
        unsafe { std::slice::from_raw_parts_mut(self.pkts.as_mut_ptr().cast::<PacketRef>(), len) }
    }

    /// Moves every packet to `outs[dest(i)]`, in order, or frees it when `dest(i)` is `None` or
    /// names a missing or full output. Leaves this burst empty; returns how many were freed.
    #[inline]
    pub fn route(
        &mut self,
        outs: &mut [Burst],
        mut dest: impl FnMut(usize) -> Option<usize>,
    ) -> usize {
        let mut free: [*mut sys::rte_mbuf; BURST_SIZE] = [std::ptr::null_mut(); BURST_SIZE];
        let mut nfree = 0;
        for i in 0..self.len {
            let m = self.pkts[i];
            match dest(i)
                .and_then(|d| outs.get_mut(d))
                .filter(|o| o.len < BURST_SIZE)
            {
                Some(out) => {
                    out.pkts[out.len] = m;
                    out.len += 1;
                }
                None => {
                    free[nfree] = m;
                    nfree += 1;
                }
            }
        }
        self.len = 0;
        if nfree > 0 {
            #[allow(clippy::cast_possible_truncation)] // nfree <= BURST_SIZE
            // SAFETY: the first nfree entries are mbufs this burst owned and no longer references.
            unsafe {
                sys::rte_pktmbuf_free_bulk(free.as_mut_ptr(), nfree as u32);
            }
        }
        nfree
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.free_all();
    }
}

/// A borrowed view of one mbuf of a [`Burst`], as the pipeline's [`PacketBuf`].
///
/// Only the first segment is visible; [`PacketRef::is_contiguous`] says whether that is the whole
/// packet (the poll loop drops multi-segment packets before the pipeline sees them).
#[repr(transparent)]
pub struct PacketRef(NonNull<sys::rte_mbuf>);

impl std::fmt::Debug for PacketRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PacketRef")
            .field("len", &self.data().len())
            .finish()
    }
}

impl PacketRef {
    #[inline]
    fn raw(&self) -> &sys::rte_mbuf {
        // SAFETY: a PacketRef only exists inside a Burst's slice of owned, valid mbufs.
        unsafe { self.0.as_ref() }
    }

    #[inline]
    fn raw_mut(&mut self) -> &mut sys::rte_mbuf {
        // SAFETY: as in `raw`; &mut self gives exclusive access to this mbuf's header.
        unsafe { self.0.as_mut() }
    }

    /// Whether the packet is a single segment (all of it is in `data()`).
    #[inline]
    pub fn is_contiguous(&self) -> bool {
        let m = self.raw();
        m.nb_segs == 1 && m.pkt_len == u32::from(m.data_len)
    }
}

impl PacketBuf for PacketRef {
    const PREFETCH: bool = true;

    #[inline(always)]
    fn prefetch(addr: *const u8) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch is only a hint: it never faults and never dereferences `addr` in
        // a way the program can observe, whatever the address.
        unsafe {
            core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_T0 }>(addr.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = addr;
    }

    #[inline]
    fn data(&self) -> &[u8] {
        // SAFETY: the mbuf is valid (see `raw`); the slice borrows self.
        unsafe {
            let (p, n) = segment(self.0.as_ptr());
            std::slice::from_raw_parts(p, n)
        }
    }

    #[inline]
    fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`; &mut self makes this the only view of the bytes.
        unsafe {
            let (p, n) = segment(self.0.as_ptr());
            std::slice::from_raw_parts_mut(p, n)
        }
    }

    #[inline]
    fn prepend(&mut self, n: usize) -> bool {
        let m = self.raw_mut();
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        if n16 > m.data_off {
            return false;
        }
        m.data_off -= n16;
        m.data_len += n16;
        m.pkt_len += u32::from(n16);
        true
    }

    #[inline]
    fn adj(&mut self, n: usize) -> bool {
        let m = self.raw_mut();
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        if n16 > m.data_len {
            return false;
        }
        m.data_off += n16;
        m.data_len -= n16;
        m.pkt_len -= u32::from(n16);
        true
    }

    #[inline]
    fn truncate(&mut self, len: usize) {
        let m = self.raw_mut();
        if let Ok(len16) = u16::try_from(len) {
            if len16 < m.data_len {
                m.pkt_len -= u32::from(m.data_len - len16);
                m.data_len = len16;
            }
        }
    }

    #[inline]
    fn append(&mut self, n: usize) -> bool {
        let m = self.raw_mut();
        let Ok(n16) = u16::try_from(n) else {
            return false;
        };
        let used = u32::from(m.data_off) + u32::from(m.data_len);
        if used + u32::from(n16) > u32::from(m.buf_len) {
            return false;
        }
        m.data_len += n16;
        m.pkt_len += u32::from(n16);
        true
    }
}
