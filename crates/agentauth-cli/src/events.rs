//! `agentauth events subscribe|list|pause|resume|delete|follow`: Asana webhooks registered as
//! an account, and the stream of their events.

use std::process::ExitCode;

use agentauth_proto::executor::v1 as pb;

use crate::mcp::rfc3339;
use crate::tools::{client, explain};
use crate::{Endpoints, writeln_out};

/// `agentauth events …`.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Registers an Asana webhook on a resource as an end user's account; its events then
    /// reach `agentauth events follow` (and SubscribeEvents).
    Subscribe {
        #[arg(long)]
        tenant: String,
        /// A REST connection.
        #[arg(long)]
        connection: String,
        /// The end user whose grant registers the webhook.
        #[arg(long)]
        identifier: String,
        /// The gid of the project, task, portfolio, … to watch.
        #[arg(long)]
        resource: String,
        /// Asana's webhook filters as JSON, e.g. `[{"resource_type": "task", "action":
        /// "changed"}]`.
        #[arg(long, default_value = "")]
        filters: String,
    },
    /// Lists a tenant's subscriptions and their health, newest first (with `--all` also the
    /// deleted and failed ones).
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        connection: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Pauses a subscription: its Asana webhook is deleted until it is resumed.
    Pause {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        subscription_id: String,
    },
    /// Resumes a paused subscription: a new webhook, and what happened meanwhile back-filled
    /// from Asana's events API.
    Resume {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        subscription_id: String,
    },
    /// Deletes a subscription: its Asana webhook, its secret; later deliveries are refused.
    Delete {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        subscription_id: String,
    },
    /// Prints a tenant's events as they arrive, one JSON object a line; with `--cursor`,
    /// first every retained event after it.
    Follow {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        connection: Option<String>,
        /// Only events whose resource or parent has this gid.
        #[arg(long)]
        resource: Option<String>,
        /// Resume after this cursor (the `cursor` of an event printed before).
        #[arg(long)]
        cursor: Option<String>,
        /// Stop after this many events.
        #[arg(long)]
        count: Option<u64>,
    },
}

