//! The transport header parser on arbitrary bytes: never panics, and whatever parses
//! re-emits to the same header; a BATCH that parses has an in-bounds length table.
//!
//! The body of fuzz target `header`, shared by the target (fuzz/fuzz_targets/header.rs) and by
//! the stable replay of the committed seeds (tests/fuzz_seeds.rs).
use bypass::wire::transport::{batch_entries, Kind, Packet, Repr};

/// One input: no panic, the invariants above hold. True if it parsed (and was checked).
pub fn run(data: &[u8]) -> bool {
    let Ok(p) = Packet::new_checked(data) else {
        return false;
    };
    // Accessors are all in bounds after new_checked.
    let _ = (p.flags(), p.dst_cid(), p.pn(), p.payload().len());
    let Ok(r) = Repr::parse(&p) else {
        return false;
    };
    let mut out = vec![0u8; r.buffer_len()];
    r.emit(&mut Packet::new_unchecked(&mut out[..]));
    out.extend_from_slice(p.payload());
    let again = Repr::parse(&Packet::new_checked(&out[..]).expect("re-emitted header checks"))
        .expect("re-emitted header parses");
    assert_eq!(again, r);
    // A BATCH that parsed has a length table whose messages are in bounds and fill the body.
    if let Kind::Batch { count, .. } = r.kind {
        let body = p.payload();
        let e = batch_entries(body, count).expect("parsed BATCH body checks");
        assert_eq!(e.len(), usize::from(count));
        let sum: usize = e.map(|rg| body[rg].len()).sum();
        assert_eq!(sum + 2 * usize::from(count), body.len());
    }
    true
}
