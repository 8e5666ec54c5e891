//! The wake-up of a thread that waits in `epoll` or `poll`: an `eventfd` that another thread
//! writes to wake it, and that the woken thread reads to re-arm. The connection workers, the
//! events thread and the accept loop each wait on one.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::event::{epoll, eventfd, EventfdFlags};

/// An `eventfd` used as a wake-up.
#[derive(Debug)]
pub(crate) struct Wake(OwnedFd);

impl Wake {
    /// A wake-up not yet signalled (close-on-exec, non-blocking).
    pub(crate) fn new() -> io::Result<Wake> {
        Ok(Wake(eventfd(
            0,
            EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK,
        )?))
    }

    /// An `epoll` instance with this wake-up registered, readable, under `data`.
    pub(crate) fn epoll(&self, data: u64) -> io::Result<OwnedFd> {
        let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
        epoll::add(
            &ep,
            &self.0,
            epoll::EventData::new_u64(data),
            epoll::EventFlags::IN,
        )?;
        Ok(ep)
    }

    /// Wakes the waiting thread.
    ///
    /// # Errors
    ///
    /// The write failed; only a full counter (2^64 − 2 wake-ups pending, which already wake
    /// the thread) can make it fail.
    pub(crate) fn wake(&self) -> rustix::io::Result<()> {
        rustix::io::write(&self.0, &1u64.to_ne_bytes()).map(drop)
    }

    /// Re-arms it after a wake-up (nothing to do if it was not signalled).
    pub(crate) fn clear(&self) {
        let mut counter = [0u8; 8];
        // EAGAIN when the counter is already zero: nothing to reset.
        let _ = rustix::io::read(&self.0, &mut counter);
    }
}

impl AsFd for Wake {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::event::{poll, PollFd, PollFlags, Timespec};

    fn readable(w: &Wake) -> bool {
        let mut fds = [PollFd::new(w, PollFlags::IN)];
        let zero = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        poll(&mut fds, Some(&zero)).unwrap() == 1
    }

    #[test]
    fn a_wake_makes_it_readable_until_cleared() {
        let w = Wake::new().unwrap();
        assert!(!readable(&w));
        w.wake().unwrap();
        w.wake().unwrap();
        assert!(readable(&w));
        w.clear();
        assert!(!readable(&w));
        w.clear();
    }
}
