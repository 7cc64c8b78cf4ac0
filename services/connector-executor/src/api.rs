//! The `agentauth.executor.v1.ConnectorExecutor` gRPC API: each request checked at the edge
//! (`requests`), the caller's binding checked, the call run, the answer and its audit event
//! made.

use std::sync::Arc;
use std::time::{Duration, Instant as StdInstant};

use agentauth_audit::{Outcome, action};
use agentauth_grpc::Caller;
use agentauth_proto::executor::v1 as pb;
use serde_json::{Map, Value};
use tokio::time::Instant;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::Error;
use crate::connections::{Connection, Target};
use crate::executor::{CallContext, Executor};
use crate::metrics::CallKind;
use crate::pins::Standing;
use crate::requests::{self, Pages, ToolCall};
use crate::rest::{BATCH_ACTIONS, Output, batchable};
use crate::sessions::{Filter, Session};
use crate::tokens::AccountKey;
use crate::trail::{
    InputDigest, ProtocolSessionEnded, ProxyRequested, SessionMinted, SessionRevoked, ToolExecuted,
    ToolsListed, Trail, millis,
};
use crate::virtual_mcp::{Via, VirtualMcp, bounded};

/// The most tools one ListTools page returns.
const MAX_PAGE_SIZE: usize = 500;
const DEFAULT_PAGE_SIZE: usize = 100;

#[derive(Debug, Clone)]
pub(crate) struct ConnectorExecutorApi {
    pub executor: Arc<Executor>,
    /// The virtual MCP servers; `None` when no signing key is configured.
    pub virtual_mcp: Option<Arc<VirtualMcp>>,
    /// Event subscriptions and their intake; `None` without `[webhooks] public_url`.
    pub webhooks: Option<Arc<crate::webhooks::Webhooks>>,
}

/// A request's deadline: the caller's `grpc-timeout`, bounded by the configured wait.
fn deadline<T>(request: &Request<T>, max_wait: Duration) -> Instant {
    let asked = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    Instant::now() + asked.map_or(max_wait, |asked| asked.min(max_wait))
}

/// `grpc-timeout`: up to 8 digits and a unit (H, M, S, m, u, n).
fn parse_grpc_timeout(text: &str) -> Option<Duration> {
    let (digits, unit) = text.split_at(text.len().checked_sub(1)?);
    let value: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(value.saturating_mul(3600)),
        "M" => Duration::from_secs(value.saturating_mul(60)),
        "S" => Duration::from_secs(value),
        "m" => Duration::from_millis(value),
        "u" => Duration::from_micros(value),
        "n" => Duration::from_nanos(value),
        _ => return None,
    })
}

/// The tool input: a JSON object, `{}` when empty.
fn parse_input(text: &str, max_bytes: usize) -> Result<Map<String, Value>, Error> {
    let invalid = |description: String| Error::InvalidArgument {
        field: "input_json",
        description,
    };
    if text.len() > max_bytes {
        return Err(invalid(format!(
            "{} bytes exceed the limit of {max_bytes}",
            text.len()
        )));
    }
    if text.trim().is_empty() {
        return Ok(Map::new());
    }
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(invalid("must be a JSON object".to_owned())),
        Err(e) => Err(invalid(format!("is not valid JSON: {e}"))),
    }
}

impl ConnectorExecutorApi {
    pub(crate) fn context<T>(
        &self,
        request: &Request<T>,
        caller: &Caller,
        account: AccountKey,
    ) -> CallContext {
        CallContext {
            account,
            caller: caller.name().to_owned(),
            deadline: deadline(request, self.executor.limiter.max_wait()),
            via: None,
        }
    }

    /// Whether `caller` may act for the account's tenant and use its connection.
    pub(crate) fn check_account(&self, caller: &Caller, account: &AccountKey) -> Result<(), Error> {
        caller.check_tenant(&account.tenant)?;
        caller.check_connection(&account.connection)?;
        Ok(())
    }

    /// Records a call the caller's tool permissions refuse (outcome DENIED), and the error.
    async fn refuse<D: serde::Serialize>(
        &self,
        context: &CallContext,
        action_name: &str,
        denied: agentauth_grpc::Denied,
        kind: &D,
    ) -> Error {
        let error = Error::Denied(denied);
        self.executor
            .record(
                uuid::Uuid::now_v7(),
                context,
                action_name,
                Err(&error),
                kind,
                &Trail::default(),
            )
            .await;
        error
    }

    fn max_pages(&self, pages: Pages) -> u32 {
        let execution = &self.executor.execution;
        match pages {
            Pages::One => 1,
            Pages::Auto(None) => execution.default_max_pages,
            Pages::Auto(Some(n)) => n.min(execution.max_pages_cap),
        }
    }

