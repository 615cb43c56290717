//! Integration tests across normcore's crates live in `tests/tests/`.