pub async fn run(command: Command, endpoints: &Endpoints) -> anyhow::Result<ExitCode> {
    let mut client = client(endpoints)?;
    let mut out = std::io::stdout().lock();
    match command {
        Command::Subscribe {
            tenant,
            connection,
            identifier,
            resource,
            filters,
        } => {
            let created = client
                .create_event_subscription(pb::CreateEventSubscriptionRequest {
                    tenant,
                    connection_name: connection,
                    identifier,
                    resource_gid: resource,
                    filters_json: filters,
                })
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            if let Some(subscription) = &created.subscription {
                writeln_out(&mut out, &describe(subscription))?;
            }
        }
        Command::List {
            tenant,
            connection,
            all,
        } => {
            let mut page_token = String::new();
            let mut listed = 0;
            loop {
                let page = client
                    .list_event_subscriptions(pb::ListEventSubscriptionsRequest {
                        tenant: tenant.clone(),
                        connection_name: connection.clone(),
                        include_ended: all,
                        page_size: 500,
                        page_token,
                    })
                    .await
                    .map_err(|s| explain(&s))?
                    .into_inner();
                for subscription in &page.subscriptions {
                    listed += 1;
                    writeln_out(&mut out, &describe(subscription))?;
                }
                if page.next_page_token.is_empty() {
                    break;
                }
                page_token = page.next_page_token;
            }
            if listed == 0 {
                writeln_out(&mut out, "no subscriptions")?;
            }
        }
        Command::Pause {
            tenant,
            subscription_id,
        } => {
            let paused = client
                .pause_event_subscription(pb::PauseEventSubscriptionRequest {
                    tenant,
                    subscription_id,
                })
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            changed(
                &mut out,
                paused.unchanged,
                "paused",
                paused.subscription.as_ref(),
            )?;
        }
        Command::Resume {
            tenant,
            subscription_id,
        } => {
            let resumed = client
                .resume_event_subscription(pb::ResumeEventSubscriptionRequest {
                    tenant,
                    subscription_id,
                })
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            changed(
                &mut out,
                resumed.unchanged,
                "resumed",
                resumed.subscription.as_ref(),
            )?;
        }
        Command::Delete {
            tenant,
            subscription_id,
        } => {
            let deleted = client
                .delete_event_subscription(pb::DeleteEventSubscriptionRequest {
                    tenant,
                    subscription_id,
                })
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            changed(
                &mut out,
                deleted.already_deleted,
                "deleted",
                deleted.subscription.as_ref(),
            )?;
        }
        Command::Follow {
            tenant,
            connection,
            resource,
            cursor,
            count,
        } => {
            let mut stream = client
                .subscribe_events(pb::SubscribeEventsRequest {
                    tenant,
                    connection_name: connection,
                    resource_gid: resource,
                    cursor,
                })
                .await
                .map_err(|s| explain(&s))?
                .into_inner();
            let mut printed = 0;
            while count.is_none_or(|count| printed < count) {
                let Some(message) = stream.message().await.map_err(|s| explain(&s))? else {
                    break;
                };
                writeln_out(&mut out, &event_line(&message).to_string())?;
                printed += 1;
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a change did: `done`, or that nothing changed; then the subscription.
fn changed(
    out: &mut impl std::io::Write,
    unchanged: bool,
    done: &str,
    subscription: Option<&pb::EventSubscription>,
) -> anyhow::Result<()> {
    if unchanged {
        writeln_out(out, &format!("not {done}: nothing changed"))?;
    } else {
        writeln_out(out, done)?;
    }
    if let Some(subscription) = subscription {
        writeln_out(out, &describe(subscription))?;
    }
    Ok(())
}

/// One line of a subscription: id, state, account, resource, webhook and health.
fn describe(s: &pb::EventSubscription) -> String {
    let state = s
        .state()
        .as_str_name()
        .trim_start_matches("EVENT_SUBSCRIPTION_STATE_");
    let mut line = format!(
        "{}  {state}  {}/{}  resource {}  webhook {}  events {}",
        s.subscription_id,
        s.connection_name,
        s.identifier,
        s.resource_gid,
        if s.webhook_gid.is_empty() {
            "-"
        } else {
            &s.webhook_gid
        },
        s.events_received,
    );
    if s.last_delivery_at.is_some() {
        line.push_str(&format!(
            "  last delivery {}",
            rfc3339(s.last_delivery_at.as_ref())
        ));
    }
    if s.last_heartbeat_at.is_some() {
        line.push_str(&format!(
            "  last heartbeat {}",
            rfc3339(s.last_heartbeat_at.as_ref())
        ));
    }
    for (what, at) in [
        ("Asana's last failure", &s.last_failure_at),
        ("repaired", &s.repaired_at),
        ("events lost before", &s.gap_lost_at),
    ] {
        if at.is_some() {
            line.push_str(&format!("  {what} {}", rfc3339(at.as_ref())));
        }
    }
    if !s.failure_reason.is_empty() {
        line.push_str(&format!("  failed: {}", s.failure_reason.escape_debug()));
    }
    line
}

/// An event as one JSON object.
fn event_line(message: &pb::SubscribeEventsResponse) -> serde_json::Value {
    let event = message.event.clone().unwrap_or_default();
    let change = serde_json::from_str::<serde_json::Value>(&event.change_json)
        .unwrap_or(serde_json::Value::Null);
    serde_json::json!({
        "cursor": message.cursor,
        "subscription_id": event.subscription_id,
        "connection": event.connection_name,
        "identifier": event.identifier,
        "action": event.action,
        "resource": {"gid": event.resource_gid, "resource_type": event.resource_type,
                     "resource_subtype": event.resource_subtype},
        "parent_gid": event.parent_gid,
        "backfilled": event.backfilled,
        "user_gid": event.user_gid,
        "change": change,
        "created_at": rfc3339(event.created_at.as_ref()),
        "received_at": rfc3339(event.received_at.as_ref()),
    })
}