    /// Runs one tool call as the account and records its audit event.
    async fn execute(
        &self,
        context: &CallContext,
        connection: &Connection,
        call: &ToolCall,
        batch_id: Option<&str>,
    ) -> Result<pb::ExecuteToolResponse, Error> {
        let id = uuid::Uuid::now_v7();
        let started = StdInstant::now();
        let mut trail = Trail::default();
        let (route, result) = match &connection.target {
            Target::Rest { api_base_url } => (
                pb::Route::Rest,
                self.execute_rest(context, connection, api_base_url, call, &mut trail)
                    .await,
            ),
            Target::Mcp { url } => (
                pb::Route::Mcp,
                self.execute_mcp(context, url, call, &mut trail).await,
            ),
        };
        let executed = ToolExecuted {
            tool: &call.tool,
            route: Some(route.as_str_name()),
            input_digest: InputDigest(call.input_json.as_bytes()),
            batch_id,
            packed: false,
            latency_ms: Some(millis(started.elapsed())),
        };
        self.executor.metrics.call(
            CallKind {
                kind: "tool",
                route,
            },
            result.as_ref().map(|o| o.is_error),
            started.elapsed(),
            &trail,
        );
        self.conclude(id, context, route, result, &executed, &trail)
            .await
    }

    /// Runs `call` on the connection its account names: a call through a virtual MCP server,
    /// whose session has already been checked against the tools it may use, to an
    /// `upstream` MCP connection's tool or a REST connection's catalogue tool.
    pub(crate) async fn execute_named(
        &self,
        context: &CallContext,
        call: &ToolCall,
        upstream: bool,
    ) -> Result<pb::ExecuteToolResponse, Error> {
        self.executor.audit_ready()?;
        let connection = self
            .executor
            .connections
            .named(&context.account.connection)
            .await?;
        match (&connection.target, upstream) {
            (Target::Mcp { .. }, true) | (Target::Rest { .. }, false) => {
                self.execute(context, &connection, call, None).await
            }
            (Target::Rest { .. }, true) => Err(Error::WrongKind {
                connection: connection.name.clone(),
                reason: "is not an MCP connection, and its tools are declared upstream",
            }),
            (Target::Mcp { .. }, false) => Err(Error::WrongKind {
                connection: connection.name.clone(),
                reason: "is an MCP connection: its tools are declared with upstream = true",
            }),
        }
    }

    /// The virtual MCP servers, or NOT_CONFIGURED.
    fn virtual_servers(&self) -> Result<&Arc<VirtualMcp>, Error> {
        self.virtual_mcp.as_ref().ok_or(Error::NotConfigured {
            what: "virtual MCP ([virtual_mcp] signing_keys)",
        })
    }

    /// Revokes `tenant`'s session `session_id` as the caller `actor`, audited whichever way
    /// it ends.
    async fn revoke_session(
        &self,
        actor: &str,
        tenant: &str,
        session_id: &str,
    ) -> Result<(Session, bool), Error> {
        let mcp = self.virtual_servers()?;
        self.executor.audit_ready()?;
        // Stored as a UUID's canonical text, so an id in capitals finds its session too.
        let revoked = match uuid::Uuid::parse_str(session_id) {
            Ok(id) => mcp.sessions.revoke(tenant, &id.to_string(), actor).await,
            Err(_) => Err(Error::InvalidArgument {
                field: "session_id",
                description: "must be a session id (a UUID)".to_owned(),
            }),
        };
        let (session, outcome, error) = match &revoked {
            Ok((session, _)) => (Some(session), Outcome::Success, None),
            Err(error) => (None, Outcome::Failure, Some(error)),
        };
        let details = SessionRevoked {
            mcp_session: bounded(session_id),
            virtual_server: session.map(|s| s.virtual_server.as_str()),
            already_revoked: revoked.as_ref().is_ok_and(|(_, already)| *already),
            error: error.map(Error::audit_text),
            error_reason: error.map(Error::reason),
        };
        self.executor
            .record_action(
                action::MCP_SESSION_REVOKED,
                actor,
                tenant,
                session.map(|s| s.identifier.as_str()),
                outcome,
                &details,
            )
            .await;
        revoked
    }

    /// Ends the protocol session `id` of the session `claims` (its client sent DELETE),
    /// audited.
    pub(crate) async fn end_protocol_session(
        &self,
        claims: &crate::bearer::Claims,
        id: &str,
    ) -> Result<(), Error> {
        let mcp = self.virtual_servers()?;
        self.executor.audit_ready()?;
        mcp.sessions
            .end_protocol(id, &claims.sid, claims.exp)
            .await?;
        let details = ProtocolSessionEnded {
            virtual_server: &claims.srv,
            mcp_session: &claims.sid,
            protocol_session: id,
        };
        self.executor
            .record_action(
                action::MCP_PROTOCOL_SESSION_ENDED,
                &claims.by,
                &claims.ten,
                Some(&claims.idn),
                Outcome::Success,
                &details,
            )
            .await;
        Ok(())
    }

    /// Records a `tools/call` of a virtual MCP session that its server refuses: a tool it does
    /// not list (or its minter may no longer use), or a fixed input changed.
    pub(crate) async fn refuse_virtual(
        &self,
        claims: &crate::bearer::Claims,
        tool: &str,
        denied: agentauth_grpc::Denied,
        via: Via,
    ) {
        let context = CallContext {
            account: AccountKey {
                tenant: claims.ten.clone(),
                connection: String::new(),
                identifier: claims.idn.clone(),
            },
            caller: claims.by.clone(),
            deadline: Instant::now(),
            via: Some(via),
        };
        let refused = ToolExecuted {
            tool,
            route: None,
            input_digest: InputDigest(b""),
            batch_id: None,
            packed: false,
            latency_ms: None,
        };
        self.refuse(&context, action::TOOL_EXECUTED, denied, &refused)
            .await;
    }

