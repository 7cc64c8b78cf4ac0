//! The RPCs' requests, checked once at the edge into the types the rest of the service works
//! with (`TryFrom`): every violation of a request is named together in one `BadRequest`, and
//! nothing below `api` sees a protobuf type.

use agentauth_proto::executor::v1 as pb;
use bytes::Bytes;

use crate::Error;
use crate::tokens::AccountKey;

/// The longest tenant, connection name, identifier or tool name accepted.
const MAX_NAME: usize = 256;

/// The violations of one request, gathered before any is reported.
#[derive(Debug, Default)]
pub(crate) struct Violations(Vec<(String, String)>);

impl Violations {
    fn add(&mut self, field: impl Into<String>, description: impl Into<String>) {
        self.0.push((field.into(), description.into()));
    }

    /// A name that must be present and short.
    fn name(&mut self, field: impl Into<String>, value: &str) {
        if value.trim().is_empty() {
            self.add(field, "is required");
        } else if value.len() > MAX_NAME {
            self.add(field, format!("must be at most {MAX_NAME} bytes"));
        }
    }

    fn into_result<T>(self, value: T) -> Result<T, Error> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(Error::InvalidRequest(self.0))
        }
    }
}

/// How many pages a call fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pages {
    /// One page, as Asana answers it.
    One,
    /// Follow `next_page` up to this many pages (`None`: the configured default).
    Auto(Option<u32>),
}

impl From<Option<&pb::ExecuteOptions>> for Pages {
    fn from(options: Option<&pb::ExecuteOptions>) -> Self {
        match options {
            Some(o) if o.auto_paginate => Self::Auto((o.max_pages > 0).then_some(o.max_pages)),
            _ => Self::One,
        }
    }
}

/// One tool call: the tool, its input as the caller sent it, and how many pages.
#[derive(Debug, Clone)]
pub(crate) struct ToolCall {
    pub tool: String,
    pub input_json: String,
    pub pages: Pages,
}

/// `ExecuteToolRequest`, checked.
#[derive(Debug)]
pub(crate) struct ExecuteTool {
    pub account: AccountKey,
    pub call: ToolCall,
}

/// `ExecuteBatchRequest`, checked (its size is checked against the configured limit later).
#[derive(Debug)]
pub(crate) struct ExecuteBatch {
    pub account: AccountKey,
    pub items: Vec<ToolCall>,
}

/// `ProxyRequestRequest`, checked for presence; its method, path and headers are checked by
/// `proxy::check` against the proxy's rules.
#[derive(Debug)]
pub(crate) struct Proxy {
    pub account: AccountKey,
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// `ListToolsRequest`, checked.
#[derive(Debug)]
pub(crate) struct ListTools {
    pub connection: Option<String>,
    pub prefix: String,
    pub source: Option<pb::ToolSource>,
    /// Where the page starts in the filtered list.
    pub start: usize,
    /// 0: the default page size.
    pub size: usize,
}

/// `ListUpstreamToolsRequest`, checked: the account that lists.
#[derive(Debug)]
pub(crate) struct ListUpstreamTools {
    pub account: AccountKey,
}

impl TryFrom<&pb::ListUpstreamToolsRequest> for ListUpstreamTools {
    type Error = Error;

    fn try_from(r: &pb::ListUpstreamToolsRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let account = account(
            &r.tenant,
            &r.connection_name,
            &r.identifier,
            &mut violations,
        );
        violations.into_result(Self { account })
    }
}

fn account(
    tenant: &str,
    connection: &str,
    identifier: &str,
    violations: &mut Violations,
) -> AccountKey {
    violations.name("tenant", tenant);
    violations.name("connection_name", connection);
    violations.name("identifier", identifier);
    AccountKey {
        tenant: tenant.to_owned(),
        connection: connection.to_owned(),
        identifier: identifier.to_owned(),
    }
}

impl TryFrom<&pb::ExecuteToolRequest> for ExecuteTool {
    type Error = Error;

    fn try_from(r: &pb::ExecuteToolRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let account = account(
            &r.tenant,
            &r.connection_name,
            &r.identifier,
            &mut violations,
        );
        violations.name("tool_name", &r.tool_name);
        violations.into_result(Self {
            account,
            call: ToolCall {
                tool: r.tool_name.clone(),
                input_json: r.input_json.clone(),
                pages: Pages::from(r.options.as_ref()),
            },
        })
    }
}

impl TryFrom<&pb::ExecuteBatchRequest> for ExecuteBatch {
    type Error = Error;

