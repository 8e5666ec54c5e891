//! Fuzzes the frame decoder and every body decoder: arbitrary bytes, fed in arbitrary chunks,
//! must never panic; every accepted request must re-encode to the bytes it came from.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vsva_proto::{FaultsReply, FaultsSinceReply, FrameDecoder, HelloReply, Reply, Request, SetsReply, StatusReply};

fuzz_target!(|data: &[u8]| {
    // The first byte picks the chunk size and the body limit, the rest is the stream.
    let Some((&knob, stream)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(knob % 31) + 1;
    let max_body = u32::from(knob) * 16;
    let mut dec = FrameDecoder::new(max_body);
    for piece in stream.chunks(chunk) {
        dec.push(piece);
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    assert!(frame.body.len() as u32 <= max_body);
                    if let Ok(req) = Request::decode(frame.header.kind, &frame.body) {
                        assert_eq!(req.encode_body(), frame.body);
                    }
                    let _ = Reply::decode(&frame.body);
                    let _ = HelloReply::decode(&frame.body);
                    let _ = StatusReply::decode(&frame.body);
                    let _ = SetsReply::decode(&frame.body);
                    let _ = FaultsReply::decode(&frame.body);
                    let _ = FaultsSinceReply::decode(&frame.body);
                }
                Ok(None) => break,
                Err(err) => {
                    assert!(err.header.check(max_body).is_err());
                    return;
                }
            }
        }
    }
});