    /// Ends one tool call: the audit event recorded, the answer built.
    async fn conclude(
        &self,
        id: uuid::Uuid,
        context: &CallContext,
        route: pb::Route,
        result: Result<Output, Error>,
        executed: &ToolExecuted<'_>,
        trail: &Trail,
    ) -> Result<pb::ExecuteToolResponse, Error> {
        let credential_version = trail.credential_version();
        self.executor
            .record(
                id,
                context,
                action::TOOL_EXECUTED,
                result.as_ref().map(|o| o.is_error),
                executed,
                trail,
            )
            .await;
        let output = result?;
        Ok(pb::ExecuteToolResponse {
            execution_id: id.to_string(),
            output_json: output.output,
            is_error: output.is_error,
            route: route.into(),
            next_page: output.next_page.map(|n| pb::NextPage {
                offset: n.offset,
                path: n.path,
            }),
            credential_version,
            asana_request_id: output.request_id.unwrap_or_default(),
            pages_fetched: output.pages,
        })
    }

    async fn execute_rest(
        &self,
        context: &CallContext,
        connection: &Connection,
        api_base_url: &str,
        call: &ToolCall,
        trail: &mut Trail,
    ) -> Result<Output, Error> {
        let http = self.prepare(connection, call)?;
        let client = self.executor.rest_client(connection, api_base_url)?;
        if let Some(webhooks) = self.subscribes(call) {
            return webhooks.subscribe_tool(context, &client, &http).await;
        }
        let max_pages = if http.paginated {
            self.max_pages(call.pages)
        } else {
            1
        };
        self.executor
            .run_rest(context, &client, &http, max_pages, trail)
            .await
    }

    /// The webhooks, when `call` creates a webhook and they are configured: the call then
    /// registers an event subscription (agentauth's intake as the target, the secret kept by
    /// token-vault) instead of handing Asana's secret to the caller.
    fn subscribes(&self, call: &ToolCall) -> Option<&Arc<crate::webhooks::Webhooks>> {
        (call.tool == crate::webhooks::CREATE_TOOL)
            .then_some(self.webhooks.as_ref())
            .flatten()
    }

    /// The tool's request for `call`'s input, or why there is none.
    fn prepare(
        &self,
        connection: &Connection,
        call: &ToolCall,
    ) -> Result<asana_tools::HttpCall, Error> {
        let catalogue = &self.executor.catalogue;
        let tool = catalogue
            .get(&call.tool)
            .ok_or_else(|| Error::UnknownTool {
                connection: connection.name.clone(),
                name: call.tool.clone(),
                suggestions: catalogue
                    .close_names(&call.tool)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            })?;
        let input = parse_input(&call.input_json, self.executor.execution.max_input_bytes)?;
        tool.prepare(&Value::Object(input))
            .map_err(Error::InvalidInput)
    }

    async fn execute_mcp(
        &self,
        context: &CallContext,
        url: &str,
        call: &ToolCall,
        trail: &mut Trail,
    ) -> Result<Output, Error> {
        let input = parse_input(&call.input_json, self.executor.execution.max_input_bytes)?;
        self.executor
            .run_mcp(context, url, &call.tool, input, trail)
            .await
    }

    /// Runs a batch's REST items: those that fit are packed into `/batch` requests of at most
    /// ten actions; the rest (auto-paginated items, bad inputs) run on their own.
    async fn batch_rest(
        &self,
        context: &CallContext,
        connection: &Connection,
        api_base_url: &str,
        items: &[&ToolCall],
        batch_id: &str,
    ) -> Vec<pb::BatchItemResult> {
        let mut results: Vec<Option<pb::BatchItemResult>> = vec![None; items.len()];
        let mut packed = Vec::new();
        for (index, call) in items.iter().enumerate() {
            match self.prepare(connection, call) {
                Ok(http)
                    if call.pages == Pages::One
                        && batchable(&http)
                        && self.subscribes(call).is_none() =>
                {
                    packed.push((index, http))
                }
                _ => {}
            }
        }
        let client = match self.executor.rest_client(connection, api_base_url) {
            Ok(client) => client,
            Err(error) => {
                let failure = batch_error(error.clone());
                return vec![failure; items.len()];
            }
        };
        let chunks = packed.chunks(BATCH_ACTIONS).map(|chunk| {
            let client = client.clone();
            async move {
                let started = StdInstant::now();
                let calls: Vec<&asana_tools::HttpCall> = chunk.iter().map(|(_, c)| c).collect();
                let mut trail = Trail::default();
                let outcome = self
                    .executor
                    .run_batch(context, &client, &calls, &mut trail)
                    .await;
                (chunk, outcome, trail, started.elapsed())
            }
        });
        for (chunk, outcome, trail, elapsed) in futures::future::join_all(chunks).await {
            for (position, (index, _)) in chunk.iter().enumerate() {
                let item = &items[*index];
                let result = match &outcome {
                    Ok(outputs) => Ok(outputs[position].clone()),
                    Err(error) => Err(error.clone()),
                };
                let packed = Packed {
                    batch_id,
                    trail: &trail,
                    elapsed,
                };
                results[*index] = Some(self.finish_packed(context, item, packed, result).await);
            }
        }
        let singles = items
            .iter()
            .enumerate()
            .filter(|(i, _)| results[*i].is_none())
            .map(|(index, call)| async move {
                (
                    index,
                    item_result(
                        self.execute(context, connection, call, Some(batch_id))
                            .await,
                    ),
                )
            });
        for (index, result) in futures::future::join_all(singles).await {
            results[index] = Some(result);
        }
        results.into_iter().flatten().collect()
    }

