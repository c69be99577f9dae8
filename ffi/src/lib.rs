//! Raw bindings to the system's DPDK (22.11 on Debian 12). Raw only: the safe wrappers live in
//! `bypass::pmd::dpdk`.
#![allow(non_camel_case_types, non_snake_case, non_upper_case_globals)]
