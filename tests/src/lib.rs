//! Holds only end-to-end tests; see `tests/`.