    /// Audits one packed item and turns it into its result: the `/batch` request's exchange,
    /// with the item's own status.
    async fn finish_packed(
        &self,
        context: &CallContext,
        item: &ToolCall,
        packed: Packed<'_>,
        result: Result<Output, Error>,
    ) -> pb::BatchItemResult {
        let mut trail = packed.trail.clone();
        if let Ok(Output {
            status: Some(status),
            ..
        }) = &result
        {
            trail.status = Some(*status);
        }
        let executed = ToolExecuted {
            tool: &item.tool,
            route: Some(pb::Route::Rest.as_str_name()),
            input_digest: InputDigest(item.input_json.as_bytes()),
            batch_id: Some(packed.batch_id),
            packed: true,
            latency_ms: Some(millis(packed.elapsed)),
        };
        item_result(
            self.conclude(
                uuid::Uuid::now_v7(),
                context,
                pb::Route::Rest,
                result,
                &executed,
                &trail,
            )
            .await,
        )
    }
}

/// The `/batch` request a packed item travelled in.
struct Packed<'a> {
    batch_id: &'a str,
    trail: &'a Trail,
    elapsed: Duration,
}

/// An item's failure, with the code and message the same error gets as an RPC's status.
fn batch_error(error: Error) -> pb::BatchItemResult {
    let reason = error.reason();
    let status = Status::from(error);
    pb::BatchItemResult {
        result: Some(pb::batch_item_result::Result::Error(pb::BatchItemError {
            code: status.code() as i32,
            message: status.message().to_owned(),
            reason,
        })),
    }
}

fn item_result(result: Result<pb::ExecuteToolResponse, Error>) -> pb::BatchItemResult {
    match result {
        Ok(response) => pb::BatchItemResult {
            result: Some(pb::batch_item_result::Result::Response(response)),
        },
        Err(error) => batch_error(error),
    }
}

#[tonic::async_trait]
impl pb::connector_executor_server::ConnectorExecutor for ConnectorExecutorApi {
    async fn execute_tool(
        &self,
        request: Request<pb::ExecuteToolRequest>,
    ) -> Result<Response<pb::ExecuteToolResponse>, Status> {
        let caller = Caller::of(&request)?;
        let checked = requests::ExecuteTool::try_from(request.get_ref())?;
        self.check_account(caller, &checked.account)?;
        let context = self.context(&request, caller, checked.account);
        let call = checked.call;
        if let Err(denied) = caller.check_tool(&call.tool) {
            let refused = ToolExecuted {
                tool: &call.tool,
                route: None,
                input_digest: InputDigest(call.input_json.as_bytes()),
                batch_id: None,
                packed: false,
                latency_ms: None,
            };
            return Err(self
                .refuse(&context, action::TOOL_EXECUTED, denied, &refused)
                .await
                .into());
        }
        self.executor.audit_ready()?;
        let connection = self
            .executor
            .connections
            .get(caller, &context.account.connection)
            .await?;
        let response = self.execute(&context, &connection, &call, None).await?;
        Ok(Response::new(response))
    }

    async fn execute_batch(
        &self,
        request: Request<pb::ExecuteBatchRequest>,
    ) -> Result<Response<pb::ExecuteBatchResponse>, Status> {
        let caller = Caller::of(&request)?;
        let checked = requests::ExecuteBatch::try_from(request.get_ref())?;
        self.check_account(caller, &checked.account)?;
        let max = self.executor.execution.max_batch_items;
        if checked.items.len() > max {
            return Err(Error::InvalidArgument {
                field: "items",
                description: format!("must hold 1 to {max} items, not {}", checked.items.len()),
            }
            .into());
        }
        self.executor.audit_ready()?;
        let connection = self
            .executor
            .connections
            .get(caller, &checked.account.connection)
            .await?;
        let context = self.context(&request, caller, checked.account);
        let batch_id = uuid::Uuid::now_v7().to_string();
        let denied: Vec<Option<pb::BatchItemResult>> = checked
            .items
            .iter()
            .map(|item| {
                caller
                    .check_tool(&item.tool)
                    .err()
                    .map(|denied| batch_error(Error::Denied(denied)))
            })
            .collect();
        let allowed: Vec<&ToolCall> = checked
            .items
            .iter()
            .zip(&denied)
            .filter(|(_, d)| d.is_none())
            .map(|(item, _)| item)
            .collect();
        let mut ran = match &connection.target {
            Target::Rest { api_base_url } => {
                self.batch_rest(&context, &connection, api_base_url, &allowed, &batch_id)
                    .await
            }
            Target::Mcp { .. } => {
                let calls = allowed
                    .iter()
                    .map(|call| self.execute(&context, &connection, call, Some(&batch_id)));
                futures::future::join_all(calls)
                    .await
                    .into_iter()
                    .map(item_result)
                    .collect()
            }
        }
        .into_iter();
        let results = denied
            .into_iter()
            .filter_map(|d| d.or_else(|| ran.next()))
            .collect();
        Ok(Response::new(pb::ExecuteBatchResponse { results }))
    }

