//! The `agentauth.vault.v1.TokenVault` gRPC API.

use agentauth_grpc::Caller;
use agentauth_proto::vault::v1 as pb;
use tonic::{Request, Response, Status};

use crate::Error;

#[derive(Debug)]
pub(crate) struct TokenVaultApi;

#[tonic::async_trait]
impl pb::token_vault_server::TokenVault for TokenVaultApi {
    async fn create_authorization_link(
        &self,
        request: Request<pb::CreateAuthorizationLinkRequest>,
    ) -> Result<Response<pb::CreateAuthorizationLinkResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        caller
            .check_connection(&r.connection_name)
            .map_err(Error::from)?;
        Err(Error::NotImplemented {
            rpc: "CreateAuthorizationLink",
        }
        .into())
    }

    async fn put_credential(
        &self,
        request: Request<pb::PutCredentialRequest>,
    ) -> Result<Response<pb::PutCredentialResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        caller
            .check_connection(&r.connection_name)
            .map_err(Error::from)?;
        Err(Error::NotImplemented {
            rpc: "PutCredential",
        }
        .into())
    }

    async fn get_access_token(
        &self,
        request: Request<pb::GetAccessTokenRequest>,
    ) -> Result<Response<pb::GetAccessTokenResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        caller
            .check_connection(&r.connection_name)
            .map_err(Error::from)?;
        Err(Error::NotImplemented {
            rpc: "GetAccessToken",
        }
        .into())
    }

    async fn report_rejected_token(
        &self,
        request: Request<pb::ReportRejectedTokenRequest>,
    ) -> Result<Response<pb::ReportRejectedTokenResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        caller
            .check_connection(&r.connection_name)
            .map_err(Error::from)?;
        Err(Error::NotImplemented {
            rpc: "ReportRejectedToken",
        }
        .into())
    }

    async fn get_account(
        &self,
        request: Request<pb::GetAccountRequest>,
    ) -> Result<Response<pb::GetAccountResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        caller
            .check_connection(&r.connection_name)
            .map_err(Error::from)?;
        Err(Error::NotImplemented { rpc: "GetAccount" }.into())
    }

    async fn list_accounts(
        &self,
        request: Request<pb::ListAccountsRequest>,
    ) -> Result<Response<pb::ListAccountsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        Err(Error::NotImplemented {
            rpc: "ListAccounts",
        }
        .into())
    }

    async fn get_identity_status(
        &self,
        request: Request<pb::GetIdentityStatusRequest>,
    ) -> Result<Response<pb::GetIdentityStatusResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        Err(Error::NotImplemented {
            rpc: "GetIdentityStatus",
        }
        .into())
    }

    async fn disconnect_account(
        &self,
        request: Request<pb::DisconnectAccountRequest>,
    ) -> Result<Response<pb::DisconnectAccountResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        caller
            .check_connection(&r.connection_name)
            .map_err(Error::from)?;
        Err(Error::NotImplemented {
            rpc: "DisconnectAccount",
        }
        .into())
    }

    async fn delete_tenant(
        &self,
        request: Request<pb::DeleteTenantRequest>,
    ) -> Result<Response<pb::DeleteTenantResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_tenant(&r.tenant).map_err(Error::from)?;
        Err(Error::NotImplemented {
            rpc: "DeleteTenant",
        }
        .into())
    }

    async fn get_connection(
        &self,
        request: Request<pb::GetConnectionRequest>,
    ) -> Result<Response<pb::GetConnectionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let r = request.get_ref();
        caller.check_connection(&r.name).map_err(Error::from)?;
        Err(Error::NotImplemented {
            rpc: "GetConnection",
        }
        .into())
    }

    async fn list_connections(
        &self,
        request: Request<pb::ListConnectionsRequest>,
    ) -> Result<Response<pb::ListConnectionsResponse>, Status> {
        Caller::of(&request)?;
        Err(Error::NotImplemented {
            rpc: "ListConnections",
        }
        .into())
    }
}
