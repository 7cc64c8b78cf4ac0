//! Generated Rust bindings for agentauth's public gRPC contracts.
//!
//! The contracts live in `proto/` at the workspace root (checked by `buf lint`
//! and `buf breaking`); this crate compiles them at build time with `protox`
//! and `tonic-prost-build`, so no system `protoc` is needed. Each protobuf
//! package becomes a module holding its messages, enums, a tonic client and a
//! tonic server:
//!
//! | package                 | module          | service             |
//! |-------------------------|-----------------|---------------------|
//! | `agentauth.vault.v1`    | [`vault::v1`]    | `TokenVault`        |
//! | `agentauth.executor.v1` | [`executor::v1`] | `ConnectorExecutor` |
//! | `agentauth.audit.v1`    | [`audit::v1`]    | `AuditLog`          |
//! | `agentauth.watcher.v1`  | [`watcher::v1`]  | `SchemaWatcher`     |
//!
//! These are wire types: validate them once at the service edge and convert
//! them into domain types there; domain code should not see them.
//!
//! Messages that carry a secret (`PutCredentialRequest`,
//! `GetAccessTokenResponse`, `ReportRejectedTokenResponse`,
//! `MintMcpSessionResponse`) implement `Debug` by hand and print
//! `[redacted]` in place of the token, so logging a request or response
//! never leaks one.

mod redact;

/// Encoded `google.protobuf.FileDescriptorSet` of every contract and its
/// imports, with source info (doc comments). Register it with
/// `tonic_reflection` so that tools such as `grpcurl` can discover the APIs.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("agentauth_descriptor");

/// Contracts of token-vault: connected accounts and their credentials.
pub mod vault {
    /// Package `agentauth.vault.v1`: the `TokenVault` service.
    #[allow(clippy::all)] // generated code
    pub mod v1 {
        tonic::include_proto!("agentauth.vault.v1");
    }
}

/// Contracts of connector-executor: tools, raw requests, MCP sessions and
/// webhook events.
pub mod executor {
    /// Package `agentauth.executor.v1`: the `ConnectorExecutor` service.
    #[allow(clippy::all)] // generated code
    pub mod v1 {
        tonic::include_proto!("agentauth.executor.v1");
    }
}

/// Contracts of audit-log: the tamper-evident audit trail.
pub mod audit {
    /// Package `agentauth.audit.v1`: the `AuditLog` service.
    #[allow(clippy::all)] // generated code
    pub mod v1 {
        tonic::include_proto!("agentauth.audit.v1");
    }
}

/// Contracts of schema-watcher: MCP tool snapshots, baselines and drift.
pub mod watcher {
    /// Package `agentauth.watcher.v1`: the `SchemaWatcher` service.
    #[allow(clippy::all)] // generated code
    pub mod v1 {
        tonic::include_proto!("agentauth.watcher.v1");
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use prost_types::FileDescriptorSet;

    use super::FILE_DESCRIPTOR_SET;

    fn descriptor_set() -> FileDescriptorSet {
        FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("FILE_DESCRIPTOR_SET decodes")
    }

    #[test]
    fn descriptor_set_contains_every_service() {
        let mut services: Vec<String> = descriptor_set()
            .file
            .iter()
            .flat_map(|file| {
                file.service
                    .iter()
                    .map(move |service| format!("{}.{}", file.package(), service.name()))
            })
            .collect();
        services.sort();
        assert_eq!(
            services,
            [
                "agentauth.audit.v1.AuditLog",
                "agentauth.executor.v1.ConnectorExecutor",
                "agentauth.vault.v1.TokenVault",
                "agentauth.watcher.v1.SchemaWatcher",
            ]
        );
    }

    #[test]
    fn descriptor_set_is_self_contained_for_reflection() {
        let set = descriptor_set();
        let names: Vec<&str> = set.file.iter().map(|file| file.name()).collect();
        for file in &set.file {
            for dependency in &file.dependency {
                assert!(
                    names.contains(&dependency.as_str()),
                    "{} imports {dependency}, which is missing from the set",
                    file.name()
                );
            }
        }
    }

    /// Every field documented as `SECRET.` must be in a message whose `Debug`
    /// is redacted (see `build.rs` and `redact.rs`). Adding a secret field to
    /// another message fails here until that message is redacted too.
    #[test]
    fn every_secret_field_is_in_a_redacted_message() {
        const MESSAGE_TYPE: i32 = 4; // FileDescriptorProto.message_type
        const FIELD: i32 = 2; // DescriptorProto.field
        let mut secret_messages = Vec::new();
        for file in descriptor_set().file {
            let Some(info) = &file.source_code_info else {
                continue;
            };
            for location in &info.location {
                if !location
                    .leading_comments()
                    .trim_start()
                    .starts_with("SECRET.")
                {
                    continue;
                }
                if let [MESSAGE_TYPE, message, FIELD, _] = location.path.as_slice() {
                    let index = usize::try_from(*message).expect("message index is non-negative");
                    secret_messages.push(format!(
                        "{}.{}",
                        file.package(),
                        file.message_type[index].name()
                    ));
                }
            }
        }
        secret_messages.sort();
        assert_eq!(
            secret_messages,
            [
                "agentauth.executor.v1.MintMcpSessionResponse",
                "agentauth.vault.v1.GetAccessTokenResponse",
                "agentauth.vault.v1.PutCredentialRequest",
                "agentauth.vault.v1.ReportRejectedTokenResponse",
            ]
        );
    }
}
