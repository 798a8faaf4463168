//! Where the segment and the generation blobs live, and how blobs are written and read.
//!
//! Both live in one directory (`/dev/shm`, or `$SWITCHYARD_SHM_DIR`, or a directory passed
//! explicitly): `switchyard-<instance>.ctl` is the control segment, and
//! `switchyard-<instance>.gen-<N>` holds the encoded blob of generation `N`. The control plane
//! writes a blob to `….gen-<N>.tmp-<pid>` and renames it into place, so a reader never sees a
//! half-written blob under the final name. Every file is created with mode 0640 (owner writes,
//! the instance's group reads).

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use super::message::RejectReason;
use super::ShmError;

/// Environment variable overriding the directory of the segment and the blobs.
pub const SHM_DIR_ENV: &str = "SWITCHYARD_SHM_DIR";
pub const DEFAULT_SHM_DIR: &str = "/dev/shm";
pub const DEFAULT_INSTANCE: &str = "default";
/// Largest blob the data plane reads (1 GiB): a bound on an untrusted size.
pub const MAX_BLOB_SIZE: u64 = 1 << 30;
/// Longest instance name.
pub const MAX_INSTANCE_LEN: usize = 64;

/// The directory of the segment and blobs: `$SWITCHYARD_SHM_DIR` if set, else `/dev/shm`.
pub fn shm_dir() -> PathBuf {
    std::env::var_os(SHM_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SHM_DIR), PathBuf::from)
}

/// Instance names become file names: 1–64 of `[A-Za-z0-9_-]`.
pub fn check_instance(instance: &str) -> Result<(), ShmError> {
    let ok = !instance.is_empty()
        && instance.len() <= MAX_INSTANCE_LEN
        && instance
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(ShmError::InvalidInstance {
            instance: instance.to_owned(),
        })
    }
}

/// `<shm_dir()>/switchyard-<instance>.ctl`.
pub fn segment_path(instance: &str) -> PathBuf {
    segment_path_in(&shm_dir(), instance)
}

pub fn segment_path_in(dir: &Path, instance: &str) -> PathBuf {
    dir.join(format!("switchyard-{instance}.ctl"))
}

/// `<dir>/switchyard-<instance>.gen-<generation>`.
pub fn generation_path_in(dir: &Path, instance: &str, generation: u64) -> PathBuf {
    dir.join(format!("switchyard-{instance}.gen-{generation}"))
}

/// A generation file's mode: written by its owner (the control plane), read by the instance's
/// group (the data plane), nothing for others.
pub const GENERATION_MODE: u32 = 0o640;

/// Writes `blob` as generation `generation`'s file: temp file (mode [`GENERATION_MODE`], whatever
/// the umask) then rename.
pub fn write_generation_file(
    dir: &Path,
    instance: &str,
    generation: u64,
    blob: &[u8],
) -> io::Result<PathBuf> {
    let path = generation_path_in(dir, instance, generation);
    let tmp = dir.join(format!(
        "switchyard-{instance}.gen-{generation}.tmp-{}",
        std::process::id()
    ));
    // A leftover of an earlier attempt by a process with our pid: it was never renamed.
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(GENERATION_MODE)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)?;
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
            GENERATION_MODE,
        ))?;
        f.write_all(blob)?;
        fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(path)
}

/// Why a blob file could not be read.
#[derive(Debug)]
pub enum BlobError {
    Missing,
    TooLarge { size: u64 },
    Unreadable(io::Error),
}

impl BlobError {
    pub fn reason(&self) -> RejectReason {
        match self {
            Self::Missing => RejectReason::BlobMissing,
            Self::TooLarge { .. } => RejectReason::BlobTooLarge,
            Self::Unreadable(_) => RejectReason::BlobUnreadable,
        }
    }
}

impl std::fmt::Display for BlobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("blob file missing"),
            Self::TooLarge { size } => {
                write!(f, "blob file is {size} bytes, limit {MAX_BLOB_SIZE}")
            }
            Self::Unreadable(e) => write!(f, "blob file unreadable: {e}"),
        }
    }
}

impl std::error::Error for BlobError {}

/// Reads an untrusted blob file: a regular file (symlinks refused) of at most `max` bytes.
pub fn read_generation_file(path: &Path, max: u64) -> Result<Vec<u8>, BlobError> {
    let f = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(BlobError::Missing),
        Err(e) => return Err(BlobError::Unreadable(e)),
    };
    let meta = f.metadata().map_err(BlobError::Unreadable)?;
    if !meta.file_type().is_file() {
        return Err(BlobError::Unreadable(io::Error::other(
            "not a regular file",
        )));
    }
    if meta.len() > max {
        return Err(BlobError::TooLarge { size: meta.len() });
    }
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow after the stat: never read more than `max + 1` bytes.
    f.take(max + 1)
        .read_to_end(&mut out)
        .map_err(BlobError::Unreadable)?;
    if out.len() as u64 > max {
        return Err(BlobError::TooLarge {
            size: out.len() as u64,
        });
    }
    Ok(out)
}

