//! Tool calls on `mcp` connections: the upstream server's own tools, called in the account's
//! session through the pipeline, with the input checked against the tool's schema before
//! anything is sent.

use std::sync::Arc;

use asana_tools::RateClass;
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use crate::Error;
use crate::connections::Connection;
use crate::executor::{CallContext, Executor};
use crate::mcp::{McpClients, McpError, SessionKey, UpstreamTool};
use crate::pins::Standing;
use crate::pipeline::{Attempt, DEFAULT_RETRY_AFTER, Sender};
use crate::rate::Demand;
use crate::rest::Output;
use crate::tokens::{AccessToken, AccountKey};
use crate::trail::Trail;

/// `tools/list` of the account's session: cached per session by [`McpClients`], or `fresh`
/// (every page read now, for schema-watcher's polls).
struct ListTools<'a> {
    mcp: &'a McpClients,
    url: &'a str,
    fresh: bool,
}

impl Sender for ListTools<'_> {
    type Output = Arc<[UpstreamTool]>;

    /// A fresh listing takes one read slot, so the watcher's polls count against the token's
    /// budget; the cached one, consulted before every call, only waits out the token's
    /// back-off (a known gap in rate accounting, see ARCHITECTURE.md).
    fn demand(&self) -> Demand {
        if self.fresh {
            Demand::of(RateClass::Read)
        } else {
            Demand::NONE
        }
    }

    /// A listing is a read: safe to send again after a 429, when it is a poll's own.
    fn repeatable(&self) -> bool {
        self.fresh
    }

    async fn send(
        &self,
        token: &AccessToken,
        _trail: &mut Trail,
    ) -> Result<Attempt<Self::Output>, Error> {
        let key = session(token);
        let listed = if self.fresh {
            self.mcp
                .list_tools_fresh(&key, self.url, &token.token)
                .await
        } else {
            self.mcp.list_tools(&key, self.url, &token.token).await
        };
        match listed {
            Ok(tools) => Ok(Attempt::Answer(tools)),
            Err(error) => mcp_attempt(error),
        }
    }
}

/// `tools/call` of one tool in the account's session.
struct CallTool<'a> {
    mcp: &'a McpClients,
    url: &'a str,
    name: &'a str,
    arguments: &'a Map<String, Value>,
    class: RateClass,
}

impl Sender for CallTool<'_> {
    type Output = Output;

    fn demand(&self) -> Demand {
        Demand::of(self.class)
    }

    fn repeatable(&self) -> bool {
        false
    }

    async fn send(&self, token: &AccessToken, trail: &mut Trail) -> Result<Attempt<Output>, Error> {
        let called = self
            .mcp
            .call_tool(
                &session(token),
                self.url,
                &token.token,
                self.name,
                self.arguments.clone(),
            )
            .await;
        match called {
            Ok(result) => {
                trail.answered(200, None);
                Ok(Attempt::Answer(Output {
                    output: result.output.to_string(),
                    is_error: result.is_error,
                    next_page: None,
                    request_id: None,
                    pages: 1,
                    status: None,
                }))
            }
            // A JSON-RPC error about the call (arguments the server refused) is an output the
            // model can read.
            Err(McpError::Protocol(message)) => Ok(Attempt::Answer(Output {
                output: json!({ "error": { "tool": self.name, "message": message } }).to_string(),
                is_error: true,
                next_page: None,
                request_id: None,
                pages: 1,
                status: None,
            })),
            Err(error) => mcp_attempt(error),
        }
    }
}

/// A failed MCP exchange as the pipeline reads it: a rejected token and a rate limit are its
/// to handle, anything else is the call's error.
fn mcp_attempt<T>(error: McpError) -> Result<Attempt<T>, Error> {
    match error {
        McpError::Unauthorized => Ok(Attempt::Rejected {
            last: Err(upstream_error(McpError::Unauthorized)),
        }),
        McpError::RateLimited { retry_after } => Ok(Attempt::RateLimited {
            retry_after,
            last: Err(upstream_error(McpError::RateLimited { retry_after })),
        }),
        other => Err(upstream_error(other)),
    }
}

