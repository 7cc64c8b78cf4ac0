#!/usr/bin/env python3
"""Offline checks for deploy/ that need more than a schema. Run by deploy/check.sh.

1. Every `resources:` and `patches:` path of every kustomization.yaml exists, no kustomization
   uses a field this script cannot render, and no manifest or patch file under deploy/ is left
   unreferenced.
2. Renders each kustomization root (deploy/base, deploy/overlays/*) the way kustomize would for
   the subset used here: `resources` (files and directories), `namespace`, and JSON 6902
   `patches` with a `target`. The merged objects are written out for kubernetes-validate.
3. Checks the invariants that the design and the binaries impose on the rendered objects:
   config files carry only known keys and no secrets; env overrides name known keys and take
   secrets from Secrets, and a service gets a database URL and mounted Secret items only if
   its config uses them; security context, probes and shutdown timing; PDBs, Services; the
   NetworkPolicies allow exactly the edges of design.md's diagram (PostgreSQL for
   connector-executor only where virtual MCP is on); connector-executor's virtual MCP (signing
   keys mounted, TTLs, virtual servers and their minters' bindings, public URL and Ingress
   routes of only its paths); production replicas and Ingresses.

Usage: check.py DEPLOY_DIR OUT_DIR
Writes OUT_DIR/raw-files.txt (resource files as written), OUT_DIR/rendered/<root>/*.yaml
(merged objects) and OUT_DIR/configs/<root>/<service>.{toml,env} (inputs for the binaries'
--check-config), prints findings, and exits 1 if there are any.

       check.py --compare OUT_DIR/rendered/<root> KUSTOMIZE_OUTPUT.yaml
Exits 1 if the render differs from real kustomize's (`kubectl kustomize <root>`) for that root.
"""

from __future__ import annotations

import copy
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
ENV_PREFIX = {s: s.upper().replace("-", "_") + "__" for s in SERVICES}

# Config keys each binary accepts (it rejects unknown keys). `str`/`list` are leaf types;
# `[dict]` is an array of tables. The gRPC chassis's settings live in a [server] table
# (ARCHITECTURE.md, "Decisions and deviations"; crates/agentauth-grpc ServerConfig).
_CALLER = {"name": str, "key_sha256": str, "tenants": list, "connections": list, "tools": list,
           "roles": list, "rpcs": list}
_CLIENT = {"url": str, "api_key_file": str}
# The [audit] section: where audit events go (agentauth_audit::SinkConfig).
_AUDIT = {"url": str, "api_key_file": str, "spool_dir": str}
_SERVER = {"listen": str, "shutdown_grace": str, "readiness_interval": str, "callers": [_CALLER]}
# schema-watcher's [[watches]] (schema_watcher::WatchConfig) and [polling].
_WATCH = {"connection": str, "tenant": str, "identifier": str, "interval": str, "jitter": str,
          "mode": str, "auto_approve_first": bool}
_POLLING = {"timeout": str, "min_gap": str, "failures_before_alert": int}
_COMMON = {"server": _SERVER}
# connector-executor's per-user virtual MCP endpoints (virtual_mcp::VirtualMcpConfig,
# VirtualServerConfig, bearer::KeyConfig).
_SIGNING_KEY = {"id": str, "key_file": str}
_VIRTUAL_MCP = {"listen": str, "public_url": str, "allowed_hosts": list, "allowed_origins": list,
                "default_ttl": str, "max_ttl": str, "signing_keys": [_SIGNING_KEY],
                "revocation_refresh": str, "revocation_stale_after": str,
                "session_retention": str, "responses": str}
_EXPOSED_TOOL = {"connection": str, "tool": str, "upstream": bool, "fixed_inputs": dict}
_VIRTUAL_SERVER = {"name": str, "minters": list, "include_previews": bool,
                   "tools": [_EXPOSED_TOOL]}
CONFIG_SCHEMA: dict[str, dict[str, Any]] = {
    "token-vault": {
        **_COMMON,
        "oauth": {"http_listen": str},
        "vault": {"addr": str, "timeout": str, "kv_mount": str, "transit_mount": str,
                  "path_prefix": str},
        "database": {"url": str},
        "audit": _AUDIT,
    },
    "audit-log": {**_COMMON, "database": {"url": str}},
    "connector-executor": {
        **_COMMON,
        "token_vault": _CLIENT,
        "audit": _AUDIT,
        # Drift pinning: where the approved baselines of MCP connections come from.
        "schema_watcher": _CLIENT,
        # Per-connection settings by connection name (requests_per_minute, asana_enable, ...).
        "connections": dict,
        # Virtual MCP: off without a signing key; with one, [database] (from the env override)
        # records sessions and revocations.
        "virtual_mcp": _VIRTUAL_MCP,
        "virtual_servers": [_VIRTUAL_SERVER],
        "database": {"url": str},
    },
    "schema-watcher": {
        **_COMMON,
        "database": {"url": str},
        # connector-executor, through which every listing is read.
        "executor": _CLIENT,
        "audit": _AUDIT,
        "polling": _POLLING,
        "watches": [_WATCH],
    },
}
# Keys that hold secrets: they must come from a Secret through the env override, never the file.
SECRET_KEYS = {"database"}
# Keys the binaries default sensibly; every other key must be written out.
OPTIONAL_KEYS = {"server.readiness_interval", "vault.timeout", "connections", "server.callers",
                 "virtual_mcp", "virtual_servers", "virtual_mcp.allowed_hosts",
                 "virtual_mcp.allowed_origins", "virtual_mcp.default_ttl", "virtual_mcp.max_ttl",
                 "virtual_mcp.revocation_refresh", "virtual_mcp.revocation_stale_after",
                 "virtual_mcp.session_retention", "virtual_mcp.responses"}
