//! The `agentauth.audit.v1.AuditLog` gRPC API: validation at the edge, then the store.

use std::collections::{BTreeMap, HashSet};

use agentauth_audit::event::{timestamp, wire_timestamp};
use agentauth_audit::{Event, Outcome, action, export};
use agentauth_grpc::Caller;
use agentauth_proto::audit::v1 as pb;
use chrono::DateTime;
use futures::StreamExt;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::store::{Checkpoint, Cursor, Filter, Store};

/// The most events one `Append` may carry.
pub const MAX_BATCH: usize = 1_000;
/// `Query`'s page size when the request names none, and the largest it may name.
const DEFAULT_PAGE: u32 = 100;
const MAX_PAGE: u32 = 1_000;
/// Rows per export message: whatever of these the database cursor has ready is sent together.
const EXPORT_ROWS_PER_MESSAGE: usize = 128;

#[derive(Debug)]
pub(crate) struct AuditLogApi {
    pub store: Store,
    /// How far ahead of this server's clock an appended event may claim to have happened.
    pub max_clock_skew: std::time::Duration,
    /// From an event's time to its place in the chain: the audit lag an operator watches
    /// (OpenTelemetry, exported when the `OTEL_*` variables ask for it).
    pub append_lag: opentelemetry::metrics::Histogram<f64>,
}

/// The append lag histogram's bucket bounds, in seconds: from a synchronous append to an
/// event a spool held through an outage.
const LAG_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0, 3600.0,
];

/// The append lag histogram of `meter`.
pub(crate) fn append_lag(
    meter: &opentelemetry::metrics::Meter,
) -> opentelemetry::metrics::Histogram<f64> {
    meter
        .f64_histogram("agentauth.audit.append_lag")
        .with_unit("s")
        .with_description(
            "From an event's time to its append to the tenant's chain (new events, not duplicates)",
        )
        .with_boundaries(LAG_BUCKETS.to_vec())
        .build()
}

/// The service name audit-log records its own events under.
const SERVICE: &str = "audit-log";

