//! Writing an app's client secret to the shared OpenBao's KV store, shared by the token-vault
//! tests.

use agentauth_testkit::openbao;

/// Writes `secret` as the `client_secret` of `app` under `prefix` in the shared OpenBao.
pub async fn write_client_secret(prefix: &str, app: &str, secret: &str) {
    openbao::shared()
        .write_kv(
            &format!("{prefix}/apps/{app}"),
            serde_json::json!({ "client_secret": secret }),
        )
        .await
        .expect("client secret written");
}
