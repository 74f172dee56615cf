//! Shared helpers of lamina's cross-crate tests.
