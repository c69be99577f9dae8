//! Segmented messages (`Connection::send_segments`, the protocol side of zero-copy send) in
//! virtual time: delivered intact under loss, reordering and corruption (retransmissions copy
//! from the kept slots); malformed segment lists are refused and left with the caller; every
//! slot returns to its pool once the messages are acknowledged.

use bypass::mem::{PktBuf, Pool};
use bypass::pmd::sim::LinkConfig;
use bypass::proto::testing::{check_pattern, fill_pattern, Pair};
use bypass::proto::{EndpointConfig, Event, SendError};

/// A `len`-byte message of pattern `tag` in segments of `seg` bytes from `pool`.
fn segments(pool: &Pool, tag: u64, len: usize, seg: usize) -> Vec<PktBuf> {
    let mut v = Vec::new();
    let mut off = 0;
    while off < len {
        let n = seg.min(len - off);
        let mut b = pool.alloc().unwrap();
        fill_pattern(tag, off as u64, b.append(n).unwrap());
        v.push(b);
        off += n;
    }
    v
}

fn run(link: LinkConfig, seed: u64, sizes: &[usize]) -> (u64, u64) {
    let mut p = Pair::new(
        EndpointConfig::default(),
        EndpointConfig::default(),
        link,
        seed,
    );
    let hs = p.connect().expect("connect");
    // A multiple of 8 (the test pattern's word), at most one packet's payload.
    let seg = p.client.connection(hs.0).unwrap().max_payload_len() & !7;
    assert!(seg > 1000, "{seg}");
    let pool = p.client_pool.clone();
    let idle = pool.stats().in_use;
    let mut list = Vec::new();
    for (k, &len) in sizes.iter().enumerate() {
        // One list reused for every message (what send_segments leaves in it).
        list.append(&mut segments(&pool, 100 + k as u64, len, seg));
        let c = p.client.connection(hs.0).unwrap();
        let id = c.send_segments(&mut list).unwrap();
        assert_eq!(id, k as u64);
        assert!(list.is_empty(), "the segments moved into the connection");
    }
    let (mut got, mut acked) = (Vec::new(), 0);
    for _ in 0..2_000_000 {
        if got.len() == sizes.len() && acked == sizes.len() {
            break;
        }
        if !p.step() {
            break;
        }
        p.drain(
            bypass::proto::testing::Peer::Server,
            hs.1,
            |_| {},
            |m| got.push(m),
        );
        p.drain(
            bypass::proto::testing::Peer::Client,
            hs.0,
            |e| {
                if matches!(e, Event::Acked { .. }) {
                    acked += 1;
                }
            },
            |_| {},
        );
    }
    assert_eq!(got.len(), sizes.len(), "all messages delivered");
    assert_eq!(acked, sizes.len(), "all messages acknowledged");
    for m in &got {
        let k = m.id as usize;
        let d = m.as_slice().expect("host message");
        assert_eq!(d.len(), sizes[k]);
        assert!(check_pattern(100 + k as u64, d), "message {k} intact");
    }
    // Single-packet messages are views of the frames, which in this harness are the
    // client's buffers; the client's pool also receives (ACKs on their way hold slots).
    drop(got);
    for _ in 0..10_000 {
        if pool.stats().in_use == idle {
            break;
        }
        p.step();
    }
    assert_eq!(pool.stats().in_use, idle, "every segment slot came back");
    let c = p.client.connection(hs.0).unwrap();
    (c.stats().retransmits, c.tx_zero_copy())
}

#[test]
fn segmented_messages_arrive_intact_on_a_clean_link() {
    let (retx, zc) = run(LinkConfig::default(), 7, &[0, 1, 1500, 100_000, 1 << 20]);
    println!("clean: retransmits {retx}, zero-copy first transmissions {zc}");
    assert_eq!(retx, 0);
    assert!(zc > 0);
}

#[test]
fn segmented_messages_survive_loss_reordering_and_corruption() {
    let link = LinkConfig {
        loss: 0.03,
        corrupt: 0.01,
        jitter_ns: 20_000,
        ..LinkConfig::default()
    };
    for seed in [1u64, 2, 3] {
        let (retx, zc) = run(link.clone(), seed, &[1 << 20, 3000, 1, 250_000]);
        println!("seed {seed}: retransmits {retx}, zero-copy first transmissions {zc}");
        assert!(retx > 0, "loss was recovered by retransmission");
    }
}

#[test]
fn malformed_segment_lists_are_refused_and_kept() {
    let mut p = Pair::new(
        EndpointConfig::default(),
        EndpointConfig::default(),
        LinkConfig::default(),
        9,
    );
    let hs = p.connect().expect("connect");
    let pool = p.client_pool.clone();
    let c = p.client.connection(hs.0).unwrap();
    // A short segment before the last.
    let mut v = vec![pool.alloc().unwrap(), pool.alloc().unwrap()];
    v[0].append(10).unwrap();
    v[1].append(20).unwrap();
    assert_eq!(c.send_segments(&mut v), Err(SendError::BadSegments));
    assert_eq!(v.len(), 2, "refused segments stay with the caller");
    // An empty first segment.
    v[0].truncate(0);
    assert_eq!(c.send_segments(&mut v), Err(SendError::BadSegments));
    // Equal segments are fine.
    v[0].append(20).unwrap();
    assert!(c.send_segments(&mut v).is_ok());
    assert!(v.is_empty());
}
