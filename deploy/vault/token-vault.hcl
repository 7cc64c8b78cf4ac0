# Vault (or OpenBao) policy for agentauth's token-vault — the only agentauth component that
# talks to Vault. Least privilege: exactly what token-vault does, nothing more.
#
#   vault policy write agentauth-token-vault deploy/vault/token-vault.hcl
#
# Assumes token-vault's defaults (deploy/base/token-vault/configmap.yaml):
#   [vault] kv_mount = "secret", transit_mount = "transit", path_prefix = "agentauth"
# and per-tenant Transit keys named `agentauth-tenant-<tenant>`. If you change a mount or the
# prefix, change the paths here to match. deploy/check.sh loads this policy into a throw-away
# OpenBao dev server and checks both what it allows and what it refuses.
#
# What token-vault stores: one KV v2 secret per (tenant, connection, identifier) under
# secret/agentauth/..., whose value is already Transit ciphertext (encrypted under the tenant's
# key), so a KV read alone never yields a credential; deleting a tenant's key crypto-shreds all
# of that tenant's credentials. Vault's own token endpoints (lookup-self, renew-self) come from
# Vault's `default` policy.

# --- KV v2: credential blobs ------------------------------------------------------------------

# Write a new credential version (always with check-and-set, `options.cas`, which fences
# concurrent refreshes across replicas) and read the current one.
# Not granted: "delete" (soft delete; disconnect destroys instead, below), "patch", "list".
path "secret/data/agentauth/*" {
  capabilities = ["create", "read", "update"]
}

# Read version metadata (current version for CAS, timestamps), and on disconnect delete the
# metadata, which permanently destroys every version of the secret. No "list": accounts are
# enumerated from the database, never by walking Vault.
path "secret/metadata/agentauth/*" {
  capabilities = ["read", "delete"]
}

# Not granted: secret/delete/*, secret/undelete/*, secret/destroy/* (per-version operations
# token-vault does not use), and nothing outside secret/*/agentauth/.

# --- Transit: one key per tenant ---------------------------------------------------------------

# Encrypt a credential before it is written to KV. Only "update": with "create", Vault would
# silently create a missing key on first use (with default settings); keys are created
# explicitly, below, so an unknown tenant is an error rather than a new key.
path "transit/encrypt/agentauth-tenant-*" {
  capabilities = ["update"]
}

# Decrypt a credential read from KV.
path "transit/decrypt/agentauth-tenant-*" {
  capabilities = ["update"]
}

# Tenant key lifecycle: create the key when a tenant is onboarded, read it, set
# `deletion_allowed` on /config, delete it to crypto-shred the tenant.
#
# A trailing glob also covers the key's other sub-paths (rotate, trim, import); they give
# token-vault no power beyond the deletion it legitimately has. What would give more — making
# a key exportable or backing it up in plaintext (irreversible once set, and it would let the
# key leave Vault), or importing known key material — is refused by parameter.
path "transit/keys/agentauth-tenant-*" {
  capabilities = ["create", "read", "update", "delete"]
  denied_parameters = {
    "exportable"             = []
    "allow_plaintext_backup" = []
    "ciphertext"             = []
  }
}

# Not granted: transit/export/*, transit/backup/*, transit/restore/*, transit/rewrap/*,
# transit/datakey/*, any key not named agentauth-tenant-*, and any list of keys.
