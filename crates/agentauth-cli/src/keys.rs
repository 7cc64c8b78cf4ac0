//! `agentauth keys rotate-tenant`: a tenant's encryption key in token-vault.

use std::process::ExitCode;

use agentauth_grpc::client::channel;
use agentauth_proto::vault::v1 as pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;

use crate::{Endpoints, writeln_out};

/// Rotates `tenant`'s Transit key through token-vault (operators only) and prints what was
/// re-wrapped under the new version.
pub async fn rotate_tenant(tenant: String, endpoints: &Endpoints) -> anyhow::Result<ExitCode> {
    let key = endpoints.api_key()?;
    let mut client = TokenVaultClient::new(channel(&endpoints.token_vault, Some(&key))?);
    let rotated = client
        .rotate_tenant_key(pb::RotateTenantKeyRequest {
            tenant: tenant.clone(),
        })
        .await
        .map_err(|status| anyhow::anyhow!("{:?}: {}", status.code(), status.message()))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    writeln_out(
        &mut out,
        &format!(
            "tenant {tenant}: key version {} (older versions no longer decrypt)\n\
             re-wrapped: {} credentials, {} webhook secrets, {} pending consents",
            rotated.key_version,
            rotated.credentials_rewrapped,
            rotated.webhook_secrets_rewrapped,
            rotated.consents_rewrapped,
        ),
    )?;
    Ok(ExitCode::SUCCESS)
}
