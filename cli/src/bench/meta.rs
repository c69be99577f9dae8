//! What a `bypass bench` run records about itself, so two runs can be compared later: the
//! build (version, git revision), when and where it ran (UTC date, CPU, cores, command line),
//! the hugepage state (the kernel's reserve, hugetlbfs mounts, and where the bypass stacks'
//! packet memory actually came from), and the run's cache-line floor (BENCHMARKING.md: the
//! two vCPUs move between a near and a far state; the floor says which one a run saw).
//!
//! The JSON schema is documented on [`super::report::Report`].
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bypass::mem::Region;
use serde::{Deserialize, Serialize};

/// Round trips the floor measurement times (after [`FLOOR_WARMUP`]); it stops earlier at
/// [`FLOOR_LIMIT`]. About 30-100 ms on a VM's two vCPUs.
const FLOOR_SAMPLES: u64 = 200_000;
/// Round trips before the floor measurement records.
const FLOOR_WARMUP: u64 = 20_000;
/// The longest the floor measurement runs (it stops early when a core is busy elsewhere).
const FLOOR_LIMIT: Duration = Duration::from_millis(300);

/// The run's header (JSON `header`).
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Header {
    /// `CARGO_PKG_VERSION` of the `bypass` that ran.
    pub bypass_version: String,
    /// Git revision it was built from (`BYPASS_GIT_REV` at build time), or `unknown`.
    pub git_rev: String,
    /// When the run started, UTC, RFC 3339 (`2026-12-07T06:30:00Z`).
    pub date_utc: String,
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Logical CPUs in /proc/cpuinfo (not this process's affinity).
    pub cpus: usize,
    /// The command line, `argv[0]` first.
    pub command_line: Vec<String>,
    /// Rounds of the whole matrix.
    pub rounds: usize,
    /// Measured time per cell, ns.
    pub duration_ns: u64,
    /// Unmeasured warm-up per cell, ns.
    pub warmup_ns: u64,
    /// Core of the client (None: unpinned).
    pub client_core: Option<usize>,
    /// Core of the spawned peer (None: unpinned or a peer elsewhere).
    pub peer_core: Option<usize>,
    /// Whether the peer ran elsewhere (`--peer ADDR`).
    pub remote_peer: bool,
    /// Hugepages and where the packet memory came from.
    pub hugepages: Hugepages,
    /// Cache-line ping-pong between the client's and the peer's cores before the first cell.
    pub cacheline_floor: Option<Floor>,
    /// The same after the last cell (a changed core state during the run shows here).
    pub cacheline_floor_end: Option<Floor>,
    /// Why a floor is missing (one core, a core that cannot be pinned).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cacheline_floor_note: Option<String>,
}

/// The machine's hugepages and the run's packet memory.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Hugepages {
    /// `HugePages_Total` from /proc/meminfo at the start of the run.
    pub total: Option<u64>,
    /// `HugePages_Free` at the start of the run.
    pub free: Option<u64>,
    /// `Hugepagesize`, KiB.
    pub size_kib: Option<u64>,
    /// Mount points of hugetlbfs (from /proc/mounts; bypass itself maps hugepages through
    /// `memfd_create(MFD_HUGETLB)` and needs no mount).
    pub hugetlbfs_mounts: Vec<String>,
    /// The packet pools of this process's bypass stacks.
    pub client: PacketMemory,
    /// The peer's (None: no bypass cell, or a peer that does not answer `MEM`).
    pub peer: Option<PacketMemory>,
    /// One word for both: `hugepages`, `4k-fallback`, `4k`, `mixed` or `unused`.
    pub packet_memory: String,
}

/// Where a process's bypass stacks got their packet memory (one pool per stack).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct PacketMemory {
    /// Pools on 2 MiB hugepages.
    pub hugepage_pools: u64,
    /// Pools on 4 KiB pages.
    pub base_page_pools: u64,
    /// Of those, the pools that asked for hugepages and fell back to 4 KiB pages.
    pub fallbacks: u64,
    /// Why the first fallback happened (the failing call's error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fallback_reason: Option<String>,
}

