#!/usr/bin/env python3
"""Invariants of the rendered manifests. Run by deploy/check.sh, which renders each kustomization
root with `kubectl kustomize` first; this script renders nothing and knows no configuration
schema (the binaries check their own configs: `--check-config`, `--print-access`).

    check.py invariants DEPLOY_DIR OUT_DIR
        Reads OUT_DIR/rendered/<root>.yaml (`kubectl kustomize` output; <root> is `base` or
        `overlays-<name>`) and checks what the design and the binaries need of the objects:
        namespaces, no committed Secrets; config files without secrets, client URLs naming
        the Services and key files that are mounted Secret items; Secret volumes read-only and
        least-privilege; database and Redis URLs from Secrets exactly where they are used;
        security context, probes, shutdown timing, ports, PDBs, Services; the NetworkPolicies,
        evaluated into the set of allowed connections, equal to design.md's edges;
        schema-watcher's watches and its caller entry at connector-executor; connector-executor's
        virtual MCP and webhook intake (listeners, Service ports, Ingress routes of only their
        paths, public URLs on TLS hosts, /metrics never routed); the shared rate limiter where
        connector-executor runs several replicas; production replicas, Ingresses and external
        endpoints by ipBlock. Also: every file under deploy/ (but vault/) that looks like a
        manifest is referenced by a kustomization.yaml.
        Writes OUT_DIR/configs/<root>/<service>.{toml,env}: each config with dummy digests and
        key files, and its Deployment's environment with dummy Secret values, for the binaries.

    check.py admission OUT_DIR/configs
        Reads <service>.access.json (`<service> --print-access`, written by check.sh) and checks
        that every NetworkPolicy edge's callee admits its caller for the RPCs it calls, and that
        reserved RPCs are held only by those who must hold them.

Each prints one `FINDING …` line per problem and exits 1 if there is any.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

NAMESPACE = "agentauth"
SERVICES = ("token-vault", "connector-executor", "audit-log", "schema-watcher")
# Services that poll on their own and must run as a single replica (see its base Deployment).
SINGLETONS = {"schema-watcher"}
GRPC_PORT = 50051
HTTP_PORT = 8080
HTTP_SERVICES = {"token-vault", "connector-executor"}
# connector-executor's webhook intake: its own listener, Service port and Ingress route.
WEBHOOKS_PORT = 8091
WEBHOOKS_PORT_NAME = "webhooks"
WEBHOOKS_LISTEN = f"0.0.0.0:{WEBHOOKS_PORT}"
# The only path the intake serves to Asana (`/webhooks/<subscription>/<key>`); its `/metrics`
# is for in-cluster scrapers and must never be routed from outside.
WEBHOOKS_PATH = "/webhooks"
NEVER_ROUTED = ("/metrics",)
ENV_PREFIX = {s: s.upper().replace("-", "_") + "__" for s in SERVICES}
REDIS = ("TCP", 6379)
POSTGRES = ("TCP", 5432)

# Services that keep state in PostgreSQL whatever their config says; connector-executor does
# only with virtual MCP or webhooks on (see uses_database).
DATABASE_SERVICES = {"token-vault", "audit-log", "schema-watcher"}
# Config tables that hold secrets: they must come from a Secret through the env override, never
# the file. (service, dotted key) -> the env override.
SECRET_KEYS = {
    **{(s, "database.url"): f"{ENV_PREFIX[s]}DATABASE__URL" for s in SERVICES},
    ("connector-executor", "limits.shared.url"): "CONNECTOR_EXECUTOR__LIMITS__SHARED__URL",
}
# Where secrets are mounted as files (API keys, signing keys); each file a Secret item.
SECRETS_DIR = "/var/run/secrets/"
# token-vault's service-account token, for Vault's Kubernetes auth (automounted).
SA_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
# Virtual MCP (connector-executor): the listener behind the Service's `http` port and the only
# paths it serves (what its Ingress may route to it).
VIRTUAL_MCP_LISTEN = f"0.0.0.0:{HTTP_PORT}"
VIRTUAL_MCP_PATHS = {"/mcp", "/.well-known/oauth-protected-resource/mcp"}
# connector-executor's roles that only make sense with a feature on.
VIRTUAL_MCP_ROLES = {"mcp", "sessions"}
WEBHOOK_ROLES = {"webhooks", "events"}
# A client section's name → the Service it must point at.
CLIENT_SECTIONS = {"token_vault": "token-vault", "audit": "audit-log",
                   "executor": "connector-executor", "schema_watcher": "schema-watcher"}
# The binary each Deployment runs: the image's entrypoint (deploy/images/Dockerfile), given only
# these flags.
ARGS = ["--config", "/etc/agentauth/config.toml"]
LIVENESS_SERVICE = "liveness"

# design.md's diagram, as (client, server, port) inside the namespace ...
EXPECTED_INTERNAL_EDGES = {
    ("connector-executor", "token-vault", GRPC_PORT),
    ("connector-executor", "audit-log", GRPC_PORT),
    ("token-vault", "audit-log", GRPC_PORT),
    ("schema-watcher", "connector-executor", GRPC_PORT),
    ("schema-watcher", "audit-log", GRPC_PORT),
    ("connector-executor", "schema-watcher", GRPC_PORT),
}
# What each edge's caller calls on its callee (method names): the callee's configuration must
# admit the caller by that name with every one of these RPCs, for every tenant (except where
# WATCHER_EDGE says otherwise).
EDGE_NEEDS = {
    ("connector-executor", "token-vault"): {
        "GetAccessToken", "ReportRejectedToken", "WatchAccountChanges",
        "GetConnection", "ListConnections",
    },
    ("connector-executor", "audit-log"): {"Append"},
    ("token-vault", "audit-log"): {"Append"},
    ("schema-watcher", "audit-log"): {"Append"},
    # Drift pinning: the approved tools of any MCP connection it calls, and their changes.
    ("connector-executor", "schema-watcher"): {"CheckTools", "WatchDrift"},
    # Polling: each watch's listing as its probe account, and the upstreams' change notices.
    ("schema-watcher", "connector-executor"): {"ListUpstreamTools", "WatchUpstreamChanges"},
}
# With webhooks on, connector-executor keeps each webhook's secret in token-vault.
WEBHOOK_EDGE_NEEDS = {("connector-executor", "token-vault"): {
    "PutWebhookSecret", "GetWebhookSecret", "DeleteWebhookSecret"}}
# schema-watcher's entry on connector-executor is bound to its probe accounts, not every
# tenant: its tenants and connections must be exactly those of its [[watches]], and it may call
# nothing but what polling needs.
WATCHER_EDGE = ("schema-watcher", "connector-executor")
# RPCs that only these callers may hold, whatever a config says: tokens and webhook secrets
# leave token-vault only for connector-executor, only the services write audit events (in their
# own name), only schema-watcher lists upstream tools as probe accounts, and pinning verdicts
# go to connector-executor alone.
RESERVED_RPCS = {
    ("token-vault", "GetAccessToken"): {"connector-executor"},
    ("token-vault", "ReportRejectedToken"): {"connector-executor"},
    ("token-vault", "WatchAccountChanges"): {"connector-executor"},
    ("token-vault", "GetWebhookSecret"): {"connector-executor"},
    ("token-vault", "PutWebhookSecret"): {"connector-executor"},
    ("audit-log", "Append"): {"connector-executor", "token-vault", "schema-watcher"},
    ("connector-executor", "ListUpstreamTools"): {"schema-watcher"},
    ("connector-executor", "WatchUpstreamChanges"): {"schema-watcher"},
    ("schema-watcher", "CheckTools"): {"connector-executor"},
}
# ... and as ports each service may reach outside it (DNS 53, OTLP 4317, PostgreSQL 5432,
# Vault 8200, Asana 443, Redis 6379) or be reached on from outside it (callers/operators on
# gRPC, the ingress controller on the HTTP listeners). Feature-dependent ports are added by
# expected_external().
_COMMON_EGRESS = {("UDP", 53), ("TCP", 53), ("TCP", 4317)}
EXPECTED_EXTERNAL_EGRESS = {
    "token-vault": _COMMON_EGRESS | {("TCP", 8200), ("TCP", 443)},
    "connector-executor": _COMMON_EGRESS | {("TCP", 443)},
    "audit-log": _COMMON_EGRESS,
    "schema-watcher": _COMMON_EGRESS,
}
EXPECTED_EXTERNAL_INGRESS = {
    "token-vault": {("TCP", HTTP_PORT)},
    "connector-executor": {("TCP", GRPC_PORT), ("TCP", HTTP_PORT)},
    "audit-log": {("TCP", GRPC_PORT)},
    "schema-watcher": {("TCP", GRPC_PORT)},
}

# Per-root expectations beyond the shared invariants.
ROOT_EXPECTATIONS = {
    "overlays-production": {
        "min_replicas": 2,
        # connector-executor's only while virtual MCP is on (nothing else listens there).
        "ingress_backends": {("token-vault", "http"), ("connector-executor", "http")},
        "ipblock_policies": {"allow-postgres-egress", "allow-vault-egress"},
    },
}

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
PLACEHOLDER = re.compile(r"FILL-IN|agentauth\.example|192\.0\.2\.|198\.51\.100\.|203\.0\.113\.")

findings: list[str] = []


def finding(where: str, message: str) -> None:
    findings.append(f"{where}: {message}")


def obj_id(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace", "")
    return f"{obj.get('kind')}/{ns + '/' if ns else ''}{meta.get('name')}"


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    if not m:
        raise ValueError(f"cannot parse duration {text!r}")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def table(cfg: dict, dotted: str) -> Any:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def virtual_mcp_on(cfg: dict) -> bool:
    """connector-executor serves virtual MCP endpoints only with a signing key."""
    return bool(table(cfg, "virtual_mcp.signing_keys"))


def webhooks_on(cfg: dict) -> bool:
    """connector-executor has event subscriptions and an intake only with a public URL."""
    return table(cfg, "webhooks.public_url") is not None


def uses_database(svc: str, cfg: dict) -> bool:
    if svc == "connector-executor":
        return virtual_mcp_on(cfg) or webhooks_on(cfg)
    return svc in DATABASE_SERVICES


def shared_limits(cfg: dict) -> dict | None:
    shared = table(cfg, "limits.shared")
    return shared if isinstance(shared, dict) else None


def strings(value: Any) -> set[str]:
    """Every string in a parsed config, at any depth."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(strings(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(strings(v) for v in value)) if value else set()
    return set()


