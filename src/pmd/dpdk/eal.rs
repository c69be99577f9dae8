//! Starting DPDK's environment abstraction layer (EAL): once per process, from a typed
//! configuration, yielding the [`Eal`] token everything else needs.

use std::ffi::{c_char, CString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use super::error::{check, DpdkError};
use dpdk_sys as sys;

/// Where the EAL takes its memory from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EalMemory {
    /// Ordinary pages (`--no-huge -m MB`): no hugepages needed, no physical addresses, good
    /// for virtual devices and tests.
    NoHuge {
        /// Megabytes of heap to reserve.
        mb: u32,
    },
    /// Hugepages from the system's hugetlbfs (`-m MB` when given, else DPDK's default of
    /// taking pages as needed).
    Hugepages {
        /// Megabytes to reserve at start-up (`-m`), or `None` to grow on demand.
        mb: Option<u32>,
    },
}

/// How to start the EAL. Build with [`EalConfig::new`] and set fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EalConfig {
    /// Cores the EAL may use (`-l`); the first is the main lcore, to which the calling thread
    /// is pinned.
    pub cores: Vec<usize>,
    /// Memory source.
    pub memory: EalMemory,
    /// Virtual devices to create at start-up (`--vdev`), e.g. `net_ring0` or
    /// `net_memif0,role=server,socket=/run/x.sock`. Devices can also be added later with
    /// [`Device::probe`](super::Device::probe).
    pub vdevs: Vec<String>,
    /// PCI devices to use (`-a`); empty means every bound device unless `no_pci` is set.
    pub pci_allow: Vec<String>,
    /// Skip the PCI bus scan (`--no-pci`).
    pub no_pci: bool,
    /// Shared-file prefix (`--file-prefix`): must differ between processes that each run
    /// their own primary EAL on one host.
    pub file_prefix: Option<String>,
    /// Keep no files in /var/run (`--in-memory`; with [`EalMemory::NoHuge`], `--no-shconf`):
    /// no secondary processes, nothing left behind.
    pub in_memory: bool,
    /// EAL log level (`--log-level`), e.g. `"notice"`.
    pub log_level: Option<String>,
    /// Further EAL arguments, passed as they are.
    pub extra: Vec<String>,
}

impl EalConfig {
    /// Core 0, 256 MB of ordinary pages, no PCI scan, `--in-memory`, a file prefix unique to
    /// this process, log level `notice`.
    pub fn new() -> EalConfig {
        EalConfig {
            cores: vec![0],
            memory: EalMemory::NoHuge { mb: 256 },
            vdevs: Vec::new(),
            pci_allow: Vec::new(),
            no_pci: true,
            file_prefix: Some(format!("bypass-{}", std::process::id())),
            in_memory: true,
            log_level: Some("notice".into()),
            extra: Vec::new(),
        }
    }

    /// The argument vector `rte_eal_init` gets (program name first).
    pub fn args(&self) -> Result<Vec<String>, EalError> {
        if self.cores.is_empty() {
            return Err(EalError::Config("at least one core is needed"));
        }
        let mut a = vec!["bypass".to_owned()];
        let cores: Vec<String> = self.cores.iter().map(|c| c.to_string()).collect();
        a.push("-l".into());
        a.push(cores.join(","));
        match self.memory {
            EalMemory::NoHuge { mb } => {
                a.push("--no-huge".into());
                a.push("-m".into());
                a.push(mb.to_string());
            }
            EalMemory::Hugepages { mb: Some(mb) } => {
                a.push("-m".into());
                a.push(mb.to_string());
            }
            EalMemory::Hugepages { mb: None } => {}
        }
        for v in &self.vdevs {
            a.push("--vdev".into());
            a.push(v.clone());
        }
        for p in &self.pci_allow {
            a.push("-a".into());
            a.push(p.clone());
        }
        if self.no_pci {
            if !self.pci_allow.is_empty() {
                return Err(EalError::Config("no_pci with a PCI allow list"));
            }
            a.push("--no-pci".into());
        }
        if let Some(p) = &self.file_prefix {
            a.push(format!("--file-prefix={p}"));
        }
        if self.in_memory {
            // --no-huge implies legacy memory, which --in-memory refuses; --no-shconf is the
            // part of it that still applies (no shared config files in the runtime folder).
            if matches!(self.memory, EalMemory::NoHuge { .. }) {
                a.push("--no-shconf".into());
            } else {
                a.push("--in-memory".into());
            }
        }
        if let Some(l) = &self.log_level {
            a.push(format!("--log-level={l}"));
        }
        a.extend(self.extra.iter().cloned());
        Ok(a)
    }
}

