//! Packet-buffer pools.

use std::ffi::CString;
use std::ptr::NonNull;

use super::{sys, Error, Result};

/// A pool of packet buffers (`rte_pktmbuf_pool_create`) on one NUMA socket.
///
/// Freed on drop; drop it only after every port using it has been stopped.
#[derive(Debug)]
pub struct Mempool {
    raw: NonNull<sys::rte_mempool>,
    name: String,
}

// SAFETY: a DPDK mempool is designed for concurrent use from many lcores (per-lcore caches plus a
// lock-free ring); the pointer is only passed back into DPDK.
unsafe impl Send for Mempool {}
// SAFETY: see Send; no method takes &mut access to shared state on the Rust side.
unsafe impl Sync for Mempool {}

impl Mempool {
    /// Creates a pool of `mbufs` buffers with `data_room` bytes each (headroom included),
    /// a per-lcore cache of `cache`, on `socket`.
    pub fn create(name: &str, mbufs: u32, cache: u32, data_room: u16, socket: i32) -> Result<Self> {
        let op = format!("rte_pktmbuf_pool_create({name}, {mbufs} mbufs)");
        let cname = CString::new(name).map_err(|_| Error::other(op.clone(), "NUL in name"))?;
        // SAFETY: cname is a valid C string; the other arguments are plain values.
        let raw = unsafe {
            sys::rte_pktmbuf_pool_create(cname.as_ptr(), mbufs, cache, 0, data_room, socket)
        };
        let raw = NonNull::new(raw).ok_or_else(|| Error::last(op))?;
        Ok(Self {
            raw,
            name: name.to_owned(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Buffers currently free in the pool (approximate while workers run).
    pub fn available(&self) -> u32 {
        // SAFETY: the pool is alive for as long as self.
        unsafe { sys::rte_mempool_avail_count(self.raw.as_ptr()) }
    }

    pub(crate) fn as_ptr(&self) -> *mut sys::rte_mempool {
        self.raw.as_ptr()
    }
}

impl Drop for Mempool {
    fn drop(&mut self) {
        // SAFETY: the pool was created by rte_pktmbuf_pool_create and is freed once.
        unsafe { sys::rte_mempool_free(self.raw.as_ptr()) }
    }
}
