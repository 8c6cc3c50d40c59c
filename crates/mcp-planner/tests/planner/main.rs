//! Planner tests: one rule per `check` case (`rules`), the laws as property
//! tests (`props`), golden renders (`golden`).

// Test code: a panic is a failed test.
#![allow(clippy::unwrap_used)]

mod golden;
mod props;
mod rules;
mod support;
