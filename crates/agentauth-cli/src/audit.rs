//! `agentauth audit …`: what compliance asks of audit-log.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use agentauth_grpc::client::channel;
use agentauth_proto::audit::v1 as pb;
use agentauth_proto::audit::v1::audit_log_client::AuditLogClient;
use chrono::{DateTime, Utc};

use crate::{Endpoints, writeln_out};

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Prints matching events, one JSON object per line, oldest first.
    Query {
        #[command(flatten)]
        filter: Filter,
        /// Stop after this many events.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Streams every matching event as CSV or NDJSON, to stdout or a file.
    Export {
        #[command(flatten)]
        filter: Filter,
        /// `csv` or `ndjson`.
        #[arg(long, value_parser = ["csv", "ndjson"])]
        format: String,
        /// Write here instead of stdout.
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Walks a tenant's hash chain; exits 1 if any event was altered or removed.
    Verify {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        from_sequence: Option<u64>,
        #[arg(long)]
        to_sequence: Option<u64>,
    },
    /// Removes a tenant's events recorded before a time (operators only), leaving a checkpoint.
    Purge {
        #[arg(long)]
        tenant: String,
        /// RFC 3339, e.g. 2026-01-01T00:00:00Z.
        #[arg(long, value_parser = parse_time)]
        before: DateTime<Utc>,
    },
}

/// Which events: a tenant, and optionally a time window and exact matches.
#[derive(Debug, clap::Args)]
pub struct Filter {
    #[arg(long)]
    tenant: String,
    /// Events that occurred at or after this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    since: Option<DateTime<Utc>>,
    /// Events that occurred before this time (RFC 3339).
    #[arg(long, value_parser = parse_time)]
    until: Option<DateTime<Utc>>,
    /// The end user, in the caller's own terms (e.g. user_42).
    #[arg(long)]
    identifier: Option<String>,
    #[arg(long)]
    connection: Option<String>,
    /// e.g. `tool.executed`, `credential.revoked`.
    #[arg(long)]
    action: Option<String>,
    #[arg(long, value_parser = ["success", "failure", "denied"])]
    outcome: Option<String>,
    /// The credential's account id.
    #[arg(long)]
    account: Option<String>,
    #[arg(long, requires = "account")]
    credential_version: Option<u64>,
}

impl Filter {
    fn wire(&self) -> pb::EventFilter {
        pb::EventFilter {
            tenant: self.tenant.clone(),
            start_time: self.since.map(agentauth_audit::event::wire_timestamp),
            end_time: self.until.map(agentauth_audit::event::wire_timestamp),
            identifier: self.identifier.clone(),
            connection_name: self.connection.clone(),
            action: self.action.clone(),
            outcome: self.outcome.as_deref().map(|o| {
                match o {
                    "success" => pb::Outcome::Success,
                    "failure" => pb::Outcome::Failure,
                    _ => pb::Outcome::Denied,
                }
                .into()
            }),
            account_id: self.account.clone(),
            credential_version: self.credential_version,
        }
    }
}

fn parse_time(text: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("not an RFC 3339 time ({e}); e.g. 2026-01-01T00:00:00Z"))
}

pub async fn run(command: Command, endpoints: &Endpoints) -> anyhow::Result<ExitCode> {
    let key = endpoints.api_key()?;
    let mut client = AuditLogClient::new(channel(&endpoints.audit_log, Some(&key))?);
    let status_error =
        |status: tonic::Status| anyhow::anyhow!("{:?}: {}", status.code(), status.message());
    match command {
        Command::Query { filter, limit } => {
            let mut out = std::io::stdout().lock();
            let mut page_token = String::new();
            let mut printed = 0;
            while printed < limit {
                let page = client
                    .query(pb::QueryRequest {
                        filter: Some(filter.wire()),
                        page_size: u32::try_from((limit - printed).min(1000)).unwrap_or(1000),
                        page_token,
                    })
                    .await
                    .map_err(status_error)?
                    .into_inner();
                for event in page.events {
                    let recorded = recorded(event)?;
                    let mut line = String::new();
                    agentauth_audit::export::ndjson_line(&recorded, &mut line);
                    out.write_all(line.as_bytes())?;
                    printed += 1;
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            filter,
            format,
            output,
        } => {
            let format = if format == "csv" {
                pb::ExportFormat::Csv
            } else {
                pb::ExportFormat::Ndjson
            };
            let mut stream = client
                .export(pb::ExportRequest {
                    filter: Some(filter.wire()),
                    format: format.into(),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let mut sink: Box<dyn Write> = match &output {
                Some(path) => Box::new(std::io::BufWriter::new(std::fs::File::create(path)?)),
                None => Box::new(std::io::stdout().lock()),
            };
            while let Some(chunk) = stream.message().await.map_err(status_error)? {
                sink.write_all(&chunk.data)?;
            }
            sink.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            tenant,
            from_sequence,
            to_sequence,
        } => {
            let result = client
                .verify_chain(pb::VerifyChainRequest {
                    tenant: tenant.clone(),
                    from_sequence,
                    to_sequence,
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let mut out = std::io::stdout().lock();
            if result.ok {
                writeln_out(
                    &mut out,
                    &format!("ok: {} events of `{tenant}` verify", result.events_checked),
                )?;
                Ok(ExitCode::SUCCESS)
            } else {
                writeln_out(
                    &mut out,
                    &format!(
                        "BROKEN at sequence {}: {} ({} events verified before it)",
                        result.first_broken_sequence.unwrap_or_default(),
                        result.reason,
                        result.events_checked
                    ),
                )?;
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Purge { tenant, before } => {
            let result = client
                .purge_before(pb::PurgeBeforeRequest {
                    tenant: tenant.clone(),
                    before: Some(agentauth_audit::event::wire_timestamp(before)),
                })
                .await
                .map_err(status_error)?
                .into_inner();
            let checkpoint = result.checkpoint.map(|c| c.sequence).unwrap_or_default();
            writeln_out(
                &mut std::io::stdout().lock(),
                &format!(
                    "purged {} events of `{tenant}`; the chain now starts after sequence {checkpoint}",
                    result.events_purged
                ),
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn recorded(event: pb::Event) -> anyhow::Result<agentauth_audit::Recorded> {
    let sequence = event.sequence;
    let recorded_at = event
        .recorded_at
        .as_ref()
        .and_then(agentauth_audit::event::timestamp);
    let prev_hash: [u8; 32] = event.prev_hash.as_slice().try_into().unwrap_or_default();
    let hash: [u8; 32] = event.hash.as_slice().try_into().unwrap_or_default();
    let event = agentauth_audit::Event::try_from(event)
        .map_err(|e| anyhow::anyhow!("audit-log sent a malformed event: {e}"))?;
    Ok(agentauth_audit::Recorded {
        event,
        sequence,
        recorded_at: recorded_at.unwrap_or_default(),
        prev_hash,
        hash,
    })
}