impl PacketMemory {
    /// One word: `unused`, `hugepages`, `4k-fallback` (hugepages asked for, none had), `4k`
    /// (asked for 4 KiB pages) or `mixed`.
    pub fn state(&self) -> &'static str {
        match (self.hugepage_pools, self.base_page_pools, self.fallbacks) {
            (0, 0, _) => "unused",
            (_, 0, _) => "hugepages",
            (0, b, f) if f == b => "4k-fallback",
            (0, _, 0) => "4k",
            _ => "mixed",
        }
    }

    fn add(&mut self, o: &PacketMemory) {
        self.hugepage_pools += o.hugepage_pools;
        self.base_page_pools += o.base_page_pools;
        self.fallbacks += o.fallbacks;
        if self.fallback_reason.is_none() {
            self.fallback_reason.clone_from(&o.fallback_reason);
        }
    }

    /// The peer's `MEM` reply: `<huge> <base> <fallbacks> [reason words...]`.
    pub fn to_wire(&self) -> String {
        let mut s = format!(
            "{} {} {}",
            self.hugepage_pools, self.base_page_pools, self.fallbacks
        );
        if let Some(r) = &self.fallback_reason {
            // One line: the reason's own whitespace folds to single spaces.
            for w in r.split_whitespace() {
                s.push(' ');
                s.push_str(w);
            }
        }
        s
    }

    /// Parses [`PacketMemory::to_wire`]'s words.
    pub fn from_wire(words: &[String]) -> Option<PacketMemory> {
        let n = |i: usize| words.get(i)?.parse::<u64>().ok();
        Some(PacketMemory {
            hugepage_pools: n(0)?,
            base_page_pools: n(1)?,
            fallbacks: n(2)?,
            fallback_reason: (words.len() > 3).then(|| words[3..].join(" ")),
        })
    }
}

static PACKET_MEMORY: Mutex<PacketMemory> = Mutex::new(PacketMemory {
    hugepage_pools: 0,
    base_page_pools: 0,
    fallbacks: 0,
    fallback_reason: None,
});

/// Counts a bypass stack's packet pool (called when the stack is built, on any thread).
pub fn note_packet_region(r: &Region) {
    let mut m = PACKET_MEMORY.lock().unwrap_or_else(|e| e.into_inner());
    let one = PacketMemory {
        hugepage_pools: u64::from(r.is_hugepage()),
        base_page_pools: u64::from(!r.is_hugepage()),
        fallbacks: u64::from(r.fallback().is_some()),
        fallback_reason: r.fallback().map(|f| f.reason.clone()),
    };
    m.add(&one);
}

/// This process's packet pools so far.
pub fn packet_memory() -> PacketMemory {
    PACKET_MEMORY
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone()
}

/// The word for a run: both processes' pools together.
pub fn packet_memory_state(client: &PacketMemory, peer: Option<&PacketMemory>) -> String {
    let mut all = client.clone();
    if let Some(p) = peer {
        all.add(p);
    }
    all.state().to_owned()
}

/// A cache-line ping-pong between two cores (round-trip time, ns).
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default)]
pub struct Floor {
    /// The timing thread's core and the answering thread's core.
    pub cores: [usize; 2],
    /// Round trips recorded.
    pub samples: u64,
    /// Median round trip.
    pub p50_ns: u64,
    /// 99th percentile.
    pub p99_ns: u64,
    /// 99.9th percentile.
    pub p99_9_ns: u64,
    /// Largest.
    pub max_ns: u64,
}