#[tonic::async_trait]
impl pb::audit_log_server::AuditLog for AuditLogApi {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let caller = Caller::shared(&request)?;
        let events = validate_batch(request.into_inner().events)?;
        self.check_origin(&caller, &events)?;
        for tenant in events
            .iter()
            .map(|e| e.tenant.as_str())
            .collect::<HashSet<_>>()
        {
            caller.check_tenant(tenant).map_err(Error::from)?;
        }
        // One transaction per tenant, each tenant's events in request order.
        let mut by_tenant: BTreeMap<&str, Vec<(usize, &Event)>> = BTreeMap::new();
        for (i, event) in events.iter().enumerate() {
            by_tenant.entry(&event.tenant).or_default().push((i, event));
        }
        let mut results = vec![pb::AppendResult::default(); events.len()];
        for (tenant, indexed) in by_tenant {
            let batch: Vec<&Event> = indexed.iter().map(|&(_, event)| event).collect();
            let appended = self
                .store
                .append(tenant, &batch)
                .await
                .map_err(Error::from)?;
            let now = chrono::Utc::now();
            for ((i, event), outcome) in indexed.into_iter().zip(appended) {
                if !outcome.duplicate {
                    let lag = (now - event.occurred_at).to_std().unwrap_or_default();
                    self.append_lag.record(lag.as_secs_f64(), &[]);
                }
                results[i] = pb::AppendResult {
                    event_id: event.id.to_string(),
                    sequence: u64::try_from(outcome.sequence).unwrap_or_default(),
                    duplicate: outcome.duplicate,
                };
            }
        }
        Ok(Response::new(pb::AppendResponse { results }))
    }

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        let caller = Caller::of(&request)?;
        let query = request.get_ref();
        let filter = validate_filter(query.filter.as_ref())?;
        caller.check_tenant(&filter.tenant).map_err(Error::from)?;
        let after = decode_page_token(&query.page_token)?;
        let limit = match query.page_size {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        let rows = self
            .store
            .query(&filter, after, limit)
            .await
            .map_err(Error::from)?;
        let next_page_token = match rows.last() {
            Some(last) if rows.len() == limit as usize => encode_page_token(Cursor {
                occurred_at_us: last.occurred_at_us,
                sequence: last.sequence,
            }),
            _ => String::new(),
        };
        let events = rows
            .into_iter()
            .map(|row| row.into_recorded().map(pb::Event::from))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::Store(crate::store::Error::Corrupt(e)))?;
        Ok(Response::new(pb::QueryResponse {
            events,
            next_page_token,
        }))
    }

    type ExportStream = BoxStream<pb::ExportResponse>;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let caller = Caller::of(&request)?;
        let export = request.get_ref();
        let filter = validate_filter(export.filter.as_ref())?;
        caller.check_tenant(&filter.tenant).map_err(Error::from)?;
        let csv = match pb::ExportFormat::try_from(export.format) {
            Ok(pb::ExportFormat::Ndjson) => false,
            Ok(pb::ExportFormat::Csv) => true,
            _ => return Err(Error::invalid("format", "must be NDJSON or CSV").into()),
        };
        let header = if csv {
            export::CSV_HEADER.to_owned()
        } else {
            String::new()
        };
        let chunks = self
            .store
            .export(&filter)
            .ready_chunks(EXPORT_ROWS_PER_MESSAGE)
            .scan(Some(header), move |pending, rows| {
                let mut out = pending.take().unwrap_or_default();
                for row in rows {
                    let recorded = match row.map_err(Error::from).and_then(|r| {
                        r.into_recorded()
                            .map_err(|e| Error::Store(crate::store::Error::Corrupt(e)))
                    }) {
                        Ok(recorded) => recorded,
                        Err(error) => {
                            return futures::future::ready(Some(Err(Status::from(error))));
                        }
                    };
                    if csv {
                        export::csv_line(&recorded, &mut out);
                    } else {
                        export::ndjson_line(&recorded, &mut out);
                    }
                }
                futures::future::ready(Some(Ok(pb::ExportResponse {
                    data: out.into_bytes(),
                })))
            })
            .filter(|chunk| futures::future::ready(!matches!(chunk, Ok(c) if c.data.is_empty())));
        Ok(Response::new(Box::pin(chunks)))
    }

    async fn verify_chain(
        &self,
        request: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        let caller = Caller::of(&request)?;
        let verify = request.get_ref();
        require_tenant(&verify.tenant, "tenant")?;
        caller.check_tenant(&verify.tenant).map_err(Error::from)?;
        let from = verify
            .from_sequence
            .map(sequence_arg("from_sequence"))
            .transpose()?;
        let to = verify
            .to_sequence
            .map(sequence_arg("to_sequence"))
            .transpose()?;
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(Error::invalid("to_sequence", "must not be before from_sequence").into());
        }
        let verification = self
            .store
            .verify(&verify.tenant, from, to)
            .await
            .map_err(Error::from)?;
        let (first_broken_sequence, reason) = match verification.broken {
            Some((sequence, why)) => (Some(u64::try_from(sequence).unwrap_or_default()), why),
            None => (None, String::new()),
        };
        Ok(Response::new(pb::VerifyChainResponse {
            ok: first_broken_sequence.is_none(),
            events_checked: verification.events_checked,
            first_broken_sequence,
            reason,
            checkpoint: verification.checkpoint.map(checkpoint),
        }))
    }

    async fn purge_before(
        &self,
        request: Request<pb::PurgeBeforeRequest>,
    ) -> Result<Response<pb::PurgeBeforeResponse>, Status> {
        let caller = Caller::of(&request)?;
        let purge = request.get_ref();
        require_tenant(&purge.tenant, "tenant")?;
        caller.check_tenant(&purge.tenant).map_err(Error::from)?;
        let before = purge
            .before
            .as_ref()
            .and_then(timestamp)
            .ok_or_else(|| Error::invalid("before", "is required and must be a valid time"))?;
        if before > chrono::Utc::now() {
            return Err(Error::invalid(
                "before",
                "is in the future; a purge removes only events already recorded",
            )
            .into());
        }
        let (events_purged, latest) = self
            .store
            .purge(&purge.tenant, before)
            .await
            .map_err(Error::from)?;
        // The purge itself is the first thing the shortened chain records.
        let mut purged = Event::new(
            purge.tenant.as_str(),
            SERVICE,
            action::AUDIT_PURGED,
            Outcome::Success,
        );
        purged.actor.identifier = Some(caller.name().to_owned());
        purged
            .details
            .insert("before".into(), before.to_rfc3339().into());
        purged
            .details
            .insert("events_purged".into(), events_purged.into());
        if let Some(latest) = &latest {
            purged
                .details
                .insert("checkpoint_sequence".into(), latest.sequence.into());
        }
        self.store
            .append(&purge.tenant, &[&purged])
            .await
            .map_err(Error::from)?;
        tracing::info!(caller = caller.name(), tenant = %purge.tenant, events_purged, "audit events purged");
        Ok(Response::new(pb::PurgeBeforeResponse {
            events_purged,
            checkpoint: latest.map(checkpoint),
        }))
    }
}

