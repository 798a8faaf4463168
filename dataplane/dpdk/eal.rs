//! The environment abstraction layer: init, cleanup, lcores and launching work on them.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

use super::{sys, Error, Result};

/// An EAL logical core. Worker lcores are pinned to their CPU by the EAL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LcoreId(pub u32);

impl LcoreId {
    /// The NUMA socket of this lcore's CPU.
    pub fn socket(self) -> u32 {
        // SAFETY: plain lookup in the EAL's lcore config; valid ids come from the EAL itself.
        unsafe { sys::rte_lcore_to_socket_id(self.0) }
    }
}

/// The initialised EAL. Dropping it runs `rte_eal_cleanup`, which releases hugepage memory,
/// then removes the EAL's runtime directory (`/var/run/dpdk/<file prefix>`); drop ports and
/// mempools first.
#[derive(Debug)]
pub struct Eal {
    /// The runtime directory and whether only an empty one may be removed (an `--in-memory`
    /// process given a prefix by its caller may share that prefix with a process that is not in
    /// memory).
    runtime_dir: Option<(PathBuf, bool)>,
}

impl Eal {
    /// Initialises the EAL with `args` (argv\[0\] first, as on a command line).
    ///
    /// The EAL may be initialised once per process; a second call fails with `EALREADY`.
    ///
    /// A process that runs `--in-memory` without a `--file-prefix` gets its own prefix
    /// (`switchyard-<pid>`): DPDK still creates a runtime directory for its telemetry socket,
    /// and processes sharing the default one (`rte`) could not remove it without racing each
    /// other's socket.
    pub fn init(args: &[String]) -> Result<Self> {
        let in_memory = args.iter().any(|a| a == "--in-memory");
        let has_prefix = args.iter().any(|a| a.starts_with("--file-prefix"));
        let mut args = args.to_vec();
        if in_memory && !has_prefix {
            args.push(format!("--file-prefix=switchyard-{}", std::process::id()));
        }
        let owned: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_str()))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| Error::other("rte_eal_init", "an EAL argument contains a NUL byte"))?;
        // rte_eal_init may permute argv; give it its own array of pointers into `owned`, which
        // outlives the call. The EAL keeps no reference to argv after returning.
        let mut argv: Vec<*mut c_char> = owned.iter().map(|s| s.as_ptr().cast_mut()).collect();
        let argc = c_int::try_from(argv.len())
            .map_err(|_| Error::other("rte_eal_init", "too many EAL arguments"))?;
        // SAFETY: argv holds argc valid NUL-terminated strings that live until after the call.
        let ret = unsafe { sys::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            return Err(Error::last("rte_eal_init"));
        }
        // SAFETY: valid after a successful rte_eal_init; the EAL returns a pointer to its own
        // NUL-terminated buffer, which lives until rte_eal_cleanup. It is copied at once.
        let dir = unsafe { sys::rte_eal_get_runtime_dir() };
        let runtime_dir = (!dir.is_null()).then(|| {
            // SAFETY: non-null, NUL-terminated, owned by the EAL and not freed before cleanup.
            let path = unsafe { CStr::from_ptr(dir) };
            let only_if_empty = in_memory && has_prefix;
            (
                PathBuf::from(path.to_string_lossy().into_owned()),
                only_if_empty,
            )
        });
        Ok(Self { runtime_dir })
    }

    /// The EAL's runtime directory (`/var/run/dpdk/<file prefix>` as root), removed on drop.
    pub fn runtime_dir(&self) -> Option<&std::path::Path> {
        self.runtime_dir.as_ref().map(|(p, _)| p.as_path())
    }

    /// The main lcore (the thread that called [`Eal::init`]).
    pub fn main_lcore(&self) -> LcoreId {
        // SAFETY: valid after a successful rte_eal_init.
        LcoreId(unsafe { sys::rte_get_main_lcore() })
    }

    /// Every enabled lcore except the main one, in ascending order: one worker each.
    pub fn worker_lcores(&self) -> Vec<LcoreId> {
        let mut out = Vec::new();
        let mut i = u32::MAX; // rte_get_next_lcore(-1, ...) starts from the first lcore
        loop {
            // SAFETY: valid after rte_eal_init; skip_main = 1, wrap = 0 returns RTE_MAX_LCORE at the end.
            i = unsafe { sys::rte_get_next_lcore(i, 1, 0) };
            if i >= sys::RTE_MAX_LCORE {
                break;
            }
            out.push(LcoreId(i));
        }
        out
    }

    /// How many Ethernet ports the EAL probed (PCI devices and `--vdev`s).
    pub fn port_count(&self) -> u16 {
        // SAFETY: valid after rte_eal_init.
        unsafe { sys::rte_eth_dev_count_avail() }
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: called once, from the main lcore, after workers have returned.
        unsafe {
            sys::rte_eal_cleanup();
        }
        // The EAL leaves its runtime directory (config, fbarray files, the mp socket) behind
        // even after a clean exit; nothing needs it once cleanup has run.
        if let Some((dir, only_if_empty)) = self.runtime_dir.take() {
            let removed = if only_if_empty {
                std::fs::remove_dir(&dir)
            } else {
                std::fs::remove_dir_all(&dir)
            };
            if let Err(e) = removed {
                if e.kind() != std::io::ErrorKind::NotFound && !only_if_empty {
                    tracing::warn!(
                        "cannot remove the EAL runtime directory {}: {e}",
                        dir.display()
                    );
                }
            }
        }
    }
}

type Job = Box<dyn FnOnce() -> i32 + Send + 'static>;

extern "C" fn trampoline(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Box<Job> leaked by `launch` for exactly this call; it is reclaimed once.
    let job: Box<Job> = unsafe { Box::from_raw(arg.cast::<Job>()) };
    // A panic must not unwind into C; report it as a failed lcore instead.
    catch_unwind(AssertUnwindSafe(job)).unwrap_or(-1)
}

/// Runs `job` on worker lcore `lcore`. Its return value comes back from [`wait_lcore`].
pub fn launch<F>(lcore: LcoreId, job: F) -> Result<()>
where
    F: FnOnce() -> i32 + Send + 'static,
{
    let job: Box<Job> = Box::new(Box::new(job));
    let arg = Box::into_raw(job).cast::<c_void>();
    // SAFETY: trampoline has the lcore_function_t signature and takes ownership of `arg`.
    let ret = unsafe { sys::rte_eal_remote_launch(Some(trampoline), arg, lcore.0) };
    if ret != 0 {
        // SAFETY: the launch failed, so the lcore never received `arg`; reclaim it here.
        drop(unsafe { Box::from_raw(arg.cast::<Job>()) });
        return Err(Error::from_code(
            format!("rte_eal_remote_launch(lcore {})", lcore.0),
            ret,
        ));
    }
    Ok(())
}

/// Waits for the job on `lcore` to finish and returns its result.
pub fn wait_lcore(lcore: LcoreId) -> i32 {
    // SAFETY: blocks until the lcore is idle; valid for any lcore id after rte_eal_init.
    unsafe { sys::rte_eal_wait_lcore(lcore.0) }
}