impl Executor {
    /// Runs the upstream tool `name` with `arguments` as the account.
    pub(crate) async fn run_mcp(
        &self,
        context: &CallContext,
        url: &str,
        name: &str,
        arguments: Map<String, Value>,
        trail: &mut Trail,
    ) -> Result<Output, Error> {
        let tools = self.upstream_tools(context, url, trail).await?;
        let Some(tool) = tools.iter().find(|t| t.name == name) else {
            let names = tools.iter().map(|t| t.name.as_str());
            return Err(Error::UnknownTool {
                connection: context.account.connection.clone(),
                name: name.to_owned(),
                suggestions: asana_tools::close_matches(name, names)
                    .into_iter()
                    .map(str::to_owned)
                    .collect(),
            });
        };
        match self
            .pins
            .approvals(&context.account.connection)
            .await?
            .standing(tool)
        {
            Standing::Unwatched | Standing::Approved => {}
            Standing::Drifted { pinned: true, why } => {
                return Err(Error::ToolDrifted {
                    connection: context.account.connection.clone(),
                    tool: name.to_owned(),
                    why,
                });
            }
            Standing::Drifted { pinned: false, why } => trail.drift = Some(why),
        }
        self.validators
            .get(url, tool)
            .map_err(upstream_error)?
            .validate(&Value::Object(arguments.clone()))
            .map_err(Error::InvalidInput)?;
        let class = if tool.read_only {
            RateClass::Read
        } else {
            RateClass::Write
        };
        let call = CallTool {
            mcp: &self.mcp,
            url,
            name,
            arguments: &arguments,
            class,
        };
        self.run_as(context, &call, trail).await
    }

    /// The upstream tools as the account's session lists them.
    pub(crate) async fn upstream_tools(
        &self,
        context: &CallContext,
        url: &str,
        trail: &mut Trail,
    ) -> Result<Arc<[UpstreamTool]>, Error> {
        self.list_upstream(context, url, false, trail).await
    }

    /// Every page of the upstream tools read afresh as the account (`ListUpstreamTools`).
    pub(crate) async fn upstream_tools_fresh(
        &self,
        context: &CallContext,
        url: &str,
        trail: &mut Trail,
    ) -> Result<Arc<[UpstreamTool]>, Error> {
        self.list_upstream(context, url, true, trail).await
    }

    async fn list_upstream(
        &self,
        context: &CallContext,
        url: &str,
        fresh: bool,
        trail: &mut Trail,
    ) -> Result<Arc<[UpstreamTool]>, Error> {
        let list = ListTools {
            mcp: &self.mcp,
            url,
            fresh,
        };
        let tools = self.run_as(context, &list, trail).await?;
        self.saw_upstream_tools(&context.account.connection, &tools);
        Ok(tools)
    }

    /// The upstream tools of an MCP connection for `ListTools`: the list last seen, or the one
    /// its `list_tools_as` account's session gives.
    pub(crate) async fn upstream_catalogue(
        &self,
        connection: &Connection,
        url: &str,
        caller: &str,
    ) -> Result<Arc<[UpstreamTool]>, Error> {
        if let Some(tools) = self.upstream_seen(&connection.name) {
            return Ok(tools);
        }
        let Some(probe) = &self.settings(&connection.name).list_tools_as else {
            return Ok(Arc::from([]));
        };
        let context = CallContext {
            account: AccountKey {
                tenant: probe.tenant.clone(),
                connection: connection.name.clone(),
                identifier: probe.identifier.clone(),
            },
            caller: caller.to_owned(),
            deadline: Instant::now() + self.limiter.max_wait(),
            via: None,
        };
        self.upstream_tools(&context, url, &mut Trail::default())
            .await
    }
}

fn session(token: &AccessToken) -> SessionKey {
    SessionKey {
        account_id: token.account_id.clone(),
        credential_version: token.version,
    }
}

/// An upstream failure that is not about one call's input.
fn upstream_error(error: McpError) -> Error {
    match error {
        McpError::Unauthorized => Error::Unavailable {
            dependency: "mcp server",
            reason: "the server rejected the refreshed token too".to_owned(),
        },
        McpError::RateLimited { retry_after } => Error::RateLimited {
            limit: "the MCP server's rate limit",
            retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
        },
        McpError::Unavailable(reason) | McpError::Protocol(reason) => Error::Unavailable {
            dependency: "mcp server",
            reason,
        },
    }
}
