//! The hand-off queues between cores allocate nothing once built: `try_send` and `try_recv`
//! on the fast path, on a full queue (the value comes back) and on an empty one, one queue
//! and a mesh, on the thread that sends and on the one that receives. Values are `Bytes`
//! (what kv_server hands over), moved without touching their buffers.

use bypass::bytes::Bytes;
use bypass::runtime::handoff::{channel, mesh, Full};

use crate::counting::{allocs, arm_trap, disarm_trap};

#[test]
fn try_send_try_recv_full_and_empty_allocate_nothing() {
    let (mut tx, mut rx) = channel::<Bytes>(64);
    // One buffer, shared: cloning a `Bytes` of a static or an already shared buffer does not
    // allocate (a `Vec`'s first clone would promote it, which is `bytes`', not ours).
    let value = Bytes::from_static(b"a request handed to the core that owns its key");
    let before = allocs();
    arm_trap();
    let mut got = 0usize;
    for round in 0..10_000usize {
        // Fill it to the brim and once more: the last comes back.
        for _ in 0..64 {
            tx.try_send(value.clone()).unwrap();
        }
        let Err(Full(back)) = tx.try_send(value.clone()) else {
            panic!("round {round}: a full queue took a value");
        };
        drop(back);
        assert_eq!(tx.len(), 64);
        while let Some(v) = rx.try_recv() {
            got += v.len();
        }
        // Empty: nothing to take.
        assert!(rx.try_recv().is_none());
    }
    disarm_trap();
    let n = allocs() - before;
    assert_eq!(got, 10_000 * 64 * value.len());
    assert_eq!(n, 0, "{n} allocations in 650 000 hand-offs");
}

#[test]
fn two_threads_and_a_mesh_allocate_nothing_per_hand_off() {
    const N: usize = 200_000;
    let mut shards = mesh::<(u32, Bytes)>(3, 256);
    let mut s2 = shards.pop().unwrap();
    let mut s1 = shards.pop().unwrap();
    let mut s0 = shards.pop().unwrap();
    let value = Bytes::from_static(b"value");
    let v1 = value.clone();
    // Shard 1 answers whatever shard 0 sends it, on its own thread, counting its allocations.
    let peer = std::thread::spawn(move || {
        let before = allocs();
        let mut answered = 0;
        while answered < N {
            if let Some((from, (k, b))) = s1.try_recv() {
                assert_eq!(from, 0);
                let mut reply = (k, b);
                while let Err(Full(back)) = s1.try_send(0, reply) {
                    reply = back;
                    std::hint::spin_loop();
                }
                answered += 1;
            } else {
                std::hint::spin_loop();
            }
        }
        // A request to shard 2 as well, taken by nobody: dropped with the mesh.
        s1.try_send(2, (0, v1)).unwrap();
        allocs() - before
    });
    let before = allocs();
    arm_trap();
    let (mut sent, mut back) = (0usize, 0usize);
    while back < N {
        if sent < N {
            // A full queue gives the value back; it is sent again next turn.
            if s0.try_send(1, (sent as u32, value.clone())).is_ok() {
                sent += 1;
            }
        }
        while let Some((from, (k, b))) = s0.try_recv() {
            assert_eq!((from, k as usize, b.len()), (1, back, 5));
            back += 1;
        }
    }
    disarm_trap();
    let n = allocs() - before;
    let peer_n = peer.join().unwrap();
    assert_eq!(s2.pending(), 1);
    assert!(s2.try_recv().is_some());
    assert_eq!(
        (n, peer_n),
        (0, 0),
        "allocations in {N} hand-offs each way (this thread, the peer's)"
    );
}
