//! The process's CPU time, user and system: what a fan-out costs the
//! function (a Lambda sandbox serves one event at a time, so the process's
//! time between two readings is the invocation's), and what `chatctl load`
//! costs its own machine.

use std::time::Duration;

/// CPU time the process has used so far; zero when it cannot be read.
pub fn process_time() -> Duration {
    // SAFETY: getrusage only writes into the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return Duration::ZERO;
        }
        usage
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    time(usage.ru_utime) + time(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_shows_in_the_process_time() {
        let before = process_time();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(process_time() - before >= Duration::from_millis(20));
    }
}