def load_config(configmaps: dict[str, dict], svc: str) -> dict:
    try:
        return tomllib.loads((configmaps.get(f"{svc}-config", {}).get("data") or {})
                            .get("config.toml", ""))
    except tomllib.TOMLDecodeError:
        return {}  # reported by check_config


def callers_of(cfg: dict) -> dict[str, dict]:
    return {c.get("name"): c for c in table(cfg, "server.callers") or [] if isinstance(c, dict)}


def https_root(where: str, key: str, url_text: str) -> str:
    """The host of an https://<host> URL (no path, port 443 or none); a finding otherwise."""
    url = urlsplit(url_text)
    if url.scheme != "https" or not url.hostname:
        finding(where, f"{key} {url_text!r} must be an https URL (the Ingress serves TLS)")
    elif url.path not in ("", "/") or url.port not in (None, 443):
        finding(where, f"{key} {url_text!r} must be https://<host> (the Ingress routes its "
                       "paths at the root, on 443)")
    return url.hostname or ""


# --- per service ---------------------------------------------------------------------------


def check_virtual_mcp(where: str, cfg: dict, secret_files: set[str]) -> None:
    """connector-executor's [virtual_mcp] and [[virtual_servers]] as far as the deployment is
    concerned: listener, signing key files mounted, and minters bound to what they expose.
    (The binary checks the rest at start: TTLs, names, key sizes.)"""
    vm = table(cfg, "virtual_mcp") or {}
    servers = [s for s in cfg.get("virtual_servers") or [] if isinstance(s, dict)]
    callers = callers_of(cfg)
    if not virtual_mcp_on(cfg):
        if servers:
            finding(where, "[[virtual_servers]] are declared but [virtual_mcp] names no signing "
                           "key: the binary refuses to start")
        for name, caller in sorted(callers.items()):
            held = set(caller.get("roles") or []) & VIRTUAL_MCP_ROLES
            if held:
                finding(where, f"caller {name!r} holds {sorted(held)}, but virtual MCP is off")
        return
    if vm.get("listen") != VIRTUAL_MCP_LISTEN:
        finding(where, f"virtual_mcp.listen must be \"{VIRTUAL_MCP_LISTEN}\" (the `http` port "
                       "of the Service, NetworkPolicy and Ingress)")
    for n, key in enumerate(k for k in vm["signing_keys"] if isinstance(k, dict)):
        if key.get("key_file") not in secret_files:
            finding(where, f"virtual_mcp.signing_keys[{n}].key_file {key.get('key_file')!r} is "
                           "not a mounted Secret item")
    if not servers:
        finding(where, "virtual MCP is on but there are no [[virtual_servers]]: nothing to mint")
    # What each minter's servers expose: connection names, and tool names ("*" for every tool
    # an upstream connection lists).
    exposes: dict[str, dict[str, set]] = {}
    for server in servers:
        tools = [t for t in server.get("tools") or [] if isinstance(t, dict)]
        for minter in server.get("minters") or []:
            if minter not in callers:
                finding(where, f"virtual server {server.get('name')!r}: minter {minter!r} is not "
                               "a configured caller")
                continue
            mine = exposes.setdefault(minter, {"connections": set(), "tools": set()})
            mine["connections"] |= {t.get("connection") for t in tools}
            mine["tools"] |= {t.get("tool") for t in tools}
    for name, caller in sorted(callers.items()):
        mints = "mcp" in (caller.get("roles") or []) or \
            "MintMcpSession" in (caller.get("rpcs") or [])
        if name not in exposes:
            if mints:
                finding(where, f"caller {name!r} may mint MCP sessions but is a minter of no "
                               "virtual server")
            continue
        if not mints:
            finding(where, f"minter {name!r} lacks the `mcp` role, so it cannot mint")
        # MintMcpSession refuses a minter not bound to every exposed tool's connection and
        # named tool; an unbound minter ("*", also the default) could list and expose more.
        for field in ("connections", "tools"):
            bound = set(caller.get(field) or ["*"])
            want = exposes[name][field]
            if "*" in bound and "*" not in want:
                finding(where, f"minter {name!r} is bound to every one of its {field}: bind it to "
                               f"those of its virtual servers, {sorted(want)}")
            elif "*" not in bound and want - {"*"} - bound:
                finding(where, f"minter {name!r} is not bound to {field} "
                               f"{sorted(want - {'*'} - bound)} of its virtual servers, so it "
                               "cannot mint")


