//! The `agentauth.watcher.v1.SchemaWatcher` gRPC API.

use agentauth_grpc::Caller;
use agentauth_proto::watcher::v1 as pb;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::Error;

#[derive(Debug)]
pub(crate) struct SchemaWatcherApi;

#[tonic::async_trait]
impl pb::schema_watcher_server::SchemaWatcher for SchemaWatcherApi {
    async fn get_snapshot(
        &self,
        request: Request<pb::GetSnapshotRequest>,
    ) -> Result<Response<pb::GetSnapshotResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller
            .check_connection(&r.connection_name)
            .map_err(Error::from)?;
        Err(Error::NotImplemented { rpc: "GetSnapshot" }.into())
    }

    async fn list_drift(
        &self,
        request: Request<pb::ListDriftRequest>,
    ) -> Result<Response<pb::ListDriftResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        if let Some(name) = &r.connection_name {
            caller.check_connection(name).map_err(Error::from)?;
        }
        Err(Error::NotImplemented { rpc: "ListDrift" }.into())
    }

    async fn approve_baseline(
        &self,
        request: Request<pb::ApproveBaselineRequest>,
    ) -> Result<Response<pb::ApproveBaselineResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller
            .check_connection(&r.connection_name)
            .map_err(Error::from)?;
        Err(Error::NotImplemented {
            rpc: "ApproveBaseline",
        }
        .into())
    }

    type WatchDriftStream = BoxStream<pb::WatchDriftResponse>;

    async fn watch_drift(
        &self,
        request: Request<pb::WatchDriftRequest>,
    ) -> Result<Response<Self::WatchDriftStream>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        if let Some(name) = &r.connection_name {
            caller.check_connection(name).map_err(Error::from)?;
        }
        Err(Error::NotImplemented { rpc: "WatchDrift" }.into())
    }

    async fn check_tools(
        &self,
        request: Request<pb::CheckToolsRequest>,
    ) -> Result<Response<pb::CheckToolsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller
            .check_connection(&r.connection_name)
            .map_err(Error::from)?;
        Err(Error::NotImplemented { rpc: "CheckTools" }.into())
    }
}