    fn try_from(r: &pb::ExecuteBatchRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let account = account(
            &r.tenant,
            &r.connection_name,
            &r.identifier,
            &mut violations,
        );
        if r.items.is_empty() {
            violations.add("items", "must hold at least one item");
        }
        let items = r
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                violations.name(format!("items[{i}].tool_name"), &item.tool_name);
                ToolCall {
                    tool: item.tool_name.clone(),
                    input_json: item.input_json.clone(),
                    pages: Pages::from(item.options.as_ref()),
                }
            })
            .collect();
        violations.into_result(Self { account, items })
    }
}

impl TryFrom<&pb::ProxyRequestRequest> for Proxy {
    type Error = Error;

    fn try_from(r: &pb::ProxyRequestRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        let account = account(
            &r.tenant,
            &r.connection_name,
            &r.identifier,
            &mut violations,
        );
        if r.method.is_empty() {
            violations.add("method", "is required");
        }
        if r.path.is_empty() {
            violations.add("path", "is required");
        }
        violations.into_result(Self {
            account,
            method: r.method.clone(),
            path: r.path.clone(),
            query: r
                .query
                .iter()
                .map(|q| (q.name.clone(), q.value.clone()))
                .collect(),
            headers: r
                .headers
                .iter()
                .map(|h| (h.name.clone(), h.value.clone()))
                .collect(),
            body: Bytes::from(r.body.clone()),
        })
    }
}

impl TryFrom<&pb::ListToolsRequest> for ListTools {
    type Error = Error;

    fn try_from(r: &pb::ListToolsRequest) -> Result<Self, Error> {
        let mut violations = Violations::default();
        if let Some(connection) = &r.connection_name {
            violations.name("connection_name", connection);
        }
        let source = match r.source.map(pb::ToolSource::try_from) {
            None => None,
            Some(Ok(pb::ToolSource::Unspecified)) | Some(Err(_)) => {
                violations.add("source", "must be CURATED, GENERATED or UPSTREAM_MCP");
                None
            }
            Some(Ok(source)) => Some(source),
        };
        let start = if r.page_token.is_empty() {
            0
        } else {
            r.page_token.parse::<usize>().unwrap_or_else(|_| {
                violations.add("page_token", "is not a token from a previous page");
                0
            })
        };
        violations.into_result(Self {
            connection: r.connection_name.clone(),
            prefix: r.name_prefix.clone(),
            source,
            start,
            size: r.page_size as usize,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_violation_of_a_request_is_named_at_once() {
        let empty = pb::ExecuteToolRequest {
            tenant: String::new(),
            connection_name: "x".repeat(300),
            identifier: " ".into(),
            tool_name: String::new(),
            input_json: String::new(),
            options: None,
        };
        let Err(Error::InvalidRequest(violations)) = ExecuteTool::try_from(&empty) else {
            panic!("refused");
        };
        let fields: Vec<&str> = violations.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            ["tenant", "connection_name", "identifier", "tool_name"]
        );
        let batch = pb::ExecuteBatchRequest {
            tenant: "acme".into(),
            connection_name: "asana".into(),
            identifier: "alice".into(),
            items: vec![
                pb::BatchItem {
                    tool_name: "asana_task_get".into(),
                    ..Default::default()
                },
                pb::BatchItem::default(),
            ],
        };
        let Err(Error::InvalidRequest(violations)) = ExecuteBatch::try_from(&batch) else {
            panic!("refused");
        };
        assert_eq!(violations[0].0, "items[1].tool_name");
    }

    #[test]
    fn options_become_a_page_bound() {
        let auto = |max_pages| pb::ExecuteOptions {
            auto_paginate: true,
            max_pages,
        };
        assert_eq!(Pages::from(None), Pages::One);
        assert_eq!(Pages::from(Some(&auto(0))), Pages::Auto(None));
        assert_eq!(Pages::from(Some(&auto(7))), Pages::Auto(Some(7)));
        let off = pb::ExecuteOptions {
            auto_paginate: false,
            max_pages: 7,
        };
        assert_eq!(Pages::from(Some(&off)), Pages::One);
    }
}
