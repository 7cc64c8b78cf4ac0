//! Which RPCs a caller may call: each service declares its RPCs and named roles (a [`Policy`]);
//! each caller's configuration names roles and single RPCs; everything else is denied.
//!
//! The model is Vault's policies and Kubernetes RBAC reduced to what a gRPC service needs:
//! verbs are RPCs, roles are named sets of them, a caller is bound to roles. The decision is
//! made by [`crate::authorize`] from the method path, before any handler runs.

use std::collections::BTreeSet;

use prost::Message as _;

/// The RPCs of one gRPC service and the roles that group them.
#[derive(Debug)]
pub struct Policy {
    /// The service's full name, e.g. `agentauth.vault.v1.TokenVault`.
    pub service: &'static str,
    /// Every RPC of the service, by method name; must equal the service's contract.
    pub rpcs: &'static [&'static str],
    /// Named groups of those RPCs.
    pub roles: &'static [Role],
}

/// A named set of RPCs of one service.
#[derive(Debug)]
pub struct Role {
    pub name: &'static str,
    /// Who the role is for, in a few words.
    pub purpose: &'static str,
    pub rpcs: &'static [&'static str],
}

impl Policy {
    /// The method path of `rpc` on the wire: `/agentauth.vault.v1.TokenVault/GetAccessToken`.
    pub fn path(&self, rpc: &str) -> String {
        format!("/{}/{rpc}", self.service)
    }

    /// The role named `name`.
    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.name == name)
    }

    /// Checks the policy against itself and against the service's contract in `descriptors`
    /// (an encoded `FileDescriptorSet`): its RPCs are exactly the contract's, and every role
    /// names only those. A mismatch is a programming error, reported before anything serves.
    pub fn check(&self, descriptors: &[u8]) -> Result<(), String> {
        let set = prost_types::FileDescriptorSet::decode(descriptors)
            .map_err(|e| format!("the descriptor set does not decode: {e}"))?;
        let (package, name) = self.service.rsplit_once('.').unwrap_or(("", self.service));
        let contract: BTreeSet<&str> = set
            .file
            .iter()
            .filter(|f| f.package() == package)
            .flat_map(|f| &f.service)
            .filter(|s| s.name() == name)
            .flat_map(|s| &s.method)
            .map(|m| m.name())
            .collect();
        if contract.is_empty() {
            return Err(format!("{}: no such service in the contract", self.service));
        }
        let listed: BTreeSet<&str> = self.rpcs.iter().copied().collect();
        if listed != contract {
            return Err(format!(
                "{}: the policy lists {listed:?} but the contract has {contract:?}",
                self.service
            ));
        }
        let mut names = BTreeSet::new();
        for role in self.roles {
            if !names.insert(role.name) {
                return Err(format!("{}: role `{}` twice", self.service, role.name));
            }
            if let Some(unknown) = role.rpcs.iter().find(|r| !listed.contains(*r)) {
                return Err(format!(
                    "{}: role `{}` names unknown RPC `{unknown}`",
                    self.service, role.name
                ));
            }
        }
        Ok(())
    }
}

/// The method paths that `roles` and `rpcs` (as a caller's configuration names them) grant
/// on the services of `policies`. A name that no policy knows is an error that lists the
/// close ones.
pub(crate) fn grants(
    policies: &[&Policy],
    roles: &[String],
    rpcs: &[String],
) -> Result<BTreeSet<String>, String> {
    let mut granted = BTreeSet::new();
    for name in roles {
        let mut found = false;
        for policy in policies {
            if let Some(role) = policy.role(name) {
                found = true;
                granted.extend(role.rpcs.iter().map(|rpc| policy.path(rpc)));
            }
        }
        if !found {
            let known: Vec<&str> = policies
                .iter()
                .flat_map(|p| p.roles.iter().map(|r| r.name))
                .collect();
            return Err(format!(
                "unknown role `{name}`{} (roles here: {})",
                crate::did_you_mean(&crate::close_names(name, known.iter().copied(), 2)),
                known.join(", ")
            ));
        }
    }
    for name in rpcs {
        let (service, method) = match name.split_once('/') {
            Some((service, method)) => (Some(service), method),
            None => (None, name.as_str()),
        };
        let policy = policies
            .iter()
            .find(|p| service.is_none_or(|s| s == p.service) && p.rpcs.contains(&method));
        let Some(policy) = policy else {
            let known: Vec<&str> = policies
                .iter()
                .flat_map(|p| p.rpcs.iter().copied())
                .collect();
            return Err(format!(
                "unknown RPC `{name}`{}",
                crate::did_you_mean(&crate::close_names(method, known.iter().copied(), 2))
            ));
        };
        granted.insert(policy.path(method));
    }
    Ok(granted)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: Policy = Policy {
        service: "agentauth.audit.v1.AuditLog",
        rpcs: &["Append", "Query", "Export", "VerifyChain", "PurgeBefore"],
        roles: &[
            Role {
                name: "writer",
                purpose: "services",
                rpcs: &["Append"],
            },
            Role {
                name: "reader",
                purpose: "compliance",
                rpcs: &["Query", "Export", "VerifyChain"],
            },
        ],
    };

    fn names(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn roles_and_rpcs_expand_to_method_paths() {
        let granted =
            grants(&[&POLICY], &names(&["reader"]), &names(&["PurgeBefore"])).expect("known names");
        assert_eq!(
            granted.into_iter().collect::<Vec<_>>(),
            [
                "/agentauth.audit.v1.AuditLog/Export",
                "/agentauth.audit.v1.AuditLog/PurgeBefore",
                "/agentauth.audit.v1.AuditLog/Query",
                "/agentauth.audit.v1.AuditLog/VerifyChain",
            ]
        );
        let full = grants(
            &[&POLICY],
            &[],
            &names(&["agentauth.audit.v1.AuditLog/Append"]),
        )
        .expect("a full name");
        assert!(full.contains("/agentauth.audit.v1.AuditLog/Append"));
    }

    #[test]
    fn unknown_names_are_errors_with_close_names() {
        let role = grants(&[&POLICY], &names(&["raeder"]), &[]).expect_err("typo");
        assert!(role.contains("did you mean `reader`"), "{role}");
        let rpc = grants(&[&POLICY], &[], &names(&["Apend"])).expect_err("typo");
        assert!(rpc.contains("did you mean `Append`"), "{rpc}");
        let wildcard = grants(&[&POLICY], &[], &names(&["*"])).expect_err("no wildcard");
        assert!(wildcard.contains("unknown RPC `*`"), "{wildcard}");
        let other = grants(
            &[&POLICY],
            &[],
            &names(&["agentauth.vault.v1.TokenVault/Append"]),
        )
        .expect_err("another service's name");
        assert!(other.contains("unknown RPC"), "{other}");
    }

    #[test]
    fn a_policy_must_match_its_contract() {
        let descriptors = agentauth_proto::FILE_DESCRIPTOR_SET;
        POLICY
            .check(descriptors)
            .expect("matches the audit contract");
        let missing = Policy {
            rpcs: &["Append", "Query", "Export", "VerifyChain"],
            roles: &[],
            ..POLICY
        };
        assert!(missing.check(descriptors).is_err(), "an RPC left out");
        let stray = Policy {
            roles: &[Role {
                name: "x",
                purpose: "",
                rpcs: &["Delete"],
            }],
            ..POLICY
        };
        assert!(stray.check(descriptors).is_err(), "a role naming no RPC");
    }
}
