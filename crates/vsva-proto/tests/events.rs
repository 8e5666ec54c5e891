//! Property tests of the events channel's decoders (the twin of the `event_decoder` fuzz
//! target): arbitrary bytes never panic, every event and acknowledgement round-trips through
//! its frame, and a body that decodes re-encodes to the same bytes.

use proptest::prelude::*;
use vsva_proto::*;

fn arb_event() -> impl Strategy<Value = Event> {
    prop_oneof![
        any::<(u64, u64)>().prop_map(|(dropped, total)| Event::Overflow { dropped, total }),
        (
            any::<(u16, u16, u32, u64)>(),
            any::<(u8, u8, u8)>(),
            "[a-z ]{0,16}"
        )
            .prop_map(
                |((source_id, flags, pasid, addr), (reason, stage, level), description)| {
                    Event::DmaFault(FaultRecord {
                        source_id,
                        flags,
                        pasid,
                        addr,
                        reason,
                        stage,
                        level,
                        description,
                    })
                }
            ),
        (
            any::<u16>(),
            0u16..4,
            any::<u32>(),
            any::<u64>(),
            any::<u64>()
        )
            .prop_map(|(source_id, flags, pasid, addr, size)| Event::Invalidate(
                Invalidation {
                    source_id,
                    flags,
                    pasid,
                    addr,
                    size,
                }
            )),
        (
            0u32..4,
            any::<[u32; 3]>(),
            0u32..16,
            any::<u64>(),
            any::<[u32; 2]>()
        )
            .prop_map(
                |(flags, [dev_id, pasid, grpid], perm, addr, [length, cookie])| {
                    Event::PageRequest(PageRequest {
                        flags,
                        dev_id,
                        pasid,
                        grpid,
                        perm,
                        addr,
                        length,
                        cookie,
                    })
                }
            ),
        (
            any::<u16>(),
            0u32..2,
            any::<[u32; 2]>(),
            0u32..3,
            prop::option::of(arb_translation())
        )
            .prop_map(|(source_id, flags, [pasid, grpid], code, translation)| {
                Event::PageResponse(PageResponse {
                    source_id,
                    flags,
                    pasid,
                    grpid,
                    code,
                    // Only a SUCCESS carries one.
                    translation: translation.filter(|_| code == RESP_SUCCESS),
                })
            }),
        (any::<u16>(), "[a-z ]{0,16}")
            .prop_map(|(source_id, reason)| Event::DeviceRevoked { source_id, reason }),
    ]
}

/// What a SUCCESS page response may carry: a translation, or the fault of its absence.
fn arb_translation() -> impl Strategy<Value = ResponseTranslation> {
    (
        any::<[u64; 2]>(),
        prop_oneof![Just(4096u64), Just(2 << 20), Just(1 << 30)],
        0u8..16,
        any::<bool>(),
    )
        .prop_map(|([addr, host_addr], page_size, perms, translated)| {
            let answer = if translated {
                AtsAnswer::Translated {
                    host_addr,
                    page_size,
                    perms,
                }
            } else {
                AtsAnswer::NoTranslation {
                    page_request: perms & 1 != 0,
                    fault: FaultRecord {
                        source_id: 1,
                        flags: 1,
                        pasid: 2,
                        addr,
                        reason: 3,
                        stage: 1,
                        level: 4,
                        description: "not present".into(),
                    },
                }
            };
            ResponseTranslation { addr, answer }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn events_round_trip_through_frames(evs in prop::collection::vec(arb_event(), 1..6), first in any::<u32>(), chunk in 1usize..40) {
        let mut bytes = Vec::new();
        for (i, e) in evs.iter().enumerate() {
            bytes.extend_from_slice(&e.encode_frame(u64::from(first) + i as u64));
        }
        let mut dec = FrameDecoder::new(DEFAULT_MAX_BODY);
        let mut got = Vec::new();
        for piece in bytes.chunks(chunk) {
            dec.push(piece);
            while let Some(f) = dec.next_frame().unwrap() {
                prop_assert_eq!(f.header.flags, 0);
                got.push((f.header.id, Event::decode(f.header.kind, &f.body).unwrap()));
            }
        }
        let want: Vec<_> = evs.into_iter().enumerate().map(|(i, e)| (u64::from(first) + i as u64, e)).collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn event_bytes_never_panic_and_reencode(kind in prop_oneof![0x0700u16..0x0708, Just(ACK_KIND), any::<u16>()], body in prop::collection::vec(any::<u8>(), 0..160)) {
        if let Ok(ev) = Event::decode(kind, &body) {
            prop_assert_eq!(ev.kind(), kind);
            prop_assert_eq!(ev.encode_body(), body.clone());
        }
        if let Ok(ack) = EventAck::decode(kind, &body) {
            let frame = ack.encode_frame();
            prop_assert_eq!(&frame[16..], &body[..]);
        }
    }

    #[test]
    fn device_side_payloads_never_panic_and_round_trip(body in prop::collection::vec(any::<u8>(), 0..160)) {
        if let Ok(a) = AtsAnswer::decode(&body) {
            prop_assert_eq!(a.encode(), body.clone());
        }
        if let Ok(d) = DeviceOpened::decode(&body) {
            prop_assert_eq!(d.encode(), body.clone());
        }
    }

    #[test]
    fn acks_round_trip(seq in any::<u64>()) {
        let f = EventAck { seq }.encode_frame();
        let mut dec = FrameDecoder::new(64);
        dec.push(&f);
        let frame = dec.next_frame().unwrap().unwrap();
        prop_assert_eq!(EventAck::decode(frame.header.kind, &frame.body), Ok(EventAck { seq }));
    }
}
