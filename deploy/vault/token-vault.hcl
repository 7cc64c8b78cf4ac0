# Vault (or OpenBao) policy for agentauth's token-vault — the only agentauth component that
# talks to Vault. Least privilege: exactly what token-vault does, nothing more.
#
#   vault policy write agentauth-token-vault deploy/vault/token-vault.hcl   (setup.sh does it)
#
# Assumes token-vault's defaults (deploy/base/token-vault/configmap.yaml):
#   [vault] kv_mount = "secret", transit_mount = "transit", path_prefix = "agentauth"
# and per-tenant Transit keys named `agentauth-tenant-<tenant>`. If you change a mount or the
# prefix, change the paths here to match. deploy/vault/check.sh loads this policy into a
# throw-away OpenBao dev server and checks both what it allows and what it refuses.
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

# Re-wrap a ciphertext under the tenant key's newest version (key rotation): the plaintext never
# leaves Vault. Only the ciphertext itself may be passed (no batch, no chosen key version).
path "transit/rewrap/agentauth-tenant-*" {
  capabilities = ["update"]
  allowed_parameters = {
    "ciphertext" = []
  }
}

# Tenant key lifecycle: create the key when a tenant is onboarded (with Transit's defaults), read
# it, rotate it (a new key version), set `deletion_allowed` and, once a rotation re-wrapped
# everything, `min_decryption_version` on its /config, and delete it to crypto-shred the tenant.
#
# The trailing glob covers the key's sub-paths too (config, rotate, trim, import, …): Vault
# matches `*` only at the end of a path, so they cannot be told apart by path. They are told apart
# by parameter instead: only those two may be sent. That refuses making a key exportable or
# backing it up in plaintext (irreversible once set, and it would let the key leave Vault),
# importing known key material, choosing a key type, auto-rotation, pinning the encryption version
# and trimming key versions.
path "transit/keys/agentauth-tenant-*" {
  capabilities = ["create", "read", "update", "delete"]
  allowed_parameters = {
    "deletion_allowed"       = []
    "min_decryption_version" = []
  }
}

# Not granted: transit/export/*, transit/backup/*, transit/restore/*, transit/datakey/*, rewrap
# or anything else with a key not named agentauth-tenant-*, and any list of keys.
