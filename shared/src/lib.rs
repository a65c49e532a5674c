//! osdeploy's library: the domain, Apple's protocols, the storage and
//! scheduling ports with their adapters, and the HTTP handlers that both the
//! local server and the Lambda functions mount.

pub mod adapters;
pub mod apple;
pub mod catalog;
pub mod domain;
pub mod export;
pub mod http;
pub mod ports;
pub mod service;
