//! Compiles the contracts in `proto/` with protox (pure Rust, no system
//! `protoc`), generates prost messages plus tonic clients and servers, and
//! writes the encoded descriptor set used for gRPC reflection.

use std::error::Error;
use std::path::PathBuf;

use protox::prost::Message as _;

/// Every contract, relative to the proto root. A new file must be added here
/// and given a module in `src/lib.rs`.
const PROTOS: &[&str] = &[
    "agentauth/vault/v1/token_vault.proto",
    "agentauth/executor/v1/connector_executor.proto",
    "agentauth/audit/v1/audit_log.proto",
    "agentauth/watcher/v1/schema_watcher.proto",
];

/// Messages that carry a secret. prost's derived `Debug` would print it, so
/// it is skipped and `src/lib.rs` implements a redacting `Debug` instead.
const SECRET_MESSAGES: &[&str] = &[
    ".agentauth.vault.v1.PutCredentialRequest",
    ".agentauth.vault.v1.GetAccessTokenResponse",
    ".agentauth.vault.v1.ReportRejectedTokenResponse",
    ".agentauth.executor.v1.MintMcpSessionResponse",
    ".agentauth.vault.v1.PutWebhookSecretRequest",
    ".agentauth.vault.v1.GetWebhookSecretResponse",
];

/// Name of the encoded `FileDescriptorSet` in `OUT_DIR`.
const DESCRIPTOR_FILE: &str = "agentauth_descriptor.bin";

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    println!("cargo:rerun-if-changed=build.rs");
    // A directory is scanned recursively for modifications.
    println!("cargo:rerun-if-changed={}", proto_root.display());

    // Source info keeps the doc comments (for generated rustdoc and for
    // reflection clients); imports make the set self-contained for reflection.
    let fds = protox::compile(PROTOS, [&proto_root])?;
    std::fs::write(out_dir.join(DESCRIPTOR_FILE), fds.encode_to_vec())?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .skip_debug(SECRET_MESSAGES)
        .compile_fds(fds)?;
    Ok(())
}
