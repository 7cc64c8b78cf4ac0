//! `agentauth tools list` and `agentauth exec`: connector-executor's tool catalogue and one
//! tool call, as an agent would make it.

use std::process::ExitCode;

use agentauth_grpc::client::channel;
use agentauth_proto::executor::v1 as pb;
use agentauth_proto::executor::v1::connector_executor_client::ConnectorExecutorClient;
use tonic_types::StatusExt as _;

use crate::{Endpoints, writeln_out};

/// `agentauth tools …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Lists the tools the caller may use: name, source and hints; `--schemas` adds each
    /// input schema.
    List {
        /// Only this connection's tools.
        #[arg(long)]
        connection: Option<String>,
        /// Only tools whose name starts with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Only tools from this source.
        #[arg(long, value_parser = ["curated", "generated", "upstream-mcp"])]
        source: Option<String>,
        /// Print each tool's description and input schema too.
        #[arg(long)]
        schemas: bool,
    },
}

/// `agentauth exec TOOL …`.
#[derive(Debug, clap::Args)]
pub struct Exec {
    /// The tool's exact name, e.g. `asana_task_get`.
    tool: String,
    #[arg(long)]
    tenant: String,
    /// The connection to call through.
    #[arg(long, default_value = "asana")]
    connection: String,
    /// The end user the call acts for.
    #[arg(long)]
    identifier: String,
    /// The tool input, a JSON object.
    #[arg(long, default_value = "{}")]
    input: String,
    /// Follow next_page and concatenate the pages (list tools only).
    #[arg(long)]
    auto_paginate: bool,
    /// The most pages --auto-paginate fetches (0: the server's default).
    #[arg(long, default_value_t = 0)]
    max_pages: u32,
}

pub(crate) fn client(
    endpoints: &Endpoints,
) -> anyhow::Result<ConnectorExecutorClient<agentauth_grpc::client::AuthenticatedChannel>> {
    let key = endpoints.api_key()?;
    Ok(ConnectorExecutorClient::new(channel(
        &endpoints.connector_executor,
        Some(&key),
    )?))
}

/// The status as a user reads it: code, message, and the details that say what to do.
pub(crate) fn explain(status: &tonic::Status) -> anyhow::Error {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_details_bad_request() {
        for violation in bad.field_violations {
            text.push_str(&format!(
                "\n  {}: {}",
                violation.field, violation.description
            ));
        }
    }
    if let Some(help) = status.get_details_help() {
        for link in help.links {
            text.push_str(&format!("\n  {}: {}", link.description, link.url));
        }
    }
    if let Some(retry) = status.get_details_retry_info()
        && let Some(delay) = retry.retry_delay
    {
        text.push_str(&format!("\n  retry after {} ms", delay.as_millis()));
    }
    anyhow::anyhow!(text)
}

pub async fn list(command: Command, endpoints: &Endpoints) -> anyhow::Result<ExitCode> {
    let Command::List {
        connection,
        prefix,
        source,
        schemas,
    } = command;
    let source = source.map(|s| match s.as_str() {
        "curated" => pb::ToolSource::Curated,
        "generated" => pb::ToolSource::Generated,
        _ => pb::ToolSource::UpstreamMcp,
    });
    let mut client = client(endpoints)?;
    let mut out = std::io::stdout().lock();
    let mut page_token = String::new();
    loop {
        let page = client
            .list_tools(pb::ListToolsRequest {
                connection_name: connection.clone(),
                name_prefix: prefix.clone(),
                source: source.map(Into::into),
                page_size: 500,
                page_token,
            })
            .await
            .map_err(|s| explain(&s))?
            .into_inner();
        for tool in &page.tools {
            let hints = tool.hints.unwrap_or_default();
            let hint = if hints.read_only {
                "read"
            } else if hints.destructive {
                "destructive"
            } else {
                "write"
            };
            let source = match tool.source() {
                pb::ToolSource::Curated => "curated",
                pb::ToolSource::Generated => "generated",
                pb::ToolSource::UpstreamMcp => "upstream-mcp",
                pb::ToolSource::Unspecified => "unknown",
            };
            writeln_out(
                &mut out,
                &format!("{}\t{}\t{source}\t{hint}", tool.connection_name, tool.name),
            )?;
            if schemas {
                writeln_out(&mut out, &format!("  {}", tool.description))?;
                writeln_out(&mut out, &format!("  input: {}", tool.input_schema_json))?;
            }
        }
        if page.next_page_token.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        page_token = page.next_page_token;
    }
}

/// Runs the tool; prints its output. A tool-level failure prints its output and exits 1.
pub async fn exec(args: Exec, endpoints: &Endpoints) -> anyhow::Result<ExitCode> {
    let response = client(endpoints)?
        .execute_tool(pb::ExecuteToolRequest {
            tenant: args.tenant,
            connection_name: args.connection,
            identifier: args.identifier,
            tool_name: args.tool,
            input_json: args.input,
            options: Some(pb::ExecuteOptions {
                auto_paginate: args.auto_paginate,
                max_pages: args.max_pages,
            }),
        })
        .await
        .map_err(|s| explain(&s))?
        .into_inner();
    let mut out = std::io::stdout().lock();
    writeln_out(&mut out, &response.output_json)?;
    if let Some(next) = &response.next_page {
        eprintln!("more results: pass \"offset\": \"{}\"", next.offset);
    }
    if response.is_error {
        eprintln!(
            "the tool reported an error (execution {})",
            response.execution_id
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}
