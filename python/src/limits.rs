//! `bypass.Stack`'s keyword arguments for the limits against hostile peers (issue 18). Each
//! is `StackBuilder`'s setting of the same name, durations in seconds; the builder refuses a
//! value that makes no sense when the stack is built (`bypass.Error` naming the setting).
//! Here only what Python can get wrong and Rust cannot is checked: a duration that is not a
//! number of seconds, an `arp` dict with a key `ArpConfig` does not have.

use std::time::Duration;

use bypass::runtime::net::ArpConfig;
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// A setting in seconds as a `Duration` (0 is passed on: the builder says what it means).
/// Read as every timeout is (`crate::duration`: at most 100 years), the error naming it.
pub(crate) fn seconds(what: &str, secs: Option<f64>) -> PyResult<Option<Duration>> {
    crate::duration(secs).map_err(|_| {
        PyValueError::new_err(format!(
            "{what} must be a non-negative number of seconds, not {}",
            secs.unwrap_or_default()
        ))
    })
}

/// The keys `arp` takes.
const ARP_KEYS: &str = "capacity, pending_dests, queue_per_dest, max_tries, retry, ttl";

/// `arp={...}`: `ArpConfig`'s fields by name (`retry` and `ttl` in seconds), the others at
/// their defaults.
pub(crate) fn arp_config(d: &Bound<'_, PyDict>) -> PyResult<ArpConfig> {
    let mut a = ArpConfig::default();
    for (k, v) in d.iter() {
        let k: String = k
            .extract()
            .map_err(|_| PyValueError::new_err(format!("arp: keys are names ({ARP_KEYS})")))?;
        let bad = |e: PyErr| PyValueError::new_err(format!("arp: {k}: {e}"));
        let nanos = |v: &Bound<'_, PyAny>| -> PyResult<u64> {
            let d = seconds(&format!("arp: {k}"), Some(v.extract().map_err(bad)?))?;
            Ok(d.map_or(0, |d| d.as_nanos().min(u128::from(u64::MAX)) as u64))
        };
        match k.as_str() {
            "capacity" => a.capacity = v.extract().map_err(bad)?,
            "pending_dests" => a.pending_dests = v.extract().map_err(bad)?,
            "queue_per_dest" => a.queue_per_dest = v.extract().map_err(bad)?,
            "max_tries" => a.max_tries = v.extract().map_err(bad)?,
            "retry" => a.retry_ns = nanos(&v)?,
            "ttl" => a.ttl_ns = nanos(&v)?,
            _ => {
                return Err(PyValueError::new_err(format!(
                    "arp: no setting {k:?} (it takes {ARP_KEYS})"
                )))
            }
        }
    }
    Ok(a)
}
