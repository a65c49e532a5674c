//! Contract suites shared by every adapter; filled in below.
