//! SSH (in progress).
