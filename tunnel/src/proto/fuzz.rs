//! Decoder entry points for fuzzing, shared by the cargo-fuzz targets in `tunnel/fuzz`
//! (nightly) and the randomized test below (stable `cargo test`), so both exercise the same
//! checks. Each function panics only if a decoder invariant breaks — that panic is the finding.
//!
//! Invariants checked for any input:
//! - decoding never panics and never buffers past the caps;
//! - the result does not depend on how the bytes were split into reads;
//! - whatever decodes re-encodes to exactly the bytes it came from (one encoding per value).

use bytes::BytesMut;

use super::{Frame, FrameReader, FrameWriter, StreamHeader, FRAME_HEADER_LEN, MAX_FRAME, PREFACE};

/// Feeds `data` to a [`FrameReader`] as a control stream (preface first), whole and in small
/// chunks, and checks the invariants above.
pub fn control_stream(data: &[u8]) {
    let whole = read_frames(data, data.len().max(1));
    let chunk = 1 + data.first().map_or(0, |b| *b as usize % 7);
    let chunked = read_frames(data, chunk);
    assert_eq!(whole, chunked, "chunking changed the result");

    let (frames, _err) = whole;
    let mut reencoded = BytesMut::new();
    let mut writer = FrameWriter::new();
    for f in &frames {
        writer
            .write(f, &mut reencoded)
            .expect("a decoded frame must re-encode");
    }
    assert!(
        data.starts_with(&reencoded),
        "re-encoding differs from the input"
    );
}

fn read_frames(data: &[u8], chunk: usize) -> (Vec<Frame>, Option<super::ProtoError>) {
    let mut reader = FrameReader::new();
    let mut frames = Vec::new();
    for piece in data.chunks(chunk) {
        reader.push(piece);
        loop {
            match reader.next_frame() {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => return (frames, Some(e)),
            }
            assert!(reader.buffered() <= PREFACE.len() + FRAME_HEADER_LEN + MAX_FRAME + chunk);
        }
    }
    (frames, None)
}

/// Decodes `data` as the start of a data stream, whole and byte by byte, and checks the
/// invariants above.
pub fn stream_header(data: &[u8]) {
    let mut whole = BytesMut::from(data);
    let whole_result = StreamHeader::decode(&mut whole);

    let mut incremental = BytesMut::new();
    let mut incremental_result = Ok(None);
    let mut fed = 0;
    while fed < data.len() {
        incremental.extend_from_slice(&data[fed..fed + 1]);
        fed += 1;
        incremental_result = StreamHeader::decode(&mut incremental);
        if !matches!(incremental_result, Ok(None)) {
            break;
        }
    }
    incremental.extend_from_slice(&data[fed..]);
    assert_eq!(
        whole_result, incremental_result,
        "byte-by-byte decoding changed the result"
    );

    if let Ok(Some(header)) = whole_result {
        assert_eq!(
            whole, incremental,
            "different stream bytes left after the header"
        );
        let consumed = data.len() - whole.len();
        let mut reencoded = BytesMut::new();
        header
            .encode(&mut reencoded)
            .expect("a decoded header must re-encode");
        assert_eq!(
            &reencoded[..],
            &data[..consumed],
            "re-encoding differs from the input"
        );
        assert_eq!(StreamHeader::check(data), Ok(consumed));
    }
}

#[cfg(test)]
mod tests {
    //! Stable-Rust substitute for fuzzing: `cargo fuzz` needs nightly, so `cargo test` runs the
    //! same entry points over 100 000 random and mutated inputs from a fixed seed.

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::proto::*;

