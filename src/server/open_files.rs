//! The process's open-file limit: every TCP connection is a descriptor, so
//! servers (and tests and benchmarks that open thousands of connections)
//! lift the soft limit to the hard one, as nginx and Redis do.

use std::io;

/// Raises the soft `RLIMIT_NOFILE` to the hard limit; returns the soft
/// limit now in force (unchanged if raising it failed).
pub fn raise_to_hard_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Ok(limit.rlim_cur)
}