/// Measures the cache-line floor between `cores` (a few hundred ms at most).
pub fn floor(cores: (usize, usize)) -> Result<Floor, String> {
    let h = crate::memif_bench::engine::cacheline_rtt(
        cores,
        FLOOR_WARMUP,
        FLOOR_SAMPLES,
        Some(FLOOR_LIMIT),
    )?;
    Ok(Floor {
        cores: [cores.0, cores.1],
        samples: h.len(),
        p50_ns: h.value_at_quantile(0.5),
        p99_ns: h.value_at_quantile(0.99),
        p99_9_ns: h.value_at_quantile(0.999),
        max_ns: h.max(),
    })
}

/// The cores the floor is measured between: the client's and the peer's (0 and 1 when
/// unpinned or the peer is elsewhere: the floor then reads the machine's state).
pub fn floor_cores(client: Option<usize>, peer: Option<usize>) -> (usize, usize) {
    let a = client.unwrap_or(0);
    let b = peer.unwrap_or(if a == 1 { 0 } else { 1 });
    (a, b)
}

/// `(model, logical CPUs)` from /proc/cpuinfo.
pub fn cpu() -> (String, usize) {
    let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    cpu_from(&info)
}

fn cpu_from(info: &str) -> (String, usize) {
    let cpus = info.lines().filter(|l| l.starts_with("processor")).count();
    let model = info
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_else(|| "unknown CPU".into());
    (model, cpus)
}

/// The hugepage reserve and hugetlbfs mounts (packet memory is filled in after the run).
pub fn hugepages() -> Hugepages {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    hugepages_from(&meminfo, &mounts)
}

fn hugepages_from(meminfo: &str, mounts: &str) -> Hugepages {
    let field = |name: &str| {
        meminfo.lines().find_map(|l| {
            let rest = l.strip_prefix(name)?.strip_prefix(':')?;
            rest.split_whitespace().next()?.parse::<u64>().ok()
        })
    };
    Hugepages {
        total: field("HugePages_Total"),
        free: field("HugePages_Free"),
        size_kib: field("Hugepagesize"),
        hugetlbfs_mounts: mounts
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(2) == Some(&"hugetlbfs")).then(|| f[1].to_owned())
            })
            .collect(),
        ..Hugepages::default()
    }
}

/// `t` as RFC 3339 UTC with seconds (`2026-12-07T06:30:00Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The git revision this binary was built from.
pub fn git_rev() -> &'static str {
    option_env!("BYPASS_GIT_REV").unwrap_or("unknown")
}

fn us(ns: u64) -> String {
    format!("{:.3}", ns as f64 / 1000.0)
}

impl Floor {
    fn text(&self) -> String {
        format!("p50 {} us, p99.9 {} us", us(self.p50_ns), us(self.p99_9_ns))
    }
}