    async fn list_tools(
        &self,
        request: Request<pb::ListToolsRequest>,
    ) -> Result<Response<pb::ListToolsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = requests::ListTools::try_from(request.get_ref())?;
        if let Some(name) = &r.connection {
            caller.check_connection(name).map_err(Error::from)?;
        }
        let connections = match &r.connection {
            Some(name) => vec![self.executor.connections.get(caller, name).await?],
            None => self
                .executor
                .connections
                .all()
                .await?
                .into_iter()
                .filter(|c| caller.check_connection(&c.name).is_ok())
                .collect(),
        };
        let mut tools = Vec::new();
        for connection in &connections {
            match &connection.target {
                Target::Rest { .. } => {
                    for tool in self.executor.catalogue.tools() {
                        let wire = rest_tool(tool, &connection.name);
                        if r.source.is_none_or(|s| s == wire.source()) {
                            tools.push(wire);
                        }
                    }
                }
                Target::Mcp { url } => {
                    if r.source.is_none_or(|s| s == pb::ToolSource::UpstreamMcp) {
                        let upstream = match self
                            .executor
                            .upstream_catalogue(connection, url, caller.name())
                            .await
                        {
                            Ok(upstream) => upstream,
                            Err(error) if r.connection.is_none() => {
                                tracing::warn!(connection = %connection.name, %error, "upstream tools not listed");
                                continue;
                            }
                            Err(error) => return Err(error.into()),
                        };
                        let approvals = match self.executor.pins.approvals(&connection.name).await {
                            Ok(approvals) => Some(approvals),
                            Err(error) => {
                                tracing::warn!(connection = %connection.name, %error, "drift standing of upstream tools not known");
                                None
                            }
                        };
                        tools.extend(upstream.iter().map(|t| {
                            let standing = approvals.as_ref().map(|a| a.standing(t));
                            mcp_tool(t, &connection.name, standing)
                        }));
                    }
                }
            }
        }
        tools.retain(|t| t.name.starts_with(&r.prefix) && caller.check_tool(&t.name).is_ok());
        let start = r.start;
        if start > tools.len() {
            return Err(Error::InvalidArgument {
                field: "page_token",
                description: "is not a token from a previous page".to_owned(),
            }
            .into());
        }
        let size = match r.size {
            0 => DEFAULT_PAGE_SIZE,
            n => n.min(MAX_PAGE_SIZE),
        };
        let end = (start + size).min(tools.len());
        let next_page_token = if end < tools.len() {
            end.to_string()
        } else {
            String::new()
        };
        Ok(Response::new(pb::ListToolsResponse {
            tools: tools.drain(start..end).collect(),
            next_page_token,
        }))
    }

    async fn proxy_request(
        &self,
        request: Request<pb::ProxyRequestRequest>,
    ) -> Result<Response<pb::ProxyRequestResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = requests::Proxy::try_from(request.get_ref())?;
        self.check_account(caller, &r.account)?;
        let checked = crate::proxy::check(&r, self.executor.proxy.max_request_bytes)?;
        let context = self.context(&request, caller, r.account.clone());
        // The request needs the permission of the generated tool of its spec operation, as
        // an ExecuteTool of that tool would; a path that is no operation needs its own grant.
        let operation = self.executor.catalogue.operation(&r.method, &r.path);
        let mut requested = ProxyRequested {
            method: &r.method,
            path: &r.path,
            tool: operation.map_or(crate::proxy::UNLISTED_OPERATION, |t| t.name.as_str()),
            operation: operation.map(|t| format!("{} {}", r.method, t.route.path)),
            route: pb::Route::Rest.as_str_name(),
            input_digest: InputDigest(&r.body),
            latency_ms: None,
        };
        let permitted = match operation {
            Some(tool) => caller.check_tool(&tool.name),
            None => caller.check_tool_named(crate::proxy::UNLISTED_OPERATION),
        };
        if let Err(denied) = permitted {
            return Err(self
                .refuse(&context, action::PROXY_REQUEST, denied, &requested)
                .await
                .into());
        }
        self.executor.audit_ready()?;
        let connection = self
            .executor
            .connections
            .get(caller, &context.account.connection)
            .await?;
        let Target::Rest { api_base_url } = &connection.target else {
            return Err(Error::WrongKind {
                connection: connection.name.clone(),
                reason: "is an MCP connection; ProxyRequest reaches REST connections only",
            }
            .into());
        };
        let id = uuid::Uuid::now_v7();
        let started = StdInstant::now();
        let mut trail = Trail::default();
        let result = match self.executor.rest_client(&connection, api_base_url) {
            Ok(client) => {
                self.executor
                    .run_proxy(&context, &client, &checked, &mut trail)
                    .await
            }
            Err(error) => Err(error),
        };
        requested.latency_ms = Some(millis(started.elapsed()));
        self.executor.metrics.call(
            CallKind {
                kind: "proxy",
                route: pb::Route::Rest,
            },
            result.as_ref().map(|a| a.status.as_u16() >= 400),
            started.elapsed(),
            &trail,
        );
        let credential_version = trail.credential_version();
        self.executor
            .record(
                id,
                &context,
                action::PROXY_REQUEST,
                result.as_ref().map(|a| a.status.as_u16() >= 400),
                &requested,
                &trail,
            )
            .await;
        let answer = result?;
        Ok(Response::new(pb::ProxyRequestResponse {
            status_code: u32::from(answer.status.as_u16()),
            headers: response_headers(&answer.headers),
            body: answer.body.to_vec(),
            execution_id: id.to_string(),
            credential_version,
        }))
    }

    async fn list_upstream_tools(
        &self,
        request: Request<pb::ListUpstreamToolsRequest>,
    ) -> Result<Response<pb::ListUpstreamToolsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let checked = requests::ListUpstreamTools::try_from(request.get_ref())?;
        self.check_account(caller, &checked.account)?;
        self.executor.audit_ready()?;
        let context = self.context(&request, caller, checked.account);
        let connection = self
            .executor
            .connections
            .get(caller, &context.account.connection)
            .await?;
        let Target::Mcp { url } = &connection.target else {
            return Err(Error::WrongKind {
                connection: connection.name.clone(),
                reason: "is a REST connection; ListUpstreamTools lists MCP connections only",
            }
            .into());
        };
        let started = StdInstant::now();
        let mut trail = Trail::default();
        let result = self
            .executor
            .upstream_tools_fresh(&context, url, &mut trail)
            .await;
        let listed = ToolsListed {
            tools: result.as_ref().ok().map(|tools| tools.len()),
            latency_ms: millis(started.elapsed()),
        };
        self.executor
            .record(
                uuid::Uuid::now_v7(),
                &context,
                action::TOOLS_LISTED,
                result.as_ref().map(|_| false),
                &listed,
                &trail,
            )
            .await;
        let tools = result?
            .iter()
            .map(|tool| pb::UpstreamTool {
                name: tool.name.clone(),
                definition_json: Value::Object(tool.definition.clone()).to_string(),
                definition_hash: tool.hash.clone(),
            })
            .collect();
        Ok(Response::new(pb::ListUpstreamToolsResponse {
            tools,
            credential_version: trail.credential_version(),
        }))
    }

    type WatchUpstreamChangesStream = BoxStream<pb::WatchUpstreamChangesResponse>;

    async fn watch_upstream_changes(
        &self,
        request: Request<pb::WatchUpstreamChangesRequest>,
    ) -> Result<Response<Self::WatchUpstreamChangesStream>, Status> {
        let caller = Caller::shared(&request)?;
        let only = request.into_inner().connection_name;
        if let Some(name) = &only {
            if name.trim().is_empty() {
                return Err(Error::InvalidArgument {
                    field: "connection_name",
                    description: "must name a connection when set".to_owned(),
                }
                .into());
            }
            caller.check_connection(name).map_err(Error::from)?;
        }
        let follow = UpstreamChanges {
            executor: self.executor.clone(),
            changes: self.executor.mcp.changes(),
            caller,
            only,
            pending: Vec::new(),
        };
        Ok(Response::new(Box::pin(futures::stream::unfold(
            follow,
            |mut follow| async move {
                let name = follow.next().await?;
                Some((
                    Ok(pb::WatchUpstreamChangesResponse {
                        connection_name: name,
                    }),
                    follow,
                ))
            },
        ))))
    }

    async fn mint_mcp_session(
        &self,
        request: Request<pb::MintMcpSessionRequest>,
    ) -> Result<Response<pb::MintMcpSessionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        let mcp = self.virtual_servers()?;
        let ttl = match &r.ttl {
            None => None,
            Some(ttl) => Some(
                Duration::try_from(*ttl).map_err(|_| Error::InvalidArgument {
                    field: "ttl",
                    description: "must be positive".to_owned(),
                })?,
            ),
        };
        self.executor.audit_ready()?;
        // The bearer is handed out only once its session is recorded, so it can be revoked.
        let minted = match mcp.mint(caller, &r.virtual_server, &r.tenant, &r.identifier, ttl) {
            Ok(minted) => mcp
                .sessions
                .record(&minted.claims, &minted.key_id)
                .await
                .map(|()| minted),
            Err(error) => Err(error),
        };
        let minted = match minted {
            Ok(minted) => minted,
            Err(error) => {
                let outcome = if matches!(error, Error::Denied(_)) {
                    Outcome::Denied
                } else {
                    Outcome::Failure
                };
                let refused = SessionMinted {
                    virtual_server: bounded(&r.virtual_server),
                    mcp_session: None,
                    expires_at: None,
                    tools: None,
                    error: Some(error.audit_text()),
                    error_reason: Some(error.reason()),
                };
                self.executor
                    .record_action(
                        action::MCP_SESSION_MINTED,
                        caller.name(),
                        &r.tenant,
                        Some(bounded(&r.identifier)),
                        outcome,
                        &refused,
                    )
                    .await;
                return Err(error.into());
            }
        };
        let claims = &minted.claims;
        let details = SessionMinted {
            virtual_server: &claims.srv,
            mcp_session: Some(&claims.sid),
            expires_at: Some(claims.exp),
            tools: Some(minted.tool_names.len()),
            error: None,
            error_reason: None,
        };
        self.executor
            .record_action(
                action::MCP_SESSION_MINTED,
                caller.name(),
                &claims.ten,
                Some(&claims.idn),
                Outcome::Success,
                &details,
            )
            .await;
        Ok(Response::new(pb::MintMcpSessionResponse {
            url: minted.url,
            bearer_token: minted.bearer,
            expires_at: Some(prost_types::Timestamp {
                seconds: minted.claims.exp,
                nanos: 0,
            }),
            session_id: minted.claims.sid,
            tool_names: minted.tool_names,
        }))
    }

    async fn list_mcp_sessions(
        &self,
        request: Request<pb::ListMcpSessionsRequest>,
    ) -> Result<Response<pb::ListMcpSessionsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        let mcp = self.virtual_servers()?;
        let before = match given(&r.page_token).map(uuid::Uuid::parse_str) {
            None => None,
            Some(Ok(id)) => Some(id.to_string()),
            Some(Err(_)) => {
                return Err(Error::InvalidArgument {
                    field: "page_token",
                    description: "is not a page token of ListMcpSessions".to_owned(),
                }
                .into());
            }
        };
        let filter = Filter {
            tenant: &r.tenant,
            virtual_server: given(&r.virtual_server),
            identifier: given(&r.identifier),
            include_ended: r.include_ended,
            before: before.as_deref(),
            page_size: r.page_size,
        };
        let (sessions, more) = mcp
            .sessions
            .list(&filter, crate::virtual_mcp::unix_now())
            .await?;
        let next_page_token = match sessions.last() {
            Some(last) if more => last.session_id.clone(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListMcpSessionsResponse {
            sessions: sessions.into_iter().map(session_message).collect(),
            next_page_token,
        }))
    }

    async fn revoke_mcp_session(
        &self,
        request: Request<pb::RevokeMcpSessionRequest>,
    ) -> Result<Response<pb::RevokeMcpSessionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        let (session, already_revoked) = self
            .revoke_session(caller.name(), &r.tenant, &r.session_id)
            .await?;
        Ok(Response::new(pb::RevokeMcpSessionResponse {
            session: Some(session_message(session)),
            already_revoked,
        }))
    }

    type SubscribeEventsStream = BoxStream<pb::SubscribeEventsResponse>;

    async fn subscribe_events(
        &self,
        request: Request<pb::SubscribeEventsRequest>,
    ) -> Result<Response<Self::SubscribeEventsStream>, Status> {
        let caller = Caller::shared(&request)?;
        Ok(Response::new(
            self.follow_events(caller, request.into_inner()).await?,
        ))
    }

    async fn create_event_subscription(
        &self,
        request: Request<pb::CreateEventSubscriptionRequest>,
    ) -> Result<Response<pb::CreateEventSubscriptionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        let account = AccountKey {
            tenant: r.tenant.clone(),
            connection: r.connection_name.clone(),
            identifier: r.identifier.clone(),
        };
        self.check_account(caller, &account)?;
        let context = self.context(&request, caller, account);
        let subscription = self.create_subscription(caller, &context, r).await?;
        Ok(Response::new(pb::CreateEventSubscriptionResponse {
            subscription: Some(subscription),
        }))
    }

    async fn list_event_subscriptions(
        &self,
        request: Request<pb::ListEventSubscriptionsRequest>,
    ) -> Result<Response<pb::ListEventSubscriptionsResponse>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(
            self.list_subscriptions(caller, request.get_ref()).await?,
        ))
    }

    async fn pause_event_subscription(
        &self,
        request: Request<pb::PauseEventSubscriptionRequest>,
    ) -> Result<Response<pb::PauseEventSubscriptionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        let (subscription, unchanged) = self
            .pause_or_resume(&request, caller, &r.tenant, &r.subscription_id, false)
            .await?;
        Ok(Response::new(pb::PauseEventSubscriptionResponse {
            subscription: Some(subscription),
            unchanged,
        }))
    }

    async fn resume_event_subscription(
        &self,
        request: Request<pb::ResumeEventSubscriptionRequest>,
    ) -> Result<Response<pb::ResumeEventSubscriptionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        let (subscription, unchanged) = self
            .pause_or_resume(&request, caller, &r.tenant, &r.subscription_id, true)
            .await?;
        Ok(Response::new(pb::ResumeEventSubscriptionResponse {
            subscription: Some(subscription),
            unchanged,
        }))
    }

    async fn delete_event_subscription(
        &self,
        request: Request<pb::DeleteEventSubscriptionRequest>,
    ) -> Result<Response<pb::DeleteEventSubscriptionResponse>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(
            self.delete_subscription(&request, caller, request.get_ref())
                .await?,
        ))
    }
}