    fn control_seeds() -> Vec<Vec<u8>> {
        let frames = vec![
            Frame::Register(Register {
                node_id: "edge-1".into(),
                role: Role::Edge,
                version: "0.1.0".into(),
                os: "linux".into(),
                arch: "x86_64".into(),
                addresses: vec!["10.0.0.2:8443".into(), "[::1]:8443".into()],
                services: vec![
                    Service {
                        name: "web".into(),
                        kind: ServiceKind::Http,
                    },
                    Service {
                        name: "ssh".into(),
                        kind: ServiceKind::Tcp,
                    },
                ],
                pods: vec!["alice".into()],
            }),
            Frame::Registered(Registered {
                node_id: "edge-1".into(),
                center_id: "c1".into(),
                heartbeat_secs: 15,
            }),
            Frame::Refused(Refused {
                reason: "no".into(),
            }),
            Frame::Heartbeat(Heartbeat {
                seq: 3,
                sent_at_ms: 1,
                capacity: Some(r#"{"cpus":4,"mem":[1,2]}"#.into()),
            }),
            Frame::Heartbeat(Heartbeat {
                seq: 4,
                sent_at_ms: 2,
                capacity: None,
            }),
            Frame::HeartbeatAck(HeartbeatAck { seq: 3 }),
            Frame::Command(Command {
                id: 1,
                body: CommandBody::SetAcmeTxt {
                    name: "_acme-challenge.e1".into(),
                    value: "tok".into(),
                },
            }),
            Frame::Command(Command {
                id: 2,
                body: CommandBody::ClearAcmeTxt { name: "x".into() },
            }),
            Frame::Command(Command {
                id: 3,
                body: CommandBody::Ping,
            }),
            Frame::CommandReply(CommandReply {
                id: 1,
                ok: false,
                message: "nope\n".into(),
            }),
            Frame::Goodbye(Goodbye {
                reason: "bye".into(),
            }),
        ];
        let mut seeds = Vec::new();
        let mut all = BytesMut::new();
        let mut all_writer = FrameWriter::new();
        for f in &frames {
            let mut one = BytesMut::new();
            FrameWriter::new().write(f, &mut one).unwrap();
            seeds.push(one.to_vec());
            all_writer.write(f, &mut all).unwrap();
        }
        seeds.push(all.to_vec());
        seeds
    }

    fn header_seeds() -> Vec<Vec<u8>> {
        let targets = [
            Target::Http {
                service: "web".into(),
            },
            Target::TlsPassthrough {
                sni: "e1.example".into(),
            },
            Target::Tcp {
                service: "ssh".into(),
            },
            Target::Pod {
                pod_id: "alice".into(),
                epoch: 9,
                hops: 2,
            },
            Target::SandboxPort {
                sandbox_id: "sb".into(),
                port: 8080,
            },
            Target::Runner {
                node: "e1".into(),
                hops: 1,
            },
            Target::PodRequests,
            Target::SandboxTerminal {
                sandbox_id: "sb".into(),
            },
            Target::NodeTerminal { node: "e1".into() },
            Target::Cluster,
        ];
        let addrs = [
            None,
            Some("1.2.3.4:5".parse().unwrap()),
            Some("[fe80::1]:443".parse().unwrap()),
        ];
        let mut seeds = Vec::new();
        for (i, t) in targets.into_iter().enumerate() {
            let mut b = BytesMut::new();
            StreamHeader {
                target: t,
                client_addr: addrs[i % 3],
            }
            .encode(&mut b)
            .unwrap();
            b.extend_from_slice(b"payload");
            seeds.push(b.to_vec());
        }
        seeds
    }

    fn mutate(rng: &mut StdRng, seeds: &[Vec<u8>]) -> Vec<u8> {
        let mut v = seeds[rng.random_range(0..seeds.len())].clone();
        match rng.random_range(0..8) {
            // Unchanged: the happy path must hold the invariants too.
            0 => {}
            // Pure noise.
            1 => {
                let len = rng.random_range(0..64);
                v = (0..len).map(|_| rng.random()).collect();
            }
            // Flip a few bytes.
            2 | 3 => {
                for _ in 0..rng.random_range(1..4) {
                    if !v.is_empty() {
                        let i = rng.random_range(0..v.len());
                        v[i] = rng.random();
                    }
                }
            }
            // Truncate.
            4 => v.truncate(rng.random_range(0..=v.len())),
            // Insert random bytes.
            5 => {
                let at = rng.random_range(0..=v.len());
                let extra: Vec<u8> = (0..rng.random_range(1..8)).map(|_| rng.random()).collect();
                v.splice(at..at, extra);
            }
            // Overwrite four bytes with an interesting big-endian length.
            6 => {
                let interesting = [
                    0u32,
                    1,
                    0xff,
                    0xffff,
                    MAX_FRAME as u32,
                    MAX_FRAME as u32 + 1,
                    u32::MAX,
                ];
                let n = interesting[rng.random_range(0..interesting.len())].to_be_bytes();
                if v.len() >= 4 {
                    let at = rng.random_range(0..=v.len() - 4);
                    v[at..at + 4].copy_from_slice(&n);
                }
            }
            // Splice two seeds.
            _ => {
                let other = &seeds[rng.random_range(0..seeds.len())];
                let cut = rng.random_range(0..=v.len());
                v.truncate(cut);
                v.extend_from_slice(&other[rng.random_range(0..=other.len())..]);
            }
        }
        v
    }

    #[test]
    fn randomized_inputs_never_panic() {
        const ITERATIONS: usize = 100_000;
        let mut rng = StdRng::seed_from_u64(0x5870_6f64);
        let control = control_seeds();
        let headers = header_seeds();
        let (mut frames_decoded, mut headers_decoded) = (0, 0);
        for _ in 0..ITERATIONS {
            let input = mutate(&mut rng, &control);
            control_stream(&input);
            let mut reader = FrameReader::new();
            reader.push(&input);
            if matches!(reader.next_frame(), Ok(Some(_))) {
                frames_decoded += 1;
            }

            let input = mutate(&mut rng, &headers);
            stream_header(&input);
            if matches!(
                StreamHeader::decode(&mut BytesMut::from(&input[..])),
                Ok(Some(_))
            ) {
                headers_decoded += 1;
            }
        }
        // Not vacuous: a good share of the inputs got past the checks into the decoders.
        assert!(
            frames_decoded > ITERATIONS / 10,
            "only {frames_decoded} inputs decoded a frame"
        );
        assert!(
            headers_decoded > ITERATIONS / 10,
            "only {headers_decoded} inputs decoded a header"
        );
    }
}
