#!/usr/bin/env python3
"""Offline checks of the container build (no engine needed). Run by deploy/check.sh after
hadolint has linted the same file.

    check.py REPO_ROOT RENDERED_DIR

- deploy/images/Dockerfile parses (dockerfile-parse); every FROM is pinned by digest
  (`image:tag@sha256:<64 hex>`) or names an earlier stage;
- the build stage compiles the four services with `cargo build --locked` in a step without
  network, with reproducible flags (CARGO_INCREMENTAL=0, --remap-path-prefix,
  SOURCE_DATE_EPOCH);
- each service has a stage of its name whose user (its own USER or the one it inherits) is
  65532, which runs nothing (no RUN: nothing is fetched or executed in the runtime), copies its
  binary from the build stage, and whose ENTRYPOINT is that binary, as the exec form
  ["/usr/local/bin/<service>"];
- that binary is the one the Deployments expect: the service's Cargo package builds a binary of
  the service's name, every rendered Deployment (RENDERED_DIR/*.yaml, `kubectl kustomize`
  output) runs an image named after it with no `command` (so the entrypoint runs) and only
  `--config <file>` as args, and `deploy/images/build.sh --dry-run` tags exactly the images the
  base Deployments name;
- .dockerignore keeps target/, .tools/, .data/ and .git/ out of the build context and every
  source the build needs in.

Prints one `FINDING …` line per problem; exits 1 if there is any.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import yaml
from dockerfile_parse import DockerfileParser

SERVICES = ("token-vault", "connector-executor", "audit-log", "schema-watcher")
RUNTIME_USER = "65532"
PINNED = re.compile(r"[a-z0-9][\w.\-/:]*@sha256:[0-9a-f]{64}")
ARGS = ["--config", "/etc/agentauth/config.toml"]
# Paths that must not reach the build context, and paths the build reads.
KEPT_OUT = ["target/release/token-vault", ".tools/venv/bin/python", ".data/keys/agent.key",
            ".git/HEAD", "tests/python/__pycache__/x.pyc"]
KEPT_IN = ["Cargo.toml", "Cargo.lock", "proto/agentauth/vault/v1/token_vault.proto",
           "services/token-vault/src/main.rs", "crates/agentauth-proto/build.rs",
           "crates/asana-sandbox/spec/asana_oas.yaml", "crates/asana-tools/generated/rest_tools.json",
           "tests/Cargo.toml", "deploy/images/Dockerfile"]

findings: list[str] = []


def finding(where: str, message: str) -> None:
    findings.append(f"{where}: {message}")


def stages(dockerfile: Path) -> list[dict]:
    """The build's stages in order: name, base (FROM) and instructions (name, value)."""
    parser = DockerfileParser(path=str(dockerfile))
    out: list[dict] = []
    for ins in parser.structure:
        if ins["instruction"] == "COMMENT":
            continue
        if ins["instruction"] == "FROM":
            parts = ins["value"].split()
            if parts and parts[0].startswith("--"):
                finding(f"Dockerfile:{ins['startline'] + 1}", f"FROM flags are not used here: {parts[0]}")
                parts = parts[1:]
            name = parts[2] if len(parts) == 3 and parts[1].upper() == "AS" else None
            if len(parts) not in (1, 3) or (len(parts) == 3 and name is None):
                finding(f"Dockerfile:{ins['startline'] + 1}", f"cannot read FROM {ins['value']!r}")
            out.append({"name": name, "base": parts[0] if parts else "", "line": ins["startline"] + 1,
                        "instructions": []})
        elif not out:
            if ins["instruction"] != "ARG":
                finding(f"Dockerfile:{ins['startline'] + 1}", f"{ins['instruction']} before any FROM")
        else:
            out[-1]["instructions"].append((ins["instruction"], ins["value"], ins["startline"] + 1))
    return out


def chain(stage: dict, by_name: dict[str, dict]) -> list[dict]:
    """The stage and the stages it is built FROM, nearest first."""
    seen = [stage]
    while seen[-1]["base"] in by_name and by_name[seen[-1]["base"]] not in seen:
        seen.append(by_name[seen[-1]["base"]])
    return seen


def last(stage_chain: list[dict], instruction: str) -> tuple[str, int] | None:
    for stage in stage_chain:
        for name, value, line in reversed(stage["instructions"]):
            if name == instruction:
                return value, line
    return None


