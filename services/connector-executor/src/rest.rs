//! REST dispatch: a prepared tool call ([`HttpCall`]) sent as the account, within its rate
//! budget, with one retry on a rejected token; several calls packed into Asana's `/batch`.
//!
//! Asana's 4xx about the request (a bad field value, an object the user cannot see) become
//! `is_error` outputs an LLM can read; a rejected token, a rate limit and an outage are errors.

use asana_client::{Client, NextPage, Request, Response};
use asana_tools::{HttpCall, Method, RateClass};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::Error;
use crate::executor::{CallContext, DEFAULT_RETRY_AFTER, Executor, Trail};
use crate::rate::Demand;

/// Asana's answer to one call, as the caller sees it.
#[derive(Debug, Clone)]
pub(crate) struct Output {
    /// The output as JSON text: Asana's `data`, or an error object for the model.
    pub output: String,
    pub is_error: bool,
    pub next_page: Option<NextPage>,
    pub request_id: Option<String>,
    pub pages: u32,
    /// Asana's HTTP status of the (last) answer; `None` when no HTTP answer stands behind it.
    pub status: Option<u16>,
}

/// Asana's most actions per `/batch` request.
pub(crate) const BATCH_ACTIONS: usize = 10;

/// The page size auto-pagination asks for when the call names none.
const PAGE_SIZE: &str = "100";

impl Executor {
    /// Sends `call`, following `next_page` up to `max_pages` pages when `max_pages > 1`.
    ///
    /// A single page's `data` is passed on as Asana wrote it, without being parsed into a tree
    /// and written out again; pages are parsed only to be concatenated.
    pub(crate) async fn run_rest(
        &self,
        context: &CallContext,
        client: &Client,
        call: &HttpCall,
        max_pages: u32,
        trail: &mut Trail,
    ) -> Result<Output, Error> {
        let mut request = to_request(call);
        if max_pages <= 1 {
            let page = match self
                .send::<Box<RawValue>>(context, client, call.class, &request, trail)
                .await?
            {
                Ok(page) => page,
                Err(failure) => return Ok(failure),
            };
            note_changes(&page, &mut Vec::new(), trail);
            return Ok(Output {
                output: Box::<str>::from(page.data).into(),
                is_error: false,
                next_page: page.next_page,
                request_id: page.request_id,
                pages: 1,
                status: Some(page.status.as_u16()),
            });
        }
        if !call.query.iter().any(|(name, _)| name == "limit") {
            request = request.query("limit", PAGE_SIZE);
        }
        let mut pages = 0;
        let mut items = Vec::new();
        let mut changes = Vec::new();
        loop {
            let page = match self
                .send::<Value>(context, client, call.class, &request, trail)
                .await?
            {
                Ok(page) => page,
                Err(failure) => return Ok(failure),
            };
            pages += 1;
            note_changes(&page, &mut changes, trail);
            match page.data {
                Value::Array(list) => items.extend(list),
                other => items.push(other),
            }
            match page.next_page {
                Some(next) if pages < max_pages => {
                    request = request.query("offset", next.offset);
                }
                next_page => {
                    return Ok(Output {
                        output: Value::Array(items).to_string(),
                        is_error: false,
                        next_page,
                        request_id: page.request_id,
                        pages,
                        status: Some(page.status.as_u16()),
                    });
                }
            }
        }
    }

