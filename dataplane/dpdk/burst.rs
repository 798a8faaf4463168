//! Bursts of received packet buffers, the unit of work of a poll-mode worker.

use std::ptr::NonNull;

use super::{sys, Mempool, PortId, QueueId};

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

    /// The bytes of packet `i` (first segment), or `None` when `i` is out of range.
    #[inline]
    pub fn data(&self, i: usize) -> Option<&[u8]> {
        let m = *self.pkts.get(i..self.len)?.first()?;
        // SAFETY: index < len, so `m` is a valid mbuf owned by this burst; the slice borrows self.
        Some(unsafe {
            let (p, n) = segment(m);
            std::slice::from_raw_parts(p, n)
        })
    }

    /// The bytes of packet `i` (first segment), writable.
    #[inline]
    pub fn data_mut(&mut self, i: usize) -> Option<&mut [u8]> {
        let m = *self.pkts.get(i..self.len)?.first()?;
        // SAFETY: as in `data`; the exclusive borrow of self makes this the only view of `m`.
        Some(unsafe {
            let (p, n) = segment(m);
            std::slice::from_raw_parts_mut(p, n)
        })
    }

    /// Moves packet `i` out of the burst (the last packet takes its slot; order is not kept).
    pub fn swap_remove(&mut self, i: usize) -> Option<Mbuf> {
        if i >= self.len {
            return None;
        }
        let m = self.pkts[i];
        self.len -= 1;
        self.pkts[i] = self.pkts[self.len];
        NonNull::new(m).map(Mbuf)
    }

    /// Appends an mbuf; gives it back when the burst is full.
    pub fn push(&mut self, m: Mbuf) -> Result<(), Mbuf> {
        if self.len == BURST_SIZE {
            return Err(m);
        }
        self.pkts[self.len] = m.into_raw();
        self.len += 1;
        Ok(())
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        self.free_all();
    }
}

/// One owned packet buffer; returned to its pool on drop.
pub struct Mbuf(NonNull<sys::rte_mbuf>);

impl std::fmt::Debug for Mbuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mbuf")
            .field("len", &self.data().len())
            .finish()
    }
}

impl Mbuf {
    /// Takes a fresh buffer from `pool`; `None` when the pool is empty.
    pub fn alloc(pool: &Mempool) -> Option<Self> {
        // SAFETY: the pool is alive; a non-null result is a fresh mbuf we now own.
        NonNull::new(unsafe { sys::sy_pktmbuf_alloc(pool.as_ptr()) }).map(Self)
    }

    /// Appends `len` bytes at the tail; `None` when the buffer has no room.
    pub fn append(&mut self, len: u16) -> Option<&mut [u8]> {
        // SAFETY: self owns a valid mbuf; on success the returned pointer addresses `len` bytes
        // inside its buffer, borrowed for as long as &mut self.
        let p = unsafe { sys::sy_pktmbuf_append(self.0.as_ptr(), len) };
        if p.is_null() {
            return None;
        }
        // SAFETY: see above.
        Some(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), usize::from(len)) })
    }

    pub fn data(&self) -> &[u8] {
        // SAFETY: self owns a valid mbuf; the slice borrows self.
        unsafe {
            let (p, n) = segment(self.0.as_ptr());
            std::slice::from_raw_parts(p, n)
        }
    }

    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: self owns a valid mbuf; the exclusive borrow makes this the only view.
        unsafe {
            let (p, n) = segment(self.0.as_ptr());
            std::slice::from_raw_parts_mut(p, n)
        }
    }

    fn into_raw(self) -> *mut sys::rte_mbuf {
        let p = self.0.as_ptr();
        std::mem::forget(self);
        p
    }
}

impl Drop for Mbuf {
    fn drop(&mut self) {
        // SAFETY: self owns the mbuf and frees it exactly once.
        unsafe { sys::sy_pktmbuf_free(self.0.as_ptr()) }
    }
}
