//! The loadgen worker's two ways to drive its connections: one blocking `Client` (a process
//! per connection), or several connections spoken to with `vsva-proto` frames directly and
//! waited on together with `poll` from one thread.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use vsva_client::Client;
use vsva_proto::{
    encode_request, FrameDecoder, Hello, Reply, Request, ResumeToken, HARD_MAX_BODY,
    MIN_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use vsva_uapi::vfio::{VFIO_IOMMU_PASID_REQUEST, VFIO_SET_IOMMU, VFIO_TYPE1_NESTING_IOMMU};
use vsva_uapi::PasidRequestOp;

/// When the first pair of a connection starts: a phase in `[0, interval)` spread by `seed`,
/// so that open-loop connections do not all start together.
fn first_start(start: Instant, interval: Option<Duration>, seed: u32) -> Instant {
    start
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(f64::from(seed % 1000) / 1000.0)
        })
}

fn elapsed_ns(t: Instant) -> u32 {
    t.elapsed().as_nanos().min(u128::from(u32::MAX)) as u32
}

/// The process-per-connection mode: pairs through the blocking `Client`.
pub fn one_connection(
    client: &mut Client,
    c: vsva_client::ContainerHandle,
    run: Duration,
    interval: Option<Duration>,
) -> Vec<u32> {
    let start = Instant::now();
    let deadline = start + run;
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
    let mut next = first_start(start, interval, std::process::id());
    while Instant::now() < deadline {
        if let Some(i) = interval {
            let now = Instant::now();
            if next > now {
                std::thread::sleep(next - now);
            }
            next += i;
        }
        let t = Instant::now();
        let p = client.pasid_alloc(c, 1, u32::MAX).expect("alloc");
        client.pasid_free(c, p, p).expect("free");
        lat.push(elapsed_ns(t));
    }
    lat
}

/// Where a connection of the multi-connection mode is in its pair.
enum Step {
    /// Waiting for the next pair's start (open loop) or for the run to begin.
    Idle,
    /// The ALLOC is out.
    Alloc,
    /// The FREE of the PASID the ALLOC got is out.
    Free,
    /// The run is over for this connection.
    Done,
}

/// One connection of the multi-connection mode, spoken to with `vsva-proto` frames directly
/// (the blocking `Client` cannot wait on several connections at once). Its socket stays
/// blocking: requests are a few dozen bytes, and it is read only when `poll` says readable.
pub struct RawConn {
    stream: std::os::unix::net::UnixStream,
    dec: FrameDecoder,
    next_id: u64,
    container: u32,
    step: Step,
    /// When the current pair started.
    at: Instant,
    /// When the next pair is due (open loop: on a fixed schedule).
    next: Instant,
}

impl RawConn {
    /// Connects, says hello and makes a nesting container on `group`.
    pub fn open(socket: &std::path::Path, group: u32) -> RawConn {
        let stream = std::os::unix::net::UnixStream::connect(socket).expect("connect");
        let mut c = RawConn {
            stream,
            dec: FrameDecoder::new(HARD_MAX_BODY),
            next_id: 1,
            container: 0,
            step: Step::Idle,
            at: Instant::now(),
            next: Instant::now(),
        };
        c.call(&Request::Hello(Hello {
            min_version: MIN_PROTOCOL_VERSION,
            max_version: PROTOCOL_VERSION,
            resume: ResumeToken::default(),
            client: "loadgen".into(),
        }));
        c.container = c.call(&Request::OpenContainer) as u32;
        c.call(&Request::AttachGroup {
            handle: c.container,
            group,
        });
        c.call(&Request::Ioctl {
            handle: c.container,
            cmd: VFIO_SET_IOMMU,
            arg: u64::from(VFIO_TYPE1_NESTING_IOMMU).to_le_bytes().to_vec(),
        });
        c
    }

    /// Sends a request and waits for its reply (setup only); its result.
    fn call(&mut self, req: &Request) -> i64 {
        self.send(req);
        loop {
            if let Some(result) = self.next_reply() {
                return result;
            }
            self.fill();
        }
    }

    fn send(&mut self, req: &Request) {
        self.stream
            .write_all(&encode_request(self.next_id, req))
            .expect("send a request");
        self.next_id += 1;
    }

