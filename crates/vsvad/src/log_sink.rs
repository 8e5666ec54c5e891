//! The log's writer: log lines go to standard error through a bounded queue and one writer
//! thread, so a thread that logs never waits for standard error.
//!
//! Standard error may be a pipe nobody reads (`vsvad 2>&1 | slow-consumer`), a closed pipe,
//! or a file on a full disk. A plain `write(2)` to a full pipe blocks, and the thread that
//! logged — a connection worker serving many clients, or the one handling `SIGTERM` — would
//! block with it. Here a line is copied into the queue and the caller goes on; when the queue
//! holds `QUEUE_BYTES` (256 KiB) already, the line is dropped and counted
//! (`vsvad_log_lines_dropped_total`). A line the writer thread cannot write (a closed pipe)
//! is dropped the same way: logging never fails, never panics and never blocks.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Bytes of log lines the queue holds before it drops new ones.
const QUEUE_BYTES: usize = 256 << 10;

/// Lines dropped since start: the queue was full, or standard error refused them.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// The queue shared by every [`LogSink`] and the writer thread.
static QUEUE: OnceLock<Queue> = OnceLock::new();

struct Queue {
    lines: Mutex<Lines>,
    /// Signalled when a line arrives, and when the queue becomes empty.
    changed: Condvar,
}

#[derive(Default)]
struct Lines {
    lines: VecDeque<Vec<u8>>,
    bytes: usize,
    /// The writer thread is writing a line it has taken off the queue.
    writing: bool,
}

fn lock(m: &Mutex<Lines>) -> std::sync::MutexGuard<'_, Lines> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Log lines dropped since start, because the queue was full (standard error not read fast
/// enough) or because standard error refused them.
pub fn dropped_lines() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

/// A writer for the log (one per event, as `tracing-subscriber`'s `MakeWriter` makes them):
/// each `write` queues its bytes as one line for standard error and returns at once.
///
/// The first `LogSink` created starts the writer thread; if the thread cannot be started,
/// lines are dropped (and counted).
#[derive(Debug, Clone, Copy, Default)]
pub struct LogSink;

impl LogSink {
    /// A writer onto the shared queue.
    pub fn new() -> LogSink {
        QUEUE.get_or_init(start);
        LogSink
    }

    /// Waits until every queued line is written, for at most `timeout` (standard error may
    /// never drain). Returns whether the queue is empty.
    pub fn flush_for(timeout: Duration) -> bool {
        let Some(q) = QUEUE.get() else { return true };
        let deadline = Instant::now() + timeout;
        let mut l = lock(&q.lines);
        while !l.lines.is_empty() || l.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            l = q
                .changed
                .wait_timeout(l, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }
}

fn start() -> Queue {
    let spawned = std::thread::Builder::new()
        .name("vsvad-log".into())
        .spawn(writer);
    if spawned.is_err() {
        // Nothing will ever take a line: make every line a drop, counted.
        return Queue {
            lines: Mutex::new(Lines {
                bytes: QUEUE_BYTES,
                ..Lines::default()
            }),
            changed: Condvar::new(),
        };
    }
    Queue {
        lines: Mutex::new(Lines::default()),
        changed: Condvar::new(),
    }
}

/// The writer thread: the only one that ever blocks on standard error.
fn writer() {
    // The queue is initialised by the call that spawned this thread; wait for it.
    let q = loop {
        if let Some(q) = QUEUE.get() {
            break q;
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    let mut stderr = std::io::stderr();
    loop {
        let line = {
            let mut l = lock(&q.lines);
            l.writing = false;
            if l.lines.is_empty() {
                q.changed.notify_all();
            }
            loop {
                if let Some(line) = l.lines.pop_front() {
                    l.bytes -= line.len();
                    l.writing = true;
                    break line;
                }
                l = q.changed.wait(l).unwrap_or_else(|e| e.into_inner());
            }
        };
        if stderr.write_all(&line).is_err() {
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Write for LogSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let Some(q) = QUEUE.get() else {
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return Ok(buf.len());
        };
        let mut l = lock(&q.lines);
        if l.bytes + buf.len() > QUEUE_BYTES {
            drop(l);
            DROPPED.fetch_add(1, Ordering::Relaxed);
            return Ok(buf.len());
        }
        l.bytes += buf.len();
        l.lines.push_back(buf.to_vec());
        drop(l);
        q.changed.notify_all();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_written_in_order_and_flush_waits_for_them() {
        let mut s = LogSink::new();
        for i in 0..100 {
            s.write_all(format!("log_sink unit test line {i}\n").as_bytes())
                .unwrap();
        }
        assert!(LogSink::flush_for(Duration::from_secs(10)));
    }
}
