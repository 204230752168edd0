//! Shared code of cairn's tools. `loadgen` is the engine of `cairn-bench`.

pub mod loadgen;
