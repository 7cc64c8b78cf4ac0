//! End-to-end: the real binaries, started as an operator would start them.

mod audit;
mod binaries;
mod chaos;
mod cli;
mod dev;
mod durability;
mod grpc_peer;
mod matrix;
mod otlp;
mod probes;
mod vault;
mod webhooks;
