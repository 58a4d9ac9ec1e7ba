//! Tests of the statement detector on real statements.
use super::*;