/// A generation file (or a leftover temp file of one) found in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationFile {
    pub generation: u64,
    pub path: PathBuf,
    pub temporary: bool,
}

/// Every generation file of `instance` in `dir`, sorted by generation.
/// A process that maps a segment file, as `/proc/PID/maps` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapper {
    pub pid: u32,
    /// `/proc/PID/comm`, e.g. `switchyard-dat` (the kernel keeps 15 bytes).
    pub command: String,
    /// `/proc/PID/map_files/START-END`: opens the mapped file even after it was removed (root).
    pub map_file: PathBuf,
}

/// Processes other than this one that map `path` — or, with `removed`, that still map a file
/// that was at `path` and has been removed (`PATH (deleted)` in `/proc/PID/maps`). Processes
/// whose maps cannot be read (another user's, without privileges) are not seen.
#[must_use]
pub fn processes_mapping(path: &Path, removed: bool) -> Vec<Mapper> {
    // The kernel prints the absolute path the file was opened at, symlinks resolved.
    let absolute = match (path.parent().map(fs::canonicalize), path.file_name()) {
        (Some(Ok(dir)), Some(name)) => dir.join(name),
        _ => path.to_path_buf(),
    };
    let wanted = if removed {
        format!("{} (deleted)", absolute.display())
    } else {
        absolute.display().to_string()
    };
    let me = std::process::id();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(maps) = fs::read_to_string(entry.path().join("maps")) else {
            continue;
        };
        let found = maps.lines().find_map(|line| {
            // `START-END PERMS OFFSET DEV INODE      PATH`
            let mut fields = line.splitn(6, ' ');
            let range = fields.next()?;
            let mapped = fields.nth(4)?.trim_start();
            (mapped == wanted).then(|| range.to_owned())
        });
        if let Some(range) = found {
            let command = fs::read_to_string(entry.path().join("comm"))
                .map(|c| c.trim_end().to_owned())
                .unwrap_or_default();
            out.push(Mapper {
                pid,
                command,
                map_file: entry.path().join("map_files").join(range),
            });
        }
    }
    out.sort_by_key(|m| m.pid);
    out
}

pub fn generation_files_in(dir: &Path, instance: &str) -> io::Result<Vec<GenerationFile>> {
    let prefix = format!("switchyard-{instance}.gen-");
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let (digits, temporary) = match rest.split_once('.') {
            Some((d, tail)) if tail.starts_with("tmp-") => (d, true),
            Some(_) => continue,
            None => (rest, false),
        };
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(generation) = digits.parse() else {
            continue;
        };
        out.push(GenerationFile {
            generation,
            path: entry.path(),
            temporary,
        });
    }
    out.sort_by_key(|f| (f.generation, f.temporary));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_file_name_safe() {
        for ok in ["default", "a", "edge-1", "LB_2"] {
            check_instance(ok).unwrap();
        }
        for bad in ["", "../x", "a/b", "a.b", "with space", &"x".repeat(65)] {
            assert!(check_instance(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            segment_path_in(Path::new("/dev/shm"), "default"),
            Path::new("/dev/shm/switchyard-default.ctl")
        );
        assert_eq!(
            generation_path_in(Path::new("/x"), "lb", 12),
            Path::new("/x/switchyard-lb.gen-12")
        );
    }

    #[test]
    fn blobs_are_written_whole_and_listed() {
        let dir = std::env::temp_dir().join(format!("swyd-files-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let p = write_generation_file(&dir, "t", 3, b"hello").unwrap();
        write_generation_file(&dir, "t", 10, b"x").unwrap();
        write_generation_file(&dir, "other", 1, b"x").unwrap();
        fs::write(dir.join("switchyard-t.gen-4.tmp-99"), b"").unwrap();
        fs::write(dir.join("switchyard-t.gen-x"), b"").unwrap();
        assert_eq!(read_generation_file(&p, 100).unwrap(), b"hello");
        assert!(matches!(
            read_generation_file(&p, 4),
            Err(BlobError::TooLarge { size: 5 })
        ));
        assert!(matches!(
            read_generation_file(&dir.join("nope"), 4),
            Err(BlobError::Missing)
        ));
        let mode = fs::metadata(&p).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o640
        );
        let listed: Vec<_> = generation_files_in(&dir, "t")
            .unwrap()
            .into_iter()
            .map(|f| (f.generation, f.temporary))
            .collect();
        assert_eq!(listed, vec![(3, false), (4, true), (10, false)]);
        fs::remove_dir_all(&dir).unwrap();
    }
}
