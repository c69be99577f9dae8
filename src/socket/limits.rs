//! [`Limits`]: the limits against hostile peers and hosts (docs/SECURITY.md) as one value,
//! for front ends that collect settings before they build (the C API, the Python package).

use std::time::Duration;

use super::StackBuilder;
use crate::runtime::net::ArpConfig;

/// The hostile-input limits of a [`StackBuilder`], each `None` for the builder's default;
/// [`StackBuilder::limits`] sets those given. Each field is the builder's setting of the
/// same name (see it for the default, the meaning and what `build` refuses).
#[derive(Clone, Default)]
pub struct Limits {
    /// [`StackBuilder::rx_budget`].
    pub rx_budget: Option<u64>,
    /// [`StackBuilder::max_connections_per_source`].
    pub max_connections_per_source: Option<usize>,
    /// [`StackBuilder::max_rx_slots`].
    pub max_rx_slots: Option<usize>,
    /// [`StackBuilder::rx_pool_reserve`].
    pub rx_pool_reserve: Option<f64>,
    /// [`StackBuilder::stateless_queue`].
    pub stateless_queue: Option<usize>,
    /// [`StackBuilder::arp`].
    pub arp: Option<ArpConfig>,
    /// [`StackBuilder::memif_copy_rx`].
    pub memif_copy_rx: Option<bool>,
    /// [`StackBuilder::memif_require_sealed_regions`].
    pub memif_require_sealed_regions: Option<bool>,
    /// [`StackBuilder::memif_max_peer_region_bytes`].
    pub memif_max_peer_region_bytes: Option<u64>,
    /// [`StackBuilder::memif_max_pending_handshakes`].
    pub memif_max_pending_handshakes: Option<usize>,
    /// [`StackBuilder::memif_allowed_uid`].
    pub memif_allowed_uid: Option<u32>,
    /// [`StackBuilder::memif_handshake_timeout`].
    pub memif_handshake_timeout: Option<Duration>,
    /// [`StackBuilder::memif_wedge_timeout`].
    pub memif_wedge_timeout: Option<Duration>,
    /// [`StackBuilder::memif_secret`] (never printed by `Debug`).
    pub memif_secret: Option<String>,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limits")
            .field("rx_budget", &self.rx_budget)
            .field(
                "max_connections_per_source",
                &self.max_connections_per_source,
            )
            .field("max_rx_slots", &self.max_rx_slots)
            .field("rx_pool_reserve", &self.rx_pool_reserve)
            .field("stateless_queue", &self.stateless_queue)
            .field("arp", &self.arp)
            .field("memif_copy_rx", &self.memif_copy_rx)
            .field(
                "memif_require_sealed_regions",
                &self.memif_require_sealed_regions,
            )
            .field(
                "memif_max_peer_region_bytes",
                &self.memif_max_peer_region_bytes,
            )
            .field(
                "memif_max_pending_handshakes",
                &self.memif_max_pending_handshakes,
            )
            .field("memif_allowed_uid", &self.memif_allowed_uid)
            .field("memif_handshake_timeout", &self.memif_handshake_timeout)
            .field("memif_wedge_timeout", &self.memif_wedge_timeout)
            .field(
                "memif_secret",
                &self.memif_secret.as_ref().map(|_| "(redacted)"),
            )
            .finish()
    }
}

impl StackBuilder {
    /// Every limit `l` gives (the others keep their current setting). Call it after
    /// [`connection_config`](Self::connection_config), which would replace `max_rx_slots`.
    pub fn limits(mut self, l: &Limits) -> Self {
        if let Some(v) = l.rx_budget {
            self = self.rx_budget(v);
        }
        if let Some(v) = l.max_connections_per_source {
            self = self.max_connections_per_source(v);
        }
        if let Some(v) = l.max_rx_slots {
            self = self.max_rx_slots(v);
        }
        if let Some(v) = l.rx_pool_reserve {
            self = self.rx_pool_reserve(v);
        }
        if let Some(v) = l.stateless_queue {
            self = self.stateless_queue(v);
        }
        if let Some(v) = l.arp {
            self = self.arp(v);
        }
        if let Some(v) = l.memif_copy_rx {
            self = self.memif_copy_rx(v);
        }
        if let Some(v) = l.memif_require_sealed_regions {
            self = self.memif_require_sealed_regions(v);
        }
        if let Some(v) = l.memif_max_peer_region_bytes {
            self = self.memif_max_peer_region_bytes(v);
        }
        if let Some(v) = l.memif_max_pending_handshakes {
            self = self.memif_max_pending_handshakes(v);
        }
        if let Some(v) = l.memif_allowed_uid {
            self = self.memif_allowed_uid(v);
        }
        if let Some(v) = l.memif_handshake_timeout {
            self = self.memif_handshake_timeout(v);
        }
        if let Some(v) = l.memif_wedge_timeout {
            self = self.memif_wedge_timeout(v);
        }
        if let Some(v) = &l.memif_secret {
            self = self.memif_secret(v.as_str());
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_prints_the_secret() {
        let l = Limits {
            memif_secret: Some("hunter2".into()),
            stateless_queue: Some(3),
            ..Limits::default()
        };
        let s = format!("{l:?}");
        assert!(!s.contains("hunter2"), "{s}");
        assert!(
            s.contains("redacted") && s.contains("stateless_queue: Some(3)"),
            "{s}"
        );
    }

    #[test]
    fn the_builders_debug_never_prints_the_memif_secret() {
        let b = crate::socket::Stack::builder(
            crate::socket::Backend::Memif {
                socket: "/nonexistent/bypass.sock".into(),
                role: crate::pmd::memif::Role::Client,
                id: 0,
            },
            std::net::Ipv4Addr::LOCALHOST,
        )
        .limits(&Limits {
            memif_secret: Some("hunter2".into()),
            ..Limits::default()
        });
        let s = format!("{b:?}");
        assert!(!s.contains("hunter2") && s.contains("redacted"), "{s}");
    }
}
