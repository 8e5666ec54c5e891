//! Property tests of the codec: decoding arbitrary bytes never panics, and every request and
//! reply round-trips through its bytes.

use proptest::prelude::*;
use vsva_proto::*;

fn arb_string() -> impl Strategy<Value = String> {
    "[a-z0-9 /._-]{0,24}"
}

fn arb_request() -> impl Strategy<Value = Request> {
    prop_oneof![
        (any::<u16>(), any::<u16>(), any::<[u8; 16]>(), arb_string()).prop_map(
            |(a, b, resume, client)| Request::Hello(Hello {
                min_version: a.min(b),
                max_version: a.max(b),
                resume: ResumeToken(resume),
                client,
            })
        ),
        prop::collection::vec(any::<u8>(), 0..64).prop_map(Request::Ping),
        Just(Request::OpenContainer),
        any::<u32>().prop_map(|handle| Request::CloseContainer { handle }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(handle, group)| Request::AttachGroup { handle, group }),
        (any::<u32>(), any::<u32>())
            .prop_map(|(handle, group)| Request::DetachGroup { handle, group }),
        (
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(any::<u8>(), 0..96)
        )
            .prop_map(|(handle, cmd, arg)| Request::Ioctl { handle, cmd, arg }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(addr, size, offset)| {
            Request::MemRegister {
                addr,
                size,
                offset,
                flags: 0,
            }
        }),
        any::<u32>().prop_map(|region| Request::MemUnregister { region }),
        (
            any::<u16>(),
            0u16..16,
            any::<u32>(),
            any::<u64>(),
            prop::collection::vec(any::<u8>(), 0..64),
            0u32..64
        )
            .prop_filter_map(
                "write and exec exclude",
                |(sid, flags, pasid, addr, data, rlen)| {
                    if flags & DMA_WRITE != 0 && flags & DMA_EXEC != 0 {
                        return None;
                    }
                    let write = flags & DMA_WRITE != 0;
                    Some(Request::DeviceDma(DeviceDma {
                        source_id: sid,
                        flags,
                        pasid,
                        addr,
                        len: if write { data.len() as u32 } else { rlen },
                        data: if write { data } else { Vec::new() },
                    }))
                }
            ),
        (
            any::<u16>(),
            0u8..2,
            prop::sample::select(vec![1u8, 2, 4]),
            any::<u32>(),
            any::<u32>()
        )
            .prop_map(
                |(source_id, flags, width, offset, value)| Request::DeviceConfig(DeviceConfig {
                    source_id,
                    flags,
                    width,
                    offset,
                    value
                })
            ),
        Just(Request::Status),
        Just(Request::Sets),
        (any::<u32>(), any::<u32>()).prop_map(|(pid, quota)| Request::SetQuota { pid, quota }),
        any::<u32>().prop_map(|pid| Request::ForceRelease { pid }),
        any::<u32>().prop_map(|max| Request::Faults { max }),
        (any::<u64>(), any::<u32>()).prop_map(|(since, max)| Request::FaultsSince { since, max }),
        Just(Request::EventsOpen),
        any::<u16>().prop_map(|source_id| Request::DeviceGrant { source_id }),
        any::<u16>().prop_map(|source_id| Request::DeviceRevoke { source_id }),
        any::<[u8; 16]>().prop_map(|token| Request::DeviceOpen { token }),
        (
            any::<u16>(),
            0u16..16,
            any::<u32>(),
            any::<u64>(),
            prop::option::of(0u16..512)
        )
            .prop_map(|(source_id, flags, pasid, addr, page_request_group)| {
                Request::AtsTranslate(AtsRequest {
                    source_id,
                    flags,
                    pasid,
                    addr,
                    page_request_group,
                })
            }),
        (
            any::<u16>(),
            0u16..4,
            any::<u32>(),
            any::<u64>(),
            0u16..512,
            0u16..16
        )
            .prop_map(|(source_id, flags, pasid, addr, grpid, perm)| {
                Request::PageRequest(RaisedPage {
                    source_id,
                    flags,
                    pasid,
                    addr,
                    grpid,
                    perm,
                })
            }),
        (any::<u32>(), 0u32..3).prop_map(|(cookie, code)| Request::PageResponse { cookie, code }),
    ]
}