# Fields of array-of-table entries the binaries default: a caller's connections and tools are
# "*" unless named (they matter only where a request names one), its rpcs empty.
OPTIONAL_ENTRY_KEYS = {"callers": {"connections", "tools", "rpcs", "roles"},
                       "watches": {"interval", "jitter", "auto_approve_first"},
                       "virtual_servers": {"include_previews"},
                       "tools": {"upstream", "fixed_inputs"}}
WATCH_MODES = {"warn", "pinned"}
# Where secrets are mounted as files (API keys, signing keys); each file a Secret item.
SECRETS_DIR = "/var/run/secrets/"
# Virtual MCP (connector-executor): the listener behind the Service's `http` port, the only
# paths it serves (what its Ingress may route to it), its answer modes and name syntax.
VIRTUAL_MCP_LISTEN = f"0.0.0.0:{HTTP_PORT}"
VIRTUAL_MCP_PATHS = {"/mcp", "/.well-known/oauth-protected-resource/mcp"}
VIRTUAL_MCP_RESPONSES = {"json", "sse"}
# connector-executor's roles that only serve virtual MCP (minting; listing and revoking).
VIRTUAL_MCP_ROLES = {"mcp", "sessions"}
VIRTUAL_MCP_DEFAULTS = {"default_ttl": "15m", "max_ttl": "1h", "revocation_refresh": "5s",
                        "revocation_stale_after": "60s"}
NAME_SYNTAX = re.compile(r"[A-Za-z0-9_-]+")
KEY_ID_SYNTAX = re.compile(r"[A-Za-z0-9-]+")
# A client section's name → the Service it must point at.
CLIENT_SECTIONS = {"token_vault": "token-vault", "audit": "audit-log",
                   "executor": "connector-executor", "schema_watcher": "schema-watcher"}
EXPECTED_ASANA = {"api_base": "https://app.asana.com/api/1.0", "mcp_url": "https://mcp.asana.com/v2/mcp"}

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
# schema-watcher's entry on connector-executor is bound to its probe accounts, not every
# tenant: its tenants and connections must be exactly those of its [[watches]], and it may call
# nothing but what polling needs.
WATCHER_EDGE = ("schema-watcher", "connector-executor")
# RPCs that only these callers may hold, whatever a config says: tokens leave token-vault only
# for connector-executor, only the services write audit events (in their own name), only
# schema-watcher lists upstream tools as probe accounts, and pinning verdicts go to
# connector-executor alone.
RESERVED_RPCS = {
    ("token-vault", "GetAccessToken"): {"connector-executor"},
    ("token-vault", "ReportRejectedToken"): {"connector-executor"},
    ("token-vault", "WatchAccountChanges"): {"connector-executor"},
    ("audit-log", "Append"): {"connector-executor", "token-vault", "schema-watcher"},
    ("connector-executor", "ListUpstreamTools"): {"schema-watcher"},
    ("connector-executor", "WatchUpstreamChanges"): {"schema-watcher"},
    ("schema-watcher", "CheckTools"): {"connector-executor"},
}
# ... and as ports each service may reach outside it (DNS 53, OTLP 4317, PostgreSQL 5432,
# Vault 8200, Asana 443) or be reached on from outside it (callers/operators on gRPC, the
# ingress controller on the HTTP listener).
_COMMON_EGRESS = {("UDP", 53), ("TCP", 53), ("TCP", 4317)}
# connector-executor reaches PostgreSQL only where it has a database (virtual MCP on, see
# uses_database): that port is added to its set then.
POSTGRES = ("TCP", 5432)
EXPECTED_EXTERNAL_EGRESS = {
    "token-vault": _COMMON_EGRESS | {("TCP", 5432), ("TCP", 8200), ("TCP", 443)},
    "connector-executor": _COMMON_EGRESS | {("TCP", 443)},
    "audit-log": _COMMON_EGRESS | {("TCP", 5432)},
    "schema-watcher": _COMMON_EGRESS | {("TCP", 5432)},
}
EXPECTED_EXTERNAL_INGRESS = {
    "token-vault": {("TCP", HTTP_PORT)},
    "connector-executor": {("TCP", GRPC_PORT), ("TCP", HTTP_PORT)},
    "audit-log": {("TCP", GRPC_PORT)},
    "schema-watcher": {("TCP", GRPC_PORT)},
}

# Per-root expectations beyond the shared invariants.
ROOT_EXPECTATIONS = {
    "overlays/production": {
        "min_replicas": 2,
        # connector-executor's only while virtual MCP is on (nothing else listens there).
        "ingress_backends": {("token-vault", "http"), ("connector-executor", "http")},
        "ipblock_policies": {"allow-postgres-egress", "allow-vault-egress"},
    },
}

CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass", "StorageClass"}
KUSTOMIZATION_FIELDS = {"apiVersion", "kind", "namespace", "resources", "patches"}
TARGET_FIELDS = {"group", "version", "kind", "name", "namespace"}
PLACEHOLDER = re.compile(r"FILL-IN|agentauth\.example|192\.0\.2\.|198\.51\.100\.|203\.0\.113\.")

findings: list[str] = []


def finding(where: str, message: str) -> None:
    findings.append(f"{where}: {message}")


# --- kustomize-lite ---------------------------------------------------------------------------


class RenderError(Exception):
    pass


def load_docs(path: Path) -> list[Any]:
    with path.open() as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def obj_id(obj: dict) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace", "")
    return f"{obj.get('kind')}/{ns + '/' if ns else ''}{meta.get('name')}"


