//! The `agentauth.vault.v1.TokenVault` gRPC API.

use agentauth_grpc::Caller;
use agentauth_proto::vault::v1 as pb;
use tonic::{Request, Response, Status};

use std::sync::Arc;

use crate::Error;
use crate::connections::{Connection, Kind, Registry};

#[derive(Debug)]
pub(crate) struct TokenVaultApi {
    pub connections: Arc<Registry>,
}

impl TokenVaultApi {
    /// The connection named exactly `name`, or NOT_FOUND naming the closest ones `caller` may
    /// use (names it may not use are never suggested).
    fn connection(&self, caller: &Caller, name: &str) -> Result<&Connection, Error> {
        self.connections
            .get(name)
            .ok_or_else(|| Error::UnknownConnection {
                name: name.to_owned(),
                suggestions: self
                    .connections
                    .close_to(name)
                    .into_iter()
                    .filter(|n| caller.check_connection(n).is_ok())
                    .collect(),
            })
    }
}

/// `ListConnections`' page size when the request names none, and the largest allowed.
const DEFAULT_PAGE: usize = 100;
const MAX_PAGE: usize = 1_000;

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
        let name = &request.get_ref().name;
        if name.is_empty() {
            return Err(Error::InvalidArgument {
                field: "name",
                description: "is required".to_owned(),
            }
            .into());
        }
        let connection = self.connection(caller, name)?;
        caller.check_connection(name).map_err(Error::from)?;
        Ok(Response::new(pb::GetConnectionResponse {
            connection: Some(connection.to_wire()),
        }))
    }

    async fn list_connections(
        &self,
        request: Request<pb::ListConnectionsRequest>,
    ) -> Result<Response<pb::ListConnectionsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let list = request.get_ref();
        let kind = list
            .kind
            .map(|k| match pb::ConnectionKind::try_from(k) {
                Ok(pb::ConnectionKind::Rest) => Ok(Kind::Rest),
                Ok(pb::ConnectionKind::Mcp) => Ok(Kind::Mcp),
                _ => Err(Error::InvalidArgument {
                    field: "kind",
                    description: "must be REST or MCP".to_owned(),
                }),
            })
            .transpose()?;
        let after = match list.page_token.as_str() {
            "" => None,
            token => Some(
                hex::decode(token)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| Error::InvalidArgument {
                        field: "page_token",
                        description: "is not a token this service issued".to_owned(),
                    })?,
            ),
        };
        let size = match list.page_size as usize {
            0 => DEFAULT_PAGE,
            n => n.min(MAX_PAGE),
        };
        // Only what this caller may use, in name order.
        let mut visible = self.connections.iter().filter(|c| {
            caller.check_connection(&c.name).is_ok()
                && kind.is_none_or(|k| c.kind == k)
                && after.as_ref().is_none_or(|a| c.name.as_str() > a.as_str())
        });
        let connections: Vec<pb::Connection> = visible
            .by_ref()
            .take(size)
            .map(Connection::to_wire)
            .collect();
        let next_page_token = match (visible.next(), connections.last()) {
            (Some(_), Some(last)) => hex::encode(&last.name),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListConnectionsResponse {
            connections,
            next_page_token,
        }))
    }
}
