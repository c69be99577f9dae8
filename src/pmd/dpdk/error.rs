//! The one helper every fallible DPDK call goes through: a negative return becomes a
//! [`DpdkError`] naming the call, with the errno DPDK reported.

use std::ffi::CStr;
use std::fmt;

use dpdk_sys as sys;

/// A DPDK call failed. Carries the call's name and the errno it reported (the negative return
/// value, or `rte_errno` for calls that return -1 or NULL). The text is looked up with
/// `rte_strerror` only when the error is displayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DpdkError {
    /// The DPDK function that failed.
    pub call: &'static str,
    /// The errno (positive).
    pub errno: i32,
}

impl DpdkError {
    /// The errno's text from `rte_strerror` (covers DPDK's own codes as well as libc's).
    pub fn text(&self) -> String {
        // SAFETY: rte_strerror returns a pointer to a NUL-terminated string (static, or
        // thread-local storage valid until the next call on this thread); it is copied out
        // before anything else runs on this thread.
        unsafe { CStr::from_ptr(sys::rte_strerror(self.errno)) }
            .to_string_lossy()
            .into_owned()
    }
}

impl fmt::Display for DpdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed: {} (errno {})",
            self.call,
            self.text(),
            self.errno
        )
    }
}

impl std::error::Error for DpdkError {}

/// `rte_errno` of this thread.
pub(crate) fn rte_errno() -> i32 {
    // SAFETY: reads a thread-local integer.
    unsafe { sys::shim_rte_errno() }
}

/// Check a DPDK int return: negative is an error (`-errno`, or -1 with `rte_errno` set).
#[inline]
pub(crate) fn check(call: &'static str, ret: i32) -> Result<i32, DpdkError> {
    if ret >= 0 {
        return Ok(ret);
    }
    let errno = if ret == -1 {
        match rte_errno() {
            0 => 1, // EPERM: DPDK said -1 without saying why
            e => e,
        }
    } else {
        -ret
    };
    Err(DpdkError { call, errno })
}

/// Check a DPDK pointer return: NULL is an error with `rte_errno`.
#[inline]
pub(crate) fn check_ptr<T>(call: &'static str, p: *mut T) -> Result<*mut T, DpdkError> {
    if p.is_null() {
        Err(DpdkError {
            call,
            errno: match rte_errno() {
                0 => libc::ENOMEM,
                e => e,
            },
        })
    } else {
        Ok(p)
    }
}

/// Call a fallible DPDK function and check its int return: `dpdk!(rte_eth_dev_start(id))`
/// is `check("rte_eth_dev_start", unsafe { sys::rte_eth_dev_start(id) })`. The use site
/// carries the `// SAFETY:` comment for the call.
macro_rules! dpdk {
    ($f:ident ( $($a:expr),* $(,)? )) => {
        $crate::pmd::dpdk::error::check(
            stringify!($f),
            // SAFETY: justified at the macro's use site, which must carry a SAFETY comment.
            unsafe { ::dpdk_sys::$f($($a),*) },
        )
    };
}
pub(crate) use dpdk;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_returns_are_errors_with_the_call_name() {
        assert_eq!(check("x", 0), Ok(0));
        assert_eq!(check("x", 7), Ok(7));
        let e = check("rte_eth_dev_start", -libc::ENODEV).unwrap_err();
        assert_eq!(e.call, "rte_eth_dev_start");
        assert_eq!(e.errno, libc::ENODEV);
        let s = e.to_string();
        assert!(s.starts_with("rte_eth_dev_start failed: "), "{s}");
        assert!(s.contains("No such device"), "{s}");
    }
}
