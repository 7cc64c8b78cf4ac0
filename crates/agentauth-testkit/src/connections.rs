//! token-vault's `[[connections]]` entries for tests, written in one place: every test system
//! reaches the sandbox (or a dead address) the same way.

use std::fmt::Write as _;

/// An OAuth app registered at an Asana (the sandbox): where its endpoints are and the
/// credentials a connection uses.
#[derive(Debug, Clone, Copy)]
pub struct OAuthApp<'a> {
    /// The root URL the `/-/oauth_*` endpoints hang off.
    pub asana: &'a str,
    pub client_id: &'a str,
    /// A `vault:<mount>/data/<path>#<field>` reference, never the secret.
    pub client_secret: &'a str,
    pub redirect_url: &'a str,
    /// Whether the connection names the revocation endpoint (a disconnect revokes upstream).
    pub revocable: bool,
}

impl OAuthApp<'_> {
    fn entry(&self, name: &str, kind: &str) -> String {
        let Self {
            asana,
            client_id,
            client_secret,
            redirect_url,
            revocable,
        } = self;
        let mut entry = format!(
            "\n[[connections]]\nname = \"{name}\"\nkind = \"{kind}\"\nauth = \"oauth\"\n\
             client_id = \"{client_id}\"\nclient_secret = \"{client_secret}\"\n\
             scopes = [\"default\"]\nredirect_url = \"{redirect_url}\"\n\
             authorize_url = \"{asana}/-/oauth_authorize\"\ntoken_url = \"{asana}/-/oauth_token\"\n"
        );
        if *revocable {
            let _ = writeln!(entry, "revoke_url = \"{asana}/-/oauth_revoke\"");
        }
        entry
    }

    /// A REST connection over this app, calling the API at `api_base_url`.
    pub fn rest(&self, name: &str, api_base_url: &str) -> String {
        self.entry(name, "rest") + &format!("api_base_url = \"{api_base_url}\"\n")
    }

    /// An MCP connection over this app, to the server at `mcp_url` (also its OAuth resource
    /// when `resource` is None).
    pub fn mcp(&self, name: &str, mcp_url: &str, resource: Option<&str>) -> String {
        let resource = resource.unwrap_or(mcp_url);
        self.entry(name, "mcp") + &format!("resource = \"{resource}\"\nmcp_url = \"{mcp_url}\"\n")
    }
}

/// A REST connection whose accounts hold personal access tokens.
pub fn pat(name: &str, api_base_url: &str) -> String {
    rest_token(name, "pat", api_base_url)
}

/// A REST connection whose accounts hold service-account tokens.
pub fn service_account(name: &str, api_base_url: &str) -> String {
    rest_token(name, "service_account", api_base_url)
}

fn rest_token(name: &str, auth: &str, api_base_url: &str) -> String {
    format!(
        "\n[[connections]]\nname = \"{name}\"\nkind = \"rest\"\nauth = \"{auth}\"\n\
         api_base_url = \"{api_base_url}\"\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize)]
    struct Entries {
        connections: Vec<toml::Table>,
    }

    #[test]
    fn entries_are_the_toml_token_vault_reads() {
        let app = OAuthApp {
            asana: "http://sandbox",
            client_id: "app",
            client_secret: "vault:secret/data/x#client_secret",
            redirect_url: "http://127.0.0.1:1/oauth/callback",
            revocable: true,
        };
        let text = app.rest("asana", "http://sandbox/api/1.0")
            + &app.mcp(
                "asana-mcp",
                "http://peer/mcp",
                Some("http://sandbox/v2/mcp"),
            )
            + &pat("asana-pat", "http://sandbox/api/1.0")
            + &service_account("asana-sa", "http://sandbox/api/1.0");
        let entries: Entries = toml::from_str(&text).expect("valid TOML");
        let [rest, mcp, pat, sa] = &entries.connections[..] else {
            panic!("four entries: {text}");
        };
        assert_eq!(
            rest["token_url"].as_str(),
            Some("http://sandbox/-/oauth_token")
        );
        assert_eq!(
            rest["revoke_url"].as_str(),
            Some("http://sandbox/-/oauth_revoke")
        );
        assert_eq!(mcp["resource"].as_str(), Some("http://sandbox/v2/mcp"));
        assert_eq!(mcp["mcp_url"].as_str(), Some("http://peer/mcp"));
        assert_eq!(pat["auth"].as_str(), Some("pat"));
        assert_eq!(sa["auth"].as_str(), Some("service_account"));
        assert!(!sa.contains_key("client_id"));
    }
}