fn arb_credentials() -> impl Strategy<Value = Credentials> {
    (any::<u32>(), any::<u32>(), any::<u32>(), any::<u64>()).prop_map(
        |(pid, uid, gid, start_time)| Credentials {
            pid,
            uid,
            gid,
            start_time,
        },
    )
}

fn arb_fault() -> impl Strategy<Value = FaultRecord> {
    (
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        any::<u64>(),
        any::<(u8, u8, u8)>(),
        arb_string(),
    )
        .prop_map(
            |(source_id, flags, pasid, addr, (reason, stage, level), description)| FaultRecord {
                source_id,
                flags,
                pasid,
                addr,
                reason,
                stage,
                level,
                description,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn requests_round_trip_through_frames(reqs in prop::collection::vec((any::<u64>(), arb_request()), 1..6), chunk in 1usize..40) {
        let mut stream = Vec::new();
        for (id, req) in &reqs {
            stream.extend(encode_request(*id, req));
        }
        let mut dec = FrameDecoder::new(DEFAULT_MAX_BODY);
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            dec.push(piece);
            while let Some(frame) = dec.next_frame().unwrap() {
                prop_assert!(!frame.header.is_reply());
                let req = Request::decode(frame.header.kind, &frame.body).unwrap();
                prop_assert_eq!(frame.header.nfds, req.nfds());
                got.push((frame.header.id, req));
            }
        }
        prop_assert_eq!(got, reqs);
        prop_assert_eq!(dec.buffered(), 0);
    }

    #[test]
    fn arbitrary_bytes_never_panic(kind in prop_oneof![any::<u16>(), prop::sample::select(Kind::ALL).prop_map(|k| k as u16)], body in prop::collection::vec(any::<u8>(), 0..256)) {
        // Every outcome is fine except a panic; a success must re-encode to the same bytes
        // (the encoding is canonical) or, for kinds with a free-form tail, decode again equal.
        if let Ok(req) = Request::decode(kind, &body) {
            prop_assert_eq!(req.kind() as u16, kind);
            prop_assert_eq!(Request::decode(kind, &req.encode_body()).unwrap(), req.clone());
            prop_assert_eq!(req.encode_body(), body.clone());
        }
        let _ = Reply::decode(&body);
        let _ = HelloReply::decode(&body);
        let _ = StatusReply::decode(&body);
        let _ = SetsReply::decode(&body);
        let _ = FaultsReply::decode(&body);
        let _ = FaultsSinceReply::decode(&body);
        let _ = FaultRecord::decode(&body);
    }

    #[test]
    fn arbitrary_streams_never_panic(stream in prop::collection::vec(any::<u8>(), 0..512), max in 0u32..300) {
        let mut dec = FrameDecoder::new(max);
        dec.push(&stream);
        loop {
            match dec.next_frame() {
                Ok(Some(frame)) => {
                    prop_assert!(frame.body.len() as u32 <= max);
                    let _ = Request::decode(frame.header.kind, &frame.body);
                }
                Ok(None) => break,
                Err(e) => {
                    prop_assert!(e.header.check(max).is_err());
                    break;
                }
            }
        }
    }

    #[test]
    fn replies_round_trip(result in any::<i64>(), message in arb_string(), payload in prop::collection::vec(any::<u8>(), 0..64)) {
        let reply = Reply { result, message, payload };
        prop_assert_eq!(Reply::decode(&reply.encode_body()).unwrap(), reply);
    }

    #[test]
    fn payloads_round_trip(
        credentials in arb_credentials(),
        restored in prop::collection::vec(1u32..1 << 20, 0..16),
        faults in prop::collection::vec(arb_fault(), 0..4),
        name in arb_string(),
        nums in any::<[u64; 4]>(),
    ) {
        let hello = HelloReply {
            version: 1,
            flags: HELLO_RESUMED,
            credentials,
            resume: ResumeToken([nums[0] as u8; 16]),
            instance: nums[1],
            pasid_bits: 20,
            quota: nums[2] as u32,
            max_body: DEFAULT_MAX_BODY,
            max_in_flight: 64,
            restored: restored.clone(),
            server: name.clone(),
        };
        prop_assert_eq!(HelloReply::decode(&hello.encode()).unwrap(), hello);
        let status = StatusReply {
            server: name.clone(),
            uptime_ms: nums[0],
            instance: nums[1],
            pasid_bits: 20,
            capacity: (1 << 20) - 1,
            allocated: nums[2],
            freeing: nums[3],
            processes: 3,
            held: 1,
            connections: 4,
            default_quota: 1000,
            durable: nums[0] % 2 == 0,
            iotlb_hits: nums[1],
            iotlb_misses: nums[2],
            faults: nums[3],
            devices: vec![DeviceInfo { source_id: 0x18, group: 1, pasid_width: 20, name: name.clone() }],
            nesting_refusals: vec![NestingRefusal { op: "unbind".into(), reason: name.clone(), count: nums[3] }],
            requests: nums[0],
            translations: nums[1],
            store_commits: nums[2],
            page_requests: nums[3],
            page_requests_pending: 7,
        };
        prop_assert_eq!(StatusReply::decode(&status.encode()).unwrap(), status);
        let sets = SetsReply {
            sets: vec![SetEntry {
                credentials,
                state: SetState::Held,
                connections: 0,
                quota: 5,
                pasids: restored,
                command: name,
            }],
        };
        prop_assert_eq!(SetsReply::decode(&sets.encode()).unwrap(), sets);
        let fr = FaultsReply { total: nums[0], dropped: nums[1], faults: faults.clone() };
        prop_assert_eq!(FaultsReply::decode(&fr.encode()).unwrap(), fr);
        let numbered = faults
            .iter()
            .zip(nums.iter().cycle())
            .map(|(record, &number)| NumberedFault { number, record: record.clone() })
            .collect();
        let fs = FaultsSinceReply { next: nums[2], missed: nums[3], faults: numbered };
        prop_assert_eq!(FaultsSinceReply::decode(&fs.encode()).unwrap(), fs);
        for f in faults {
            prop_assert_eq!(FaultRecord::decode(&f.encode()).unwrap(), f);
        }
    }
}

/// The byte examples of `docs/protocol.md`, exactly.
#[test]
fn documented_examples_are_exact() {
    let hex = |s: &str| -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    };
    assert_eq!(
        encode_request(7, &Request::Ping(b"hi".to_vec())),
        hex("02 00 00 00 02 00 00 00 07 00 00 00 00 00 00 00 68 69")
    );
    let header = FrameHeader::parse(
        &hex("02 00 00 00 02 00 00 00 07 00 00 00 00 00 00 00")
            .try_into()
            .unwrap(),
    );
    assert_eq!(
        Reply::ok(0, b"hi".to_vec()).encode_frame(&header),
        hex("0e 00 00 00 02 00 01 00 07 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 00 68 69")
    );
    let alloc = Request::Ioctl {
        handle: 1,
        cmd: vsva_uapi::vfio::VFIO_IOMMU_PASID_REQUEST,
        arg: vsva_uapi::PasidRequestOp::Alloc {
            min: 1,
            max: 0xfffff,
        }
        .to_bytes(),
    };
    assert_eq!(
        encode_request(8, &alloc),
        hex("18 00 00 00 05 01 00 00 08 00 00 00 00 00 00 00 01 00 00 00 76 3b 00 00 10 00 00 00 01 00 00 00 01 00 00 00 ff ff 0f 00")
    );
    let header = FrameHeader::parse(&encode_request(8, &alloc)[..16].try_into().unwrap());
    assert_eq!(
        Reply::ok(1, Vec::new()).encode_frame(&header),
        hex("0c 00 00 00 05 01 01 00 08 00 00 00 00 00 00 00 01 00 00 00 00 00 00 00 00 00 00 00")
    );
    assert_eq!(vsva_uapi::vfio::VFIO_GET_API_VERSION, 0x3b64);
    assert_eq!(vsva_uapi::vfio::VFIO_IOMMU_NESTING_OP, 0x3b77);
}