    /// One request within the budget, retried once with a new token after a 401. The inner
    /// `Err` is a tool-level failure (Asana's 4xx about the request) for the caller's model.
    async fn send<T: DeserializeOwned>(
        &self,
        context: &CallContext,
        client: &Client,
        class: RateClass,
        request: &Request,
        trail: &mut Trail,
    ) -> Result<Result<Response<T>, Output>, Error> {
        let mut token = self.tokens.get(&context.account).await?;
        let mut retried = false;
        loop {
            trail.used(&token);
            let permit = self.admit(context, Demand::of(class)).await?;
            let answer = client.send::<T>(&token.token, request.clone()).await;
            match answer {
                Ok(response) => {
                    if let Some(id) = &response.request_id {
                        trail.set("asana_request_id", id.clone());
                    }
                    trail.set("status", response.status.as_u16());
                    return Ok(Ok(response));
                }
                Err(asana_client::Error::Unauthorized { .. }) if !retried => {
                    drop(permit);
                    token = self.tokens.rejected(&context.account, &token, None).await?;
                    retried = true;
                }
                Err(asana_client::Error::RateLimited { retry_after, .. }) => {
                    permit.back_off(retry_after.unwrap_or(DEFAULT_RETRY_AFTER));
                    trail.set("status", 429);
                    drop(permit);
                    if !request_is_repeatable(class) {
                        return Err(Error::RateLimited {
                            limit: "Asana's rate limit",
                            retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
                        });
                    }
                }
                Err(error) => return tool_failure(error, trail).map(Err),
            }
        }
    }

    /// Sends up to [`BATCH_ACTIONS`] calls as one `/batch` request; one result per call, in
    /// order. The whole batch fails only for what fails every action (token, limits, outage).
    pub(crate) async fn run_batch(
        &self,
        context: &CallContext,
        client: &Client,
        calls: &[&HttpCall],
        trail: &mut Trail,
    ) -> Result<Vec<Output>, Error> {
        let actions: Vec<Value> = calls.iter().map(|call| batch_action(call)).collect();
        let mut demand = Demand {
            reads: 0,
            writes: 0,
            searches: 0,
        };
        for call in calls {
            demand.add(Demand::of(call.class));
        }
        let request = Request::post("/batch", json!({ "actions": actions }));
        let mut token = self.tokens.get(&context.account).await?;
        let mut retried = false;
        let response = loop {
            trail.used(&token);
            let permit = self.admit(context, demand).await?;
            match client
                .send::<Vec<BatchResult>>(&token.token, request.clone())
                .await
            {
                Ok(response) => break response,
                Err(asana_client::Error::Unauthorized { .. }) if !retried => {
                    drop(permit);
                    token = self.tokens.rejected(&context.account, &token, None).await?;
                    retried = true;
                }
                Err(asana_client::Error::RateLimited { retry_after, .. }) => {
                    let retry_after = retry_after.unwrap_or(DEFAULT_RETRY_AFTER);
                    permit.back_off(retry_after);
                    return Err(Error::RateLimited {
                        limit: "Asana's rate limit",
                        retry_after,
                    });
                }
                Err(error) => {
                    let failure = tool_failure(error, trail)?;
                    return Ok(vec![failure; calls.len()]);
                }
            }
        };
        if let Some(id) = &response.request_id {
            trail.set("asana_request_id", id.clone());
        }
        if response.data.len() != calls.len() {
            return Err(Error::Unavailable {
                dependency: "asana",
                reason: format!(
                    "/batch answered {} results for {} actions",
                    response.data.len(),
                    calls.len()
                ),
            });
        }
        Ok(response
            .data
            .into_iter()
            .map(|result| result.into_output(response.request_id.clone()))
            .collect())
    }
}

/// One action's answer inside a `/batch` response.
#[derive(Debug, Deserialize)]
struct BatchResult {
    status_code: u16,
    #[serde(default)]
    body: Value,
}

impl BatchResult {
    fn into_output(self, request_id: Option<String>) -> Output {
        if (200..300).contains(&self.status_code) {
            let next_page = self
                .body
                .get("next_page")
                .cloned()
                .and_then(|v| serde_json::from_value(v).ok());
            Output {
                output: self.body.get("data").unwrap_or(&Value::Null).to_string(),
                is_error: false,
                next_page,
                request_id,
                pages: 1,
                status: Some(self.status_code),
            }
        } else {
            let errors = self
                .body
                .get("errors")
                .cloned()
                .unwrap_or_else(|| json!([]));
            Output {
                output: json!({ "error": { "status": self.status_code, "errors": errors } })
                    .to_string(),
                is_error: true,
                next_page: None,
                request_id,
                pages: 1,
                status: Some(self.status_code),
            }
        }
    }
}

/// Whether a rate-limited request may be sent again after the wait: reads only (a write that
/// got 429 was not carried out, but the caller decides whether to repeat it).
fn request_is_repeatable(class: RateClass) -> bool {
    class != RateClass::Write
}

