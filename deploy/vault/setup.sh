#!/usr/bin/env bash
# The one-time Vault (or OpenBao) setup for agentauth: KV v2 and Transit mounts, token-vault's
# policy, and the auth role that lets token-vault's ServiceAccount log in. Idempotent: run it
# again after changing a flag or the policy, and it converges; it never removes anything.
#
#   VAULT_ADDR=https://vault.example:8200 VAULT_TOKEN=<admin token> deploy/vault/setup.sh \
#       --kubernetes-host https://<api-server>:6443 --kubernetes-ca-cert cluster-ca.crt
#
# Auth methods (--auth):
#   kubernetes (default)  Vault's Kubernetes auth: Vault asks the API server (TokenReview)
#                         whether the pod's service-account token is valid. Needs
#                         --kubernetes-host (and --kubernetes-ca-cert unless Vault trusts the
#                         API server's certificate already). Role bound to the ServiceAccount's
#                         name and namespace.
#   jwt                   Vault's JWT auth validating the service-account token's signature
#                         offline with the cluster's signing key (--jwt-validation-pubkey), the
#                         documented way without TokenReview; role bound to the token's subject
#                         system:serviceaccount:<namespace>:<service-account>, its issuer and
#                         audience. token-vault logs in the same way to either
#                         ([vault.auth] method = "kubernetes", mount = the --auth-mount).
#   none                  mounts and policy only (token-vault then uses a token: README.md).
#
# Other flags (defaults in brackets): --namespace [agentauth] --service-account [token-vault]
# --role [agentauth-token-vault] --auth-mount [kubernetes] --token-ttl [1h]
# --token-max-ttl [4h] --audience (kubernetes: optional; jwt: [vault]) --jwt-issuer (jwt:
# optional, [https://kubernetes.default.svc.cluster.local] is common).
#
# The CLI is `vault`, or `bao` when only that is installed (or $VAULT_CLI); VAULT_ADDR and
# VAULT_TOKEN (or BAO_ADDR and BAO_TOKEN) say where and as whom. deploy/vault/check.sh runs this
# script against a throw-away OpenBao dev server, twice.
set -euo pipefail

VAULT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
POLICY_FILE=$VAULT_DIR/token-vault.hcl
POLICY=agentauth-token-vault

auth=kubernetes
namespace=agentauth
service_account=token-vault
role=agentauth-token-vault
auth_mount=kubernetes
token_ttl=1h
token_max_ttl=4h
audience=
jwt_issuer=
kubernetes_host=
kubernetes_ca_cert=
jwt_pubkey=

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; exit 2; }
need() { [[ $# -ge 2 && -n $2 ]] || { echo "setup.sh: $1 needs a value" >&2; exit 2; }; }
while [[ $# -gt 0 ]]; do
    case $1 in
        --auth) need "$@"; auth=$2; shift 2 ;;
        --namespace) need "$@"; namespace=$2; shift 2 ;;
        --service-account) need "$@"; service_account=$2; shift 2 ;;
        --role) need "$@"; role=$2; shift 2 ;;
        --auth-mount) need "$@"; auth_mount=$2; shift 2 ;;
        --token-ttl) need "$@"; token_ttl=$2; shift 2 ;;
        --token-max-ttl) need "$@"; token_max_ttl=$2; shift 2 ;;
        --audience) need "$@"; audience=$2; shift 2 ;;
        --jwt-issuer) need "$@"; jwt_issuer=$2; shift 2 ;;
        --kubernetes-host) need "$@"; kubernetes_host=$2; shift 2 ;;
        --kubernetes-ca-cert) need "$@"; kubernetes_ca_cert=$2; shift 2 ;;
        --jwt-validation-pubkey) need "$@"; jwt_pubkey=$2; shift 2 ;;
        -h|--help) usage ;;
        *) echo "setup.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

fail() { echo "setup.sh: $*" >&2; exit 1; }
case $auth in
    kubernetes) [[ -n $kubernetes_host ]] || fail "--auth kubernetes needs --kubernetes-host (the API server Vault sends TokenReviews to)" ;;
    jwt) [[ -n $jwt_pubkey ]] || fail "--auth jwt needs --jwt-validation-pubkey (a PEM file of the cluster's service-account signing key)"
         audience=${audience:-vault} ;;
    none) ;;
    *) fail "--auth must be kubernetes, jwt or none, not $auth" ;;