impl Default for EalConfig {
    fn default() -> Self {
        EalConfig::new()
    }
}

/// Errors starting the EAL.
#[derive(Debug, thiserror::Error)]
pub enum EalError {
    /// The EAL was already started (or a start was attempted) in this process; DPDK allows
    /// one start per process.
    #[error("the DPDK EAL was already initialised in this process")]
    AlreadyInitialized,
    /// The configuration cannot be expressed.
    #[error("invalid EAL configuration: {0}")]
    Config(&'static str),
    /// An argument held a NUL byte.
    #[error("EAL argument contains a NUL byte: {0:?}")]
    Nul(String),
    /// `rte_eal_init` failed.
    #[error(transparent)]
    Init(#[from] DpdkError),
}

/// Set by the first `Eal::init`, success or not: DPDK cannot retry a failed init either.
static STARTED: AtomicBool = AtomicBool::new(false);

/// Proof that the EAL is running in this process. Cheap to clone; pools and devices hold a
/// clone, and `rte_eal_cleanup` runs when the last one drops.
#[derive(Clone, Debug)]
pub struct Eal {
    _inner: Arc<EalInner>,
}

#[derive(Debug)]
struct EalInner;

impl Drop for EalInner {
    fn drop(&mut self) {
        // SAFETY: every object that used the EAL (pools, devices) holds an Eal clone, so
        // none is left when the last one drops.
        let r = unsafe { sys::rte_eal_cleanup() };
        if r < 0 {
            tracing::warn!(errno = -r, "rte_eal_cleanup failed");
        }
    }
}

impl Eal {
    /// Start the EAL. Only the first call in a process can succeed; later calls return
    /// [`EalError::AlreadyInitialized`]. The calling thread becomes the main lcore and is
    /// pinned to `cfg.cores[0]`.
    pub fn init(cfg: &EalConfig) -> Result<Eal, EalError> {
        let args = cfg.args()?;
        let cargs = args
            .iter()
            .map(|a| CString::new(a.as_str()).map_err(|_| EalError::Nul(a.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        if STARTED.swap(true, Ordering::AcqRel) {
            return Err(EalError::AlreadyInitialized);
        }
        // rte_eal_init may keep pointers into argv (it reorders it and keeps some strings),
        // so the strings live for the rest of the process.
        let cargs: &'static [CString] = Vec::leak(cargs);
        let argv: &'static mut [*mut c_char] = Vec::leak(
            cargs
                .iter()
                .map(|c| c.as_ptr() as *mut c_char)
                .chain(std::iter::once(std::ptr::null_mut()))
                .collect(),
        );
        tracing::debug!(?args, "rte_eal_init");
        // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL, all living
        // for the rest of the process; STARTED guarantees this runs once per process.
        let ret = unsafe { sys::rte_eal_init(cargs.len() as i32, argv.as_mut_ptr()) };
        check("rte_eal_init", ret)?;
        Ok(Eal {
            _inner: Arc::new(EalInner),
        })
    }

    /// DPDK's version string, e.g. `DPDK 22.11.11`.
    pub fn version() -> String {
        // SAFETY: rte_version returns a static NUL-terminated string.
        unsafe { std::ffi::CStr::from_ptr(sys::rte_version()) }
            .to_string_lossy()
            .into_owned()
    }

    /// Whether IOVAs are virtual addresses (`RTE_IOVA_VA`).
    pub fn iova_is_va(&self) -> bool {
        // SAFETY: the EAL is initialised (self proves it).
        unsafe { sys::rte_eal_iova_mode() == sys::RTE_IOVA_VA }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_from_config() {
        let mut c = EalConfig::new();
        c.cores = vec![1];
        c.file_prefix = Some("t1".into());
        c.vdevs.push("net_ring0".into());
        let a = c.args().unwrap();
        assert_eq!(
            a,
            [
                "bypass",
                "-l",
                "1",
                "--no-huge",
                "-m",
                "256",
                "--vdev",
                "net_ring0",
                "--no-pci",
                "--file-prefix=t1",
                "--no-shconf",
                "--log-level=notice"
            ]
        );
        c.pci_allow.push("0000:00:04.0".into());
        assert!(matches!(c.args(), Err(EalError::Config(_))));
        c.no_pci = false;
        c.memory = EalMemory::Hugepages { mb: None };
        let a = c.args().unwrap();
        assert!(a.contains(&"-a".to_owned()) && !a.contains(&"--no-huge".to_owned()));
        c.cores.clear();
        assert!(matches!(c.args(), Err(EalError::Config(_))));
    }
}
