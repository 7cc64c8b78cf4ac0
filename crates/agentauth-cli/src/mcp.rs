//! `agentauth mcp mint`: a per-user session of a virtual MCP server, and the configuration an
//! MCP client connects with; `agentauth mcp sessions list|revoke`.

use std::process::ExitCode;
use std::time::Duration;

use agentauth_proto::executor::v1 as pb;

use crate::tools::{client, explain};
use crate::{Endpoints, writeln_out};

/// `agentauth mcp …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Mints a session of a virtual MCP server for one end user and prints its URL, its
    /// bearer and a client configuration (the caller must be one of the server's minters).
    Mint {
        /// The virtual server, as `[[virtual_servers]]` names it.
        #[arg(long)]
        virtual_server: String,
        #[arg(long)]
        tenant: String,
        /// The end user the session acts for.
        #[arg(long)]
        identifier: String,
        /// How long the session lives (capped by the server's `max_ttl`); its default when
        /// not given.
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
    },
    /// The sessions of a tenant's virtual MCP servers.
    #[command(subcommand)]
    Sessions(Sessions),
}

/// `agentauth mcp sessions …`.
#[derive(Debug, clap::Subcommand)]
pub enum Sessions {
    /// Lists a tenant's sessions, newest first: the live ones, or with `--all` also those that
    /// expired or were revoked.
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        virtual_server: Option<String>,
        /// Only this end user's sessions.
        #[arg(long)]
        identifier: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Revokes a session: every replica refuses its bearer within its revocation refresh.
    Revoke {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        session_id: String,
    },
}

pub async fn run(command: Command, endpoints: &Endpoints) -> anyhow::Result<ExitCode> {
    match command {
        Command::Mint {
            virtual_server,
            tenant,
            identifier,
            ttl,
        } => mint(endpoints, virtual_server, tenant, identifier, ttl).await,
        Command::Sessions(Sessions::List {
            tenant,
            virtual_server,
            identifier,
            all,
        }) => {
            let mut client = client(endpoints)?;
            let mut out = std::io::stdout().lock();
            let mut page_token = String::new();
            let mut listed = 0;
            loop {
                let page = client
                    .list_mcp_sessions(pb::ListMcpSessionsRequest {
                        tenant: tenant.clone(),
                        virtual_server: virtual_server.clone().unwrap_or_default(),
                        identifier: identifier.clone().unwrap_or_default(),
                        include_ended: all,
                        page_size: 500,
                        page_token,
                    })
                    .await
                    .map_err(|s| explain(&s))?
                    .into_inner();
                for session in &page.sessions {
                    listed += 1;
                    writeln_out(&mut out, &describe(session))?;
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if listed == 0 {
                writeln_out(&mut out, "no sessions")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sessions(Sessions::Revoke { tenant, session_id }) => {
            let revoked = client(endpoints)?
                .revoke_mcp_session(pb::RevokeMcpSessionRequest { tenant, session_id })
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            let mut out = std::io::stdout().lock();
            if revoked.already_revoked {
                writeln_out(&mut out, "already revoked; nothing changed")?;
            } else {
                writeln_out(&mut out, "revoked")?;
            }
            if let Some(session) = &revoked.session {
                writeln_out(&mut out, &describe(session))?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `time` in RFC 3339, empty when unset.
pub(crate) fn rfc3339(time: Option<&prost_types::Timestamp>) -> String {
    time.and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.to_rfc3339())
        .unwrap_or_default()
}

/// One line of a session: id, server, user, minter, expiry and, if it was revoked, when and
/// by whom.
fn describe(session: &pb::McpSession) -> String {
    let mut line = format!(
        "{}  {}  {}  minted by {}  expires {}",
        session.session_id,
        session.virtual_server,
        session.identifier,
        session.minted_by,
        rfc3339(session.expires_at.as_ref())
    );
    if session.revoked_at.is_some() {
        line.push_str(&format!(
            "  revoked {} by {}",
            rfc3339(session.revoked_at.as_ref()),
            session.revoked_by
        ));
    }
    line
}

async fn mint(
    endpoints: &Endpoints,
    virtual_server: String,
    tenant: String,
    identifier: String,
    ttl: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let ttl = ttl.map(prost_types::Duration::try_from).transpose()?;
    let session = client(endpoints)?
        .mint_mcp_session(pb::MintMcpSessionRequest {
            tenant,
            identifier,
            virtual_server: virtual_server.clone(),
            ttl,
        })
        .await
        .map_err(|s| explain(&s))?
        .into_inner();
    let expires = rfc3339(session.expires_at.as_ref());
    let client_config = serde_json::json!({
        "mcpServers": {
            virtual_server: {
                "type": "http",
                "url": session.url,
                "headers": {"Authorization": format!("Bearer {}", session.bearer_token)},
            }
        }
    });
    let mut out = std::io::stdout().lock();
    writeln_out(&mut out, &format!("url: {}", session.url))?;
    writeln_out(&mut out, &format!("bearer: {}", session.bearer_token))?;
    writeln_out(&mut out, &format!("expires_at: {expires}"))?;
    writeln_out(&mut out, &format!("session_id: {}", session.session_id))?;
    writeln_out(
        &mut out,
        &format!("tools: {}", session.tool_names.join(", ")),
    )?;
    writeln_out(
        &mut out,
        "\nAn MCP client's configuration (it holds the bearer: keep it as secret as a password):",
    )?;
    writeln_out(&mut out, &serde_json::to_string_pretty(&client_config)?)?;
    Ok(ExitCode::SUCCESS)
}
