//! The `agentauth.audit.v1.AuditLog` gRPC API.

use agentauth_grpc::Caller;
use agentauth_proto::audit::v1 as pb;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

use crate::Error;

#[derive(Debug)]
pub(crate) struct AuditLogApi;

/// Authorises the caller for `tenant`, then answers that `rpc` has not landed yet.
fn not_implemented<T, R>(
    request: &Request<R>,
    tenant: &str,
    rpc: &'static str,
) -> Result<T, Status> {
    Caller::of(request)?
        .check_tenant(tenant)
        .map_err(Error::from)?;
    Err(Error::NotImplemented { rpc }.into())
}

#[tonic::async_trait]
impl pb::audit_log_server::AuditLog for AuditLogApi {
    async fn append(
        &self,
        request: Request<pb::AppendRequest>,
    ) -> Result<Response<pb::AppendResponse>, Status> {
        let tenant = request
            .get_ref()
            .events
            .first()
            .map(|e| e.tenant.clone())
            .unwrap_or_default();
        not_implemented(&request, &tenant, "Append")
    }

    async fn query(
        &self,
        request: Request<pb::QueryRequest>,
    ) -> Result<Response<pb::QueryResponse>, Status> {
        let tenant = request
            .get_ref()
            .filter
            .as_ref()
            .map(|f| f.tenant.clone())
            .unwrap_or_default();
        not_implemented(&request, &tenant, "Query")
    }

    type ExportStream = BoxStream<pb::ExportResponse>;

    async fn export(
        &self,
        request: Request<pb::ExportRequest>,
    ) -> Result<Response<Self::ExportStream>, Status> {
        let tenant = request
            .get_ref()
            .filter
            .as_ref()
            .map(|f| f.tenant.clone())
            .unwrap_or_default();
        not_implemented(&request, &tenant, "Export")
    }

    async fn verify_chain(
        &self,
        request: Request<pb::VerifyChainRequest>,
    ) -> Result<Response<pb::VerifyChainResponse>, Status> {
        let tenant = request.get_ref().tenant.clone();
        not_implemented(&request, &tenant, "VerifyChain")
    }

    async fn purge_before(
        &self,
        request: Request<pb::PurgeBeforeRequest>,
    ) -> Result<Response<pb::PurgeBeforeResponse>, Status> {
        let tenant = request.get_ref().tenant.clone();
        not_implemented(&request, &tenant, "PurgeBefore")
    }
}
