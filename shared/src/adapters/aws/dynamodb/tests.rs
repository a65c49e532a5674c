//! Tests of the adapter's pure parts; the contract suites run against a
//! DynamoDB emulator from the tests crate.
