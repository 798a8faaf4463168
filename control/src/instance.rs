//! Removing an instance: every file `switchyard-<instance>.*` in the shared-memory directory (the
//! control segment, generation blobs and their leftover temp files, rollout progress), refused
//! while a control plane or a data plane holds the instance.
//!
//! Both role locks are taken for the duration of the removal, so neither process can attach to
//! the segment between the check and the unlink; a process that opens the segment afterwards
//! creates a fresh instance.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use switchyard_table::shm::files::check_instance;
use switchyard_table::shm::{segment_path_in, Role, Segment, ShmError};

/// Why an instance was not removed.
#[derive(Debug)]
pub enum RemoveError {
    /// The instance name is not a valid one.
    Name(ShmError),
    /// A process holds one of the instance's roles.
    InUse {
        role: Role,
        pid: u64,
        path: PathBuf,
    },
    /// The segment could not be opened or a file could not be removed.
    Io {
        path: PathBuf,
        error: io::Error,
    },
    Shm(ShmError),
}

impl fmt::Display for RemoveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Name(e) | Self::Shm(e) => write!(f, "{e}"),
            Self::InUse { role, pid, path } => write!(
                f,
                "{}: a {} (pid {pid}) is attached to this instance; stop it first",
                path.display(),
                role.name()
            ),
            Self::Io { path, error } => write!(f, "{}: {error}", path.display()),
        }
    }
}

impl std::error::Error for RemoveError {}

/// The files of `instance` in `dir`, sorted: every regular file named `switchyard-<instance>.*`.
/// Instance names cannot contain `.`, so another instance's files never match.
///
/// # Errors
/// The directory cannot be read.
pub fn instance_files(dir: &Path, instance: &str) -> io::Result<Vec<PathBuf>> {
    let prefix = format!("switchyard-{instance}.");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let is_ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(&prefix));
        if is_ours && !entry.file_type()?.is_dir() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// Removes every file of `instance` in `dir` and returns them; an instance with no files is
/// not an error (nothing is returned).
///
/// # Errors
/// A bad name, a control plane or data plane attached to the instance, or a file that cannot be
/// removed.
pub fn remove_instance(dir: &Path, instance: &str) -> Result<Vec<PathBuf>, RemoveError> {
    check_instance(instance).map_err(RemoveError::Name)?;
    let segment_path = segment_path_in(dir, instance);
    // Hold both roles while removing: nobody attaches between the check and the unlink.
    let mut _held = None;
    if segment_path.exists() {
        let segment = Segment::open_or_create_in(dir, instance).map_err(RemoveError::Shm)?;
        let claim = |e: ShmError| match e {
            ShmError::RoleTaken { path, role, pid } => RemoveError::InUse { role, pid, path },
            other => RemoveError::Shm(other),
        };
        let control = segment.attach_control().map_err(claim)?;
        let dataplane = segment.attach_dataplane().map_err(claim)?;
        _held = Some((control, dataplane));
    }
    let files = instance_files(dir, instance).map_err(|error| RemoveError::Io {
        path: dir.to_path_buf(),
        error,
    })?;
    // The segment last: while it exists, its locks say whether the instance is in use.
    let (segment, others): (Vec<_>, Vec<_>) = files.into_iter().partition(|p| *p == segment_path);
    let mut removed = Vec::new();
    for path in others.into_iter().chain(segment) {
        match std::fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(RemoveError::Io { path, error }),
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sy-rm-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn removes_only_its_own_files() {
        let dir = scratch("own");
        for name in [
            "switchyard-a.gen-3",
            "switchyard-a.gen-4.tmp-77",
            "switchyard-a.rollouts.json",
            "switchyard-a-b.gen-1",
            "switchyard-ab.ctl",
            "other",
        ] {
            std::fs::write(dir.join(name), b"x").unwrap();
        }
        drop(Segment::open_or_create_in(&dir, "a").unwrap());
        let removed = remove_instance(&dir, "a").unwrap();
        assert_eq!(removed.len(), 4, "{removed:?}");
        let mut left: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["other", "switchyard-a-b.gen-1", "switchyard-ab.ctl"]);
        assert!(remove_instance(&dir, "a").unwrap().is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn refuses_while_attached() {
        let dir = scratch("held");
        let segment = Segment::open_or_create_in(&dir, "held").unwrap();
        let end = segment.attach_dataplane().unwrap();
        // Another open file description: the lock is per open, as in another process.
        let err = remove_instance(&dir, "held").unwrap_err();
        assert!(
            matches!(
                err,
                RemoveError::InUse {
                    role: Role::Dataplane,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("data plane"), "{err}");
        assert!(segment_path_in(&dir, "held").exists());
        drop(end);
        drop(segment);
        assert_eq!(remove_instance(&dir, "held").unwrap().len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = scratch("name");
        assert!(matches!(
            remove_instance(&dir, "../etc"),
            Err(RemoveError::Name(_))
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
