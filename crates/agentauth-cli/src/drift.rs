//! `agentauth drift list|show|approve`: schema-watcher's drift reports and baseline approvals.

use std::io::IsTerminal as _;
use std::process::ExitCode;

use agentauth_grpc::client::{AuthenticatedChannel, channel};
use agentauth_proto::watcher::v1 as pb;
use agentauth_proto::watcher::v1::schema_watcher_client::SchemaWatcherClient;
use serde_json::Value;

use crate::{Endpoints, writeln_out};

/// `agentauth drift …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Lists drift not yet approved, newest first (`--all`: approved and superseded too).
    List {
        /// Only this connection's drift.
        #[arg(long)]
        connection: Option<String>,
        /// Include approved and superseded drift.
        #[arg(long)]
        all: bool,
    },
    /// Shows one drift: each change with its severity, and the definition's diff.
    Show {
        /// The drift's id (from `drift list`).
        id: String,
        #[arg(long, value_enum, default_value_t = Color::Auto)]
        color: Color,
    },
    /// Makes a snapshot the connection's baseline, or only the tools named. The snapshot is
    /// named, never implied: what is approved is what was reviewed (`drift show` prints it).
    Approve {
        #[arg(long)]
        connection: String,
        /// The snapshot to approve (`drift show` prints the one a drift was seen in).
        #[arg(long)]
        snapshot: String,
        /// Approve only this tool (repeat for several); the whole snapshot when not given.
        #[arg(long = "tool")]
        tools: Vec<String>,
    },
}

/// When `drift show` colours its output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Color {
    Auto,
    Always,
    Never,
}

fn client(endpoints: &Endpoints) -> anyhow::Result<SchemaWatcherClient<AuthenticatedChannel>> {
    let key = endpoints.api_key()?;
    Ok(SchemaWatcherClient::new(channel(
        &endpoints.schema_watcher,
        Some(&key),
    )?))
}

fn failed(status: &tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{:?}: {}", status.code(), status.message())
}

