//! Per-connection state in the style of Linux's `TCP_INFO`, read at scrape time.
//!
//! Connections live on their core and change every packet, so they are not counted through
//! blocks: a [`ConnSource`] (a trait, or a closure) yields a [`ConnInfo`] per live connection
//! when the registry is read, on the scraping thread.
//!
//! The ready-made source is a [`ConnTable`] (from [`crate::telemetry::Registry::conn_table`]):
//! a fixed array of slots, one per connection a core may hold, each a sequence lock over
//! atomic words. The owning core [`ConnPublisher::publish`]es a connection's snapshot (every
//! few milliseconds or on each ack: it is a few dozen relaxed stores, no lock, no
//! allocation); the scraper copies every live slot, retrying a slot caught mid-write.

use std::cell::Cell;
use std::marker::PhantomData;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A snapshot of one connection's transport state. Durations are smoothed estimates as the
/// transport keeps them; counters are cumulative since the connection opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    /// Local connection id (label `conn`, printed in hex).
    pub conn_id: u64,
    /// The peer's address (label `peer`).
    pub peer: SocketAddr,
    /// Smoothed round-trip time.
    pub srtt: Duration,
    /// Lowest round-trip time seen (the base delay).
    pub min_rtt: Duration,
    /// Round-trip time variation.
    pub rttvar: Duration,
    /// Congestion window in bytes.
    pub cwnd_bytes: u64,
    /// Pacing rate in bytes per second (0 when not pacing).
    pub pacing_rate_bytes_per_second: u64,
    /// Bytes sent and not yet acknowledged or declared lost.
    pub bytes_in_flight: u64,
    /// Bytes the receiver has granted and the sender has not used yet.
    pub credit_bytes: u64,
    /// Packets retransmitted.
    pub retransmitted_packets: u64,
    /// Packets declared lost.
    pub lost_packets: u64,
    /// The loss detector's current reorder window.
    pub reorder_window: Duration,
    /// Messages delivered to the application.
    pub delivered_messages: u64,
    /// Payload bytes delivered to the application.
    pub delivered_bytes: u64,
    /// Packets sent from the application's own buffers, uncopied (zero-copy send).
    pub tx_zero_copy_packets: u64,
    /// BATCH packets sent (several small messages each).
    pub tx_batches: u64,
    /// Messages sent inside BATCH packets.
    pub tx_batched_messages: u64,
    /// BATCH packets received.
    pub rx_batches: u64,
    /// Multi-packet messages delivered as their packet buffers (zero-copy receive).
    pub rx_segment_messages: u64,
    /// Messages that began as segments and were copied instead (parts too small or too
    /// reordered for the buffers they held).
    pub rx_segment_copied: u64,
}

/// Something that yields the live connections' [`ConnInfo`] when asked (at scrape time).
pub trait ConnSource: Send + Sync + 'static {
    /// Call `f` once per live connection.
    fn visit(&self, f: &mut dyn FnMut(&ConnInfo));
}

impl<F> ConnSource for F
where
    F: Fn(&mut dyn FnMut(&ConnInfo)) + Send + Sync + 'static,
{
    fn visit(&self, f: &mut dyn FnMut(&ConnInfo)) {
        self(f)
    }
}

/// Words of one published snapshot: live flag, id, peer (family+port, address high, address
/// low), and 18 numbers (with the sequence number, three cache lines).
const WORDS: usize = 23;