def check_webhooks(where: str, cfg: dict) -> None:
    """connector-executor's [webhooks] as far as the deployment is concerned."""
    callers = callers_of(cfg)
    if not webhooks_on(cfg):
        for name, caller in sorted(callers.items()):
            held = set(caller.get("roles") or []) & WEBHOOK_ROLES
            if held:
                finding(where, f"caller {name!r} holds {sorted(held)}, but webhooks are off "
                               "([webhooks] names no public_url)")
        return
    if table(cfg, "webhooks.listen") != WEBHOOKS_LISTEN:
        finding(where, f"webhooks.listen must be \"{WEBHOOKS_LISTEN}\" (the `{WEBHOOKS_PORT_NAME}` "
                       "port of the container, Service, NetworkPolicy and Ingress)")
    https_root(where, "webhooks.public_url", str(table(cfg, "webhooks.public_url")))
    # Least privilege: a caller that follows or registers events is bound to its tenants and
    # connections, not every one.
    for name, caller in sorted(callers.items()):
        if set(caller.get("roles") or []) & WEBHOOK_ROLES:
            for field in ("tenants", "connections"):
                if "*" in (caller.get(field) or ["*"]):
                    finding(where, f"caller {name!r} holds {sorted(set(caller['roles']) & WEBHOOK_ROLES)}"
                                   f" for every one of its {field}: name them")


