//! Workspace-level tests. The integration suites (real clusters on loopback, rdkafka interop,
//! madsim end-to-end) arrive with the real node; for now this crate checks workspace rules such
//! as "core depends on no IO crate" (see `tests/core_is_sans_io.rs`).
