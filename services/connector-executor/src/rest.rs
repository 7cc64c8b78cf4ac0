//! REST dispatch: a prepared tool call ([`HttpCall`]) as one request or its pages, and several
//! calls packed into Asana's `/batch`, each sent through the pipeline.
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
use crate::executor::{CallContext, Executor};
use crate::pipeline::{Attempt, DEFAULT_RETRY_AFTER, Sender};
use crate::rate::Demand;
use crate::tokens::AccessToken;
use crate::trail::Trail;

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

/// One REST request, as Asana's API answers it: `T` is the `data` it is read as. A `/batch`
/// request is one too, taking a slot per action and never sent twice.
struct Page<'a, T> {
    client: &'a Client,
    request: &'a Request,
    demand: Demand,
    repeatable: bool,
    data: std::marker::PhantomData<fn() -> T>,
}

impl<'a, T> Page<'a, T> {
    fn new(client: &'a Client, request: &'a Request, class: RateClass) -> Self {
        Self {
            client,
            request,
            demand: Demand::of(class),
            repeatable: class != RateClass::Write,
            data: std::marker::PhantomData,
        }
    }
}

impl<T: DeserializeOwned + Send> Sender for Page<'_, T> {
    /// The page, or the tool-level failure (Asana's 4xx about the request) for the model.
    type Output = Result<Response<T>, Output>;

    fn demand(&self) -> Demand {
        self.demand
    }

    fn repeatable(&self) -> bool {
        self.repeatable
    }

    async fn send(
        &self,
        token: &AccessToken,
        trail: &mut Trail,
    ) -> Result<Attempt<Self::Output>, Error> {
        match self
            .client
            .send::<T>(&token.token, self.request.clone())
            .await
        {
            Ok(response) => {
                trail.answered(response.status.as_u16(), response.request_id.as_deref());
                Ok(Attempt::Answer(Ok(response)))
            }
            Err(error) => failed(error, trail),
        }
    }
}

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
                .run_as(
                    context,
                    &Page::<Box<RawValue>>::new(client, &request, call.class),
                    trail,
                )
                .await?
            {
                Ok(page) => page,
                Err(failure) => return Ok(failure),
            };
            trail.changes(page.asana_change.iter().map(|c| c.name.as_str()));
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
        loop {
            let page = match self
                .run_as(
                    context,
                    &Page::<Value>::new(client, &request, call.class),
                    trail,
                )
                .await?
            {
                Ok(page) => page,
                Err(failure) => return Ok(failure),
            };
            pages += 1;
            trail.changes(page.asana_change.iter().map(|c| c.name.as_str()));
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
        let mut demand = Demand::NONE;
        for call in calls {
            demand.add(Demand::of(call.class));
        }
        let request = Request::post("/batch", json!({ "actions": actions }));
        let batch = Page::<Vec<BatchResult>> {
            client,
            request: &request,
            demand,
            repeatable: false,
            data: std::marker::PhantomData,
        };
        let response = match self.run_as(context, &batch, trail).await? {
            Ok(response) => response,
            Err(failure) => return Ok(vec![failure; calls.len()]),
        };
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

/// A failed exchange as a [`Page`] answers it: a tool-level failure is their `Err`.
fn failed<T>(
    error: asana_client::Error,
    trail: &mut Trail,
) -> Result<Attempt<Result<T, Output>>, Error> {
    rest_failure(error, trail).map(|attempt| match attempt {
        Attempt::Answer(failure) => Attempt::Answer(Err(failure)),
        Attempt::Rejected { last } => Attempt::Rejected {
            last: last.map(Err),
        },
        Attempt::RateLimited { retry_after, last } => Attempt::RateLimited {
            retry_after,
            last: last.map(Err),
        },
    })
}

/// A failed REST exchange as the pipeline reads it: a rejected token and a rate limit are its
/// to handle; Asana's 4xx about the request is an `is_error` output for the model; anything
/// else is the call's error.
fn rest_failure(error: asana_client::Error, trail: &mut Trail) -> Result<Attempt<Output>, Error> {
    use asana_client::Error as E;
    let (status, errors) = match error {
        E::Api { status, errors } => (status, errors),
        E::NotFound { errors } => (404, errors),
        E::PaymentRequired { errors } => (402, errors),
        E::Unauthorized { .. } => {
            trail.answered(401, None);
            return Ok(Attempt::Rejected {
                last: Err(Error::Unavailable {
                    dependency: "asana",
                    reason: "Asana rejected the refreshed token too".to_owned(),
                }),
            });
        }
        E::RateLimited { retry_after, .. } => {
            trail.answered(429, None);
            return Ok(Attempt::RateLimited {
                retry_after,
                last: Err(Error::RateLimited {
                    limit: "Asana's rate limit",
                    retry_after: retry_after.unwrap_or(DEFAULT_RETRY_AFTER),
                }),
            });
        }
        E::InvalidRequest(reason) => {
            return Err(Error::InvalidArgument {
                field: "input_json",
                description: reason,
            });
        }
        E::Unavailable { .. } | E::InvalidResponse { .. } | E::InvalidConfig(_) => {
            return Err(Error::Unavailable {
                dependency: "asana",
                reason: error.to_string(),
            });
        }
    };
    trail.answered(status, None);
    let errors: Vec<Value> = errors
        .into_iter()
        .map(|e| json!({ "message": e.message, "help": e.help, "phrase": e.phrase }))
        .collect();
    Ok(Attempt::Answer(Output {
        output: json!({ "error": { "status": status, "errors": errors } }).to_string(),
        is_error: true,
        next_page: None,
        request_id: None,
        pages: 0,
        status: Some(status),
    }))
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