def check_config(svc: str, where: str, toml_text: str, deployment: dict,
                 services: dict[str, dict]) -> float | None:
    try:
        cfg = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as e:
        finding(where, f"config.toml is not valid TOML: {e}")
        return None
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container.get("env", [])}

    for (owner, key), env_name in SECRET_KEYS.items():
        if owner == svc and table(cfg, key) is not None:
            finding(where, f"`{key}` must not be in the file: it comes from {env_name} (a Secret)")
    server = table(cfg, "server") or {}
    if server.get("listen") != f"0.0.0.0:{GRPC_PORT}":
        finding(where, f"server.listen must be \"0.0.0.0:{GRPC_PORT}\"")
    if svc == "token-vault" and table(cfg, "oauth.http_listen") != f"0.0.0.0:{HTTP_PORT}":
        finding(where, f"oauth.http_listen must be \"0.0.0.0:{HTTP_PORT}\"")

    # Secret volumes: read-only under /var/run/secrets, listing their items.
    secret_files = set()
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        vol = volumes.get(mount["name"], {})
        if "secret" in vol:
            if mount.get("readOnly") is not True:
                finding(where, f"Secret volume {mount['name']} must be mounted readOnly")
            if not mount["mountPath"].startswith(SECRETS_DIR):
                finding(where, f"Secret volume {mount['name']} must be mounted under {SECRETS_DIR}")
            if not vol["secret"].get("items"):
                finding(where, f"Secret volume {mount['name']} must list its items (mount only "
                               "the files the config reads)")
            for item in vol["secret"].get("items", []):
                secret_files.add(f"{mount['mountPath'].rstrip('/')}/{item['path']}")
    # Least privilege: no Secret item is mounted that the config does not read (e.g. signing
    # keys where virtual MCP is off).
    for path in sorted(secret_files - strings(cfg)):
        finding(where, f"Secret item {path} is mounted but config.toml does not read it")
    if svc == "connector-executor":
        check_virtual_mcp(where, cfg, secret_files)
        check_webhooks(where, cfg)
    for section, target in CLIENT_SECTIONS.items():
        client = table(cfg, section)
        if not isinstance(client, dict) or "url" not in client:
            continue
        want = f"http://{target}.{NAMESPACE}.svc:{GRPC_PORT}"
        if client.get("url") != want:
            finding(where, f"[{section}].url must be {want!r}")
        if target not in services:
            finding(where, f"[{section}] points at Service {target!r}, which is not rendered")
        if client.get("api_key_file") not in secret_files:
            finding(where, f"[{section}].api_key_file {client.get('api_key_file')!r} is not a "
                           f"Secret item mounted into {svc}")

    # Env: no inline password; secrets only from secretKeyRef; each secret override set
    # exactly where the config uses it.
    for name, entry in env.items():
        if re.search(r"://[^/\s:@]*:[^/\s@]+@", entry.get("value", "")):
            finding(where, f"env {name} carries a password inline; use a secretKeyRef")
        if "__" in name and not name.startswith(ENV_PREFIX[svc]):
            finding(where, f"env {name} does not use the prefix {ENV_PREFIX[svc]}")
    wanted_secret_env = {f"{ENV_PREFIX[svc]}DATABASE__URL": uses_database(svc, cfg)}
    if svc == "connector-executor":
        wanted_secret_env["CONNECTOR_EXECUTOR__LIMITS__SHARED__URL"] = shared_limits(cfg) is not None
    if svc == "token-vault":
        # A static token from VAULT_TOKEN ([vault.auth] absent or method = "token"), or Vault's
        # Kubernetes auth with the pod's automounted service-account token and no Secret.
        method = table(cfg, "vault.auth.method") or "token"
        wanted_secret_env["VAULT_TOKEN"] = method == "token"
        jwt = table(cfg, "vault.auth.jwt_file") or SA_TOKEN_FILE
        if method == "kubernetes" and jwt != SA_TOKEN_FILE:
            finding(where, f"vault.auth.jwt_file {jwt!r} is not the automounted service-account "
                           f"token {SA_TOKEN_FILE!r}")
    for name, wanted in wanted_secret_env.items():
        if wanted and name not in env:
            finding(where, f"{svc} needs {name} from a Secret: its config uses what it sets")
        elif wanted and "secretKeyRef" not in (env[name].get("valueFrom") or {}):
            finding(where, f"env {name} must come from a secretKeyRef")
        elif not wanted and name in env:
            finding(where, f"{svc} is given {name} but its config does not use it here: leave "
                           "the Secret out")

    watches = [w for w in cfg.get("watches") or [] if isinstance(w, dict)]
    if svc == "schema-watcher" and not watches:
        finding(where, "no [[watches]]: schema-watcher would poll nothing")

    try:
        return parse_duration(server.get("shutdown_grace", ""))
    except ValueError as e:
        finding(where, str(e))
        return None


def check_deployment(svc: str, where: str, dep: dict, cfg: dict, grace: float | None,
                     sas: dict[str, dict], expect: dict) -> None:
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    labels = spec["template"]["metadata"].get("labels", {})
    if labels.get("app.kubernetes.io/name") != svc:
        finding(where, "pod template lacks app.kubernetes.io/name")
    if spec["selector"].get("matchLabels") != {"app.kubernetes.io/name": svc}:
        finding(where, "selector must be exactly app.kubernetes.io/name")

    replicas = spec.get("replicas", 1)
    if svc in SINGLETONS:
        if replicas != 1:
            finding(where, f"{svc} must run one replica (its polling is not coordinated)")
    elif replicas < expect.get("min_replicas", 1):
        finding(where, f"replicas {replicas} < {expect['min_replicas']}")
    if svc == "connector-executor":
        # Asana's per-token limits hold across replicas only through the shared limiter, and
        # its fallback share (budget / replicas) is right only if it knows how many there are.
        shared = shared_limits(cfg)
        if replicas > 1 and shared is None:
            finding(where, f"{replicas} replicas but no [limits.shared]: each replica would "
                           "spend a whole Asana token's budget")
        elif shared is not None and shared.get("replicas") != replicas:
            finding(where, f"limits.shared.replicas is {shared.get('replicas')!r} but the "
                           f"Deployment runs {replicas} replicas")

    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        finding(where, "pod securityContext.runAsNonRoot must be true")
    if psc.get("runAsUser") != 65532 or psc.get("runAsGroup") != 65532:
        finding(where, "pod securityContext must run as 65532:65532 (the image's user)")
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        finding(where, "pod seccompProfile must be RuntimeDefault")
    automount = pod.get("automountServiceAccountToken")
    if svc == "token-vault":
        if automount is not True:
            finding(where, "token-vault mounts its SA token (for Vault Kubernetes auth)")
    elif automount is not False:
        finding(where, "automountServiceAccountToken must be false")
    sa = sas.get(pod.get("serviceAccountName", ""))
    if sa is None:
        finding(where, f"ServiceAccount {pod.get('serviceAccountName')!r} is not rendered")
    elif sa.get("automountServiceAccountToken") is not False:
        finding(where, "its ServiceAccount must set automountServiceAccountToken: false")
    if pod.get("enableServiceLinks") is not False:
        finding(where, "enableServiceLinks must be false")

    if len(pod["containers"]) != 1 or pod.get("initContainers"):
        finding(where, "expected exactly one container")
    c = pod["containers"][0]
    image = c.get("image", "")
    if not re.fullmatch(rf"[^\s@]+/{re.escape(svc)}(:[\w.-]+)?(@sha256:[0-9a-f]{{64}})?", image):
        finding(where, f"image {image!r} is not <registry>/{svc}[:<tag>][@sha256:<digest>]")
    if "command" in c:
        finding(where, "command must not be set: the image's entrypoint is the binary")
    if c.get("args") != ARGS:
        finding(where, f"args must be {' '.join(ARGS)}")
    csc = c.get("securityContext", {})
    if csc.get("readOnlyRootFilesystem") is not True:
        finding(where, "readOnlyRootFilesystem must be true")
    if csc.get("allowPrivilegeEscalation") is not False:
        finding(where, "allowPrivilegeEscalation must be false")
    if csc.get("privileged") is True:
        finding(where, "privileged must not be true")
    if csc.get("capabilities", {}).get("drop") != ["ALL"]:
        finding(where, "capabilities.drop must be [ALL]")
    if csc.get("capabilities", {}).get("add"):
        finding(where, "no capabilities may be added")
    # Readiness is the overall health status; liveness and startup ask for the `liveness`
    # health service, which the chassis keeps SERVING while the process answers at all, so a
    # dependency outage makes pods unready, never restarted.
    readiness = c.get("readinessProbe", {}).get("grpc", {})
    if readiness.get("port") != GRPC_PORT or readiness.get("service", ""):
        finding(where, f"readinessProbe must be a grpc probe on {GRPC_PORT} without a service")
    for probe in ("livenessProbe", "startupProbe"):
        grpc = c.get(probe, {}).get("grpc", {})
        if grpc.get("port") != GRPC_PORT or grpc.get("service") != LIVENESS_SERVICE:
            finding(where, f"{probe} must be a grpc probe on {GRPC_PORT} for service "
                           f"{LIVENESS_SERVICE!r}")
    for kind in ("requests", "limits"):
        for res in ("cpu", "memory"):
            if res not in c.get("resources", {}).get(kind, {}):
                finding(where, f"resources.{kind}.{res} is missing")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    if ports != expected_ports(svc, cfg):
        finding(where, f"container ports {ports} != {expected_ports(svc, cfg)}")

    mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    cfg_mount = mounts.get("/etc/agentauth")
    cfg_vol = volumes.get(cfg_mount["name"], {}) if cfg_mount else {}
    if cfg_vol.get("configMap", {}).get("name") != f"{svc}-config":
        finding(where, f"/etc/agentauth must mount ConfigMap {svc}-config")

    pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
    tgps = pod.get("terminationGracePeriodSeconds", 30)
    if grace is not None and not tgps > pre_stop + grace:
        finding(where, f"terminationGracePeriodSeconds {tgps} must exceed preStop {pre_stop}s "
                       f"+ shutdown_grace {grace:g}s")