    /// Reads what the socket has (blocks if it has nothing).
    fn fill(&mut self) {
        let buf = self.dec.spare(4096);
        let n = self.stream.read(buf).expect("read replies");
        assert!(n > 0, "the daemon closed a connection");
        self.dec.commit(n);
    }

    /// The result of the next complete reply, if one is buffered; a failure panics.
    fn next_reply(&mut self) -> Option<i64> {
        let frame = self.dec.next_frame().expect("reply frame")?;
        let reply = Reply::decode(&frame.body).expect("reply body");
        assert!(
            reply.result >= 0,
            "request {} failed: {}",
            frame.header.id,
            reply.message
        );
        Some(reply.result)
    }

    fn pasid_request(&mut self, op: PasidRequestOp) {
        self.send(&Request::Ioctl {
            handle: self.container,
            cmd: VFIO_IOMMU_PASID_REQUEST,
            arg: op.to_bytes(),
        });
    }

    fn start_pair(&mut self) {
        self.at = Instant::now();
        self.pasid_request(PasidRequestOp::Alloc {
            min: 1,
            max: u32::MAX,
        });
        self.step = Step::Alloc;
    }
}

/// The multi-connection mode: every connection has one request outstanding (closed loop) or
/// starts its pairs on its own schedule (open loop); one thread waits on all of them with
/// `poll`.
pub fn poll_connections(
    conns: &mut [RawConn],
    run: Duration,
    interval: Option<Duration>,
) -> Vec<u32> {
    use rustix::event::{poll, PollFd, PollFlags, Timespec};
    let start = Instant::now();
    let deadline = start + run;
    let mut lat: Vec<u32> = Vec::with_capacity(1 << 16);
    for (i, c) in conns.iter_mut().enumerate() {
        c.next = first_start(
            start,
            interval,
            std::process::id().wrapping_add(i as u32 * 137),
        );
    }
    let mut waiting = Vec::with_capacity(conns.len());
    loop {
        // Start every pair that is due.
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        for c in conns.iter_mut() {
            if !matches!(c.step, Step::Idle) {
                continue;
            }
            if now >= deadline {
                c.step = Step::Done;
            } else if c.next <= now {
                c.next += interval.unwrap_or(Duration::ZERO);
                c.start_pair();
            } else {
                wake = Some(wake.map_or(c.next, |w| w.min(c.next)));
            }
        }
        waiting.clear();
        waiting.extend(
            conns
                .iter()
                .enumerate()
                .filter(|(_, c)| matches!(c.step, Step::Alloc | Step::Free))
                .map(|(i, _)| i),
        );
        if waiting.is_empty() && wake.is_none() {
            break;
        }
        let mut fds: Vec<PollFd<'_>> = waiting
            .iter()
            .map(|&i| PollFd::new(&conns[i].stream, PollFlags::IN))
            .collect();
        let timeout = wake.map(|w| {
            let d = w.saturating_duration_since(Instant::now());
            Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: i64::from(d.subsec_nanos()),
            }
        });
        match poll(&mut fds, timeout.as_ref()) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => panic!("poll: {e}"),
        }
        let readable: Vec<usize> = fds
            .iter()
            .zip(&waiting)
            .filter(|(f, _)| !f.revents().is_empty())
            .map(|(_, &i)| i)
            .collect();
        drop(fds);
        for i in readable {
            let c = &mut conns[i];
            c.fill();
            while let Some(result) = c.next_reply() {
                c.step = match c.step {
                    Step::Alloc => {
                        let p = result as u32;
                        c.pasid_request(PasidRequestOp::Free { min: p, max: p });
                        Step::Free
                    }
                    Step::Free => {
                        lat.push(elapsed_ns(c.at));
                        match interval {
                            // Closed loop: the next pair at once, while the run lasts.
                            None if Instant::now() < deadline => {
                                c.start_pair();
                                Step::Alloc
                            }
                            None => Step::Done,
                            Some(_) => Step::Idle,
                        }
                    }
                    Step::Idle | Step::Done => panic!("a reply with no request out"),
                };
            }
        }
    }
    lat
}
