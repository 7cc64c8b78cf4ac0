//! `agentauth status`: each service's health, as Kubernetes would probe it.

use std::process::ExitCode;

use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::{Endpoints, writeln_out};

/// The health of the service at `url`: `SERVING`, `NOT_SERVING`, or why it did not answer.
pub async fn health(url: &str) -> Result<ServingStatus, String> {
    let channel = tonic::transport::Endpoint::from_shared(url.to_owned())
        .map_err(|e| format!("invalid address: {e}"))?
        .connect_timeout(std::time::Duration::from_secs(2))
        .connect()
        .await
        .map_err(|e| format!("unreachable: {e}"))?;
    let response = HealthClient::new(channel)
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))?;
    Ok(response.into_inner().status())
}

pub async fn run(endpoints: &Endpoints) -> anyhow::Result<ExitCode> {
    let services = [
        ("token-vault", &endpoints.token_vault),
        ("connector-executor", &endpoints.connector_executor),
        ("audit-log", &endpoints.audit_log),
        ("schema-watcher", &endpoints.schema_watcher),
    ];
    let mut all_serving = true;
    let mut out = std::io::stdout().lock();
    for (name, url) in services {
        let state = match health(url).await {
            Ok(ServingStatus::Serving) => "SERVING".to_owned(),
            Ok(other) => {
                all_serving = false;
                other.as_str_name().to_owned()
            }
            Err(reason) => {
                all_serving = false;
                reason
            }
        };
        writeln_out(&mut out, &format!("{name:<20} {url:<26} {state}"))?;
    }
    Ok(if all_serving {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
