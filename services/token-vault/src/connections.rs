//! The connection registry: every way agentauth reaches Asana, declared once, in token-vault's
//! configuration, and read by the other services through `GetConnection` / `ListConnections`.

use std::collections::BTreeMap;

use agentauth_proto::vault::v1 as pb;
use serde::Deserialize;

/// Which Asana surface a connection talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// The REST API, with an Asana API app, a PAT or a service account.
    Rest,
    /// The hosted MCP server V2, with an Asana MCP app (OAuth only).
    Mcp,
}

/// How a connection's credentials are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Auth {
    Oauth,
    Pat,
    ServiceAccount,
}

/// A reference to a secret in Vault: `vault:<kv v2 path>#<field>`, never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct VaultRef {
    pub path: String,
    pub field: String,
}

impl TryFrom<String> for VaultRef {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        let reference = text
            .strip_prefix("vault:")
            .and_then(|rest| rest.split_once('#'))
            .filter(|(path, field)| !path.is_empty() && !field.is_empty());
        match reference {
            Some((path, field)) => Ok(Self {
                path: path.to_owned(),
                field: field.to_owned(),
            }),
            None => Err("client_secret must be a Vault reference `vault:<kv path>#<field>`, never the secret".to_owned()),
        }
    }
}

/// One `[[connections]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connection {
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub kind: Kind,
    pub auth: Auth,
    #[serde(default)]
    pub client_id: String,
    pub client_secret: Option<VaultRef>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub redirect_url: String,
    #[serde(default)]
    pub authorize_url: String,
    #[serde(default)]
    pub token_url: String,
    #[serde(default)]
    pub revoke_url: String,
    /// MCP only: the `resource` parameter of authorization requests.
    #[serde(default)]
    pub resource: String,
    /// REST only: the API base, e.g. `https://app.asana.com/api/1.0`.
    #[serde(default)]
    pub api_base_url: String,
    /// MCP only: the server URL, e.g. `https://mcp.asana.com/v2/mcp`.
    #[serde(default)]
    pub mcp_url: String,
}

impl Connection {
    /// Whether the entry is complete and coherent; the error names the connection and field.
    fn validate(&self) -> Result<(), String> {
        let name = &self.name;
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name {
            return Err(format!(
                "connections: `{name}` must be 1-64 of a-z, 0-9, `-`, `_`"
            ));
        }
        let missing = |field: &str, value: &str| {
            if value.is_empty() {
                Err(format!(
                    "connections.{name}: `{field}` is required for this kind and auth"
                ))
            } else {
                Ok(())
            }
        };
        match (self.kind, self.auth) {
            (Kind::Mcp, Auth::Pat | Auth::ServiceAccount) => {
                return Err(format!(
                    "connections.{name}: MCP connections authenticate with OAuth only"
                ));
            }
            (_, Auth::Oauth) => {
                missing("client_id", &self.client_id)?;
                missing("redirect_url", &self.redirect_url)?;
                missing("authorize_url", &self.authorize_url)?;
                missing("token_url", &self.token_url)?;
                if self.client_secret.is_none() {
                    return Err(format!(
                        "connections.{name}: `client_secret` (a Vault reference) is required for OAuth"
                    ));
                }
            }
            (Kind::Rest, Auth::Pat | Auth::ServiceAccount) => {}
        }
        match self.kind {
            Kind::Rest => missing("api_base_url", &self.api_base_url),
            Kind::Mcp => {
                missing("mcp_url", &self.mcp_url)?;
                missing("resource", &self.resource)
            }
        }
    }

    /// The wire form: everything but the client secret's reference.
    pub fn to_wire(&self) -> pb::Connection {
        pb::Connection {
            name: self.name.clone(),
            description: self.description.clone(),
            kind: match self.kind {
                Kind::Rest => pb::ConnectionKind::Rest,
                Kind::Mcp => pb::ConnectionKind::Mcp,
            }
            .into(),
            auth_method: match self.auth {
                Auth::Oauth => pb::AuthMethod::Oauth,
                Auth::Pat => pb::AuthMethod::Pat,
                Auth::ServiceAccount => pb::AuthMethod::ServiceAccount,
            }
            .into(),
            client_id: self.client_id.clone(),
            scopes: self.scopes.clone(),
            authorize_url: self.authorize_url.clone(),
            token_url: self.token_url.clone(),
            revoke_url: self.revoke_url.clone(),
            redirect_url: self.redirect_url.clone(),
            resource: self.resource.clone(),
            api_base_url: self.api_base_url.clone(),
            mcp_url: self.mcp_url.clone(),
        }
    }
}

