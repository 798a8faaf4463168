//! Noticing that the policy file changed.
//!
//! The daemon polls instead of subscribing to inotify: a poll every 500 ms costs one `stat`,
//! works the same on every file system (NFS, overlay, a bind-mounted ConfigMap that is swapped
//! by a symlink flip) and needs no extra thread. The file is read and hashed only when its
//! metadata moved, and a reload is due only when the content hash differs from the content the
//! daemon last loaded — so `touch`, or an editor that rewrites the same bytes, changes nothing.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use xxhash_rust::xxh3::xxh3_64;

/// What `stat` says about the file; any change makes the watcher read it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
    device: u64,
}

impl Stamp {
    fn of(path: &Path) -> io::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        // `metadata` follows symlinks, so a flipped symlink shows up as a new inode.
        let m = fs::metadata(path)?;
        Ok(Self {
            modified: m.modified().ok(),
            len: m.len(),
            inode: m.ino(),
            device: m.dev(),
        })
    }
}

/// The xxh3 hash of policy text, as the watcher and the daemon compare it.
#[must_use]
pub fn content_hash(bytes: &[u8]) -> u64 {
    xxh3_64(bytes)
}

/// Watches one policy file for content changes.
#[derive(Debug)]
pub struct PolicyWatch {
    path: PathBuf,
    stamp: Option<Stamp>,
    /// Hash of the content the daemon last acted on (loaded, or refused).
    hash: Option<u64>,
}

impl PolicyWatch {
    /// A watcher that has seen nothing yet: the first [`PolicyWatch::poll`] reports a change
    /// if the file can be read.
    #[must_use]
    pub fn new(path: &Path) -> Self {
        Self {
            path: path.to_owned(),
            stamp: None,
            hash: None,
        }
    }

    /// The file watched.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records `bytes` as the content the daemon has acted on, e.g. after it loaded the file
    /// itself or wrote it for an `apply`; the metadata is taken fresh.
    pub fn acknowledge(&mut self, bytes: &[u8]) {
        self.hash = Some(content_hash(bytes));
        self.stamp = Stamp::of(&self.path).ok();
    }

    /// Checks the file. Returns `true` when its content differs from the content last
    /// acknowledged (and acknowledges the new content: a policy that fails to load is not
    /// reported again until it changes once more). A file that cannot be read is not a
    /// change: the daemon keeps what it has, and it is read again when it reappears.
    pub fn poll(&mut self) -> bool {
        let Ok(stamp) = Stamp::of(&self.path) else {
            self.stamp = None;
            return false;
        };
        if self.stamp == Some(stamp) {
            return false;
        }
        // Never blocks (a FIFO is refused, not waited on); a file that cannot be read as a
        // policy is handed to the reload, which says why.
        let bytes = match crate::policy::read_bytes(&self.path) {
            Ok(bytes) => bytes,
            Err(message) => message.into_bytes(),
        };
        // Take the stamp only after the read: a write racing the read changes the stamp again
        // and is picked up by the next poll.
        self.stamp = Some(stamp);
        let hash = content_hash(&bytes);
        if self.hash == Some(hash) {
            return false;
        }
        self.hash = Some(hash);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_file(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("switchyard-watch-{}-{name}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        dir.join("policy.yaml")
    }

    #[test]
    fn reports_content_changes_only() {
        let path = temp_file("content");
        fs::write(&path, "a: 1\n").unwrap();
        let mut watch = PolicyWatch::new(&path);
        assert!(watch.poll(), "first sight of the file is a change");
        assert!(!watch.poll());

        // Same bytes rewritten (new mtime): not a change.
        std::thread::sleep(std::time::Duration::from_millis(10));
        fs::write(&path, "a: 1\n").unwrap();
        assert!(!watch.poll());

        // Same size, other bytes.
        fs::write(&path, "a: 2\n").unwrap();
        assert!(watch.poll());
        assert!(!watch.poll());
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }

    #[test]
    fn acknowledged_content_is_not_a_change_and_a_missing_file_is_kept() {
        let path = temp_file("ack");
        fs::write(&path, "b: 1\n").unwrap();
        let mut watch = PolicyWatch::new(&path);
        watch.acknowledge(b"b: 1\n");
        assert!(!watch.poll());

        // Replaced by rename, as editors and `apply` do.
        let tmp = path.with_extension("tmp");
        fs::write(&tmp, "b: 22\n").unwrap();
        fs::rename(&tmp, &path).unwrap();
        assert!(watch.poll());

        fs::remove_file(&path).unwrap();
        assert!(!watch.poll(), "a vanished file is not a change");
        fs::write(&path, "b: 22\n").unwrap();
        assert!(
            !watch.poll(),
            "it came back with the content already acted on"
        );
        fs::remove_dir_all(path.parent().unwrap()).unwrap();
    }
}
