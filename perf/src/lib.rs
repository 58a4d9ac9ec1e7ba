//! Warden perf rig (see perf/README.md).