pub async fn run(command: Command, endpoints: &Endpoints) -> anyhow::Result<ExitCode> {
    let mut watcher = client(endpoints)?;
    let mut out = std::io::stdout().lock();
    match command {
        Command::List { connection, all } => {
            let mut page_token = String::new();
            let mut any = false;
            loop {
                let page = watcher
                    .list_drift(pb::ListDriftRequest {
                        connection_name: connection.clone(),
                        include_approved: all,
                        page_size: 200,
                        page_token,
                    })
                    .await
                    .map_err(|s| failed(&s))?
                    .into_inner();
                for drift in &page.drift {
                    any = true;
                    writeln_out(&mut out, &summary(drift))?;
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if !any {
                writeln_out(&mut out, "no drift")?;
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Show { id, color } => {
            let drift = find(&mut watcher, &id).await?;
            let paint = Paint(match color {
                Color::Always => true,
                Color::Never => false,
                Color::Auto => std::io::stdout().is_terminal(),
            });
            writeln_out(&mut out, &summary(&drift))?;
            if !drift.baseline_snapshot_id.is_empty() {
                writeln_out(
                    &mut out,
                    &format!("baseline snapshot {}", drift.baseline_snapshot_id),
                )?;
            }
            if !drift.snapshot_id.is_empty() {
                writeln_out(
                    &mut out,
                    &format!("seen in snapshot  {}", drift.snapshot_id),
                )?;
            }
            for change in &drift.changes {
                let severity = change.severity();
                let line = format!(
                    "  [{}] {} {}",
                    severity_name(severity),
                    printable(&change.path),
                    printable(&change.description)
                );
                writeln_out(&mut out, &paint.severity(severity, &line))?;
            }
            if !drift.tool_name.is_empty() {
                let before = definition(&mut watcher, &drift, &drift.baseline_snapshot_id).await?;
                let after = definition(&mut watcher, &drift, &drift.snapshot_id).await?;
                writeln_out(&mut out, "")?;
                for line in diff_lines(&before, &after) {
                    writeln_out(&mut out, &paint.line(&line))?;
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Approve {
            connection,
            snapshot,
            tools,
        } => {
            let snapshot_id = snapshot;
            let approved = watcher
                .approve_baseline(pb::ApproveBaselineRequest {
                    connection_name: connection.clone(),
                    snapshot_id: snapshot_id.clone(),
                    tool_names: tools,
                })
                .await
                .map_err(|s| failed(&s))?
                .into_inner();
            let baseline = approved.baseline.unwrap_or_default();
            writeln_out(
                &mut out,
                &format!(
                    "baseline of {connection} is now {} ({} tools, from snapshot {snapshot_id}); {} drift approved",
                    baseline.snapshot_id,
                    baseline.tools.len(),
                    approved.drift_approved
                ),
            )?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Text from the upstream server as it is safe to print: control characters (which could
/// drive the operator's terminal) shown escaped.
fn printable(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let escaped: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            escaped
        })
        .collect()
}

fn severity_name(severity: pb::Severity) -> &'static str {
    match severity {
        pb::Severity::Risk => "risk",
        pb::Severity::Breaking => "breaking",
        pb::Severity::NonBreaking => "non-breaking",
        pb::Severity::Unspecified => "unspecified",
    }
}

fn summary(drift: &pb::Drift) -> String {
    let kind = match drift.kind() {
        pb::DriftKind::Added => "added",
        pb::DriftKind::Removed => "removed",
        pb::DriftKind::Changed => "changed",
        pb::DriftKind::EmptyListing => "ALERT empty listing",
        pb::DriftKind::UpstreamFailing => "ALERT upstream failing",
        pb::DriftKind::Unspecified => "unspecified",
    };
    let state = if drift.approved {
        " (approved)"
    } else if drift.superseded {
        " (superseded)"
    } else {
        ""
    };
    let tool = if drift.tool_name.is_empty() {
        String::new()
    } else {
        format!(" {}", printable(&drift.tool_name))
    };
    format!(
        "{}  {}{tool}  {kind}  {}{state}",
        drift.drift_id,
        drift.connection_name,
        severity_name(drift.severity())
    )
}

/// The drift `id`, looked for page by page.
async fn find(
    watcher: &mut SchemaWatcherClient<AuthenticatedChannel>,
    id: &str,
) -> anyhow::Result<pb::Drift> {
    let mut page_token = String::new();
    loop {
        let page = watcher
            .list_drift(pb::ListDriftRequest {
                connection_name: None,
                include_approved: true,
                page_size: 500,
                page_token,
            })
            .await
            .map_err(|s| failed(&s))?
            .into_inner();
        if let Some(drift) = page.drift.into_iter().find(|d| d.drift_id == id) {
            return Ok(drift);
        }
        if page.next_page_token.is_empty() {
            anyhow::bail!("no drift `{id}` (see `agentauth drift list --all`)");
        }
        page_token = page.next_page_token;
    }
}

/// The drifted tool's definition in snapshot `snapshot_id`, pretty-printed; empty when the
/// snapshot is not named or lacks the tool.
async fn definition(
    watcher: &mut SchemaWatcherClient<AuthenticatedChannel>,
    drift: &pb::Drift,
    snapshot_id: &str,
) -> anyhow::Result<Vec<String>> {
    if snapshot_id.is_empty() {
        return Ok(Vec::new());
    }
    let snapshot = watcher
        .get_snapshot(pb::GetSnapshotRequest {
            connection_name: drift.connection_name.clone(),
            selector: Some(pb::get_snapshot_request::Selector::SnapshotId(
                snapshot_id.to_owned(),
            )),
        })
        .await
        .map_err(|s| failed(&s))?
        .into_inner()
        .snapshot
        .unwrap_or_default();
    let Some(tool) = snapshot.tools.iter().find(|t| t.name == drift.tool_name) else {
        return Ok(Vec::new());
    };
    let value: Value = serde_json::from_str(&tool.definition_json)?;
    Ok(serde_json::to_string_pretty(&value)?
        .lines()
        .map(str::to_owned)
        .collect())
}

/// One line of a line diff.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Line {
    Same(String),
    Removed(String),
    Added(String),
}

/// The shortest line diff of `before` and `after` (longest common subsequence).
fn diff_lines(before: &[String], after: &[String]) -> Vec<Line> {
    let (n, m) = (before.len(), after.len());
    let mut common = vec![vec![0usize; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            common[i][j] = if before[i] == after[j] {
                common[i + 1][j + 1] + 1
            } else {
                common[i + 1][j].max(common[i][j + 1])
            };
        }
    }
    let (mut i, mut j, mut lines) = (0, 0, Vec::new());
    while i < n || j < m {
        if i < n && j < m && before[i] == after[j] {
            lines.push(Line::Same(before[i].clone()));
            i += 1;
            j += 1;
        } else if j < m && (i == n || common[i][j + 1] >= common[i + 1][j]) {
            lines.push(Line::Added(after[j].clone()));
            j += 1;
        } else {
            lines.push(Line::Removed(before[i].clone()));
            i += 1;
        }
    }
    lines
}

/// ANSI colours, or none.
struct Paint(bool);

impl Paint {
    fn wrap(&self, code: &str, text: &str) -> String {
        if self.0 {
            format!("\u{1b}[{code}m{text}\u{1b}[0m")
        } else {
            text.to_owned()
        }
    }

    fn severity(&self, severity: pb::Severity, text: &str) -> String {
        match severity {
            pb::Severity::Risk => self.wrap("1;31", text),
            pb::Severity::Breaking => self.wrap("33", text),
            _ => self.wrap("32", text),
        }
    }

    fn line(&self, line: &Line) -> String {
        match line {
            Line::Same(text) => format!("  {}", printable(text)),
            Line::Removed(text) => self.wrap("31", &format!("- {}", printable(text))),
            Line::Added(text) => self.wrap("32", &format!("+ {}", printable(text))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(text: &str) -> Vec<String> {
        text.lines().map(str::to_owned).collect()
    }

    #[test]
    fn the_diff_keeps_common_lines_and_marks_the_rest() {
        let diff = diff_lines(&lines("a\nb\nc"), &lines("a\nx\nc\nd"));
        assert_eq!(
            diff,
            [
                Line::Same("a".into()),
                Line::Added("x".into()),
                Line::Removed("b".into()),
                Line::Same("c".into()),
                Line::Added("d".into()),
            ]
        );
        assert!(diff_lines(&[], &[]).is_empty());
        assert_eq!(diff_lines(&[], &lines("a")), [Line::Added("a".into())]);
    }

    #[test]
    fn control_characters_from_the_upstream_are_printed_escaped() {
        assert_eq!(printable("get_me\u{1b}[2J"), "get_me\\u{1b}[2J");
        assert_eq!(printable("plain text"), "plain text");
        assert_eq!(
            Paint(false).line(&Line::Same("\u{7}bell".into())),
            "  \\u{7}bell"
        );
    }

    #[test]
    fn colour_is_only_added_when_asked_for() {
        let plain = Paint(false);
        assert_eq!(plain.line(&Line::Removed("x".into())), "- x");
        let coloured = Paint(true);
        assert_eq!(
            coloured.line(&Line::Added("x".into())),
            "\u{1b}[32m+ x\u{1b}[0m"
        );
        assert!(
            coloured
                .severity(pb::Severity::Risk, "r")
                .starts_with("\u{1b}[1;31m")
        );
    }
}