def check_dockerfile(dockerfile: Path) -> None:
    all_stages = stages(dockerfile)
    by_name: dict[str, dict] = {}
    for stage in all_stages:
        where = f"Dockerfile:{stage['line']}"
        if stage["base"] in by_name:
            pass  # an earlier stage
        elif "$" in stage["base"]:
            finding(where, f"FROM {stage['base']!r} uses a build argument: the base is not pinned "
                           "in the file")
        elif not PINNED.fullmatch(stage["base"]):
            finding(where, f"FROM {stage['base']!r} is not pinned by digest (image:tag@sha256:…)")
        if stage["name"]:
            if stage["name"] in by_name:
                finding(where, f"stage {stage['name']!r} is defined twice")
            by_name[stage["name"]] = stage

    # The build stage: the one every service stage copies its binary from.
    build_names = set()
    for svc in SERVICES:
        stage = by_name.get(svc)
        where = f"Dockerfile, stage {svc}"
        if stage is None:
            finding("Dockerfile", f"no stage {svc!r} (docker build --target {svc})")
            continue
        stages_of = chain(stage, by_name)
        user = last(stages_of, "USER")
        if user is None or user[0].split(":")[0] != RUNTIME_USER or \
                user[0].split(":")[1:] not in ([], [RUNTIME_USER]):
            finding(where, f"runs as {user[0] if user else 'root (no USER)'!r}, not "
                           f"{RUNTIME_USER}:{RUNTIME_USER}")
        for s in stages_of:
            for name, value, line in s["instructions"]:
                if name in ("RUN", "ADD"):
                    finding(f"Dockerfile:{line}", f"{name} in the runtime of {svc}: the final "
                                                  "stages only copy the built binary")
        entry = last(stages_of, "ENTRYPOINT")
        binary = f"/usr/local/bin/{svc}"
        try:
            entry_value = json.loads(entry[0]) if entry else None
        except json.JSONDecodeError:
            entry_value = entry[0] if entry else None
        if entry_value != [binary]:
            finding(where, f"ENTRYPOINT is {entry_value!r}, not [\"{binary}\"] (exec form, the "
                           "binary the Deployment runs with its args)")
        if last(stages_of, "CMD") is not None:
            finding(where, "CMD is set: the Deployment's args are the only arguments")
        copies = [v for n, v, _ in stage["instructions"] if n == "COPY" and v.split()[-1] == binary]
        if len(copies) != 1:
            finding(where, f"expected one COPY of the binary to {binary}, found {len(copies)}")
        for value in copies:
            words = value.split()
            source = next((w.split("=", 1)[1] for w in words if w.startswith("--from=")), None)
            if source not in by_name:
                finding(where, f"the binary is not copied from a build stage (COPY {value})")
            else:
                build_names.add(source)
            if words[-2] != f"/out/{svc}":
                finding(where, f"copies {words[-2]!r}, not the build's /out/{svc}")

    for name in sorted(build_names):
        check_build_stage(name, by_name[name])


def check_build_stage(name: str, stage: dict) -> None:
    where = f"Dockerfile, stage {name}"
    instructions = stage["instructions"]
    text = "\n".join(f"{n} {v}" for n, v, _ in instructions)
    builds = [(v, line) for n, v, line in instructions if n == "RUN" and "cargo build" in v]
    if len(builds) != 1:
        finding(where, f"expected one RUN with cargo build, found {len(builds)}")
        return
    build, line = builds[0]
    if not build.startswith("--network=none") and " --network=none" not in build.split("cargo")[0]:
        finding(f"Dockerfile:{line}", "cargo build runs with network: give its RUN --network=none")
    if "--locked" not in build and "--frozen" not in build:
        finding(f"Dockerfile:{line}", "cargo build without --locked: Cargo.lock could be rewritten")
    if "--release" not in build:
        finding(f"Dockerfile:{line}", "cargo build without --release")
    for svc in SERVICES:
        if not re.search(rf"(-p|--package)[ =]{re.escape(svc)}(\s|$)", build):
            finding(f"Dockerfile:{line}", f"cargo build does not build package {svc}")
        if not re.search(rf"/out/\*|/out/{re.escape(svc)}", build) or \
                f"target/release/{svc}" not in build:
            finding(f"Dockerfile:{line}", f"target/release/{svc} is not put into /out/")
    if not re.search(r"\bCARGO_INCREMENTAL=0\b", text):
        finding(where, "CARGO_INCREMENTAL=0 is not set")
    if "--remap-path-prefix" not in text:
        finding(where, "no --remap-path-prefix: build paths would end up in the binaries")
    if not re.search(r"^ARG SOURCE_DATE_EPOCH\b", text, re.M) or "SOURCE_DATE_EPOCH" not in build:
        finding(where, "the binaries' timestamps do not come from SOURCE_DATE_EPOCH")


