//! The events channel: opening it, reading its events in order, and acknowledging
//! invalidations on it.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use vsva_proto::{Event, EventAck, FrameDecoder, Kind, ProtoError, Request};

use crate::connection::Client;
use crate::error::{io_err, ClientError};

/// Largest event frame body a channel accepts.
const MAX_EVENT_BODY: u32 = 64 * 1024;

/// A process's events channel: the daemon's events, in order, each with its sequence number.
///
/// It is a socket of its own, so reading it never delays a reply on the process's
/// connections, and an acknowledgement sent on it is read by the daemon whatever its
/// connection workers are doing.
#[derive(Debug)]
pub struct EventChannel {
    stream: UnixStream,
    dec: FrameDecoder,
    last_seq: u64,
}

impl Client {
    /// Opens the process's events channel (one per process at a time: a second one is
    /// `EBUSY` until the first is dropped and the daemon has seen it close).
    ///
    /// # Errors
    ///
    /// The daemon refused (its errno), or the reply did not carry the channel's socket.
    pub fn open_events(&mut self) -> Result<EventChannel, ClientError> {
        let (_, mut fds) = self.call_for_fds(Request::EventsOpen)?;
        let fd = fds.pop().ok_or(ClientError::Protocol {
            kind: Kind::EventsOpen,
            error: ProtoError::BadValue {
                message: "reply",
                field: "nfds",
                value: 0,
                why: "an events_open reply carries the channel's socket",
            },
        })?;
        let stream = UnixStream::from(fd);
        stream
            .set_read_timeout(self.options().timeout)
            .map_err(io_err("cannot set the events channel's read timeout"))?;
        Ok(EventChannel {
            stream,
            dec: FrameDecoder::new(MAX_EVENT_BODY),
            last_seq: 0,
        })
    }
}

impl EventChannel {
    /// The next event and its sequence number, waiting at most `timeout` (`None`: as long
    /// as it takes). `Ok(None)` when the wait timed out.
    ///
    /// # Errors
    ///
    /// The channel closed ([`ClientError::Closed`]: the process was released), or the daemon
    /// sent something that is not an event, or out of order ([`ClientError::Protocol`]).
    pub fn next_timeout(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<Option<(u64, Event)>, ClientError> {
        let proto = |error| ClientError::Protocol {
            kind: Kind::EventsOpen,
            error,
        };
        self.stream
            .set_read_timeout(timeout)
            .map_err(io_err("cannot set the events channel's read timeout"))?;
        loop {
            if let Some(f) = self.dec.next_frame().map_err(|e| proto(e.error))? {
                let ev = Event::decode(f.header.kind, &f.body).map_err(proto)?;
                if f.header.id <= self.last_seq {
                    return Err(proto(ProtoError::BadValue {
                        message: "event",
                        field: "id",
                        value: f.header.id,
                        why: "sequence numbers must grow",
                    }));
                }
                self.last_seq = f.header.id;
                return Ok(Some((f.header.id, ev)));
            }
            let buf = self.dec.spare(16 * 1024);
            match self.stream.read(buf) {
                Ok(0) => {
                    return Err(ClientError::Closed(
                        "the daemon closed the events channel".into(),
                    ))
                }
                Ok(n) => self.dec.commit(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) => return Err(io_err("cannot read the events channel")(e)),
            }
        }
    }

    /// The next event, waiting as long as it takes.
    ///
    /// # Errors
    ///
    /// As [`EventChannel::next_timeout`].
    pub fn next_event(&mut self) -> Result<(u64, Event), ClientError> {
        loop {
            if let Some(e) = self.next_timeout(None)? {
                return Ok(e);
            }
        }
    }

    /// Acknowledges the invalidation with sequence number `seq` (after dropping what it
    /// names from the device TLB).
    ///
    /// # Errors
    ///
    /// The channel's socket failed: the acknowledgement may not have reached the daemon.
    pub fn ack(&mut self, seq: u64) -> Result<(), ClientError> {
        self.stream
            .write_all(&EventAck { seq }.encode_frame())
            .map_err(io_err("cannot send an acknowledgement"))
    }

    /// The socket, for a caller that polls it with others.
    pub fn socket(&self) -> &UnixStream {
        &self.stream
    }
}
