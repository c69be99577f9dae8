//! Hugepages really back a region when reserved, and the fallback is taken and reported when
//! they are not. Reads /proc/meminfo; other processes using hugepages at the same moment can
//! disturb a reading, so a reading is retried.

use crate::harness;
use bypass::mem::{HugePages, PageSize, Region, RegionError, HUGE_PAGE_SIZE};

fn meminfo(key: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[test]
fn hugepages_back_a_region_when_reserved() {
    let pages = 4u64;
    if meminfo("HugePages_Free") < pages + 2 {
        harness::skip(&format!(
            "hugepage backing not checked: fewer than {} free 2 MiB hugepages \
             (HugePages_Free = {}); scripts/test.sh reserves them as root",
            pages + 2,
            meminfo("HugePages_Free")
        ));
        return;
    }
    let mut last = None;
    for _ in 0..5 {
        let before = meminfo("HugePages_Free");
        let r = Region::new(
            "hp-test",
            (pages as usize) * HUGE_PAGE_SIZE,
            HugePages::Require,
        )
        .expect("hugepages are free");
        let during = meminfo("HugePages_Free");
        assert_eq!(r.pages(), PageSize::Huge2M);
        assert!(r.is_hugepage());
        assert!(r.fallback().is_none());
        assert_eq!(r.len(), pages as usize * HUGE_PAGE_SIZE);
        drop(r);
        let after = meminfo("HugePages_Free");
        if before - during == pages && after == before {
            return;
        }
        last = Some((before, during, after));
    }
    panic!("HugePages_Free did not drop by {pages} and come back: {last:?}");
}

#[test]
fn fallback_is_taken_and_reported() {
    // Ask for more hugepages than the system has in total (not just free: other tests may
    // take and return some meanwhile), so the kernel must refuse them.
    let total = meminfo("HugePages_Total") as usize;
    let size = (total + 1) * HUGE_PAGE_SIZE;
    let r = Region::new("fallback-test", size, HugePages::Prefer).expect("4 KiB fallback");
    assert_eq!(r.pages(), PageSize::Base4K);
    let f = r.fallback().expect("fallback reported");
    assert!(
        f.reason.contains("mmap") || f.reason.contains("memfd"),
        "{f:?}"
    );
    assert!(r.len() >= size);

    match Region::new("require-test", size, HugePages::Require) {
        Err(e @ RegionError::NoHugePages { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("nr_hugepages"),
                "message says what to do: {msg}"
            );
        }
        other => panic!("expected NoHugePages, got {other:?}"),
    }

    let r = Region::new("never-test", 10, HugePages::Never).unwrap();
    assert_eq!(r.pages(), PageSize::Base4K);
    assert!(
        r.fallback().is_none(),
        "no hugepages asked for, nothing to report"
    );
}

#[test]
fn region_is_shareable_by_fd() {
    use std::os::fd::AsFd;
    let r = Region::new("share-test", 8192, HugePages::Prefer).unwrap();
    // SAFETY-free check through a second mapping of the same fd: a write through one view is
    // seen through the other.
    let fd = r.fd().as_fd().try_clone_to_owned().unwrap();
    let peer = Region::from_fd(fd, r.len()).unwrap();
    assert_eq!(peer.pages(), PageSize::Foreign);
    let a = r.as_ptr();
    let b = peer.as_ptr();
    assert_ne!(a, b);
    #[allow(unsafe_code)]
    // SAFETY: both are live mappings of at least 8192 bytes; single-threaded test.
    unsafe {
        a.add(100).write_volatile(0xab);
        assert_eq!(b.add(100).read_volatile(), 0xab);
    }
}
