//! Hand-written `Debug` for the messages that carry a secret.
//!
//! `build.rs` tells prost not to derive `Debug` for these messages. Each impl
//! destructures the message exhaustively, so a field added to the contract
//! does not compile until it is listed here, redacted or not.

use std::fmt;

use crate::executor::v1::MintMcpSessionResponse;
use crate::vault::v1::{
    GetAccessTokenResponse, GetWebhookSecretResponse, PutCredentialRequest,
    PutWebhookSecretRequest, ReportRejectedTokenResponse,
};

/// Prints `[redacted]` for a present secret and `""` for an absent one, so a
/// log still shows whether a token was there.
struct Redacted<'a>(&'a str);

impl fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("[redacted]")
        }
    }
}

impl fmt::Debug for PutCredentialRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            tenant,
            connection_name,
            identifier,
            token,
            replace_user,
        } = self;
        f.debug_struct("PutCredentialRequest")
            .field("tenant", tenant)
            .field("connection_name", connection_name)
            .field("identifier", identifier)
            .field("token", &Redacted(token))
            .field("replace_user", replace_user)
            .finish()
    }
}

impl fmt::Debug for GetAccessTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            access_token,
            expires_at,
            credential_version,
            asana_user_gid,
            account_id,
        } = self;
        f.debug_struct("GetAccessTokenResponse")
            .field("access_token", &Redacted(access_token))
            .field("expires_at", expires_at)
            .field("credential_version", credential_version)
            .field("asana_user_gid", asana_user_gid)
            .field("account_id", account_id)
            .finish()
    }
}

impl fmt::Debug for ReportRejectedTokenResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            access_token,
            expires_at,
            credential_version,
            asana_user_gid,
            account_id,
        } = self;
        f.debug_struct("ReportRejectedTokenResponse")
            .field("access_token", &Redacted(access_token))
            .field("expires_at", expires_at)
            .field("credential_version", credential_version)
            .field("asana_user_gid", asana_user_gid)
            .field("account_id", account_id)
            .finish()
    }
}

impl fmt::Debug for MintMcpSessionResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            url,
            bearer_token,
            expires_at,
            session_id,
            tool_names,
        } = self;
        f.debug_struct("MintMcpSessionResponse")
            .field("url", url)
            .field("bearer_token", &Redacted(bearer_token))
            .field("expires_at", expires_at)
            .field("session_id", session_id)
            .field("tool_names", tool_names)
            .finish()
    }
}

impl fmt::Debug for PutWebhookSecretRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            tenant,
            subscription_id,
            secret,
        } = self;
        f.debug_struct("PutWebhookSecretRequest")
            .field("tenant", tenant)
            .field("subscription_id", subscription_id)
            .field("secret", &Redacted(secret))
            .finish()
    }
}

impl fmt::Debug for GetWebhookSecretResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { secret } = self;
        f.debug_struct("GetWebhookSecretResponse")
            .field("secret", &Redacted(secret))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "2/1204/5678:0123456789abcdef";

    fn assert_redacted(debug: &str, visible: &[&str]) {
        assert!(!debug.contains(SECRET), "secret leaked: {debug}");
        assert!(debug.contains("[redacted]"), "no redaction marker: {debug}");
        for value in visible {
            assert!(debug.contains(value), "{value} missing from {debug}");
        }
    }

    #[test]
    fn put_credential_request_hides_the_token() {
        let request = PutCredentialRequest {
            tenant: "acme".into(),
            connection_name: "asana-pat".into(),
            identifier: "user_42".into(),
            token: SECRET.into(),
            replace_user: true,
        };
        assert_redacted(
            &format!("{request:?}"),
            &["acme", "asana-pat", "user_42", "replace_user: true"],
        );
        assert_redacted(&format!("{request:#?}"), &["acme"]);
    }

    #[test]
    fn access_token_responses_hide_the_token() {
        let response = GetAccessTokenResponse {
            access_token: SECRET.into(),
            expires_at: None,
            credential_version: 7,
            asana_user_gid: "1201".into(),
            account_id: "acc_1".into(),
        };
        assert_redacted(&format!("{response:?}"), &["1201", "acc_1", "7"]);

        let response = ReportRejectedTokenResponse {
            access_token: SECRET.into(),
            expires_at: None,
            credential_version: 8,
            asana_user_gid: "1201".into(),
            account_id: "acc_1".into(),
        };
        assert_redacted(&format!("{response:?}"), &["1201", "acc_1", "8"]);
    }

    #[test]
    fn mcp_session_hides_the_bearer() {
        let response = MintMcpSessionResponse {
            url: "https://agentauth.example/mcp/s/abc".into(),
            bearer_token: SECRET.into(),
            expires_at: None,
            session_id: "sess_1".into(),
            tool_names: vec!["asana_task_search".into()],
        };
        assert_redacted(
            &format!("{response:?}"),
            &[
                "https://agentauth.example/mcp/s/abc",
                "sess_1",
                "asana_task_search",
            ],
        );
    }

    #[test]
    fn webhook_secrets_are_hidden() {
        let request = PutWebhookSecretRequest {
            tenant: "acme".into(),
            subscription_id: "sub_1".into(),
            secret: SECRET.into(),
        };
        assert_redacted(&format!("{request:?}"), &["acme", "sub_1"]);
        let response = GetWebhookSecretResponse {
            secret: SECRET.into(),
        };
        assert_redacted(&format!("{response:?}"), &[]);
    }

    #[test]
    fn an_absent_secret_is_shown_as_empty() {
        let request = PutCredentialRequest::default();
        let debug = format!("{request:?}");
        assert!(debug.contains(r#"token: """#), "{debug}");
        assert!(!debug.contains("[redacted]"), "{debug}");
    }
}
