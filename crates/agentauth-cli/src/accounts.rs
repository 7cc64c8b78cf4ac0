//! `agentauth accounts …`: end users' Asana accounts in token-vault.

use std::process::ExitCode;

use agentauth_grpc::client::channel;
use agentauth_proto::vault::v1 as pb;
use agentauth_proto::vault::v1::token_vault_client::TokenVaultClient;

use crate::{Endpoints, writeln_out};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Prints the link the user opens to connect an OAuth connection; with `--token-stdin`,
    /// stores a PAT or service-account token read from standard input instead.
    Connect {
        #[arg(long)]
        tenant: String,
        /// The connection's name, e.g. `asana`.
        #[arg(long)]
        connection: String,
        /// The end user, in the caller's own terms (e.g. user_42).
        #[arg(long)]
        identifier: String,
        /// Where to send the browser after consent (must be on the allow-list).
        #[arg(long, conflicts_with = "token_stdin")]
        return_url: Option<String>,
        /// Read a PAT or service-account token from standard input and store it (validated
        /// against Asana first); for connections that do not use OAuth.
        #[arg(long)]
        token_stdin: bool,
        /// Let the consent or token connect another Asana user than the one the account acts
        /// as now (without it such a consent or token is refused).
        #[arg(long)]
        replace_user: bool,
    },
    /// Shows each connection's state for one user and, where broken, the link that fixes it.
    Status {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        identifier: String,
    },
    /// Lists a tenant's accounts (never their secrets).
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        connection: Option<String>,
        /// pending, active, expired, needs_reauth or revoked.
        #[arg(long, value_parser = ["pending", "active", "expired", "needs_reauth", "revoked"])]
        state: Option<String>,
    },
    /// Revokes an account at Asana and destroys its stored credential.
    Disconnect {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        connection: String,
        #[arg(long)]
        identifier: String,
    },
}

fn state_name(state: i32) -> &'static str {
    match pb::AccountState::try_from(state) {
        Ok(pb::AccountState::Pending) => "pending",
        Ok(pb::AccountState::Active) => "active",
        Ok(pb::AccountState::Expired) => "expired",
        Ok(pb::AccountState::NeedsReauth) => "needs_reauth",
        Ok(pb::AccountState::Revoked) => "revoked",
        _ => "unknown",
    }
}

fn parse_state(name: &str) -> pb::AccountState {
    match name {
        "pending" => pb::AccountState::Pending,
        "active" => pb::AccountState::Active,
        "expired" => pb::AccountState::Expired,
        "needs_reauth" => pb::AccountState::NeedsReauth,
        _ => pb::AccountState::Revoked,
    }
}

fn account_line(account: &pb::Account) -> String {
    let mut line = format!(
        "{}\t{}\t{}\t{}\tversion={}",
        account.connection_name,
        account.identifier,
        state_name(account.state),
        account.account_id,
        account.credential_version,
    );
    if !account.asana_user_gid.is_empty() {
        line.push_str(&format!(
            "\tasana_user={} ({})",
            account.asana_user_gid, account.asana_user_name
        ));
    }
    if !account.state_reason.is_empty() {
        line.push_str(&format!("\treason={}", account.state_reason));
    }
    line
}

pub async fn run(command: Command, endpoints: &Endpoints) -> anyhow::Result<ExitCode> {
    let key = endpoints.api_key()?;
    let mut client = TokenVaultClient::new(channel(&endpoints.token_vault, Some(&key))?);
    let status_error =
        |status: tonic::Status| anyhow::anyhow!("{:?}: {}", status.code(), status.message());
    let mut out = std::io::stdout().lock();
    match command {
        Command::Connect {
            tenant,
            connection,
            identifier,
            token_stdin: true,
            replace_user,
            ..
        } => {
            let mut token = String::new();
            std::io::stdin().read_line(&mut token)?;
            let stored = client
                .put_credential(pb::PutCredentialRequest {
                    tenant,
                    connection_name: connection,
                    identifier,
                    token: token.trim().to_owned(),
                    replace_user,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if let Some(account) = stored.account {
                writeln_out(&mut out, &account_line(&account))?;
            }
        }
        Command::Connect {
            tenant,
            connection,
            identifier,
            return_url,
            token_stdin: false,
            replace_user,
        } => {
            let link = client
                .create_authorization_link(pb::CreateAuthorizationLinkRequest {
                    tenant,
                    connection_name: connection,
                    identifier,
                    return_url,
                    replace_user,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            writeln_out(&mut out, &link.authorization_url)?;
        }
        Command::Status { tenant, identifier } => {
            let status = client
                .get_identity_status(pb::GetIdentityStatusRequest { tenant, identifier })
                .await
                .map_err(status_error)?
                .into_inner();
            for connection in status.connections {
                let state = connection.state.map_or("not_connected", state_name);
                writeln_out(
                    &mut out,
                    &format!("{}\t{state}", connection.connection_name),
                )?;
                if let Some(url) = connection.reauthorization_url {
                    writeln_out(&mut out, &format!("  connect: {url}"))?;
                }
            }
        }
        Command::List {
            tenant,
            connection,
            state,
        } => {
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_accounts(pb::ListAccountsRequest {
                        tenant: tenant.clone(),
                        connection_name: connection.clone(),
                        state: state.as_deref().map(|s| parse_state(s).into()),
                        page_size: 100,
                        page_token,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                for account in &page.accounts {
                    writeln_out(&mut out, &account_line(account))?;
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
        }
        Command::Disconnect {
            tenant,
            connection,
            identifier,
        } => {
            let disconnected = client
                .disconnect_account(pb::DisconnectAccountRequest {
                    tenant,
                    connection_name: connection,
                    identifier,
                    reason: "disconnected with the agentauth CLI".into(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            if let Some(account) = &disconnected.account {
                writeln_out(&mut out, &account_line(account))?;
            }
            writeln_out(
                &mut out,
                &format!("revoked at Asana: {}", disconnected.revoked_upstream),
            )?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
