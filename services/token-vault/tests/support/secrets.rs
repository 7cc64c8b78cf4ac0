//! Writing an app's client secret to the shared OpenBao's KV store, shared by the token-vault
//! tests.

use agentauth_testkit::openbao;

/// Writes `secret` as the `client_secret` of `app` under `prefix` in the shared OpenBao.
pub async fn write_client_secret(prefix: &str, app: &str, secret: &str) {
    let vault = openbao::shared();
    let written = reqwest::Client::new()
        .post(format!(
            "{}/v1/secret/data/{prefix}/apps/{app}",
            vault.addr()
        ))
        .header("X-Vault-Token", vault.token())
        .json(&serde_json::json!({"data": {"client_secret": secret}}))
        .send()
        .await
        .expect("vault answers");
    assert!(written.status().is_success(), "{}", written.status());
}