/// The validated registry, by exact name.
#[derive(Debug, Clone, Default)]
pub struct Registry(BTreeMap<String, Connection>);

impl Registry {
    /// Validates every entry; duplicate names are an error.
    pub fn new(connections: Vec<Connection>) -> Result<Self, String> {
        let mut by_name = BTreeMap::new();
        for connection in connections {
            connection.validate()?;
            let name = connection.name.clone();
            if by_name.insert(name.clone(), connection).is_some() {
                return Err(format!("connections: `{name}` is declared twice"));
            }
        }
        Ok(Self(by_name))
    }

    /// The connection named exactly `name`.
    pub fn get(&self, name: &str) -> Option<&Connection> {
        self.0.get(name)
    }

    /// Every connection, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Connection> {
        self.0.values()
    }

    /// Configured names close to `name` (for "did you mean"), closest first, at most three.
    pub fn close_to(&self, name: &str) -> Vec<String> {
        agentauth_grpc::close_names(name, self.0.keys().map(String::as_str), 3)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Registry, String> {
        #[derive(Deserialize)]
        struct File {
            connections: Vec<Connection>,
        }
        use figment::providers::Format as _;
        let file: File = figment::Figment::from(figment::providers::Toml::string(toml_text))
            .extract()
            .map_err(|e| e.to_string())?;
        Registry::new(file.connections)
    }

    const VALID: &str = r#"
        [[connections]]
        name = "asana"
        kind = "rest"
        auth = "oauth"
        client_id = "app"
        client_secret = "vault:secret/data/agentauth/apps/asana#client_secret"
        scopes = ["default"]
        redirect_url = "http://127.0.0.1:50060/oauth/callback"
        authorize_url = "https://app.asana.com/-/oauth_authorize"
        token_url = "https://app.asana.com/-/oauth_token"
        api_base_url = "https://app.asana.com/api/1.0"

        [[connections]]
        name = "asana-pat"
        kind = "rest"
        auth = "pat"
        api_base_url = "https://app.asana.com/api/1.0"
    "#;

    #[test]
    fn names_match_exactly_and_close_names_are_suggested() {
        let registry = parse(VALID).expect("valid");
        assert!(registry.get("asana").is_some());
        assert!(registry.get("Asana").is_none(), "names match exactly");
        assert_eq!(registry.close_to("Asana"), ["asana"]);
        assert_eq!(registry.close_to("asana_pat"), ["asana-pat"]);
        assert!(registry.close_to("github").is_empty());
    }

    #[test]
    fn the_wire_form_never_carries_the_secret_reference() {
        let registry = parse(VALID).expect("valid");
        let wire = format!("{:?}", registry.get("asana").map(Connection::to_wire));
        assert!(!wire.contains("vault:"), "{wire}");
        assert!(!wire.contains("client_secret"), "{wire}");
    }

    #[test]
    fn incoherent_entries_are_refused_with_the_reason() {
        let cases = [
            (
                VALID.replace(
                    "vault:secret/data/agentauth/apps/asana#client_secret",
                    "s3cr3t",
                ),
                "Vault reference",
            ),
            (
                VALID.replace("name = \"asana-pat\"", "name = \"asana\""),
                "declared twice",
            ),
            (
                VALID.replace("name = \"asana-pat\"", "name = \"Asana PAT\""),
                "must be 1-64",
            ),
            (
                VALID.replace(
                    "kind = \"rest\"\n        auth = \"pat\"",
                    "kind = \"mcp\"\n        auth = \"pat\"",
                ),
                "OAuth only",
            ),
            (
                VALID.replace("token_url = \"https://app.asana.com/-/oauth_token\"", ""),
                "token_url",
            ),
        ];
        for (text, expected) in cases {
            let error = parse(&text).expect_err(expected);
            assert!(error.contains(expected), "{error}");
        }
    }
}
