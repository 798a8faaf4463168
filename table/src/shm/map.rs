//! The only unsafe code of the crate: mapping the segment file, locking it, reading the clock.
//!
//! Everything here is wrapped in a safe API. The mapping is exposed only as `&SegmentLayout`,
//! a struct made entirely of atomics, so concurrent writes from the other process (or anyone
//! else who can open the file) are defined behaviour and every bit pattern is a valid value.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use super::layout::{Identity, SegmentLayout, SEGMENT_ABI_VERSION, SEGMENT_MAGIC, SEGMENT_SIZE};
use super::{Role, ShmError};

/// `CLOCK_MONOTONIC` in milliseconds: one clock for both processes on a host.
pub fn monotonic_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &raw mut ts) };
    if rc != 0 {
        return 0;
    }
    let secs = u64::try_from(ts.tv_sec).unwrap_or(0);
    let nanos = u64::try_from(ts.tv_nsec).unwrap_or(0);
    secs.saturating_mul(1000).saturating_add(nanos / 1_000_000)
}

const IDENTITY_SIZE: u32 = 64;

/// The segment's mode: read-write for its owner and its group (the processes of one instance
/// share the group), nothing for others.
pub const SEGMENT_MODE: u32 = 0o660;

fn effective_uid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}
const _: () = assert!(IDENTITY_SIZE as usize == size_of::<Identity>());

fn io_err(path: &Path, op: &'static str, source: io::Error) -> ShmError {
    ShmError::Io {
        path: path.to_path_buf(),
        op,
        source,
    }
}

/// Holds an exclusive `flock` on the segment file while the header is checked or initialised.
/// It keeps the raw fd because the `File` moves into the [`Mapping`] while the lock is held;
/// `open_or_create` drops the guard before anything can drop that mapping.
struct FlockGuard(RawFd);

impl FlockGuard {
    fn lock(file: &File) -> io::Result<Self> {
        loop {
            // SAFETY: the fd belongs to an open `File`; flock only takes integers.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                return Ok(Self(file.as_raw_fd()));
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for FlockGuard {
    fn drop(&mut self) {
        // SAFETY: the fd is still open (see the type's doc); an unlock failure would not matter,
        // since closing the file releases the lock anyway.
        unsafe {
            libc::flock(self.0, libc::LOCK_UN);
        }
    }
}

/// A mapped control segment.
pub(crate) struct Mapping {
    base: NonNull<SegmentLayout>,
    file: File,
    path: PathBuf,
    initialised_here: bool,
    /// Device and inode of the file we mapped, to notice it being removed or replaced.
    identity: (u64, u64),
    /// Roles attached through this mapping (OFD locks do not conflict within one open file).
    roles: [AtomicBool; 2],
}

// SAFETY: the mapped memory is only ever accessed through `&SegmentLayout`, whose fields are all
// atomics (Sync), and the mapping stays valid until `Drop`; moving the owner between threads or
// sharing `&Mapping` is therefore as safe as sharing `&SegmentLayout` itself.
unsafe impl Send for Mapping {}
// SAFETY: see `Send` above: all shared access goes through atomics.
unsafe impl Sync for Mapping {}

impl std::fmt::Debug for Mapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mapping")
            .field("path", &self.path)
            .field("initialised_here", &self.initialised_here)
            .finish_non_exhaustive()
    }
}

fn read_identity(file: &File, path: &Path) -> Result<(u64, u32, u64), ShmError> {
    let mut line = [0u8; size_of::<Identity>()];
    file.read_exact_at(&mut line, 0)
        .map_err(|e| io_err(path, "read header", e))?;
    let word = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&line[at..at + 8]);
        u64::from_le_bytes(b)
    };
    let mut v = [0u8; 4];
    v.copy_from_slice(&line[8..12]);
    Ok((word(0), u32::from_le_bytes(v), word(16)))
}

impl Mapping {
    /// Opens (creating with mode 0660 if absent) and maps the segment at `path`, initialising
    /// its header exactly once across racing processes, then checks magic, version and size.
    /// Group read-write is what lets an unprivileged control plane and a root data plane share
    /// it: both run with the instance's group (the package's `switchyard`), or the directory is
    /// setgid to it. A segment others may write is refused.
    pub(crate) fn open_or_create(path: &Path) -> Result<Self, ShmError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .mode(SEGMENT_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)
            .map_err(|e| io_err(path, "open", e))?;
        let meta = file.metadata().map_err(|e| io_err(path, "stat", e))?;
        if !meta.file_type().is_file() {
            return Err(ShmError::NotASegment {
                path: path.to_path_buf(),
                detail: "not a regular file".into(),
            });
        }
        let identity = (meta.dev(), meta.ino());
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o002 != 0 {
            return Err(ShmError::UnsafeMode {
                path: path.to_path_buf(),
                mode,
            });
        }

