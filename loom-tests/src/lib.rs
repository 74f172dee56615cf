//! loom models of lamina's lock-free structures. The models live in `tests/` and only run with
//! `RUSTFLAGS="--cfg loom"`; see the README for the command.