def split_api_version(api_version: str) -> tuple[str, str]:
    group, _, version = api_version.rpartition("/")
    return group, version


def pointer_tokens(pointer: str) -> list[str]:
    if pointer == "":
        return []
    if not pointer.startswith("/"):
        raise RenderError(f"JSON pointer {pointer!r} does not start with '/'")
    return [t.replace("~1", "/").replace("~0", "~") for t in pointer[1:].split("/")]


def walk(doc: Any, tokens: list[str], pointer: str) -> Any:
    for t in tokens:
        if isinstance(doc, dict):
            if t not in doc:
                raise RenderError(f"path {pointer} does not exist (no key {t!r})")
            doc = doc[t]
        elif isinstance(doc, list):
            if not t.isdigit() or int(t) >= len(doc):
                raise RenderError(f"path {pointer} does not exist (no index {t})")
            doc = doc[int(t)]
        else:
            raise RenderError(f"path {pointer} goes through a scalar")
    return doc


def apply_json6902(obj: dict, ops: list[dict]) -> None:
    """RFC 6902 add/remove/replace/test, strict like kustomize: a missing path is an error."""
    for op in ops:
        kind, pointer = op.get("op"), op.get("path", "")
        tokens = pointer_tokens(pointer)
        if kind not in {"add", "remove", "replace", "test"}:
            raise RenderError(f"unsupported JSON 6902 op {kind!r} (use add/remove/replace/test)")
        if kind in {"add", "replace", "test"} and "value" not in op:
            raise RenderError(f"op {kind} {pointer} has no value")
        if not tokens:
            raise RenderError("patching the whole document is not supported")
        parent = walk(obj, tokens[:-1], pointer)
        last = tokens[-1]
        if kind == "test":
            if walk(obj, tokens, pointer) != op["value"]:
                raise RenderError(f"test {pointer} failed: expected {op['value']!r}, "
                                  f"found {walk(obj, tokens, pointer)!r}")
            continue
        if isinstance(parent, dict):
            if kind in {"remove", "replace"} and last not in parent:
                raise RenderError(f"{kind} {pointer}: no such key")
            if kind == "remove":
                del parent[last]
            else:
                parent[last] = copy.deepcopy(op["value"])
        elif isinstance(parent, list):
            if kind == "add" and last == "-":
                parent.append(copy.deepcopy(op["value"]))
                continue
            if not last.isdigit():
                raise RenderError(f"{kind} {pointer}: {last!r} is not an array index")
            i = int(last)
            if kind == "add":
                if i > len(parent):
                    raise RenderError(f"add {pointer}: index out of range")
                parent.insert(i, copy.deepcopy(op["value"]))
            elif i >= len(parent):
                raise RenderError(f"{kind} {pointer}: index out of range")
            elif kind == "remove":
                del parent[i]
            else:
                parent[i] = copy.deepcopy(op["value"])
        else:
            raise RenderError(f"{kind} {pointer}: parent is a scalar")


def matches_target(obj: dict, target: dict) -> bool:
    group, version = split_api_version(obj.get("apiVersion", ""))
    meta = obj.get("metadata") or {}
    wanted = {"group": group, "version": version, "kind": obj.get("kind"),
              "name": meta.get("name"), "namespace": meta.get("namespace")}
    return all(wanted[k] == v for k, v in target.items())


def render(root: Path, deploy_dir: Path, referenced: set[Path], raw_files: list[Path],
           stack: tuple[Path, ...] = ()) -> list[dict]:
    """Render the kustomization in `root`; record every file it references."""
    kfile = root / "kustomization.yaml"
    rel = kfile.relative_to(deploy_dir)
    if root in stack:
        raise RenderError(f"{rel}: kustomization cycle")
    if not kfile.is_file():
        raise RenderError(f"{root.relative_to(deploy_dir)}: no kustomization.yaml")
    referenced.add(kfile)
    docs = load_docs(kfile)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise RenderError(f"{rel}: expected one mapping")
    k = docs[0]
    if k.get("kind") != "Kustomization":
        raise RenderError(f"{rel}: kind is not Kustomization")
    unsupported = set(k) - KUSTOMIZATION_FIELDS
    if unsupported:
        raise RenderError(f"{rel}: fields {sorted(unsupported)} are not rendered by check.py; "
                          "express them as resources or JSON 6902 patches")

    objects: list[dict] = []
    for res in k.get("resources") or []:
        path = (root / res).resolve()
        if not path.exists():
            finding(str(rel), f"resource {res!r} does not exist")
            continue
        if path.is_dir():
            objects += render(path, deploy_dir, referenced, raw_files, stack + (root,))
        else:
            referenced.add(path)
            raw_files.append(path)
            for doc in load_docs(path):
                if not isinstance(doc, dict) or "kind" not in doc or "apiVersion" not in doc:
                    raise RenderError(f"{path.relative_to(deploy_dir)}: a document is not a "
                                      "Kubernetes object")
                objects.append(doc)

    for patch in k.get("patches") or []:
        if set(patch) - {"path", "target"} or "path" not in patch or "target" not in patch:
            raise RenderError(f"{rel}: each patch needs exactly `path` and `target` "
                              "(inline patches are not used here)")
        path = (root / patch["path"]).resolve()
        if not path.is_file():
            finding(str(rel), f"patch {patch['path']!r} does not exist")
            continue
        referenced.add(path)
        target = patch["target"]
        if set(target) - TARGET_FIELDS:
            raise RenderError(f"{rel}: target fields {sorted(set(target) - TARGET_FIELDS)} "
                              "are not supported by check.py")
        ops = load_docs(path)
        if len(ops) != 1 or not isinstance(ops[0], list):
            raise RenderError(f"{path.relative_to(deploy_dir)}: not a JSON 6902 patch (a YAML "
                              "list of operations); strategic-merge patches are not used here")
        hits = [o for o in objects if matches_target(o, target)]
        if len(hits) != 1:
            raise RenderError(f"{rel}: patch {patch['path']} matches {len(hits)} objects "
                              f"(target {target}), expected exactly 1")
        try:
            apply_json6902(hits[0], ops[0])
        except RenderError as e:
            raise RenderError(f"{path.relative_to(deploy_dir)}: {e}") from None

    if "namespace" in k:
        for o in objects:
            if o["kind"] not in CLUSTER_SCOPED:
                o.setdefault("metadata", {})["namespace"] = k["namespace"]

    seen: set[str] = set()
    for o in objects:
        if obj_id(o) in seen:
            raise RenderError(f"{rel}: {obj_id(o)} is defined twice")
        seen.add(obj_id(o))
    return objects