        let guard = FlockGuard::lock(&file).map_err(|e| io_err(path, "flock", e))?;
        let len = file.metadata().map_err(|e| io_err(path, "stat", e))?.len();
        let expected = SEGMENT_SIZE as u64;
        let magic = if len >= size_of::<Identity>() as u64 {
            let (magic, abi, total) = read_identity(&file, path)?;
            if magic != 0 && magic != SEGMENT_MAGIC {
                return Err(ShmError::NotASegment {
                    path: path.to_path_buf(),
                    detail: format!("magic {magic:#018x}, expected {SEGMENT_MAGIC:#018x}"),
                });
            }
            if magic != 0 && abi != SEGMENT_ABI_VERSION {
                return Err(ShmError::AbiMismatch {
                    path: path.to_path_buf(),
                    found: abi,
                    expected: SEGMENT_ABI_VERSION,
                });
            }
            if magic != 0 && (total != expected || len != expected) {
                return Err(ShmError::SizeMismatch {
                    path: path.to_path_buf(),
                    found: if total == expected { len } else { total },
                    expected,
                });
            }
            magic
        } else {
            0
        };
        let initialise = magic == 0;
        if initialise {
            // Nobody has used the file yet (the magic is written last, under this lock):
            // truncating gives a zero-filled segment of the right size.
            file.set_len(0)
                .and_then(|()| file.set_len(expected))
                .map_err(|e| io_err(path, "resize", e))?;
            // The umask may have narrowed the creation mode: its owner sets it whole.
            if meta.uid() == effective_uid() {
                file.set_permissions(std::fs::Permissions::from_mode(SEGMENT_MODE))
                    .map_err(|e| io_err(path, "chmod", e))?;
            }
        }

        // SAFETY: a fresh shared mapping of `SEGMENT_SIZE` bytes of a file we just checked (or
        // made) to be exactly that long; the kernel picks the (page-aligned) address.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SEGMENT_SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io_err(path, "mmap", io::Error::last_os_error()));
        }
        let Some(base) = NonNull::new(ptr.cast::<SegmentLayout>()) else {
            return Err(io_err(path, "mmap", io::Error::other("null mapping")));
        };
        let map = Self {
            base,
            file,
            path: path.to_path_buf(),
            initialised_here: initialise,
            identity,
            roles: [AtomicBool::new(false), AtomicBool::new(false)],
        };
        if initialise {
            let id = &map.layout().identity;
            id.abi_version.store(SEGMENT_ABI_VERSION, Ordering::Relaxed);
            id.identity_size.store(IDENTITY_SIZE, Ordering::Relaxed);
            id.total_size.store(expected, Ordering::Relaxed);
            id.initialised_by
                .store(u64::from(std::process::id()), Ordering::Relaxed);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
            id.initialised_ms.store(now, Ordering::Relaxed);
            id.magic.store(SEGMENT_MAGIC, Ordering::Release);
        }
        drop(guard);
        Ok(map)
    }

    pub(crate) fn layout(&self) -> &SegmentLayout {
        // SAFETY: `base` points to a live MAP_SHARED mapping of exactly `size_of::<SegmentLayout>`
        // bytes, page-aligned (more than the layout's 128-byte alignment), unmapped only in
        // `Drop`, so it outlives `&self`. Every field of `SegmentLayout` is an atomic integer
        // (or an array/struct of them): interior-mutable, valid for any bit pattern, and safe to
        // access while other threads or processes write it.
        unsafe { self.base.as_ref() }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn initialised_here(&self) -> bool {
        self.initialised_here
    }

    /// Whether the path still names the file we mapped.
    pub(crate) fn is_current(&self) -> bool {
        std::fs::symlink_metadata(&self.path).is_ok_and(|m| (m.dev(), m.ino()) == self.identity)
    }

    fn role_lock(
        &self,
        role: Role,
        command: libc::c_int,
        kind: libc::c_int,
    ) -> io::Result<libc::flock> {
        role_lock(&self.file, role, command, kind)
    }

    /// Takes the role's lock: an open-file-description lock on one byte of the file, released
    /// by the kernel when the process exits however it exits. Returns false when another open
    /// of the file (another process, or another `Segment` in this one) holds it.
    pub(crate) fn try_claim(&self, role: Role) -> Result<bool, ShmError> {
        if self.roles[role.index()].swap(true, Ordering::AcqRel) {
            return Ok(false);
        }
        match self.role_lock(role, libc::F_OFD_SETLK, libc::F_WRLCK) {
            Ok(_) => Ok(true),
            Err(e) => {
                self.roles[role.index()].store(false, Ordering::Release);
                if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) {
                    Ok(false)
                } else {
                    Err(io_err(&self.path, "lock role", e))
                }
            }
        }
    }

    pub(crate) fn release(&self, role: Role) {
        // An unlock can only fail on a closed fd, and closing releases it anyway.
        let _ = self.role_lock(role, libc::F_OFD_SETLK, libc::F_UNLCK);
        self.roles[role.index()].store(false, Ordering::Release);
    }

    /// Whether some process holds the role (this mapping included).
    pub(crate) fn role_held(&self, role: Role) -> bool {
        if self.roles[role.index()].load(Ordering::Acquire) {
            return true;
        }
        match self.role_lock(role, libc::F_OFD_GETLK, libc::F_WRLCK) {
            Ok(fl) => i32::from(fl.l_type) != libc::F_UNLCK,
            Err(_) => false,
        }
    }
}

