//! `agentauth mcp mint`: a per-user session of a virtual MCP server, and the configuration an
//! MCP client connects with.

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
}

pub async fn run(command: Command, endpoints: &Endpoints) -> anyhow::Result<ExitCode> {
    let Command::Mint {
        virtual_server,
        tenant,
        identifier,
        ttl,
    } = command;
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
    let expires = session
        .expires_at
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, 0))
        .map(|t| t.to_rfc3339())
        .unwrap_or_default();
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