/// One `WatchUpstreamChanges` stream: the announced server URLs turned into the names of the
/// MCP connections that reach them, those the caller may see (and asked for).
struct UpstreamChanges {
    executor: Arc<Executor>,
    changes: tokio::sync::broadcast::Receiver<String>,
    caller: Arc<Caller>,
    only: Option<String>,
    /// Connections of the last announcement not yet sent.
    pending: Vec<String>,
}

impl UpstreamChanges {
    /// The next connection to announce; `None` when the executor shuts down.
    async fn next(&mut self) -> Option<String> {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            if let Some(name) = self.pending.pop() {
                return Some(name);
            }
            let url = match self.changes.recv().await {
                Ok(url) => url,
                // Announcements missed: the follower polls anyway, so carry on.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            };
            let connections = match self.executor.connections.all().await {
                Ok(connections) => connections,
                Err(error) => {
                    tracing::warn!(%error, "an upstream tool list change cannot be named");
                    continue;
                }
            };
            self.pending = connections
                .into_iter()
                .filter(|c| matches!(&c.target, Target::Mcp { url: u } if *u == url))
                .map(|c| c.name.clone())
                .filter(|name| self.only.as_ref().is_none_or(|only| only == name))
                .filter(|name| self.caller.check_connection(name).is_ok())
                .collect();
        }
    }
}

