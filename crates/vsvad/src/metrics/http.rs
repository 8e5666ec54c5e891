//! The metrics endpoint: a minimal HTTP/1.1 server on a loopback address that answers
//! `GET /metrics` with the page the daemon renders, one request per connection.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// Scrapes answered at once; a connection past this is closed at once.
const MAX_SCRAPES: usize = 8;

/// The metrics endpoint, running: its address, and what stops it.
pub struct MetricsServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    listener: TcpListener,
    thread: JoinHandle<()>,
}

impl MetricsServer {
    /// Stops accepting (a blocked `accept` returns once the socket is shut down) and waits
    /// for the accept thread; scrapes in progress finish on their own threads.
    ///
    /// # Errors
    ///
    /// The accept thread panicked.
    pub fn stop(self) -> std::thread::Result<()> {
        if let Err(e) = rustix::net::shutdown(&self.listener, rustix::net::Shutdown::Read) {
            tracing::warn!(error = %e, "cannot shut the metrics socket down");
        }
        self.thread.join()
    }
}

/// Serves `GET /metrics` on `addr` until `stop` is set and [`MetricsServer::stop`] is called;
/// one request per connection, each connection on its own thread (at most [`MAX_SCRAPES`]
/// at once), so a slow client delays no other scrape.
pub fn serve(
    addr: SocketAddr,
    render: Arc<dyn Fn() -> String + Send + Sync>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<MetricsServer> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    let accepting = listener.try_clone()?;
    let busy = Arc::new(AtomicU64::new(0));
    let thread = std::thread::Builder::new()
        .name("vsvad-metrics".into())
        .spawn(move || {
            for stream in accepting.incoming() {
                if stop.load(Ordering::SeqCst) {
                    return;
                }
                let stream = match stream {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics accept failed");
                        std::thread::sleep(Duration::from_millis(200));
                        continue;
                    }
                };
                if busy.fetch_add(1, Ordering::SeqCst) >= MAX_SCRAPES as u64 {
                    busy.fetch_sub(1, Ordering::SeqCst);
                    continue;
                }
                let (render, done) = (render.clone(), busy.clone());
                let spawned = std::thread::Builder::new()
                    .name("vsvad-scrape".into())
                    .stack_size(256 * 1024)
                    .spawn(move || {
                        if let Err(e) = answer(stream, &*render) {
                            tracing::debug!(error = %e, "metrics request failed");
                        }
                        done.fetch_sub(1, Ordering::SeqCst);
                    });
                if let Err(e) = spawned {
                    tracing::warn!(error = %e, "cannot start a metrics thread");
                    busy.fetch_sub(1, Ordering::SeqCst);
                }
            }
        })?;
    Ok(MetricsServer {
        addr: local,
        listener,
        thread,
    })
}

/// How long a scrape's request may take to arrive, from its connection to its last header
/// line: a client trickling it byte by byte loses its slot then, as one that sends nothing.
/// Either is answered `408 Request Timeout`, and the connection ends as after any answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// How long writing the answer may block on a client that does not read.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// The longest request head kept; a longer one is answered `431 Request Header Fields Too
/// Large` once this much (plus at most one read) has arrived.
const MAX_HEAD: usize = 8192;

/// After the answer, how long what the client still sends (the rest of a head that was too
/// long, a body nobody asked for) is read and dropped before the connection is closed.
/// Closing a socket with unread bytes sends a reset instead of the answer's end, and a client
/// that writes its whole request before reading (curl) would see "connection reset" and
/// never the answer. Bounded, so a client that goes on sending cannot keep the slot.
const LINGER: Duration = Duration::from_secs(1);

/// A pause this long in what the client sends ends the [`LINGER`] early.
const LINGER_IDLE: Duration = Duration::from_millis(200);

fn answer(mut stream: TcpStream, render: &dyn Fn() -> String) -> std::io::Result<()> {
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    reply(&mut stream, render)?;
    linger(&stream);
    Ok(())
}

/// Ends the answered connection without a reset: shuts the sending side (the client reads
/// the whole answer and its end), then drops what the client still sends for at most
/// [`LINGER`], until it closes or pauses for [`LINGER_IDLE`].
fn linger(mut stream: &TcpStream) {
    if stream.shutdown(std::net::Shutdown::Write).is_err() {
        return;
    }
    let deadline = std::time::Instant::now() + LINGER;
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero()
            || stream
                .set_read_timeout(Some(left.min(LINGER_IDLE)))
                .is_err()
        {
            return;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// Reads one request head (at most [`MAX_HEAD`] bytes plus one read, within
/// [`REQUEST_TIMEOUT`]) and writes the answer. A head that does not arrive whole in time
/// (nothing, or part of it) is answered `408 Request Timeout`, so the client learns why the
/// connection ends instead of seeing it close unanswered.
fn reply(stream: &mut TcpStream, render: &dyn Fn() -> String) -> std::io::Result<()> {
    let deadline = std::time::Instant::now() + REQUEST_TIMEOUT;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 512];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && !req.windows(2).any(|w| w == b"\n\n") {
        // The timeout of each read is what is left of the whole request's.
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return request_timeout(stream);
        }
        stream.set_read_timeout(Some(left))?;
        let n = match stream.read(&mut buf) {
            // A read timeout is `EAGAIN` (`WouldBlock`) on Linux, `TimedOut` elsewhere.
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return request_timeout(stream);
            }
            other => other?,
        };
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
        if req.len() > MAX_HEAD {
            return respond(
                stream,
                "431 Request Header Fields Too Large",
                "text/plain",
                "request too large\n",
            );
        }
    }
    let line = req.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    match (method, path) {
        ("GET", "/metrics") => respond(
            stream,
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            &render(),
        ),
        ("GET", "/") => respond(
            stream,
            "200 OK",
            "text/plain; charset=utf-8",
            "vsvad: metrics at /metrics\n",
        ),
        ("GET", _) => respond(stream, "404 Not Found", "text/plain", "not found\n"),
        _ => respond(stream, "405 Method Not Allowed", "text/plain", "only GET\n"),
    }
}

/// The answer to a request head that missed [`REQUEST_TIMEOUT`].
fn request_timeout(stream: &mut TcpStream) -> std::io::Result<()> {
    let body = format!(
        "the request did not arrive within {} s\n",
        REQUEST_TIMEOUT.as_secs()
    );
    respond(stream, "408 Request Timeout", "text/plain", &body)
}

fn respond(stream: &mut TcpStream, status: &str, ctype: &str, body: &str) -> std::io::Result<()> {
    let head = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body.as_bytes())?;
    stream.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_endpoint_serves_the_page() {
        let stop = Arc::new(AtomicBool::new(false));
        let server = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(|| "vsvad_up 1\n".to_string()),
            stop.clone(),
        )
        .unwrap();
        let addr = server.addr;
        let get = |path: &str| {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).unwrap();
            out
        };
        let page = get("/metrics");
        assert!(page.starts_with("HTTP/1.1 200 OK\r\n"), "{page}");
        assert!(page.ends_with("\r\n\r\nvsvad_up 1\n"), "{page}");
        assert!(get("/nope").starts_with("HTTP/1.1 404"));
        stop.store(true, Ordering::Relaxed);
        server.stop().unwrap();
    }
}
