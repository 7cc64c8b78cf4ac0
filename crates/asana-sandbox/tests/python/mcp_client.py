"""An independent MCP peer for the asana-sandbox tests: the official Python `mcp` SDK (2.x)
client, pointed at the sandbox's `/v2/mcp` with a bearer token.

It connects (`--mode auto` probes 2026-07-28 and falls back to `initialize`; `--mode legacy`
forces the handshake), walks every `tools/list` page, optionally calls one tool, optionally
watches for `notifications/tools/list_changed` while it adds a tool through the sandbox's
control API, and prints one JSON object with what it saw. A refused connection prints
`{"error": {"class", "code", "message"}, "challenge": <WWW-Authenticate of a 401>}` and exits
0: refusal is an outcome the caller checks.

    python mcp_client.py --url http://127.0.0.1:PORT/v2/mcp --token TOKEN [--mode legacy]
        [--call get_me --arguments '{}'] [--watch-tool NAME --control-key KEY]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

import anyio
import httpx2
import mcp
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

WATCH_SECONDS = 15.0


def leaf_error(error: BaseException) -> BaseException:
    """The first MCPError inside (task groups wrap errors in exception groups), else the leaf."""
    pending = [error]
    leaves = []
    while pending:
        current = pending.pop(0)
        if isinstance(current, MCPError):
            return current
        nested = getattr(current, "exceptions", None)
        if nested:
            pending.extend(nested)
        else:
            leaves.append(current)
    return leaves[0] if leaves else error


def describe_error(error: BaseException) -> dict[str, Any]:
    leaf = leaf_error(error)
    return {
        "class": type(leaf).__name__,
        "code": leaf.code if isinstance(leaf, MCPError) else None,
        "message": str(leaf),
    }


async def all_tools(client: mcp.Client) -> tuple[list[str], int]:
    """Every tool name, following `nextCursor`; and how many pages it took."""
    names: list[str] = []
    cursor = None
    pages = 0
    while True:
        result = await client.list_tools(cursor=cursor, cache_mode="bypass")
        pages += 1
        names.extend(tool.name for tool in result.tools)
        cursor = result.next_cursor
        if cursor is None:
            return names, pages


async def control(http: httpx2.AsyncClient, args: argparse.Namespace, method: str, path: str, **kwargs: Any) -> Any:
    base = args.url.split("/v2/mcp")[0]
    response = await http.request(
        method,
        f"{base}/_sandbox/mcp/{path}",
        headers={"X-Sandbox-Control-Key": args.control_key},
        **kwargs,
    )
    response.raise_for_status()
    return response.json() if response.content else None


async def add_watched_tool(http: httpx2.AsyncClient, args: argparse.Namespace) -> None:
    await control(
        http,
        args,
        "POST",
        "tools",
        json={
            "tool": {
                "name": args.watch_tool,
                "description": "added by the Python peer",
                "inputSchema": {"type": "object"},
                "annotations": {"readOnlyHint": True},
            },
            "result": {"content": [{"type": "text", "text": "fixed"}]},
        },
    )


async def watch_legacy(client: mcp.Client, http: httpx2.AsyncClient, args: argparse.Namespace, changed: anyio.Event) -> bool:
    """Handshake era: the notification arrives on the session's GET stream, which the SDK
    opens by itself after `initialized`; wait until the sandbox sees it open first."""
    with anyio.fail_after(WATCH_SECONDS):
        while not any(s["stream_open"] for s in (await control(http, args, "GET", "sessions"))["sessions"]):
            await anyio.sleep(0.02)
        await add_watched_tool(http, args)
        await changed.wait()
    return True


async def watch_modern(client: mcp.Client, http: httpx2.AsyncClient, args: argparse.Namespace) -> bool:
    """2026-07-28: the notification arrives on a `subscriptions/listen` stream."""
    with anyio.fail_after(WATCH_SECONDS):
        async with client.listen(tools_list_changed=True) as subscription:
            await add_watched_tool(http, args)
            async for _event in subscription:
                return True
    return False


async def run(args: argparse.Namespace) -> dict[str, Any]:
    seen: dict[str, Any] = {"mode": args.mode}
    changed = anyio.Event()

    async def on_message(message: Any) -> None:
        if isinstance(message, mcp.types.ToolListChangedNotification):
            changed.set()

    async def on_response(response: httpx2.Response) -> None:
        # What the SDK does not surface: the status and challenge of a refusal.
        if response.status_code == 401:
            seen["challenge"] = response.headers.get("www-authenticate")

    timeout = httpx2.Timeout(30.0, read=60.0)
    headers = {"Authorization": f"Bearer {args.token}"}
    hooks = {"response": [on_response]}
    async with httpx2.AsyncClient(headers=headers, timeout=timeout, event_hooks=hooks) as http:
        try:
            transport = streamable_http_client(args.url, http_client=http)
            async with mcp.Client(transport, mode=args.mode, message_handler=on_message) as client:
                seen["protocol_version"] = client.protocol_version
                seen["server_name"] = client.server_info.name if client.server_info else None
                seen["tools"], seen["pages"] = await all_tools(client)
                if args.call:
                    result = await client.call_tool(args.call, json.loads(args.arguments))
                    seen["call"] = {
                        "is_error": bool(result.is_error),
                        "structured": result.structured_content,
                        "text": [block.text for block in result.content if block.type == "text"],
                    }
                if args.watch_tool:
                    if client.protocol_version == "2026-07-28":
                        seen["list_changed"] = await watch_modern(client, http, args)
                    else:
                        seen["list_changed"] = await watch_legacy(client, http, args, changed)
                    seen["tools_after"], _ = await all_tools(client)
        except Exception as error:  # noqa: BLE001 - the caller asserts on the class and code
            seen["error"] = describe_error(error)
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="the MCP endpoint, e.g. http://127.0.0.1:8787/v2/mcp")
    parser.add_argument("--token", required=True, help="a bearer token")
    parser.add_argument("--mode", default="auto", choices=["auto", "legacy"])
    parser.add_argument("--call", help="a tool to call after listing")
    parser.add_argument("--arguments", default="{}", help="the call's arguments, as JSON")
    parser.add_argument("--watch-tool", help="add this tool through the control API and wait for list_changed")
    parser.add_argument("--control-key", default="", help="the sandbox's control key (with --watch-tool)")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args)), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