# --- invariants -------------------------------------------------------------------------------


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def parse_duration(text: str) -> float:
    m = re.fullmatch(r"(\d+)(ms|s|m|h|d)", text)
    if not m:
        raise ValueError(f"cannot parse duration {text!r}")
    return int(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]


def virtual_mcp_on(cfg: dict) -> bool:
    """connector-executor serves virtual MCP endpoints only with a signing key."""
    vm = cfg.get("virtual_mcp")
    return isinstance(vm, dict) and bool(vm.get("signing_keys"))


def uses_database(svc: str, cfg: dict) -> bool:
    """token-vault, audit-log and schema-watcher always keep state in PostgreSQL;
    connector-executor only for virtual MCP sessions (its [database] is required then, and
    should not be given otherwise)."""
    if svc == "connector-executor":
        return virtual_mcp_on(cfg)
    return "database" in CONFIG_SCHEMA[svc]


def strings(value: Any) -> set[str]:
    """Every string in a parsed config, at any depth."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(strings(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(strings(v) for v in value)) if value else set()
    return set()


def check_virtual_mcp(where: str, cfg: dict, secret_files: set[str]) -> None:
    """connector-executor's [virtual_mcp] and [[virtual_servers]], as far as the binary checks
    them only at start (after --check-config): signing keys, TTLs, servers and their minters."""
    vm = cfg.get("virtual_mcp") if isinstance(cfg.get("virtual_mcp"), dict) else {}
    servers = [s for s in cfg.get("virtual_servers") or [] if isinstance(s, dict)]
    callers = {c.get("name"): c for c in (cfg.get("server") or {}).get("callers") or []
               if isinstance(c, dict)}
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
    if not str(vm.get("public_url", "")).startswith("https://"):
        finding(where, "virtual_mcp.public_url must be the https URL clients reach the Ingress "
                       "by (session URLs are built from it)")
    if vm.get("responses", "json") not in VIRTUAL_MCP_RESPONSES:
        finding(where, f"virtual_mcp.responses must be one of {sorted(VIRTUAL_MCP_RESPONSES)}")
    try:
        d = {k: parse_duration(str(vm.get(k, v))) for k, v in VIRTUAL_MCP_DEFAULTS.items()}
        if not 0 < d["default_ttl"] <= d["max_ttl"]:
            finding(where, "virtual_mcp.default_ttl must be positive and at most max_ttl")
        if not 0 < d["revocation_refresh"] < d["revocation_stale_after"]:
            finding(where, "virtual_mcp.revocation_refresh must be positive and below "
                           "revocation_stale_after (or every replica answers 503)")
    except ValueError as e:
        finding(where, f"virtual_mcp: {e}")
    ids, files = set(), set()
    for n, key in enumerate(k for k in vm["signing_keys"] if isinstance(k, dict)):
        kid, path = str(key.get("id", "")), key.get("key_file")
        if not KEY_ID_SYNTAX.fullmatch(kid):
            finding(where, f"virtual_mcp.signing_keys[{n}].id {kid!r}: letters, digits and '-'")
        if kid in ids or path in files:
            finding(where, f"virtual_mcp.signing_keys[{n}] repeats a key id or key file")
        ids.add(kid)
        files.add(path)
        if path not in secret_files:
            finding(where, f"virtual_mcp.signing_keys[{n}].key_file {path!r} is not a mounted "
                           "Secret item")
    if not servers:
        finding(where, "virtual MCP is on but there are no [[virtual_servers]]: nothing to mint")
    names = set()
    # What each minter's servers expose: connection names, and tool names ("*" for every tool
    # an upstream connection lists).
    exposes: dict[str, dict[str, set]] = {}
    for server in servers:
        name = str(server.get("name", ""))
        at = f"virtual_servers `{name}`"
        if not NAME_SYNTAX.fullmatch(name) or name in names:
            finding(where, f"{at}: the name must be letters, digits, '-' and '_', and unique")
        names.add(name)
        tools = [t for t in server.get("tools") or [] if isinstance(t, dict)]
        if not tools:
            finding(where, f"{at}: tools must name a tool")
        for tool in tools:
            if tool.get("tool") == "*" and (not tool.get("upstream") or tool.get("fixed_inputs")):
                finding(where, f"{at}: tool \"*\" needs upstream = true and no fixed_inputs")
        if not server.get("minters"):
            finding(where, f"{at}: minters must name a caller")
        for minter in server.get("minters") or []:
            if minter not in callers:
                finding(where, f"{at}: minter {minter!r} is not a configured caller")
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


def check_table(where: str, value: dict, schema: dict, prefix: str = "") -> None:
    for key, item in value.items():
        name = prefix + key
        if key not in schema:
            finding(where, f"unknown config key `{name}` (the binary rejects unknown keys)")
            continue
        expected = schema[key]
        if isinstance(expected, dict):
            if not isinstance(item, dict):
                finding(where, f"`{name}` must be a table")
            else:
                check_table(where, item, expected, name + ".")
        elif isinstance(expected, list):
            if not isinstance(item, list) or not all(isinstance(i, dict) for i in item):
                finding(where, f"`{name}` must be an array of tables ([[{name}]])")
                continue
            for n, entry in enumerate(item):
                check_table(where, entry, expected[0], f"{name}[{n}].")
                missing = set(expected[0]) - set(entry) - OPTIONAL_ENTRY_KEYS.get(key, set())
                if missing:
                    finding(where, f"`{name}[{n}]` lacks {sorted(missing)}")
        elif not isinstance(item, expected):
            finding(where, f"`{name}` must be a {expected.__name__}")


def env_path_known(schema: dict, path: list[str]) -> bool:
    node: Any = schema
    for part in path:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return not isinstance(node, dict)


def check_config(svc: str, where: str, toml_text: str, deployment: dict,
                 services: dict[str, dict]) -> float | None:
    try:
        cfg = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as e:
        finding(where, f"config.toml is not valid TOML: {e}")
        return None
    schema = CONFIG_SCHEMA[svc]
    check_table(where, cfg, schema)
    for key in SECRET_KEYS & set(cfg):
        finding(where, f"`[{key}]` must not be in the file: it comes from "
                       f"{ENV_PREFIX[svc]}{key.upper()}__URL (a Secret)")
    for key in sorted(set(schema) - SECRET_KEYS):
        sub = schema[key]
        if key not in cfg:
            if key not in OPTIONAL_KEYS:
                finding(where, f"config.toml lacks `{key}`")
        elif isinstance(sub, dict) and isinstance(cfg[key], dict):
            for inner in sorted(set(sub) - set(cfg[key])):
                if f"{key}.{inner}" not in OPTIONAL_KEYS:
                    finding(where, f"config.toml lacks `{key}.{inner}`")
    server = cfg.get("server") if isinstance(cfg.get("server"), dict) else {}
    if server.get("listen") != f"0.0.0.0:{GRPC_PORT}":
        finding(where, f"server.listen must be \"0.0.0.0:{GRPC_PORT}\"")
    if "oauth" in schema and (cfg.get("oauth") or {}).get("http_listen") != f"0.0.0.0:{HTTP_PORT}":
        finding(where, f"oauth.http_listen must be \"0.0.0.0:{HTTP_PORT}\"")
    if "asana" in cfg and cfg["asana"] != EXPECTED_ASANA:
        finding(where, f"[asana] must be {EXPECTED_ASANA}")

    for n, caller in enumerate(server.get("callers") or []):
        digest = caller.get("key_sha256", "")
        # A FILL-IN placeholder is allowed here (counted as a placeholder in the summary).
        if not digest.startswith("FILL-IN") and not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
            finding(where, f"server.callers[{n}].key_sha256 is not 64 hex digits")
        if not caller.get("tenants"):
            finding(where, f"server.callers[{n}].tenants is empty (use [\"*\"] for any)")
        if not caller.get("roles") and not caller.get("rpcs"):
            finding(where, f"server.callers[{n}] has no roles or rpcs: it could call nothing")

    # Client sections: the URL names an agentauth Service on the gRPC port; the key file is a
    # mounted Secret item.
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
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
    for section, target in CLIENT_SECTIONS.items():
        if section not in cfg or section not in schema:
            continue
        client = cfg[section]
        want = f"http://{target}.{NAMESPACE}.svc:{GRPC_PORT}"
        if client.get("url") != want:
            finding(where, f"[{section}].url must be {want!r}")
        if target not in services:
            finding(where, f"[{section}] points at Service {target!r}, which is not rendered")
        if client.get("api_key_file") not in secret_files:
            finding(where, f"[{section}].api_key_file {client.get('api_key_file')!r} is not a "
                           f"Secret item mounted into {svc}")

    # Env overrides: the service's prefix, a known key, secrets from secretKeyRef.
    env = {e["name"]: e for e in container.get("env", [])}
    for name, entry in env.items():
        literal = entry.get("value", "")
        if re.search(r"://[^/\s:@]+:[^/\s@]+@", literal):
            finding(where, f"env {name} carries a password inline; use a secretKeyRef")
        if "__" in name:
            if not name.startswith(ENV_PREFIX[svc]):
                finding(where, f"env {name} does not use the prefix {ENV_PREFIX[svc]}")
                continue
            path = name[len(ENV_PREFIX[svc]):].lower().split("__")
            if not env_path_known(schema, path):
                finding(where, f"env {name} overrides unknown key `{'.'.join(path)}`")
            if path[0] in SECRET_KEYS and "secretKeyRef" not in (entry.get("valueFrom") or {}):
                finding(where, f"env {name} must come from a secretKeyRef")
    for key in SECRET_KEYS & set(schema):
        name = f"{ENV_PREFIX[svc]}{key.upper()}__URL"
        if uses_database(svc, cfg) and name not in env:
            finding(where, f"{svc} needs {name} (from a Secret): the file has no [{key}]")
        elif not uses_database(svc, cfg) and any(e.startswith(f"{ENV_PREFIX[svc]}{key.upper()}__")
                                                 for e in env):
            finding(where, f"{svc} is given {name} but uses no database here (virtual MCP is "
                           "off): leave the Secret out")
    if svc == "token-vault" and "secretKeyRef" not in (env.get("VAULT_TOKEN", {}).get("valueFrom") or {}):
        finding(where, "token-vault needs VAULT_TOKEN from a secretKeyRef")

    watches = cfg.get("watches") if isinstance(cfg.get("watches"), list) else []
    if "watches" in schema and not watches:
        finding(where, "no [[watches]]: schema-watcher would poll nothing")
    seen_connections = set()
    for n, watch in enumerate(w for w in watches if isinstance(w, dict)):
        if watch.get("mode") not in WATCH_MODES:
            finding(where, f"watches[{n}].mode must be one of {sorted(WATCH_MODES)}")
        for field in ("connection", "tenant", "identifier"):
            if not str(watch.get(field, "")).strip():
                finding(where, f"watches[{n}].{field} is empty")
        if watch.get("connection") in seen_connections:
            finding(where, f"connection {watch.get('connection')!r} is watched twice")
        seen_connections.add(watch.get("connection"))

    try:
        return parse_duration(server.get("shutdown_grace", ""))
    except ValueError as e:
        finding(where, str(e))
        return None


def check_deployment(svc: str, where: str, dep: dict, grace: float | None,
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

    psc = pod.get("securityContext", {})
    if psc.get("runAsNonRoot") is not True:
        finding(where, "pod securityContext.runAsNonRoot must be true")
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

    if len(pod["containers"]) != 1:
        finding(where, "expected exactly one container")
    c = pod["containers"][0]
    image = c.get("image", "")
    if not re.fullmatch(rf"[^\s]+/{re.escape(svc)}(:[\w.-]+)?(@sha256:[0-9a-f]{{64}})?", image):
        finding(where, f"image {image!r} is not <registry>/{svc}:<tag>")
    if c.get("args") != ["--config", "/etc/agentauth/config.toml"]:
        finding(where, "args must be --config /etc/agentauth/config.toml")
    csc = c.get("securityContext", {})
    if csc.get("readOnlyRootFilesystem") is not True:
        finding(where, "readOnlyRootFilesystem must be true")
    if csc.get("allowPrivilegeEscalation") is not False:
        finding(where, "allowPrivilegeEscalation must be false")
    if csc.get("capabilities", {}).get("drop") != ["ALL"]:
        finding(where, "capabilities.drop must be [ALL]")
    if csc.get("capabilities", {}).get("add"):
        finding(where, "no capabilities may be added")
    for probe in ("readinessProbe", "livenessProbe"):
        if c.get(probe, {}).get("grpc", {}).get("port") != GRPC_PORT:
            finding(where, f"{probe} must be a grpc probe on port {GRPC_PORT}")
    for kind in ("requests", "limits"):
        for res in ("cpu", "memory"):
            if res not in c.get("resources", {}).get(kind, {}):
                finding(where, f"resources.{kind}.{res} is missing")
    ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
    want_ports = {"grpc": GRPC_PORT} | ({"http": HTTP_PORT} if svc in HTTP_SERVICES else {})
    if ports != want_ports:
        finding(where, f"container ports {ports} != {want_ports}")

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


def check_network(where: str, objects: list[dict], db_users: set[str]) -> None:
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
        for direction, expected in (("egress", EXPECTED_EXTERNAL_EGRESS),
                                    ("ingress", EXPECTED_EXTERNAL_INGRESS)):
            got = {(proto, port) for peer, proto, port in allowed[direction][svc] if peer == "external"}
            want = set(expected.get(svc, set()))
            if direction == "egress" and svc in db_users:
                want.add(POSTGRES)
            if got != want:
                finding(where, f"{svc}: external {direction} ports {sorted(got)} != "
                               f"expected {sorted(want)}")


def load_config(configmaps: dict[str, dict], svc: str) -> dict:
    try:
        return tomllib.loads((configmaps.get(f"{svc}-config", {}).get("data") or {})
                            .get("config.toml", ""))
    except tomllib.TOMLDecodeError:
        return {}  # reported by check_config


def check_watcher_scope(where: str, configmaps: dict[str, dict]) -> None:
    """schema-watcher's caller entry on connector-executor is least-privilege: role `watcher`
    only, for exactly the tenants and connections its [[watches]] name; and pinned watches
    are enforced only if connector-executor asks schema-watcher ([schema_watcher])."""
    caller, callee = WATCHER_EDGE
    watches = [w for w in load_config(configmaps, caller).get("watches") or []
               if isinstance(w, dict)]
    executor = load_config(configmaps, callee)
    entries = [c for c in (executor.get("server") or {}).get("callers") or []
               if isinstance(c, dict) and c.get("name") == caller]
    if not entries:
        finding(where, f"{callee} has no caller entry for {caller}, which lists its watches "
                       "through it")
        return
    entry = entries[0]
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


def check_root(name: str, objects: list[dict]) -> None:
    expect = ROOT_EXPECTATIONS.get(name, {})
    deployments = by_kind(objects, "Deployment")
    configmaps = by_kind(objects, "ConfigMap")
    services = by_kind(objects, "Service")
    sas = by_kind(objects, "ServiceAccount")
    pdbs = [o for o in objects if o["kind"] == "PodDisruptionBudget"]

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
        check_deployment(svc, where, dep, grace, sas, expect)
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        if not any(selector_matches(p["spec"].get("selector"), pod_labels) for p in pdbs):
            finding(where, "no PodDisruptionBudget selects its pods")
        svc_obj = services.get(svc)
        if svc_obj is None:
            finding(where, "no Service")
        else:
            if not selector_matches({"matchLabels": svc_obj["spec"].get("selector")}, pod_labels):
                finding(where, "its Service does not select its pods")
            ports = {p["name"]: p["port"] for p in svc_obj["spec"].get("ports", [])}
            if ports.get("grpc") != GRPC_PORT or (svc in HTTP_SERVICES) != ("http" in ports):
                finding(where, f"Service ports {ports} do not match the listeners")

    check_watcher_scope(name, configmaps)
    db_users = {svc for svc in SERVICES if uses_database(svc, load_config(configmaps, svc))}
    check_network(name, objects, db_users)

    backends = set()
    # (host, path) routed to connector-executor's http port, and hosts served over TLS.
    mcp_routes: set[tuple[str, str]] = set()
    tls_hosts: set[str] = set()
    for ing in (o for o in objects if o["kind"] == "Ingress"):
        for tls in ing["spec"].get("tls") or []:
            tls_hosts |= set(tls.get("hosts") or [])
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                svc = path["backend"]["service"]
                backends.add((svc["name"], svc["port"].get("name")))
                if (svc["name"], svc["port"].get("name")) != ("connector-executor", "http"):
                    continue
                mcp_routes.add((rule.get("host", ""), path.get("path", "")))
                # Nothing but the virtual MCP endpoints is served on that port (webhook intake
                # is not implemented), so nothing else may be routed to it.
                if path.get("path") not in VIRTUAL_MCP_PATHS or path.get("pathType") != "Prefix":
                    finding(f"{name}: {obj_id(ing)}",
                            f"routes {path.get('path')!r} ({path.get('pathType')}) to "
                            f"connector-executor:http, which serves only the Prefix paths "
                            f"{sorted(VIRTUAL_MCP_PATHS)}")
        if not ing["spec"].get("tls"):
            finding(f"{name}: {obj_id(ing)}", "Ingress without TLS")
    executor = load_config(configmaps, "connector-executor")
    if mcp_routes and not virtual_mcp_on(executor):
        finding(name, "an Ingress routes to connector-executor:http, but virtual MCP is off: "
                      "nothing listens there")
    if mcp_routes and virtual_mcp_on(executor):
        vm = executor["virtual_mcp"]
        url = urlsplit(str(vm.get("public_url", "")))
        host = url.hostname or ""
        if url.path not in ("", "/") or url.port not in (None, 443):
            finding(name, f"virtual_mcp.public_url {vm.get('public_url')!r} must be https://<host> "
                          "(the Ingress routes /mcp/… at the root, on 443)")
        for path in sorted(VIRTUAL_MCP_PATHS):
            if (host, path) not in mcp_routes:
                finding(name, f"no Ingress routes {host}{path} (virtual_mcp.public_url's host) to "
                              "connector-executor:http")
        if host not in tls_hosts:
            finding(name, f"virtual_mcp.public_url's host {host!r} is not served over TLS")
        routed_hosts = {h for h, _ in mcp_routes}
        for allowed in vm.get("allowed_hosts") or [host]:
            if allowed not in routed_hosts:
                finding(name, f"virtual_mcp.allowed_hosts names {allowed!r}, which no Ingress "
                              "routes to connector-executor:http")
    wanted_backends = set(expect.get("ingress_backends", set()))
    if not virtual_mcp_on(executor):  # then nothing listens on connector-executor's http port
        wanted_backends.discard(("connector-executor", "http"))
    for backend in sorted(wanted_backends - backends):
        finding(name, f"no Ingress routes to {backend[0]}:{backend[1]}")
    policies = by_kind(objects, "NetworkPolicy")
    for pol in sorted(expect.get("ipblock_policies", set())):
        peers = [peer for rule in policies.get(pol, {}).get("spec", {}).get("egress", [])
                 for peer in rule.get("to", [])]
        if not peers or any("ipBlock" not in peer for peer in peers):
            finding(name, f"NetworkPolicy {pol} must point at the external service by ipBlock")


def write_binary_inputs(objects: list[dict], target: Path) -> None:
    """For `--check-config` runs of the real binaries (check.sh, AGENTAUTH_BIN_DIR): each
    service's config.toml with FILL-IN digests replaced by distinct dummy digests, and the env
    its Deployment sets, with dummy values in place of Secret references."""
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
                value = ("postgres://check@127.0.0.1:5432/check" if e["name"].endswith("__URL")
                         else "check-dummy-secret")
            elif "value" in e:
                value = e["value"]
            else:
                continue  # fieldRef and the like exist only in a pod
            lines.append(f"{e['name']}={value}\n")
        (target / f"{svc}.env").write_text("".join(lines))


def compare(rendered_dir: Path, kustomize_output: Path) -> int:
    """Compare check.py's render of one root with `kubectl kustomize` output for the same root."""
    def index(docs: list[Any]) -> dict[str, Any]:
        return {obj_id(o): o for o in docs if isinstance(o, dict)}
    mine = index([o for f in sorted(rendered_dir.glob("*.yaml")) for o in load_docs(f)])
    real = index(load_docs(kustomize_output))
    diffs = sorted(set(mine) ^ set(real)) + sorted(k for k in set(mine) & set(real) if mine[k] != real[k])
    for k in diffs:
        print(f"FINDING {rendered_dir.name}: {k} differs between check.py's render and kustomize")
    return 1 if diffs else 0


