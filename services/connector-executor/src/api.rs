//! The `agentauth.executor.v1.ConnectorExecutor` gRPC API.

use agentauth_grpc::Caller;
use agentauth_proto::executor::v1 as pb;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::Error;

#[derive(Debug)]
pub(crate) struct ConnectorExecutorApi;

#[tonic::async_trait]
impl pb::connector_executor_server::ConnectorExecutor for ConnectorExecutorApi {
    async fn execute_tool(
        &self,
        request: Request<pb::ExecuteToolRequest>,
    ) -> Result<Response<pb::ExecuteToolResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        caller
            .check_connection(&r.connection_name)
            .map_err(Error::from)?;
        caller.check_tool(&r.tool_name).map_err(Error::from)?;
        Err(Error::NotImplemented { rpc: "ExecuteTool" }.into())
    }

    async fn execute_batch(
        &self,
        request: Request<pb::ExecuteBatchRequest>,
    ) -> Result<Response<pb::ExecuteBatchResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        caller
            .check_connection(&r.connection_name)
            .map_err(Error::from)?;
        Err(Error::NotImplemented {
            rpc: "ExecuteBatch",
        }
        .into())
    }

    async fn list_tools(
        &self,
        request: Request<pb::ListToolsRequest>,
    ) -> Result<Response<pb::ListToolsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        if let Some(name) = &r.connection_name {
            caller.check_connection(name).map_err(Error::from)?;
        }
        Err(Error::NotImplemented { rpc: "ListTools" }.into())
    }

    async fn proxy_request(
        &self,
        request: Request<pb::ProxyRequestRequest>,
    ) -> Result<Response<pb::ProxyRequestResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        caller
            .check_connection(&r.connection_name)
            .map_err(Error::from)?;
        Err(Error::NotImplemented {
            rpc: "ProxyRequest",
        }
        .into())
    }

    async fn mint_mcp_session(
        &self,
        request: Request<pb::MintMcpSessionRequest>,
    ) -> Result<Response<pb::MintMcpSessionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        Err(Error::NotImplemented {
            rpc: "MintMcpSession",
        }
        .into())
    }

    type SubscribeEventsStream = BoxStream<pb::SubscribeEventsResponse>;

    async fn subscribe_events(
        &self,
        request: Request<pb::SubscribeEventsRequest>,
    ) -> Result<Response<Self::SubscribeEventsStream>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        if let Some(name) = &r.connection_name {
            caller.check_connection(name).map_err(Error::from)?;
        }
        Err(Error::NotImplemented {
            rpc: "SubscribeEvents",
        }
        .into())
    }
}
