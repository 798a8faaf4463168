//! DPDK return codes turned into errors that name the failed operation.

use std::fmt;

use super::sys;

/// A failed DPDK call: which operation, the (positive) errno, and DPDK's description of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub op: String,
    pub errno: i32,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds an error from a negative return code (`-errno`) or a positive errno.
    pub fn from_code(op: impl Into<String>, code: i32) -> Self {
        let errno = code.saturating_abs();
        // SAFETY: rte_strerror returns a pointer to a static or thread-local NUL-terminated string.
        let p = unsafe { sys::rte_strerror(errno) };
        let message = if p.is_null() {
            format!("error {errno}")
        } else {
            // SAFETY: non-null, NUL-terminated (see above); copied out immediately.
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        };
        Self {
            op: op.into(),
            errno,
            message,
        }
    }

    /// Builds an error from `rte_errno`, for calls that signal failure with NULL or -1.
    pub fn last(op: impl Into<String>) -> Self {
        // SAFETY: reads the calling thread's rte_errno.
        let code = unsafe { sys::sy_errno() };
        Self::from_code(op, code)
    }

    /// An error detected on the Rust side of the boundary (bad argument, unsupported device).
    pub fn other(op: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            op: op.into(),
            errno: 0,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.errno == 0 {
            write!(f, "{}: {}", self.op, self.message)
        } else {
            write!(f, "{}: {} (errno {})", self.op, self.message, self.errno)
        }
    }
}

impl std::error::Error for Error {}
