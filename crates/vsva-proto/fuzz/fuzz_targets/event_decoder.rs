//! Fuzzes the events channel's decoders: arbitrary bytes, fed in arbitrary chunks through the
//! frame decoder, must never panic the event, acknowledgement and device-side reply decoders,
//! and every accepted message must re-encode to the bytes it came from. A page response's
//! translation (flag `TRANSLATION` and its trailing payload) is decoded into its own field,
//! only on a SUCCESS, and never as a "page request raised" answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vsva_proto::{
    AtsAnswer, DeviceOpened, Event, EventAck, FrameDecoder, RESP_SUCCESS, RESP_TRANSLATION,
};

fuzz_target!(|data: &[u8]| {
    let Some((&knob, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(knob % 31) + 1;
    let mut dec = FrameDecoder::new(u32::from(knob) * 16);
    for piece in stream.chunks(chunk) {
        dec.push(piece);
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    if let Ok(ev) = Event::decode(frame.header.kind, &frame.body) {
                        assert_eq!(ev.kind(), frame.header.kind);
                        assert_eq!(ev.encode_body(), frame.body);
                        if let Event::PageResponse(r) = &ev {
                            assert_eq!(r.flags & RESP_TRANSLATION, 0);
                            if let Some(t) = &r.translation {
                                assert_eq!(r.code, RESP_SUCCESS);
                                assert!(!matches!(t.answer, AtsAnswer::PageRequested { .. }));
                            }
                        }
                    }
                    if let Ok(a) = AtsAnswer::decode(&frame.body) {
                        assert_eq!(a.encode(), frame.body);
                    }
                    if let Ok(d) = DeviceOpened::decode(&frame.body) {
                        assert_eq!(d.encode(), frame.body);
                    }
                    if let Ok(ack) = EventAck::decode(frame.header.kind, &frame.body) {
                        assert_eq!(&ack.encode_frame()[16..], &frame.body[..]);
                    }
                }
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
});