/// Asana's response headers for the caller, minus hop-by-hop ones.
fn response_headers(headers: &reqwest::header::HeaderMap) -> Vec<pb::Header> {
    headers
        .iter()
        .filter(|(name, _)| !crate::proxy::HOP_BY_HOP.contains(&name.as_str()))
        .filter_map(|(name, value)| {
            Some(pb::Header {
                name: name.as_str().to_owned(),
                value: value.to_str().ok()?.to_owned(),
            })
        })
        .collect()
}

/// A catalogue tool on the wire.
/// `text`, unless it is empty (a proto3 string left unset).
fn given(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

/// A stored session as ListMcpSessions and RevokeMcpSession return it.
fn session_message(session: Session) -> pb::McpSession {
    let at_us = |us: i64| prost_types::Timestamp {
        seconds: us.div_euclid(1_000_000),
        nanos: i32::try_from(us.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    };
    pb::McpSession {
        session_id: session.session_id,
        tenant: session.tenant,
        virtual_server: session.virtual_server,
        identifier: session.identifier,
        minted_by: session.minted_by,
        key_id: session.key_id,
        created_at: Some(at_us(session.created_at_us)),
        expires_at: Some(prost_types::Timestamp {
            seconds: session.expires_at,
            nanos: 0,
        }),
        revoked_at: session.revoked_at_us.map(at_us),
        revoked_by: session.revoked_by.unwrap_or_default(),
    }
}

fn rest_tool(tool: &asana_tools::Tool, connection: &str) -> pb::Tool {
    pb::Tool {
        name: tool.name.clone(),
        title: tool.title.clone(),
        description: tool.description.clone(),
        input_schema_json: tool.input_schema.to_string(),
        output_schema_json: String::new(),
        hints: Some(pb::ToolHints {
            read_only: tool.hints.read_only,
            destructive: tool.hints.destructive,
            idempotent: tool.hints.idempotent,
            open_world: tool.hints.open_world,
        }),
        source: match tool.source {
            asana_tools::Source::Curated => pb::ToolSource::Curated,
            asana_tools::Source::Generated => pb::ToolSource::Generated,
        }
        .into(),
        connection_name: connection.to_owned(),
        drift: pb::DriftStatus::Unspecified.into(),
    }
}

/// An upstream MCP tool on the wire.
fn mcp_tool(
    tool: &crate::mcp::UpstreamTool,
    connection: &str,
    standing: Option<Standing>,
) -> pb::Tool {
    let drift = match standing {
        None | Some(Standing::Unwatched) => pb::DriftStatus::Unspecified,
        Some(Standing::Approved) => pb::DriftStatus::Approved,
        Some(Standing::Drifted { pinned: true, .. }) => pb::DriftStatus::Blocked,
        Some(Standing::Drifted { pinned: false, .. }) => pb::DriftStatus::Drifted,
    };
    pb::Tool {
        name: tool.name.clone(),
        title: tool.title.clone().unwrap_or_default(),
        description: tool.description.clone(),
        input_schema_json: tool.input_schema.to_string(),
        output_schema_json: tool
            .output_schema
            .as_ref()
            .map(Value::to_string)
            .unwrap_or_default(),
        hints: Some(pb::ToolHints {
            read_only: tool.read_only,
            destructive: tool.destructive,
            idempotent: tool.idempotent,
            open_world: tool.open_world,
        }),
        source: pb::ToolSource::UpstreamMcp.into(),
        connection_name: connection.to_owned(),
        drift: drift.into(),
    }
}
