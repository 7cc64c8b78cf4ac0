//! Tool calls on `mcp` connections: the upstream server's own tools, called in the account's
//! session, with the input checked against the tool's schema before anything is sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use asana_tools::{RateClass, Validator};
use serde_json::{Map, Value, json};

use crate::Error;
use crate::executor::{CallContext, DEFAULT_RETRY_AFTER, Executor, Trail, rate_limited};
use crate::mcp::{McpError, SessionKey, UpstreamTool};
use crate::rate::Demand;
use crate::rest::Output;
use crate::tokens::AccessToken;

/// Compiled input schemas of upstream tools, by (server URL, tool name); recompiled when the
/// server changes a tool's schema.
#[derive(Debug, Default)]
pub(crate) struct Validators {
    by_tool: Mutex<HashMap<(String, String), Compiled>>,
}

/// A schema and its compiled validator.
type Compiled = (Value, Arc<Validator>);

impl Validators {
    fn get(&self, url: &str, tool: &UpstreamTool) -> Result<Arc<Validator>, Error> {
        let key = (url.to_owned(), tool.name.clone());
        let mut by_tool = self.by_tool.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((schema, validator)) = by_tool.get(&key)
            && *schema == tool.input_schema
        {
            return Ok(validator.clone());
        }
        let validator =
            Arc::new(
                Validator::new(&tool.input_schema).map_err(|e| Error::Unavailable {
                    dependency: "mcp server",
                    reason: format!(
                        "tool `{}` declares an unusable input schema: {e}",
                        tool.name
                    ),
                })?,
            );
        by_tool.insert(key, (tool.input_schema.clone(), validator.clone()));
        Ok(validator)
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
        self.limiter
            .wait_back_off(&context.account, context.deadline)
            .await
            .map_err(rate_limited)?;
        let mut token = self.tokens.get(&context.account).await?;
        let mut retried = false;
        loop {
            trail.used(&token);
            let tools = self
                .session_tools(context, url, &mut token, &mut retried)
                .await;
            trail.used(&token);
            let tools = tools?;
            let key = session(&token);
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
            let input = Value::Object(arguments.clone());
            self.validators
                .get(url, tool)?
                .validate(&input)
                .map_err(Error::InvalidInput)?;
            let class = if tool.read_only {
                RateClass::Read
            } else {
                RateClass::Write
            };
            let permit = self.admit(context, Demand::of(class)).await?;
            match self
                .mcp
                .call_tool(&key, url, &token.token, name, arguments.clone())
                .await
            {
                Err(McpError::Unauthorized) if !retried => {
                    drop(permit);
                    token = self.tokens.rejected(&context.account, &token, None).await?;
                    retried = true;
                }
                Err(McpError::RateLimited { retry_after }) => {
                    let retry_after = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
                    permit.back_off(retry_after);
                    return Err(Error::RateLimited {
                        limit: "the MCP server's rate limit",
                        retry_after,
                    });
                }
                Err(error) => return mcp_failure(error, name),
                Ok(result) => {
                    trail.set("status", 200);
                    return Ok(Output {
                        output: result.output.to_string(),
                        is_error: result.is_error,
                        next_page: None,
                        request_id: None,
                        pages: 1,
                        status: None,
                    });
                }
            }
        }
    }

    /// The upstream tools as the account's session lists them.
    pub(crate) async fn upstream_tools(
        &self,
        context: &CallContext,
        url: &str,
    ) -> Result<Arc<[UpstreamTool]>, Error> {
        self.limiter
            .wait_back_off(&context.account, context.deadline)
            .await
            .map_err(rate_limited)?;
        let mut token = self.tokens.get(&context.account).await?;
        self.session_tools(context, url, &mut token, &mut false)
            .await
    }

    /// The tools the session of `token` lists. A rejected token is reported and replaced in
    /// `token` once, unless `retried` says that one retry is spent (and then it is).
    async fn session_tools(
        &self,
        context: &CallContext,
        url: &str,
        token: &mut Arc<AccessToken>,
        retried: &mut bool,
    ) -> Result<Arc<[UpstreamTool]>, Error> {
        loop {
            match self
                .mcp
                .list_tools(&session(token), url, &token.token)
                .await
            {
                Err(McpError::Unauthorized) if !*retried => {
                    *token = self.tokens.rejected(&context.account, token, None).await?;
                    *retried = true;
                }
                Err(McpError::RateLimited { retry_after }) => {
                    return Err(self.mcp_backed_off(context, retry_after));
                }
                Err(error) => return Err(upstream_error(error)),
                Ok(tools) => {
                    self.saw_upstream_tools(&context.account.connection, &tools);
                    return Ok(tools);
                }
            }
        }
    }

    /// The MCP server answered 429 to a request sent without a permit (`tools/list`): the
    /// whole token waits out its `Retry-After`, as after a 429 to a tool call.
    fn mcp_backed_off(&self, context: &CallContext, retry_after: Option<Duration>) -> Error {
        let retry_after = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
        self.limiter.back_off(&context.account, retry_after);
        Error::RateLimited {
            limit: "the MCP server's rate limit",
            retry_after,
        }
    }
}

fn session(token: &AccessToken) -> SessionKey {
    SessionKey {
        account_id: token.account_id.clone(),
        credential_version: token.version,
    }
}

/// An upstream failure as the caller sees it: a JSON-RPC error about the call (arguments the
/// server refused) is an `is_error` output the model can read.
fn mcp_failure(error: McpError, name: &str) -> Result<Output, Error> {
    match error {
        McpError::Protocol(message) => Ok(Output {
            output: json!({ "error": { "tool": name, "message": message } }).to_string(),
            is_error: true,
            next_page: None,
            request_id: None,
            pages: 1,
            status: None,
        }),
        other => Err(upstream_error(other)),
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