def check_admission(configs_dir: Path) -> int:
    """Each root's callers as the binaries resolve them (`<service> --print-access`, written
    by check.sh as `<service>.access.json`) against EDGE_NEEDS and RESERVED_RPCS."""
    problems = []
    for root in sorted(p for p in configs_dir.iterdir() if p.is_dir()):
        watcher_toml = root / f"{WATCHER_EDGE[0]}.toml"
        watches = (tomllib.loads(watcher_toml.read_text()).get("watches") or []
                   if watcher_toml.is_file() else [])
        access = {}
        for path in root.glob("*.access.json"):
            callers = json.loads(path.read_text())
            access[path.name.removesuffix(".access.json")] = {
                c["name"]: {**c, "methods": {r.rsplit("/", 1)[1] for r in c["rpcs"]}}
                for c in callers
            }
        for (caller, callee), needs in sorted(EDGE_NEEDS.items()):
            entry = access.get(callee, {}).get(caller)
            if entry is None:
                problems.append(f"{root.name}: {callee} does not admit {caller}, which calls "
                                f"{', '.join(sorted(needs))} on it")
                continue
            missing = needs - entry["methods"]
            if missing:
                problems.append(f"{root.name}: {callee} admits {caller} without "
                                f"{', '.join(sorted(missing))}")
            if (caller, callee) == WATCHER_EDGE:
                extra = entry["methods"] - needs
                if extra:
                    problems.append(f"{root.name}: {callee} grants {caller} "
                                    f"{', '.join(sorted(extra))} beyond what polling needs")
                for field, key in (("tenants", "tenant"), ("connections", "connection")):
                    want = {w.get(key) for w in watches}
                    if set(entry[field]) != want:
                        problems.append(f"{root.name}: {callee} admits {caller} for {field} "
                                        f"{entry[field]}, not exactly its watches' {sorted(want)}")
            elif entry["tenants"] != ["*"]:
                problems.append(f"{root.name}: {callee} admits {caller} for tenants "
                                f"{entry['tenants']}, not every tenant")
        # MintMcpSession, as the binary resolves roles and rpcs: held by exactly the minters of
        # connector-executor's virtual servers.
        executor_toml = root / "connector-executor.toml"
        servers = (tomllib.loads(executor_toml.read_text()).get("virtual_servers") or []
                   if executor_toml.is_file() else [])
        minters = {m for s in servers for m in s.get("minters") or []}
        for name, entry in sorted(access.get("connector-executor", {}).items()):
            if "MintMcpSession" in entry["methods"] and name not in minters:
                problems.append(f"{root.name}: connector-executor grants MintMcpSession to "
                                f"{name}, a minter of no virtual server")
        for name in sorted(minters):
            if "MintMcpSession" not in access.get("connector-executor", {}).get(name, {}).get(
                    "methods", set()):
                problems.append(f"{root.name}: connector-executor's minter {name} is not "
                                "granted MintMcpSession")
        for (service, rpc), holders in sorted(RESERVED_RPCS.items()):
            for name, entry in sorted(access.get(service, {}).items()):
                if rpc in entry["methods"] and name not in holders:
                    problems.append(f"{root.name}: {service} grants {rpc} to {name}; only "
                                    f"{', '.join(sorted(holders))} may hold it")
    for problem in problems:
        print(f"FINDING {problem}")
    print(f"admission: {len(problems)} finding(s)")
    return 1 if problems else 0


