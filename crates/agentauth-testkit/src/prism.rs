//! Stoplight Prism in proxy mode with `--errors`, in front of an Asana-compatible server: it
//! checks every request and response against Asana's OpenAPI spec
//! (`crates/asana-sandbox/spec/asana_oas.yaml`). A bad request gets a 422 problem+json, a bad
//! response a 500 with an `sl-violations` header; [`violation`] recognises both.
//!
//! Prism is installed by `make tools` under [`crate::tools_dir`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;
use tokio::process::{Child, Command};

/// How long Prism may take to load the spec and listen.
const STARTUP: Duration = Duration::from_secs(60);

/// What [`prism_spec`] changed in the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Corrections {
    /// `null` items removed from `enum`s.
    pub null_enum_items: usize,
    /// `allOf`s with a `nullable: true` branch marked nullable themselves.
    pub nullable_refs: usize,
    /// `format`s dropped from `WorkspaceResponse.email_domains` items.
    pub email_domain_formats: usize,
    /// `WebhookResponse` health fields marked nullable.
    pub webhook_health_fields: usize,
}

/// A running Prism proxy. Killed when dropped.
#[derive(Debug)]
pub struct PrismProxy {
    url: String,
    corrections: Corrections,
    log: PathBuf,
    _child: Child,
    _dir: tempfile::TempDir,
}

impl PrismProxy {
    /// Where to send requests: the upstream's API base, without its path (`/api/1.0`).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// What the spec Prism validates with had corrected.
    pub fn corrections(&self) -> Corrections {
        self.corrections
    }