/// `fcntl` with an open-file-description lock request on the role's byte of `file`.
fn role_lock(
    file: &File,
    role: Role,
    command: libc::c_int,
    kind: libc::c_int,
) -> io::Result<libc::flock> {
    // SAFETY: `flock` is a plain C struct of integers; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    #[allow(clippy::cast_possible_truncation)] // F_WRLCK/F_UNLCK/SEEK_SET are tiny constants
    {
        fl.l_type = kind as libc::c_short;
        fl.l_whence = libc::SEEK_SET as libc::c_short;
    }
    fl.l_start = libc::off_t::from(role.lock_byte());
    fl.l_len = 1;
    fl.l_pid = 0;
    // SAFETY: the fd is open for the duration of the call (it borrows `file`); `fl` is a valid
    // flock struct that F_OFD_SETLK/F_OFD_GETLK read and (for GETLK) write.
    let rc = unsafe { libc::fcntl(file.as_raw_fd(), command, &raw mut fl) };
    if rc == 0 {
        Ok(fl)
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Whether some process holds `role`'s lock on `path` (a segment file, or a `/proc/PID/map_files`
/// entry naming a removed one), without mapping it or checking its header: what is asked of a
/// segment whose header is bad, or that was removed while mapped. `None` when the file cannot
/// be opened.
pub(crate) fn role_held_at(path: &Path, role: Role) -> Option<bool> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    // Asking about a write lock sees any lock another open file description holds.
    let fl = role_lock(&file, role, libc::F_OFD_GETLK, libc::F_WRLCK).ok()?;
    Some(i32::from(fl.l_type) != libc::F_UNLCK)
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `base` came from a successful mmap of `SEGMENT_SIZE` bytes; every reference
        // handed out by `layout` borrows `self`, so none outlives this call.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), SEGMENT_SIZE);
        }
    }
}

/// A shared mapping of a whole file as 64-bit atomic words: the capture files
/// ([`super::capture`]), whose layout is described by offsets rather than a struct.
pub(crate) struct WordMap {
    base: NonNull<AtomicU64>,
    words: usize,
    _file: File,
}

// SAFETY: the mapped memory is only reached through `&[AtomicU64]` (Sync) and stays mapped until
// `Drop`, so the owner may move between threads and be shared like the slice itself.
unsafe impl Send for WordMap {}
// SAFETY: see `Send`: all shared access goes through atomics.
unsafe impl Sync for WordMap {}

impl std::fmt::Debug for WordMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WordMap")
            .field("words", &self.words)
            .finish_non_exhaustive()
    }
}

impl WordMap {
    /// Creates `path` (mode 0600; it must not exist) of `words` zeroed words and maps it.
    pub(crate) fn create(path: &Path, words: usize) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(path)?;
        file.set_len(u64::try_from(words * 8).map_err(io::Error::other)?)?;
        Self::map(file, words)
    }

    /// Maps an existing regular file of at most `max_words` words that no other user may write.
    pub(crate) fn open(path: &Path, max_words: usize) -> io::Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)?;
        let meta = file.metadata()?;
        if !meta.file_type().is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        if meta.permissions().mode() & 0o002 != 0 {
            return Err(io::Error::other("other users may write it"));
        }
        let len = usize::try_from(meta.len()).map_err(io::Error::other)?;
        if len == 0 || len % 8 != 0 || len / 8 > max_words {
            return Err(io::Error::other(format!(
                "{len} bytes: expected a multiple of 8 up to {}",
                max_words * 8
            )));
        }
        Self::map(file, len / 8)
    }

    fn map(file: File, words: usize) -> io::Result<Self> {
        // SAFETY: a fresh shared mapping of `words * 8` bytes of a file that long (checked or
        // just sized by the caller); the kernel picks the page-aligned address. A file truncated
        // later by someone else would fault on access: the files live in a directory only the
        // instance's processes write, and are never truncated by them.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                words * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(ptr.cast::<AtomicU64>()).ok_or(io::Error::other("null mapping"))?;
        Ok(Self {
            base,
            words,
            _file: file,
        })
    }

    pub(crate) fn words(&self) -> &[AtomicU64] {
        // SAFETY: `base` is a live, page-aligned MAP_SHARED mapping of `words * 8` bytes,
        // unmapped only in `Drop` (so it outlives `&self`); `AtomicU64` is valid for any bit
        // pattern and may be written concurrently by other threads and processes.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.words) }
    }
}

impl Drop for WordMap {
    fn drop(&mut self) {
        // SAFETY: `base` came from a successful mmap of `words * 8` bytes; every slice handed
        // out by `words` borrows `self`, so none outlives this call.
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.words * 8);
        }
    }
}