def main() -> int:
    if sys.argv[1] == "--compare":
        return compare(Path(sys.argv[2]), Path(sys.argv[3]))
    if sys.argv[1] == "--admission":
        return check_admission(Path(sys.argv[2]))
    deploy_dir = Path(sys.argv[1]).resolve()
    out_dir = Path(sys.argv[2]).resolve()
    overlays = (deploy_dir / "overlays").glob("*/kustomization.yaml")
    roots = [deploy_dir / "base"] + sorted(p.parent for p in overlays)
    referenced: set[Path] = set()
    raw_files: list[Path] = []
    rendered_all = True
    for root in roots:
        name = str(root.relative_to(deploy_dir))
        try:
            objects = render(root, deploy_dir, referenced, raw_files)
        except (RenderError, yaml.YAMLError, OSError) as e:
            finding(name, f"cannot render: {e}")
            rendered_all = False
            continue
        check_root(name, objects)
        write_binary_inputs(objects, out_dir / "configs" / name.replace("/", "-"))
        target = out_dir / "rendered" / name.replace("/", "-")
        target.mkdir(parents=True, exist_ok=True)
        text = ""
        for n, obj in enumerate(objects):
            dump = yaml.safe_dump(obj, sort_keys=False)
            text += dump
            (target / f"{n:02d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml").write_text(dump)
        count = len(PLACEHOLDER.findall(text))
        print(f"rendered {name}: {len(objects)} objects -> {target.relative_to(out_dir)}")
        if name.startswith("overlays/") and count:
            print(f"note: {name} still holds {count} placeholders to fill in before deploying "
                  "(FILL-IN…, *.agentauth.example, RFC 5737 address ranges; see deploy/README.md)")

    if rendered_all:  # after a failed render, everything after it would look unreferenced
        for path in sorted(deploy_dir.rglob("*.yaml")) + sorted(deploy_dir.rglob("*.yml")):
            if path.resolve() not in referenced:
                finding(str(path.relative_to(deploy_dir)), "not referenced by any kustomization.yaml")

    (out_dir / "raw-files.txt").write_text("".join(f"{p}\n" for p in dict.fromkeys(raw_files)))
    findings[:] = list(dict.fromkeys(findings))  # a base error shows up once per root
    for f in findings:
        print(f"FINDING {f}")
    print(f"check.py: {len(findings)} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
