//! Layered, fail-fast configuration shared by the agentauth services.
//!
//! Every service reads its `Config` the same way, each layer overriding the one before:
//!
//! 1. the defaults declared on the type (`#[serde(default)]`),
//! 2. a TOML file (`--config PATH`),
//! 3. environment variables with the service's prefix and `__` between keys
//!    (`TOKEN_VAULT__VAULT__ADDR` sets `vault.addr`),
//! 4. command-line flags, given here as dotted key paths.
//!
//! Config types use `#[serde(deny_unknown_fields)]`, so a misspelt key is an error, not a
//! silently ignored setting. Errors render as one line that names the key and where it came from.

use std::path::Path;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file given with `--config` does not exist or cannot be read.
    #[error("cannot read config file {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    /// A layer holds a key the service does not know, a value of the wrong type, or bad syntax.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// One flag given on the command line, applied last.
#[derive(Debug, Clone)]
pub struct Override {
    key: &'static str,
    value: String,
}

impl Override {
    /// Sets the dotted `key` (e.g. `server.listen`) to `value`.
    pub fn new(key: &'static str, value: impl Into<String>) -> Self {
        Self {
            key,
            value: value.into(),
        }
    }
}

/// Loads `T` from its defaults, then `file`, then the environment under `env_prefix`
/// (e.g. `"AUDIT_LOG"`), then `overrides`.
pub fn load<T: DeserializeOwned>(
    env_prefix: &str,
    file: Option<&Path>,
    overrides: &[Override],
) -> Result<T, Error> {
    let mut figment = Figment::new();
    if let Some(path) = file {
        // Figment treats a missing file as empty; a config file that was asked for must exist.
        std::fs::metadata(path).map_err(|source| Error::Unreadable {
            path: path.display().to_string(),
            source,
        })?;
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(Env::prefixed(&format!("{env_prefix}__")).split("__"));
    for flag in overrides {
        figment = figment.merge(Serialized::default(flag.key, Flag(&flag.value)));
    }
    figment.extract().map_err(|e| Error::Invalid(one_line(&e)))
}

/// A flag's value, parsed the way an environment variable's is (so `--listen` and
/// `AUDIT_LOG__SERVER__LISTEN` accept the same text).
struct Flag<'a>(&'a str);

impl Serialize for Flag<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.0
            .parse::<figment::value::Value>()
            .unwrap_or_else(|never| match never {})
            .serialize(serializer)
    }
}

fn one_line(error: &figment::Error) -> String {
    error
        .clone()
        .into_iter()
        .map(|e| {
            e.to_string()
                .replace('\n', " ")
                .replace("for key \"default.", "for key \"")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
#[allow(
    clippy::result_large_err,
    reason = "figment::Jail closures must return figment::Error"
)]
mod tests {
    use std::io::Write;

    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Config {
        name: String,
        port: u16,
        inner: Inner,
    }

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Inner {
        depth: u32,
    }

    impl Default for Config {
        fn default() -> Self {
            Self {
                name: "default".into(),
                port: 1,
                inner: Inner::default(),
            }
        }
    }

    impl Default for Inner {
        fn default() -> Self {
            Self { depth: 7 }
        }
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().expect("temp file");
        f.write_all(text.as_bytes()).expect("write");
        f
    }

    #[test]
    fn layers_override_in_order() {
        let f = file("name = \"file\"\nport = 2\n[inner]\ndepth = 3\n");
        figment::Jail::expect_with(|jail| {
            jail.set_env("CFGTEST__PORT", "4");
            let c: Config = load(
                "CFGTEST",
                Some(f.path()),
                &[Override::new("inner.depth", "5")],
            )
            .map_err(|e| e.to_string())?;
            assert_eq!(
                c,
                Config {
                    name: "file".into(),
                    port: 4,
                    inner: Inner { depth: 5 }
                }
            );
            Ok(())
        });
    }

    #[test]
    fn defaults_apply_without_any_layer() {
        let c: Config = load("CFGTEST_NONE", None, &[]).expect("defaults load");
        assert_eq!(c, Config::default());
    }

    #[test]
    fn unknown_key_in_file_is_one_clear_line() {
        let f = file("name = \"x\"\nprot = 2\n");
        let err = load::<Config>("CFGTEST_UNKNOWN", Some(f.path()), &[])
            .expect_err("unknown key must be rejected")
            .to_string();
        assert!(err.contains("prot"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn unknown_environment_key_is_rejected() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("CFGTEST__INNER__DEPHT", "3");
            let err = load::<Config>("CFGTEST", None, &[]).expect_err("must be rejected");
            assert!(err.to_string().contains("depht"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn bad_value_names_the_key() {
        let err = load::<Config>("CFGTEST_BAD", None, &[Override::new("port", "70000")])
            .expect_err("out of range")
            .to_string();
        assert!(err.contains("port"), "{err}");
    }

    #[test]
    fn missing_file_is_an_error() {
        let err = load::<Config>(
            "CFGTEST_MISSING",
            Some(Path::new("/nonexistent/agentauth.toml")),
            &[],
        )
        .expect_err("missing file");
        assert!(matches!(err, Error::Unreadable { .. }), "{err}");
    }
}