def expected_ports(svc: str, cfg: dict) -> dict[str, int]:
    """Named listener ports of a service: gRPC; HTTP for token-vault's OAuth callback and
    connector-executor's virtual MCP (the port is there in the base, where it is off); the
    webhook intake's exactly where webhooks are on."""
    ports = {"grpc": GRPC_PORT}
    if svc in HTTP_SERVICES:
        ports["http"] = HTTP_PORT
    if svc == "connector-executor" and webhooks_on(cfg):
        ports[WEBHOOKS_PORT_NAME] = WEBHOOKS_PORT
    return ports


# --- network ---------------------------------------------------------------------------------


def selector_matches(selector: dict | None, labels: dict) -> bool:
    if selector is None:
        return False
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels,
              "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def peer_kinds(peer: dict, ns_labels: dict, pods: dict[str, dict]) -> tuple[set[str], bool]:
    """Which agentauth services a NetworkPolicy peer selects, and whether it reaches outside."""
    if "ipBlock" in peer:
        return set(), True
    ns_sel = peer.get("namespaceSelector")
    pod_sel = peer.get("podSelector", {})
    if ns_sel is None:  # this namespace only
        return {s for s, lbl in pods.items() if selector_matches(pod_sel, lbl)}, False
    inside = ({s for s, lbl in pods.items() if selector_matches(pod_sel, lbl)}
              if selector_matches(ns_sel, ns_labels) else set())
    only_here = (ns_sel.get("matchLabels") or {}).get("kubernetes.io/metadata.name") == NAMESPACE
    return inside, not only_here