def check_binaries(repo_root: Path) -> None:
    """target/release/<service> is the service's binary: its package is named after it and
    declares no other binary name."""
    for svc in SERVICES:
        manifest = repo_root / "services" / svc / "Cargo.toml"
        if not manifest.is_file():
            finding(str(manifest.relative_to(repo_root)), "missing")
            continue
        cargo = tomllib.loads(manifest.read_text())
        names = {b.get("name") for b in cargo.get("bin") or []} or {cargo["package"]["name"]}
        if svc not in names:
            finding(str(manifest.relative_to(repo_root)), f"builds binaries {sorted(names)}, not {svc}")


def check_deployments(repo_root: Path, rendered_dir: Path) -> None:
    roots = sorted(rendered_dir.glob("*.yaml"))
    if not roots:
        finding(str(rendered_dir), "no rendered roots to compare the images with")
    base_images = {}
    for path in roots:
        deployments = {o["metadata"]["name"]: o for o in yaml.safe_load_all(path.read_text())
                       if o and o.get("kind") == "Deployment"}
        for svc in SERVICES:
            dep = deployments.get(svc)
            where = f"{path.stem}: Deployment {svc}"
            if dep is None:
                finding(where, "not rendered")
                continue
            container = dep["spec"]["template"]["spec"]["containers"][0]
            image = container.get("image", "")
            repository = re.sub(r"(@sha256:[0-9a-f]+)$", "", image)
            repository = re.sub(r":[\w.-]+$", "", repository)
            if repository.rsplit("/", 1)[-1] != svc:
                finding(where, f"runs image {image!r}, not an image of the {svc} build stage")
            if "command" in container:
                finding(where, f"sets command {container['command']!r}: the image's entrypoint "
                               f"/usr/local/bin/{svc} would not run")
            if container.get("args") != ARGS:
                finding(where, f"args {container.get('args')!r} != {ARGS}")
            if path.stem == "base":
                base_images[svc] = image
    out = subprocess.run([str(repo_root / "deploy/images/build.sh"), "--dry-run"],
                         capture_output=True, text=True,
                         env={"PATH": "/usr/bin:/bin", "SOURCE_DATE_EPOCH": "0"})
    if out.returncode != 0:
        finding("deploy/images/build.sh --dry-run", f"exit {out.returncode}: {out.stderr.strip()}")
        return
    tags = {}
    for line in out.stdout.splitlines():
        words = line.split()
        target, tag = words[words.index("--target") + 1], words[words.index("--tag") + 1]
        tags[target] = tag
    if set(tags) != set(SERVICES):
        finding("deploy/images/build.sh", f"builds targets {sorted(tags)}, not {sorted(SERVICES)}")
    for svc, image in sorted(base_images.items()):
        if tags.get(svc) != image:
            finding("deploy/images/build.sh", f"tags {tags.get(svc)!r} but the base Deployment "
                                              f"{svc} runs {image!r}")


def ignore_regex(pattern: str) -> re.Pattern:
    """A .dockerignore pattern (Go filepath.Match syntax plus `**`) as a regex on a path."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + "[" + pattern[i + 1:end] + "]", end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def excluded(rules: list[tuple[bool, re.Pattern]], path: str) -> bool:
    """Whether the build context leaves `path` out: the last rule that matches the path or one
    of its parent directories decides (`!` rules put paths back)."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
    verdict = False
    for negate, regex in rules:
        if any(regex.fullmatch(p) for p in prefixes):
            verdict = not negate
    return verdict


def check_dockerignore(repo_root: Path) -> None:
    path = repo_root / ".dockerignore"
    if not path.is_file():
        finding(".dockerignore", "missing: target/, .tools/ and .data/ would go into the context")
        return
    rules = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line[1:] if negate else line
        pattern = re.sub(r"/+", "/", pattern).strip("/") or "."
        rules.append((negate, ignore_regex(pattern)))
    for p in KEPT_OUT:
        if not excluded(rules, p):
            finding(".dockerignore", f"{p} would be sent into the build context")
    for p in KEPT_IN:
        if excluded(rules, p):
            finding(".dockerignore", f"{p} is left out of the build context, but the build reads it")


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    repo_root, rendered_dir = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    check_dockerfile(repo_root / "deploy/images/Dockerfile")
    check_binaries(repo_root)
    check_deployments(repo_root, rendered_dir)
    check_dockerignore(repo_root)
    for f in dict.fromkeys(findings):
        print(f"FINDING {f}")
    print(f"images: {len(dict.fromkeys(findings))} finding(s)")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
