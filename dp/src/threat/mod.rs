//! The threat stage's rate and heuristic detectors (issue 15): pure per-core structs with a
//! `Config`, fed by the Inspector on the packet clock.

#[cfg(test)]
mod captures;
pub mod flood;
pub mod icmp_tunnel;
pub mod limit;