def check_network(where: str, objects: list[dict], configs: dict[str, dict]) -> None:
    policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
    namespaces = by_kind(objects, "Namespace")
    ns_labels = dict((namespaces.get(NAMESPACE, {}).get("metadata") or {}).get("labels") or {})
    ns_labels["kubernetes.io/metadata.name"] = NAMESPACE
    pods = {d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in objects if d["kind"] == "Deployment"}

    deny = [p for p in policies if p["spec"].get("podSelector") == {}
            and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    if not deny:
        finding(where, "no default-deny NetworkPolicy (podSelector {}, Ingress+Egress, no rules)")

    # allowed[direction][svc] = set of (peer, protocol, port); peer is a service or "external".
    allowed: dict[str, dict[str, set]] = {"ingress": {s: set() for s in pods},
                                          "egress": {s: set() for s in pods}}
    for p in policies:
        name = p["metadata"]["name"]
        selected = {s for s, lbl in pods.items() if selector_matches(p["spec"]["podSelector"], lbl)}
        for direction, peers_key in (("ingress", "from"), ("egress", "to")):
            if direction.capitalize() not in p["spec"].get("policyTypes", []):
                if p["spec"].get(direction):
                    finding(where, f"NetworkPolicy {name} has {direction} rules but not the type")
                continue
            for rule in p["spec"].get(direction) or []:
                if not rule.get(peers_key):
                    finding(where, f"NetworkPolicy {name}: a {direction} rule without "
                                   f"`{peers_key}` allows every peer")
                    continue
                if not rule.get("ports"):
                    finding(where, f"NetworkPolicy {name}: a {direction} rule without ports "
                                   "allows every port")
                    continue
                ports = set()
                for port in rule["ports"]:
                    if not isinstance(port.get("port"), int) or "endPort" in port:
                        finding(where, f"NetworkPolicy {name}: use single numeric ports")
                        continue
                    ports.add((port.get("protocol", "TCP"), port["port"]))
                for peer in rule[peers_key]:
                    services, external = peer_kinds(peer, ns_labels, pods)
                    for s in selected:
                        for proto, num in ports:
                            allowed[direction][s] |= {(t, proto, num) for t in services}
                            if external:
                                allowed[direction][s].add(("external", proto, num))

    internal = set()
    for src in pods:
        for dst, proto, port in allowed["egress"][src]:
            if dst != "external" and (src, proto, port) in allowed["ingress"].get(dst, set()):
                internal.add((src, dst, port))
    for edge in sorted(internal - EXPECTED_INTERNAL_EDGES):
        finding(where, f"NetworkPolicies allow {edge[0]} → {edge[1]}:{edge[2]}, not in the design")
    for edge in sorted(EXPECTED_INTERNAL_EDGES - internal):
        if edge[0] in pods and edge[1] in pods:
            finding(where, f"NetworkPolicies block {edge[0]} → {edge[1]}:{edge[2]} (design edge)")
    for svc in pods:
        cfg = configs.get(svc, {})
        want = {"egress": set(EXPECTED_EXTERNAL_EGRESS.get(svc, set())),
                "ingress": set(EXPECTED_EXTERNAL_INGRESS.get(svc, set()))}
        if uses_database(svc, cfg):
            want["egress"].add(POSTGRES)
        if svc == "connector-executor" and shared_limits(cfg) is not None:
            want["egress"].add(REDIS)
        if svc == "connector-executor" and webhooks_on(cfg):
            want["ingress"].add(("TCP", WEBHOOKS_PORT))
        for direction in ("egress", "ingress"):
            got = {(proto, port) for peer, proto, port in allowed[direction][svc]
                   if peer == "external"}
            if got != want[direction]:
                finding(where, f"{svc}: external {direction} ports {sorted(got)} != "
                               f"expected {sorted(want[direction])}")


def check_watcher_scope(where: str, configs: dict[str, dict]) -> None:
    """schema-watcher's caller entry on connector-executor is least-privilege: role `watcher`
    only, for exactly the tenants and connections its [[watches]] name; and pinned watches
    are enforced only if connector-executor asks schema-watcher ([schema_watcher])."""
    caller, callee = WATCHER_EDGE
    watches = [w for w in configs.get(caller, {}).get("watches") or [] if isinstance(w, dict)]
    executor = configs.get(callee, {})
    entry = callers_of(executor).get(caller)
    if entry is None:
        finding(where, f"{callee} has no caller entry for {caller}, which lists its watches "
                       "through it")
        return
    if entry.get("roles") != ["watcher"] or entry.get("rpcs"):
        finding(where, f"{callee}'s caller {caller} must hold exactly roles = [\"watcher\"]")
    for field, key in (("tenants", "tenant"), ("connections", "connection")):
        want = {w.get(key) for w in watches}
        got = set(entry.get(field) or ["*"])
        if got != want:
            finding(where, f"{callee}'s caller {caller}: {field} {sorted(got)} != its watches' "
                           f"{sorted(want)}")
    if any(w.get("mode") == "pinned" for w in watches) and "schema_watcher" not in executor:
        finding(where, f"{caller} has pinned watches but {callee} has no [schema_watcher]: "
                       "nothing would be pinned")


# --- Ingresses ---------------------------------------------------------------------------------


def path_reaches(path: str, path_type: str, target: str) -> bool:
    """Whether an Ingress path of this type serves the request path `target`."""
    if path_type == "Exact":
        return path == target
    # Prefix matches whole path elements; ImplementationSpecific may match more (regexes):
    # treat it as a plain prefix of the string, the most that it could match.
    if path_type == "Prefix":
        p = path.rstrip("/")
        return p == "" or target == p or target.startswith(p + "/")
    return target.startswith(path) or path in ("", "/")


def check_ingresses(name: str, objects: list[dict], configs: dict[str, dict],
                    expect: dict) -> None:
    executor = configs.get("connector-executor", {})
    backends = set()
    # (host, path) routed to connector-executor's ports, by port name; hosts served over TLS.
    routes: dict[str, set[tuple[str, str]]] = {"http": set(), WEBHOOKS_PORT_NAME: set()}
    tls_hosts: set[str] = set()
    allowed_paths = {"http": VIRTUAL_MCP_PATHS, WEBHOOKS_PORT_NAME: {WEBHOOKS_PATH}}
    for ing in (o for o in objects if o["kind"] == "Ingress"):
        where = f"{name}: {obj_id(ing)}"
        for tls in ing["spec"].get("tls") or []:
            tls_hosts |= set(tls.get("hosts") or [])
        if not ing["spec"].get("tls"):
            finding(where, "Ingress without TLS")
        if ing["spec"].get("defaultBackend"):
            finding(where, "a defaultBackend routes every path: name each route")
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                svc = path["backend"]["service"]
                port = svc["port"].get("name")
                if port is None:
                    finding(where, f"route {path.get('path')!r} names its port by number: name it")
                backends.add((svc["name"], port))
                if svc["name"] != "connector-executor":
                    continue
                for never in NEVER_ROUTED:
                    if path_reaches(path.get("path", ""), path.get("pathType", ""), never):
                        finding(where, f"routes {never} of connector-executor to the outside "
                                       f"(path {path.get('path')!r}, {path.get('pathType')})")
                if port not in allowed_paths:
                    finding(where, f"routes to connector-executor:{port}, which is not an HTTP "
                                   "listener meant for the outside")
                    continue
                routes[port].add((rule.get("host", ""), path.get("path", "")))
                if path.get("path") not in allowed_paths[port] or path.get("pathType") != "Prefix":
                    finding(where, f"routes {path.get('path')!r} ({path.get('pathType')}) to "
                                   f"connector-executor:{port}, which serves only the Prefix "
                                   f"paths {sorted(allowed_paths[port])}")

    # Virtual MCP: routed only when on; then both paths for public_url's host, over TLS, and
    # every allowed host routed.
    if routes["http"] and not virtual_mcp_on(executor):
        finding(name, "an Ingress routes to connector-executor:http, but virtual MCP is off: "
                      "nothing listens there")
    if routes["http"] and virtual_mcp_on(executor):
        vm = executor["virtual_mcp"]
        host = https_root(name, "virtual_mcp.public_url", str(vm.get("public_url", "")))
        for path in sorted(VIRTUAL_MCP_PATHS):
            if (host, path) not in routes["http"]:
                finding(name, f"no Ingress routes {host}{path} (virtual_mcp.public_url's host) to "
                              "connector-executor:http")
        if host not in tls_hosts:
            finding(name, f"virtual_mcp.public_url's host {host!r} is not served over TLS")
        routed_hosts = {h for h, _ in routes["http"]}
        for allowed in vm.get("allowed_hosts") or [host]:
            if allowed not in routed_hosts:
                finding(name, f"virtual_mcp.allowed_hosts names {allowed!r}, which no Ingress "
                              "routes to connector-executor:http")
    # Webhook intake: routed exactly when on, for public_url's host, over TLS.
    if routes[WEBHOOKS_PORT_NAME] and not webhooks_on(executor):
        finding(name, f"an Ingress routes to connector-executor:{WEBHOOKS_PORT_NAME}, but webhooks "
                      "are off: nothing listens there")
    if webhooks_on(executor):
        url = str(table(executor, "webhooks.public_url"))
        host = urlsplit(url).hostname or ""
        if (host, WEBHOOKS_PATH) not in routes[WEBHOOKS_PORT_NAME]:
            finding(name, f"no Ingress routes {host}{WEBHOOKS_PATH} (webhooks.public_url's host) "
                          f"to connector-executor:{WEBHOOKS_PORT_NAME}: Asana could not deliver")
        if host not in tls_hosts:
            finding(name, f"webhooks.public_url's host {host!r} is not served over TLS")

    wanted_backends = set(expect.get("ingress_backends", set()))
    if not virtual_mcp_on(executor):  # then nothing listens on connector-executor's http port
        wanted_backends.discard(("connector-executor", "http"))
    for backend in sorted(wanted_backends - backends):
        finding(name, f"no Ingress routes to {backend[0]}:{backend[1]}")


# --- one root ----------------------------------------------------------------------------------


def check_root(name: str, objects: list[dict]) -> None:
    expect = ROOT_EXPECTATIONS.get(name, {})
    deployments = by_kind(objects, "Deployment")
    configmaps = by_kind(objects, "ConfigMap")
    services = by_kind(objects, "Service")
    sas = by_kind(objects, "ServiceAccount")
    pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"]
    configs = {svc: load_config(configmaps, svc) for svc in SERVICES}

    for o in objects:
        if o["kind"] not in CLUSTER_SCOPED and o["metadata"].get("namespace") != NAMESPACE:
            finding(f"{name}: {obj_id(o)}", f"namespace must be {NAMESPACE}")
        if o["kind"] == "Secret":
            finding(f"{name}: {obj_id(o)}", "Secrets are created out of band, never committed")
    if set(deployments) != set(SERVICES):
        finding(name, f"Deployments {sorted(deployments)} != {sorted(SERVICES)}")

    for svc in SERVICES:
        dep = deployments.get(svc)
        if dep is None:
            continue
        where = f"{name}: {svc}"
        cm = configmaps.get(f"{svc}-config")
        grace = None
        if cm is None or "config.toml" not in (cm.get("data") or {}):
            finding(where, f"ConfigMap {svc}-config with config.toml is missing")
        else:
            grace = check_config(svc, where, cm["data"]["config.toml"], dep, services)
        check_deployment(svc, where, dep, configs[svc], grace, sas, expect)
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        if not any(selector_matches(p["spec"].get("selector"), pod_labels) for p in pdbs):
            finding(where, "no PodDisruptionBudget selects its pods")
        svc_obj = services.get(svc)
        if svc_obj is None:
            finding(where, "no Service")
            continue
        if not selector_matches({"matchLabels": svc_obj["spec"].get("selector")}, pod_labels):
            finding(where, "its Service does not select its pods")
        ports = {p["name"]: p["port"] for p in svc_obj["spec"].get("ports", [])}
        targets = {p["name"]: p.get("targetPort") for p in svc_obj["spec"].get("ports", [])}
        if ports != expected_ports(svc, configs[svc]):
            finding(where, f"Service ports {ports} != the listeners {expected_ports(svc, configs[svc])}")
        for port_name, target in targets.items():
            if target != port_name:
                finding(where, f"Service port {port_name} must target the container port of "
                               f"that name, not {target!r}")

    check_watcher_scope(name, configs)
    check_network(name, objects, configs)
    check_ingresses(name, objects, configs, expect)
    policies = by_kind(objects, "NetworkPolicy")
    ipblock = set(expect.get("ipblock_policies", set()))
    if expect and shared_limits(configs["connector-executor"]) is not None:
        ipblock.add("allow-redis-egress")
    for pol in sorted(ipblock):
        peers = [peer for rule in policies.get(pol, {}).get("spec", {}).get("egress", [])
                 for peer in rule.get("to", [])]
        if not peers or any("ipBlock" not in peer for peer in peers):
            finding(name, f"NetworkPolicy {pol} must point at the external service by ipBlock")


def write_binary_inputs(objects: list[dict], target: Path) -> None:
    """For the binaries' `--check-config` and `--print-access` (check.sh): each service's
    config.toml with FILL-IN digests replaced by distinct dummy digests and mounted files by
    dummy files, and the env its Deployment sets, with dummy values in place of Secret
    references."""
    target.mkdir(parents=True, exist_ok=True)
    configmaps = by_kind(objects, "ConfigMap")
    for svc, dep in by_kind(objects, "Deployment").items():
        toml_text = (configmaps.get(f"{svc}-config", {}).get("data") or {}).get("config.toml", "")
        toml_text = re.sub(r"FILL-IN[\w-]*",
                           lambda m: hashlib.sha256(m.group(0).encode()).hexdigest(), toml_text)
        # Mounted Secret files become dummy key files, and the pod's writable directories
        # (e.g. the audit spool) directories of this run, so a binary that opens them at start
        # finds them.
        secrets = target / "mounts" / svc / "secrets"
        for name in re.findall(rf"{re.escape(SECRETS_DIR)}([\w.-]+(?:/[\w.-]+)*)", toml_text):
            (secrets / name).parent.mkdir(parents=True, exist_ok=True)
            # At least 32 bytes, as a virtual MCP signing key must be.
            (secrets / name).write_text(f"check-dummy-key-{svc}-{name}-"
                                        f"{hashlib.sha256(name.encode()).hexdigest()}\n")
        toml_text = toml_text.replace(SECRETS_DIR, f"{secrets}/")
        toml_text = toml_text.replace("/var/lib/agentauth/", f"{target / 'mounts' / svc / 'var'}/")
        (target / f"{svc}.toml").write_text(toml_text)
        lines = []
        for e in dep["spec"]["template"]["spec"]["containers"][0].get("env", []):
            source = e.get("valueFrom") or {}
            if "secretKeyRef" in source:
                if e["name"].endswith("__DATABASE__URL"):
                    value = "postgres://check@127.0.0.1:5432/check"
                elif e["name"].endswith("__SHARED__URL"):
                    value = "redis://127.0.0.1:6379"
                else:
                    value = "check-dummy-secret"
            elif "value" in e:
                value = e["value"]
            else:
                continue  # fieldRef and the like exist only in a pod
            lines.append(f"{e['name']}={value}\n")
        (target / f"{svc}.env").write_text("".join(lines))


def check_referenced(deploy_dir: Path) -> None:
    """Every manifest or patch under deploy/ (but vault/) is named by a kustomization.yaml, so
    nothing that looks deployed is silently left out of the render."""
    referenced: set[Path] = set()
    for kfile in deploy_dir.rglob("kustomization.yaml"):
        referenced.add(kfile.resolve())
        k = yaml.safe_load(kfile.read_text()) or {}
        for res in k.get("resources") or []:
            path = (kfile.parent / res).resolve()
            referenced.add(path / "kustomization.yaml" if path.is_dir() else path)
        for patch in k.get("patches") or []:
            if "path" in patch:
                referenced.add((kfile.parent / patch["path"]).resolve())
    for path in sorted(deploy_dir.rglob("*.y*ml")):
        rel = path.relative_to(deploy_dir)
        if rel.parts[0] in {"vault", "images"} or path.name.startswith("."):
            continue
        if path.resolve() not in referenced:
            finding(str(rel), "not referenced by any kustomization.yaml")


def invariants(deploy_dir: Path, out_dir: Path) -> int:
    check_referenced(deploy_dir)
    rendered = sorted((out_dir / "rendered").glob("*.yaml"))
    if not rendered:
        finding(str(out_dir), "no rendered roots")
    for path in rendered:
        name = path.stem
        objects = [o for o in yaml.safe_load_all(path.read_text()) if o]
        check_root(name, objects)
        write_binary_inputs(objects, out_dir / "configs" / name)
        count = len(PLACEHOLDER.findall(path.read_text()))
        print(f"{name}: {len(objects)} objects checked")
        if name.startswith("overlays-") and count:
            print(f"note: {name} still holds {count} placeholders to fill in before deploying "
                  "(FILL-IN…, *.agentauth.example, RFC 5737 address ranges; see deploy/README.md)")
    return report("invariants")


def admission(configs_dir: Path) -> int:
    """Each root's callers as the binaries resolve them (`<service> --print-access`, written
    by check.sh as `<service>.access.json`) against EDGE_NEEDS and RESERVED_RPCS."""
    for root in sorted(p for p in configs_dir.iterdir() if p.is_dir()):
        def config(svc: str) -> dict:
            path = root / f"{svc}.toml"
            return tomllib.loads(path.read_text()) if path.is_file() else {}
        watches = config(WATCHER_EDGE[0]).get("watches") or []
        executor = config("connector-executor")
        access = {}
        for path in root.glob("*.access.json"):
            access[path.name.removesuffix(".access.json")] = {
                c["name"]: {**c, "methods": {r.rsplit("/", 1)[1] for r in c["rpcs"]}}
                for c in json.loads(path.read_text())
            }
        if set(access) != set(SERVICES):
            finding(root.name, f"--print-access output for {sorted(access)}, not {sorted(SERVICES)}")
        needs = {edge: set(rpcs) for edge, rpcs in EDGE_NEEDS.items()}
        if webhooks_on(executor):
            for edge, rpcs in WEBHOOK_EDGE_NEEDS.items():
                needs[edge] |= rpcs
        for (caller, callee), rpcs in sorted(needs.items()):
            entry = access.get(callee, {}).get(caller)
            if entry is None:
                finding(root.name, f"{callee} does not admit {caller}, which calls "
                                   f"{', '.join(sorted(rpcs))} on it")
                continue
            missing = rpcs - entry["methods"]
            if missing:
                finding(root.name, f"{callee} admits {caller} without {', '.join(sorted(missing))}")
            if (caller, callee) == WATCHER_EDGE:
                extra = entry["methods"] - rpcs
                if extra:
                    finding(root.name, f"{callee} grants {caller} {', '.join(sorted(extra))} "
                                       "beyond what polling needs")
                for field, key in (("tenants", "tenant"), ("connections", "connection")):
                    want = {w.get(key) for w in watches}
                    if set(entry[field]) != want:
                        finding(root.name, f"{callee} admits {caller} for {field} "
                                           f"{entry[field]}, not exactly its watches' {sorted(want)}")
            elif entry["tenants"] != ["*"]:
                finding(root.name, f"{callee} admits {caller} for tenants {entry['tenants']}, "
                                   "not every tenant")
        # MintMcpSession, as the binary resolves roles and rpcs: held by exactly the minters of
        # connector-executor's virtual servers.
        minters = {m for s in executor.get("virtual_servers") or [] for m in s.get("minters") or []}
        for name, entry in sorted(access.get("connector-executor", {}).items()):
            if "MintMcpSession" in entry["methods"] and name not in minters:
                finding(root.name, f"connector-executor grants MintMcpSession to {name}, a "
                                   "minter of no virtual server")
        for name in sorted(minters):
            if "MintMcpSession" not in access.get("connector-executor", {}).get(name, {}).get(
                    "methods", set()):
                finding(root.name, f"connector-executor's minter {name} is not granted "
                                   "MintMcpSession")
        for (service, rpc), holders in sorted(RESERVED_RPCS.items()):
            for name, entry in sorted(access.get(service, {}).items()):
                if rpc in entry["methods"] and name not in holders:
                    finding(root.name, f"{service} grants {rpc} to {name}; only "
                                       f"{', '.join(sorted(holders))} may hold it")
    return report("admission")


def report(what: str) -> int:
    unique = list(dict.fromkeys(findings))  # a base error shows up once per root
    for f in unique:
        print(f"FINDING {f}")
    print(f"{what}: {len(unique)} finding(s)")
    return 1 if unique else 0


def main() -> int:
    if len(sys.argv) == 4 and sys.argv[1] == "invariants":
        return invariants(Path(sys.argv[2]).resolve(), Path(sys.argv[3]).resolve())
    if len(sys.argv) == 3 and sys.argv[1] == "admission":
        return admission(Path(sys.argv[2]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