esac
for file in "$kubernetes_ca_cert" "$jwt_pubkey"; do
    [[ -z $file || -r $file ]] || fail "cannot read $file"
done

if [[ -n ${VAULT_CLI:-} ]]; then CLI=$VAULT_CLI
elif command -v vault > /dev/null; then CLI=vault
elif command -v bao > /dev/null; then CLI=bao
else fail "no vault or bao CLI on PATH (or set VAULT_CLI)"; fi
# Both CLIs read both spellings in recent versions; set both so either works.
export VAULT_ADDR=${VAULT_ADDR:-${BAO_ADDR:-}} VAULT_TOKEN=${VAULT_TOKEN:-${BAO_TOKEN:-}}
export BAO_ADDR=$VAULT_ADDR BAO_TOKEN=$VAULT_TOKEN
[[ -n $VAULT_ADDR ]] || fail "set VAULT_ADDR (or BAO_ADDR)"
cli() { "$CLI" "$@"; }
say() { printf 'setup.sh: %s\n' "$*"; }

# --- Secrets engines -------------------------------------------------------------------------
# The type of what is mounted at $1 (sys/mounts/… or sys/auth/…), or nothing.
mounted() { cli read -field=type "$1" 2> /dev/null || true; }
case $(mounted sys/mounts/secret) in
    "")
        cli secrets enable -path=secret -version=2 kv > /dev/null
        say "enabled KV v2 at secret/" ;;
    kv|generic)
        cli read -field=options sys/mounts/secret | grep -q 'version:2' \
            || fail "secret/ is KV version 1; token-vault needs version 2 (vault kv enable-versioning secret/)"
        say "KV v2 at secret/ already enabled" ;;
    *) fail "secret/ is mounted but is not KV" ;;
esac
case $(mounted sys/mounts/transit) in
    "")
        cli secrets enable -path=transit transit > /dev/null
        say "enabled Transit at transit/" ;;
    transit) say "Transit at transit/ already enabled" ;;
    *) fail "transit/ is mounted but is not the Transit engine" ;;
esac

# --- Policy ----------------------------------------------------------------------------------
cli policy write "$POLICY" "$POLICY_FILE" > /dev/null
say "wrote policy $POLICY"

# --- Auth: the one role, bound to token-vault's ServiceAccount ---------------------------------
[[ $auth == none ]] && { say "no auth method configured (--auth none)"; exit 0; }
plugin=$auth
existing=$(mounted "sys/auth/$auth_mount")
if [[ -z $existing ]]; then
    cli auth enable -path="$auth_mount" "$plugin" > /dev/null
    say "enabled $plugin auth at auth/$auth_mount"
elif [[ $existing == "$plugin" ]]; then
    say "$plugin auth at auth/$auth_mount already enabled"
else
    fail "auth/$auth_mount is a $existing auth method, not $plugin (choose another --auth-mount)"
fi

subject=system:serviceaccount:$namespace:$service_account
if [[ $auth == kubernetes ]]; then
    config=(kubernetes_host="$kubernetes_host")
    # A CA given means Vault runs outside the cluster: no in-pod CA or reviewer token to fall
    # back on (Vault then reviews each login with the token being logged in, unless an operator
    # sets token_reviewer_jwt).
    [[ -n $kubernetes_ca_cert ]] && config+=(kubernetes_ca_cert=@"$kubernetes_ca_cert" disable_local_ca_jwt=true)
    cli write "auth/$auth_mount/config" "${config[@]}" > /dev/null
    role_args=(
        bound_service_account_names="$service_account"
        bound_service_account_namespaces="$namespace"
    )
    [[ -n $audience ]] && role_args+=(audience="$audience")
else
    config=(jwt_validation_pubkeys=@"$jwt_pubkey")
    [[ -n $jwt_issuer ]] && config+=(bound_issuer="$jwt_issuer")
    cli write "auth/$auth_mount/config" "${config[@]}" > /dev/null
    role_args=(
        role_type=jwt
        user_claim=sub
        bound_subject="$subject"
        bound_audiences="$audience"
    )
fi
say "configured auth/$auth_mount"
cli write "auth/$auth_mount/role/$role" "${role_args[@]}" \
    token_policies="$POLICY" token_ttl="$token_ttl" token_max_ttl="$token_max_ttl" > /dev/null
say "wrote role $role: $subject gets only policy $POLICY (token TTL $token_ttl, max $token_max_ttl)"