/// One slot: a sequence number (odd while being written) and the snapshot's words.
#[repr(align(64))]
#[derive(Debug, Default)]
struct Slot {
    seq: AtomicU64,
    words: [AtomicU64; WORDS],
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn encode(c: &ConnInfo) -> [u64; WORDS] {
    let (family, hi, lo) = match c.peer.ip() {
        IpAddr::V4(a) => (4u64, 0, u64::from(u32::from(a))),
        IpAddr::V6(a) => {
            let v = u128::from(a);
            (6u64, (v >> 64) as u64, v as u64)
        }
    };
    [
        1,
        c.conn_id,
        family << 16 | u64::from(c.peer.port()),
        hi,
        lo,
        nanos(c.srtt),
        nanos(c.min_rtt),
        nanos(c.rttvar),
        c.cwnd_bytes,
        c.pacing_rate_bytes_per_second,
        c.bytes_in_flight,
        c.credit_bytes,
        c.retransmitted_packets,
        c.lost_packets,
        nanos(c.reorder_window),
        c.delivered_messages,
        c.delivered_bytes,
        c.tx_zero_copy_packets,
        c.tx_batches,
        c.tx_batched_messages,
        c.rx_batches,
        c.rx_segment_messages,
        c.rx_segment_copied,
    ]
}

fn decode(w: &[u64; WORDS]) -> Option<ConnInfo> {
    if w[0] != 1 {
        return None;
    }
    let port = (w[2] & 0xffff) as u16;
    let ip = match w[2] >> 16 {
        4 => IpAddr::V4(Ipv4Addr::from(w[4] as u32)),
        6 => IpAddr::V6(Ipv6Addr::from(u128::from(w[3]) << 64 | u128::from(w[4]))),
        _ => return None,
    };
    Some(ConnInfo {
        conn_id: w[1],
        peer: SocketAddr::new(ip, port),
        srtt: Duration::from_nanos(w[5]),
        min_rtt: Duration::from_nanos(w[6]),
        rttvar: Duration::from_nanos(w[7]),
        cwnd_bytes: w[8],
        pacing_rate_bytes_per_second: w[9],
        bytes_in_flight: w[10],
        credit_bytes: w[11],
        retransmitted_packets: w[12],
        lost_packets: w[13],
        reorder_window: Duration::from_nanos(w[14]),
        delivered_messages: w[15],
        delivered_bytes: w[16],
        tx_zero_copy_packets: w[17],
        tx_batches: w[18],
        tx_batched_messages: w[19],
        rx_batches: w[20],
        rx_segment_messages: w[21],
        rx_segment_copied: w[22],
    })
}

/// Reads of a slot caught mid-write are retried this many times, then the slot is skipped
/// for this scrape (the scraper never waits on a data-path core).
const READ_RETRIES: usize = 64;

/// The scraper's side of a table of published connection snapshots (a [`ConnSource`]).
#[derive(Debug, Clone)]
pub struct ConnTable {
    slots: Arc<[Slot]>,
}

impl ConnTable {
    /// A table of `capacity` slots and the publisher that writes it (hand that to the core).
    pub fn new(capacity: usize) -> (ConnTable, ConnPublisher) {
        let slots: Arc<[Slot]> = (0..capacity).map(|_| Slot::default()).collect();
        (
            ConnTable {
                slots: slots.clone(),
            },
            ConnPublisher {
                slots,
                _not_sync: PhantomData,
            },
        )
    }

    fn read(slot: &Slot) -> Option<ConnInfo> {
        for _ in 0..READ_RETRIES {
            let s1 = slot.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let mut w = [0u64; WORDS];
            for (d, a) in w.iter_mut().zip(slot.words.iter()) {
                *d = a.load(Ordering::Relaxed);
            }
            // Orders the word loads before the re-check of the sequence number.
            fence(Ordering::Acquire);
            if slot.seq.load(Ordering::Relaxed) == s1 {
                return decode(&w);
            }
        }
        None
    }
}

impl ConnSource for ConnTable {
    fn visit(&self, f: &mut dyn FnMut(&ConnInfo)) {
        for slot in self.slots.iter() {
            if let Some(c) = Self::read(slot) {
                f(&c);
            }
        }
    }
}

/// Slot index past the end of a [`ConnTable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("connection slot {slot} is outside the table of {capacity}")]
pub struct SlotOutOfRange {
    /// The slot asked for.
    pub slot: usize,
    /// Slots in the table.
    pub capacity: usize,
}

/// The owning core's side of a [`ConnTable`]: `Send`, not `Sync`, not `Clone` (one writer).
#[derive(Debug)]
pub struct ConnPublisher {
    slots: Arc<[Slot]>,
    _not_sync: PhantomData<Cell<()>>,
}

impl ConnPublisher {
    /// Slots in the table (the most connections it shows at once).
    pub fn capacity(&self) -> usize {
        self.slots.len()
    }

    fn write(&self, slot: usize, w: &[u64; WORDS]) -> Result<(), SlotOutOfRange> {
        let s = self.slots.get(slot).ok_or(SlotOutOfRange {
            slot,
            capacity: self.slots.len(),
        })?;
        let seq = s.seq.load(Ordering::Relaxed);
        s.seq.store(seq.wrapping_add(1), Ordering::Relaxed);
        // Orders the odd sequence number before the word stores.
        fence(Ordering::Release);
        for (a, v) in s.words.iter().zip(w.iter()) {
            a.store(*v, Ordering::Relaxed);
        }
        s.seq.store(seq.wrapping_add(2), Ordering::Release);
        Ok(())
    }