/// A client error as the caller sees it: Asana's 4xx about the request is an `is_error`
/// output; everything else is an RPC error.
fn tool_failure(error: asana_client::Error, trail: &mut Trail) -> Result<Output, Error> {
    use asana_client::Error as E;
    let (status, errors) = match error {
        E::Api { status, errors } => (status, errors),
        E::NotFound { errors } => (404, errors),
        E::PaymentRequired { errors } => (402, errors),
        E::Unauthorized { .. } => {
            return Err(Error::Unavailable {
                dependency: "asana",
                reason: "Asana rejected the refreshed token too".to_owned(),
            });
        }
        E::InvalidRequest(reason) => {
            return Err(Error::InvalidArgument {
                field: "input_json",
                description: reason,
            });
        }
        E::RateLimited { retry_after, .. } => {
            return Err(Error::RateLimited {
                limit: "Asana's rate limit",
                retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
            });
        }
        E::Unavailable { .. } | E::InvalidResponse { .. } | E::InvalidConfig(_) => {
            return Err(Error::Unavailable {
                dependency: "asana",
                reason: error.to_string(),
            });
        }
    };
    trail.set("status", status);
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|e| json!({ "message": e.message, "help": e.help, "phrase": e.phrase }))
        .collect();
    Ok(Output {
        output: json!({ "error": { "status": status, "errors": errors } }).to_string(),
        is_error: true,
        next_page: None,
        request_id: None,
        pages: 0,
        status: Some(status),
    })
}

/// The client request of a prepared call.
fn to_request(call: &HttpCall) -> Request {
    let data = call.data.clone().unwrap_or_else(|| json!({}));
    let mut request = match call.method {
        Method::Get => Request::get(&call.path),
        Method::Post => Request::post(&call.path, data),
        Method::Put => Request::put(&call.path, data),
        Method::Delete => Request::delete(&call.path),
    };
    if call.idempotent {
        request = request.idempotent();
    }
    for (name, value) in &call.query {
        request = request.query(name, value);
    }
    request
}

/// A prepared call as a `/batch` action: for GETs the query goes in `data`; `opt_fields`,
/// `limit` and `offset` go in `options` (`reference/asana-platform.md` §6).
fn batch_action(call: &HttpCall) -> Value {
    let method = match call.method {
        Method::Get => "get",
        Method::Post => "post",
        Method::Put => "put",
        Method::Delete => "delete",
    };
    let mut data = call.data.clone().unwrap_or_else(|| json!({}));
    let mut options = serde_json::Map::new();
    for (name, value) in &call.query {
        match name.as_str() {
            "opt_fields" => {
                options.insert(
                    "fields".to_owned(),
                    json!(value.split(',').collect::<Vec<_>>()),
                );
            }
            "limit" => {
                options.insert(
                    "limit".to_owned(),
                    value
                        .parse::<u64>()
                        .map_or_else(|_| json!(value), |n| json!(n)),
                );
            }
            "offset" => {
                options.insert("offset".to_owned(), json!(value));
            }
            _ => {
                if let Value::Object(fields) = &mut data {
                    fields.insert(name.clone(), json!(value));
                }
            }
        }
    }
    let mut action = json!({ "relative_path": call.path, "method": method, "data": data });
    if !options.is_empty() {
        action["options"] = Value::Object(options);
    }
    action
}

/// Whether `call` can travel inside `/batch`: writes carry their query only as options.
pub(crate) fn batchable(call: &HttpCall) -> bool {
    call.method == Method::Get
        || call
            .query
            .iter()
            .all(|(name, _)| matches!(name.as_str(), "opt_fields" | "limit" | "offset"))
}

/// Records the `Asana-Change` names seen so far in the call's audit details.
fn note_changes<T>(page: &Response<T>, seen: &mut Vec<String>, trail: &mut Trail) {
    seen.extend(page.asana_change.iter().map(|c| c.name.clone()));
    if !seen.is_empty() {
        trail.set("asana_change", seen.clone());
    }
}