    /// Everything Prism has printed so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Asana's OpenAPI spec, as vendored in the sandbox crate.
pub fn asana_spec_path() -> PathBuf {
    crate::workspace_root().join("crates/asana-sandbox/spec/asana_oas.yaml")
}

/// The Prism binary `make tools` installs.
pub fn prism_binary() -> Result<PathBuf> {
    let path = crate::tools_dir().join("node/node_modules/.bin/prism");
    ensure!(
        path.exists(),
        "{} is missing: run `make tools` (it installs Prism into .tools/)",
        path.display()
    );
    Ok(path)
}

/// Starts Prism proxying to `upstream` (an API base such as `http://127.0.0.1:1234/api/1.0`)
/// with the corrected spec, and waits until it listens.
pub async fn start_proxy(upstream: &str) -> Result<PrismProxy> {
    let prism = prism_binary()?;
    let yaml = std::fs::read_to_string(asana_spec_path())?;
    let (spec, corrections) = prism_spec(&yaml)?;
    let dir = tempfile::tempdir()?;
    let spec_path = dir.path().join("asana_oas.prism.json");
    std::fs::write(&spec_path, serde_json::to_vec(&spec)?)?;
    let port = crate::free_port().port();
    let log = dir.path().join("prism.log");
    let log_file = std::fs::File::create(&log)?;
    let mut child = Command::new(&prism)
        .arg("proxy")
        .arg("--errors")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .arg(&spec_path)
        .arg(upstream)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", prism.display()))?;
    wait_listening(port, &mut child, &log).await?;
    Ok(PrismProxy {
        url: format!("http://127.0.0.1:{port}"),
        corrections,
        log,
        _child: child,
        _dir: dir,
    })
}

/// What Prism found wrong with one exchange, if anything: the `sl-violations` header of a bad
/// response, or the problem+json body Prism answers a bad request with.
pub fn violation(sl_violations: Option<&str>, body: &str) -> Option<String> {
    if let Some(header) = sl_violations {
        return Some(format!("sl-violations: {header}\n{body}"));
    }
    let problem: Value = serde_json::from_str(body).ok()?;
    problem["type"]
        .as_str()
        .is_some_and(|kind| kind.starts_with("https://stoplight.io/prism/errors#"))
        .then(|| body.to_owned())
}

/// Makes the copy of the spec Prism validates with, and says what it changed. Prism needs
/// two corrections, and the spec has one defect its own example shows:
///
/// - `null` items in `enum`s (the spec's five `- null` lines) make Prism skip validation of
///   every schema that uses them, silently;
/// - the spec writes a nullable reference as `allOf: [{$ref: X}, {nullable: true}]`, which a
///   validator must reject null for, since `X` is not nullable; Asana sends null there (and
///   the descriptions say so), so the `allOf` itself is marked nullable, which Prism honours
///   while still checking non-null values against `X`;
/// - `WorkspaceResponse.email_domains` items are declared `format: uri`, but they are bare
///   domains (the spec's own example is `asana.com`), so that `format` is dropped;
/// - `WebhookResponse`'s health fields (`last_success_at`, `last_failure_at`,
///   `last_failure_content`, `next_attempt_after`, `failure_deletion_timestamp`) are declared
///   non-nullable strings, but a webhook that has not failed has them `null` (Asana's webhook
///   guide shows a new webhook with `"last_failure_at": null`), so they are marked nullable.
pub fn prism_spec(yaml: &str) -> Result<(Value, Corrections)> {
    fn walk(value: &mut Value, corrections: &mut Corrections) {
        match value {
            Value::Object(object) => {
                if let Some(Value::Array(items)) = object.get_mut("enum") {
                    let before = items.len();
                    items.retain(|item| !item.is_null());
                    corrections.null_enum_items += before - items.len();
                }
                let nullable_branch = object
                    .get("allOf")
                    .and_then(Value::as_array)
                    .is_some_and(|branches| branches.iter().any(|b| b["nullable"] == true));
                if nullable_branch && object.get("nullable") != Some(&Value::Bool(true)) {
                    object.insert("nullable".to_owned(), Value::Bool(true));
                    corrections.nullable_refs += 1;
                }
                for child in object.values_mut() {
                    walk(child, corrections);
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|item| walk(item, corrections)),
            _ => {}
        }
    }
    let mut spec: Value = serde_yaml::from_str(yaml)?;
    let mut corrections = Corrections {
        null_enum_items: 0,
        nullable_refs: 0,
        email_domain_formats: 0,
        webhook_health_fields: 0,
    };
    walk(&mut spec, &mut corrections);
    if let Some(branches) = spec
        .pointer_mut("/components/schemas/WorkspaceResponse/allOf")
        .and_then(Value::as_array_mut)
    {
        for branch in branches {
            if let Some(items) = branch
                .pointer_mut("/properties/email_domains/items")
                .and_then(Value::as_object_mut)
            {
                corrections.email_domain_formats += usize::from(items.remove("format").is_some());
            }
        }
    }
    if let Some(branches) = spec
        .pointer_mut("/components/schemas/WebhookResponse/allOf")
        .and_then(Value::as_array_mut)
    {
        for branch in branches {
            for field in [
                "last_success_at",
                "last_failure_at",
                "last_failure_content",
                "next_attempt_after",
                "failure_deletion_timestamp",
            ] {
                if let Some(property) = branch
                    .pointer_mut(&format!("/properties/{field}"))
                    .and_then(Value::as_object_mut)
                {
                    property.insert("nullable".to_owned(), Value::Bool(true));
                    corrections.webhook_health_fields += 1;
                }
            }
        }
    }
    Ok((spec, corrections))
}

/// Polls until something accepts connections on `port`, or the child exits, or time runs out.
async fn wait_listening(port: u16, child: &mut Child, log: &Path) -> Result<()> {
    let deadline = Instant::now() + STARTUP;
    loop {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "prism exited with {status}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        if Instant::now() >= deadline {
            bail!(
                "prism did not listen within {STARTUP:?}:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_are_recognised() {
        let problem =
            r#"{"type":"https://stoplight.io/prism/errors#UNPROCESSABLE_ENTITY","status":422}"#;
        assert_eq!(violation(None, problem).as_deref(), Some(problem));
        assert!(
            violation(Some("[{\"code\":\"type\"}]"), "{}")
                .is_some_and(|found| found.contains("\"code\":\"type\""))
        );
        assert_eq!(violation(None, r#"{"data": {"gid": "1"}}"#), None);
        assert_eq!(
            violation(None, r#"{"errors": [{"message": "Not found"}]}"#),
            None
        );
        assert_eq!(violation(None, "not json"), None);
    }

    #[test]
    fn the_spec_corrections_apply() -> Result<()> {
        let yaml = r#"
components:
  schemas:
    Thing:
      properties:
        kind: {type: string, enum: [a, null]}
        owner:
          allOf:
            - {$ref: '#/components/schemas/User'}
            - {nullable: true}
    WorkspaceResponse:
      allOf:
        - properties:
            email_domains: {type: array, items: {type: string, format: uri}}
    WebhookResponse:
      allOf:
        - properties:
            last_failure_at: {type: string}
"#;
        let (spec, corrections) = prism_spec(yaml)?;
        assert_eq!(
            corrections,
            Corrections {
                null_enum_items: 1,
                nullable_refs: 1,
                email_domain_formats: 1,
                webhook_health_fields: 1,
            }
        );
        let schemas = &spec["components"]["schemas"];
        assert_eq!(
            schemas["Thing"]["properties"]["kind"]["enum"],
            serde_json::json!(["a"])
        );
        assert_eq!(schemas["Thing"]["properties"]["owner"]["nullable"], true);
        assert_eq!(
            schemas["WebhookResponse"]["allOf"][0]["properties"]["last_failure_at"]["nullable"],
            true
        );
        Ok(())
    }
}
