#!/usr/bin/env bash
# Build the four service images from deploy/images/Dockerfile with `docker build` (`make images`).
# Needs a container engine that docker can reach; without one it says so and exits 1.
#
#   deploy/images/build.sh              build <REGISTRY>/<service>:<TAG> for the four services
#   deploy/images/build.sh --dry-run    print the commands instead (deploy/images/check.py uses
#                                       this to compare the tags with the Deployments' images)
#
# REGISTRY (default ghcr.io/agentauth, the placeholder the manifests use), TAG (default: the
# workspace version in Cargo.toml), DOCKER (default docker), SOURCE_DATE_EPOCH (default: the
# last commit's time, so two builds of one commit give the binaries the same timestamps).
set -euo pipefail

IMAGES_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$IMAGES_DIR/../.." && pwd)
SERVICES=(token-vault connector-executor audit-log schema-watcher)
REGISTRY=${REGISTRY:-ghcr.io/agentauth}
TAG=${TAG:-$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$REPO_ROOT/Cargo.toml")}
DOCKER=${DOCKER:-docker}
[[ -n $TAG ]] || { echo "build.sh: no TAG and no workspace version in Cargo.toml" >&2; exit 1; }
if [[ -z ${SOURCE_DATE_EPOCH:-} ]]; then
    SOURCE_DATE_EPOCH=$(git -C "$REPO_ROOT" log -1 --format=%ct 2>/dev/null || echo 0)
fi

dry_run=false
case ${1:-} in
    --dry-run) dry_run=true ;;
    "") ;;
    *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac

if ! $dry_run; then
    command -v "$DOCKER" > /dev/null || { echo "build.sh: no '$DOCKER' client on PATH" >&2; exit 1; }
    if ! "$DOCKER" info > /dev/null 2>&1; then
        echo "build.sh: '$DOCKER info' cannot reach a container engine: make images needs one" \
             "(deploy/check.sh checks the build file without one)" >&2
        exit 1
    fi
fi

for svc in "${SERVICES[@]}"; do
    cmd=("$DOCKER" build --file "$IMAGES_DIR/Dockerfile" --target "$svc"
         --build-arg "SOURCE_DATE_EPOCH=$SOURCE_DATE_EPOCH" --tag "$REGISTRY/$svc:$TAG" "$REPO_ROOT")
    if $dry_run; then
        printf '%s\n' "${cmd[*]}"
    else
        echo "== $REGISTRY/$svc:$TAG"
        "${cmd[@]}"
    fi
done