    /// Publish connection `info` in `slot` (the caller's index for the connection, below
    /// [`ConnPublisher::capacity`]). No lock, no allocation, no syscall.
    pub fn publish(&self, slot: usize, info: &ConnInfo) -> Result<(), SlotOutOfRange> {
        self.write(slot, &encode(info))
    }

    /// Empty `slot` (the connection closed): it no longer shows in scrapes.
    pub fn clear(&self, slot: usize) -> Result<(), SlotOutOfRange> {
        self.write(slot, &[0; WORDS])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: u64, peer: &str) -> ConnInfo {
        ConnInfo {
            conn_id: id,
            peer: peer.parse().unwrap(),
            srtt: Duration::from_nanos(12_345),
            min_rtt: Duration::from_micros(9),
            rttvar: Duration::from_micros(2),
            cwnd_bytes: 64_000,
            pacing_rate_bytes_per_second: 1 << 40,
            bytes_in_flight: 4096,
            credit_bytes: 1 << 20,
            retransmitted_packets: 7,
            lost_packets: 6,
            reorder_window: Duration::from_micros(3),
            delivered_messages: id * 10,
            delivered_bytes: u64::MAX,
            tx_zero_copy_packets: id + 17,
            tx_batches: id + 18,
            tx_batched_messages: id + 19,
            rx_batches: id + 20,
            rx_segment_messages: id + 21,
            rx_segment_copied: id + 22,
        }
    }

    fn collect(t: &ConnTable) -> Vec<ConnInfo> {
        let mut v = Vec::new();
        t.visit(&mut |c| v.push(*c));
        v
    }

    #[test]
    fn publish_read_clear_round_trip() {
        let (t, p) = ConnTable::new(4);
        assert!(collect(&t).is_empty());
        let a = info(1, "10.0.0.2:4791");
        let b = info(2, "[fe80::1:2]:9000");
        p.publish(0, &a).unwrap();
        p.publish(3, &b).unwrap();
        assert_eq!(collect(&t), vec![a, b]);
        p.clear(0).unwrap();
        assert_eq!(collect(&t), vec![b]);
        assert_eq!(
            p.publish(4, &a),
            Err(SlotOutOfRange {
                slot: 4,
                capacity: 4
            })
        );
    }

    #[test]
    fn concurrent_reads_never_see_a_torn_snapshot() {
        use std::sync::atomic::AtomicBool;
        let (t, p) = ConnTable::new(1);
        let stop = Arc::new(AtomicBool::new(false));
        let progress = Arc::new(AtomicU64::new(0));
        let writer = {
            let (stop, progress) = (stop.clone(), progress.clone());
            std::thread::spawn(move || {
                let mut i = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    // Every field derived from i: a torn read mixes two i's.
                    let mut c = info(i, "10.0.0.2:4791");
                    c.cwnd_bytes = i;
                    c.lost_packets = i;
                    c.delivered_bytes = i;
                    p.publish(0, &c).unwrap();
                    i += 1;
                    if i.is_multiple_of(1024) {
                        progress.store(i, Ordering::Relaxed);
                        // Bursts of back-to-back writes (to catch a torn read), then a gap.
                        std::thread::yield_now();
                    }
                }
                i
            })
        };
        let (mut seen, mut last) = (0, 0);
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        // Read for as long as the writer takes to publish a million snapshots.
        while progress.load(Ordering::Relaxed) < 1_000_000 && std::time::Instant::now() < deadline {
            for c in collect(&t) {
                assert_eq!(c.cwnd_bytes, c.conn_id);
                assert_eq!(c.lost_packets, c.conn_id);
                assert_eq!(c.delivered_bytes, c.conn_id);
                assert_eq!(c.delivered_messages, c.conn_id * 10);
                assert!(c.conn_id >= last, "went back from {last} to {}", c.conn_id);
                last = c.conn_id;
                seen += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
        let published = writer.join().unwrap();
        assert!(
            seen >= 100,
            "only {seen} reads completed ({published} publishes)"
        );
    }
}
