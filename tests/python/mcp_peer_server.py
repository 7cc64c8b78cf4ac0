"""An independent MCP server for connector-executor's MCP client tests.

Built with the official Python `mcp` SDK (v2, `MCPServer`), served over Streamable HTTP in
stateful (session) mode with JSON responses, like a 2025-era Asana V2 server:

    python mcp_peer_server.py PORT [--accept-any-bearer]

Tools: `echo` (returns its text), `add` (a + b, with structured output), `fail` (raises, so
the result has `isError: true`), `sessions` (how many sessions the server has opened so
far, so a client test can prove it reuses one) and `evolve` (changes the tool list the way an
upstream update would: `add` takes a third, required integer `c`, and `subtract` appears; for
drift tests). Every request must carry
`Authorization: Bearer peer-token`; anything else gets a 401 with a `WWW-Authenticate`
challenge, as Asana answers. With `--accept-any-bearer` any non-empty bearer token passes (for a
client whose tokens another authorization server issues).
"""

import json
import sys

import uvicorn
from pydantic import BaseModel

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

TOKEN = "peer-token"
SESSION_HEADER = b"mcp-session-id"

# Session ids the server has handed out (on `initialize` responses).
opened_sessions: set[bytes] = set()

server = MCPServer(name="agentauth-mcp-peer", version="1", log_level="WARNING")


class Sum(BaseModel):
    sum: int


@server.tool(
    description="Returns its text.",
    annotations=ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=False),
)
def echo(text: str) -> str:
    return text


@server.tool(
    title="Add",
    description="Adds two integers.",
    annotations=ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=False),
)
def add(a: int, b: int) -> Sum:
    return Sum(sum=a + b)


@server.tool(description="Always fails.")
def fail(reason: str = "failed on purpose") -> str:
    raise ToolError(reason)


@server.tool(
    description="How many MCP sessions the server has opened so far.",
    annotations=ToolAnnotations(readOnlyHint=True, openWorldHint=False),
)
def sessions() -> int:
    return len(opened_sessions)


def add_three(a: int, b: int, c: int) -> Sum:
    return Sum(sum=a + b + c)


def subtract(a: int, b: int) -> int:
    return a - b


evolved = False


@server.tool(description="Changes this server's tools, as an upstream update would.")
def evolve() -> str:
    global evolved
    if not evolved:
        evolved = True
        server.remove_tool("add")
        server.add_tool(
            add_three,
            name="add",
            title="Add",
            description="Adds three integers.",
            annotations=ToolAnnotations(readOnlyHint=True, idempotentHint=True, openWorldHint=False),
        )
        server.add_tool(subtract, description="Subtracts b from a.")
    return "evolved"


class BearerAndSessionCount:
    """ASGI middleware: refuses requests without the expected bearer token and records the
    session ids the MCP app hands out."""

    def __init__(self, app, accept_any_bearer: bool = False):
        self.app = app
        self.accept_any_bearer = accept_any_bearer

    def authorized(self, authorization: bytes) -> bool:
        if authorization == f"Bearer {TOKEN}".encode():
            return True
        token = authorization.removeprefix(b"Bearer ")
        return self.accept_any_bearer and token != authorization and bool(token.strip())

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        if not self.authorized(headers.get(b"authorization") or b""):
            await self.unauthorized(send)
            return

        async def recording_send(message):
            if message["type"] == "http.response.start":
                for name, value in message.get("headers") or []:
                    if name.lower() == SESSION_HEADER:
                        opened_sessions.add(value)
            await send(message)

        await self.app(scope, receive, recording_send)

    @staticmethod
    async def unauthorized(send):
        body = json.dumps(
            {"error": "invalid_token", "error_description": "unknown bearer token"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (
                        b"www-authenticate",
                        b'Bearer realm="mcp-peer", error="invalid_token"',
                    ),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def main() -> None:
    port = int(sys.argv[1])
    accept_any_bearer = "--accept-any-bearer" in sys.argv[2:]
    app = server.streamable_http_app(json_response=True, stateless_http=False)
    uvicorn.run(BearerAndSessionCount(app, accept_any_bearer), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