impl Header {
    /// The few lines the tables start with.
    pub fn text(&self) -> String {
        let h = &self.hugepages;
        let mut out = format!(
            "bypass {} rev {}, {}, {} CPUs ({}), {} round(s)\n",
            self.bypass_version,
            self.git_rev,
            self.date_utc,
            self.cpus,
            self.cpu_model,
            self.rounds
        );
        let reserve = match (h.total, h.free, h.size_kib) {
            (Some(t), Some(f), Some(s)) => format!("{f} of {t} free, {s} KiB pages"),
            _ => "reserve unknown".into(),
        };
        let mounts = if h.hugetlbfs_mounts.is_empty() {
            "hugetlbfs not mounted".to_owned()
        } else {
            format!("hugetlbfs on {}", h.hugetlbfs_mounts.join(", "))
        };
        let pools = |p: &PacketMemory| {
            format!(
                "{} on hugepages, {} on 4 KiB",
                p.hugepage_pools, p.base_page_pools
            )
        };
        let mut mem = format!(
            "packet memory: {} (client pools: {}",
            h.packet_memory,
            pools(&h.client)
        );
        match &h.peer {
            Some(p) => mem.push_str(&format!("; peer pools: {})", pools(p))),
            None => mem.push(')'),
        }
        let reason = h
            .client
            .fallback_reason
            .as_ref()
            .or(h.peer.as_ref().and_then(|p| p.fallback_reason.as_ref()));
        if let Some(r) = reason {
            mem.push_str(&format!("; fallback: {r}"));
        }
        out.push_str(&format!("hugepages: {reserve}, {mounts}; {mem}\n"));
        match (&self.cacheline_floor, &self.cacheline_floor_end) {
            (Some(s), end) => {
                out.push_str(&format!(
                    "cache-line floor (round trip, cores {} and {}): {} at start",
                    s.cores[0],
                    s.cores[1],
                    s.text()
                ));
                if let Some(e) = end {
                    out.push_str(&format!("; {} at end", e.text()));
                }
                out.push('\n');
            }
            (None, _) => out.push_str(&format!(
                "cache-line floor: not measured ({})\n",
                self.cacheline_floor_note.as_deref().unwrap_or("unknown")
            )),
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        // 2000-02-29 (a leap day in a century leap year) 12:34:56.
        let t = UNIX_EPOCH + Duration::from_secs(951_827_696);
        assert_eq!(rfc3339(t), "2000-02-29T12:34:56Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_796_603_999);
        assert_eq!(rfc3339(t), "2026-12-07T00:39:59Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_107_542_399);
        assert_eq!(rfc3339(t), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn reads_meminfo_mounts_and_cpuinfo() {
        let meminfo = "MemTotal:  8000000 kB\nHugePages_Total:     128\nHugePages_Free:       \
                       100\nHugePages_Rsvd:  0\nHugepagesize:       2048 kB\n";
        let mounts = "proc /proc proc rw 0 0\nhugetlbfs /dev/hugepages hugetlbfs rw,pagesize=2M \
                      0 0\n";
        let h = hugepages_from(meminfo, mounts);
        assert_eq!(
            (h.total, h.free, h.size_kib),
            (Some(128), Some(100), Some(2048))
        );
        assert_eq!(h.hugetlbfs_mounts, vec!["/dev/hugepages".to_owned()]);
        let h = hugepages_from("", "");
        assert_eq!((h.total, h.free), (None, None));
        assert!(h.hugetlbfs_mounts.is_empty());
        let (model, n) = cpu_from(
            "processor\t: 0\nmodel name\t: Some CPU @ 2GHz\nprocessor\t: 1\nmodel name\t: x\n",
        );
        assert_eq!((model.as_str(), n), ("Some CPU @ 2GHz", 2));
    }

    #[test]
    fn packet_memory_states_and_wire_form() {
        let m = |h, b, f| PacketMemory {
            hugepage_pools: h,
            base_page_pools: b,
            fallbacks: f,
            fallback_reason: (f > 0).then(|| "mmap(hugetlb): Cannot allocate memory".into()),
        };
        assert_eq!(m(0, 0, 0).state(), "unused");
        assert_eq!(m(3, 0, 0).state(), "hugepages");
        assert_eq!(m(0, 2, 2).state(), "4k-fallback");
        assert_eq!(m(0, 2, 0).state(), "4k");
        assert_eq!(m(1, 1, 1).state(), "mixed");
        let x = m(1, 2, 2);
        let words: Vec<String> = x.to_wire().split_whitespace().map(str::to_owned).collect();
        assert_eq!(PacketMemory::from_wire(&words), Some(x));
        assert_eq!(PacketMemory::from_wire(&["1".into()]), None);
        assert_eq!(packet_memory_state(&m(2, 0, 0), Some(&m(0, 2, 2))), "mixed");
    }

    #[test]
    fn floor_cores_are_distinct() {
        assert_eq!(floor_cores(Some(0), Some(1)), (0, 1));
        assert_eq!(floor_cores(None, None), (0, 1));
        assert_eq!(floor_cores(Some(1), None), (1, 0));
        assert_eq!(floor_cores(Some(3), Some(5)), (3, 5));
    }
}