impl AuditLogApi {
    /// Each event's actor is the authenticated caller: an `actor.service` other than the
    /// caller's name is refused, so no service writes in another's name. An `occurred_at`
    /// beyond the allowed clock skew is refused too. Nothing is stored when any event fails.
    fn check_origin(&self, caller: &Caller, events: &[Event]) -> Result<(), Error> {
        let latest = chrono::Utc::now()
            + chrono::TimeDelta::from_std(self.max_clock_skew).unwrap_or(chrono::TimeDelta::MAX);
        let mut violations = Vec::new();
        for (i, event) in events.iter().enumerate() {
            if event.actor.service != caller.name() {
                return Err(Error::ForgedActor {
                    caller: caller.name().to_owned(),
                    claimed: event.actor.service.clone(),
                    index: i,
                });
            }
            if event.occurred_at > latest {
                violations.push((
                    format!("events[{i}].occurred_at"),
                    format!(
                        "is {}s ahead of this server's clock; at most {}s of skew is accepted",
                        (event.occurred_at - chrono::Utc::now()).num_seconds(),
                        self.max_clock_skew.as_secs()
                    ),
                ));
            }
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(violations))
        }
    }
}

fn checkpoint(checkpoint: Checkpoint) -> pb::Checkpoint {
    pb::Checkpoint {
        sequence: u64::try_from(checkpoint.sequence).unwrap_or_default(),
        hash: checkpoint.hash,
        created_at: DateTime::from_timestamp_micros(checkpoint.created_at_us).map(wire_timestamp),
    }
}

fn require_tenant(tenant: &str, field: &str) -> Result<(), Error> {
    if tenant.is_empty() {
        Err(Error::invalid(field, "is required"))
    } else {
        Ok(())
    }
}

fn sequence_arg(field: &'static str) -> impl Fn(u64) -> Result<i64, Error> {
    move |n| i64::try_from(n).map_err(|_| Error::invalid(field, "is out of range"))
}

/// Every event of an `Append`, validated; all violations are reported together.
fn validate_batch(events: Vec<pb::Event>) -> Result<Vec<Event>, Error> {
    if events.is_empty() {
        return Err(Error::invalid("events", "must hold at least one event"));
    }
    if events.len() > MAX_BATCH {
        return Err(Error::invalid(
            "events",
            format!(
                "holds {} events; at most {MAX_BATCH} per Append",
                events.len()
            ),
        ));
    }
    let mut valid = Vec::with_capacity(events.len());
    let mut violations = Vec::new();
    for (i, event) in events.into_iter().enumerate() {
        match Event::try_from(event) {
            Ok(event) => valid.push(event),
            Err(invalid) => violations.push((
                format!("events[{i}].{}", invalid.field),
                invalid.description,
            )),
        }
    }
    if violations.is_empty() {
        Ok(valid)
    } else {
        Err(Error::InvalidArgument(violations))
    }
}

fn validate_filter(filter: Option<&pb::EventFilter>) -> Result<Filter, Error> {
    let filter = filter.ok_or_else(|| Error::invalid("filter", "is required"))?;
    require_tenant(&filter.tenant, "filter.tenant")?;
    let time = |ts: Option<&prost_types::Timestamp>, field: &str| -> Result<Option<i64>, Error> {
        ts.map(|ts| {
            timestamp(ts)
                .map(|t| t.timestamp_micros())
                .ok_or_else(|| Error::invalid(field, "is not a valid time"))
        })
        .transpose()
    };
    let start_us = time(filter.start_time.as_ref(), "filter.start_time")?;
    let end_us = time(filter.end_time.as_ref(), "filter.end_time")?;
    if let (Some(start), Some(end)) = (start_us, end_us)
        && start > end
    {
        return Err(Error::invalid(
            "filter.end_time",
            "must not be before start_time",
        ));
    }
    let outcome = filter
        .outcome
        .map(|o| {
            pb::Outcome::try_from(o)
                .ok()
                .and_then(|o| Outcome::try_from(o).ok())
                .map(|o| o.as_str().to_owned())
                .ok_or_else(|| {
                    Error::invalid("filter.outcome", "must be SUCCESS, FAILURE or DENIED")
                })
        })
        .transpose()?;
    Ok(Filter {
        tenant: filter.tenant.clone(),
        start_us,
        end_us,
        identifier: filter.identifier.clone(),
        connection_name: filter.connection_name.clone(),
        action: filter.action.clone(),
        outcome,
        account_id: filter.account_id.clone(),
        credential_version: filter
            .credential_version
            .map(sequence_arg("filter.credential_version"))
            .transpose()?,
    })
}

const PAGE_TOKEN_PREFIX: &str = "v1:";

fn encode_page_token(cursor: Cursor) -> String {
    hex::encode(format!(
        "{PAGE_TOKEN_PREFIX}{}:{}",
        cursor.occurred_at_us, cursor.sequence
    ))
}

fn decode_page_token(token: &str) -> Result<Option<Cursor>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    hex::decode(token)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .and_then(|text| {
            let (at, sequence) = text.strip_prefix(PAGE_TOKEN_PREFIX)?.split_once(':')?;
            Some(Cursor {
                occurred_at_us: at.parse().ok()?,
                sequence: sequence.parse().ok()?,
            })
        })
        .map(Some)
        .ok_or_else(|| Error::invalid("page_token", "is not a token this service issued"))
}
