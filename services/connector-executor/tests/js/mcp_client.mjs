// A second independent MCP peer for connector-executor's virtual MCP tests: the official
// TypeScript SDK (v2, @modelcontextprotocol/client) client, pointed at a minted session's URL
// with its bearer.
//
// It connects (`--mode auto` probes 2026-07-28 and falls back to `initialize`; `--mode
// legacy` forces the handshake), lists the tools (the SDK walks every page), optionally calls
// one tool,
// closes (ending a protocol session with DELETE when it opened one) and prints one JSON object
// with what it saw. A refused connection prints `{"error": {"class", "code", "message"},
// "status": <HTTP status of a refusal>}` and exits 0: refusal is an outcome the caller checks.
//
//   NODE_TOOLS_DIR=.tools/node node mcp_client.mjs --url URL --token TOKEN [--mode legacy]
//       [--call NAME --arguments JSON]
//
// Needs @modelcontextprotocol/client in $NODE_TOOLS_DIR (make tools).
import { createRequire } from "node:module";
import { join } from "node:path";
import { parseArgs } from "node:util";

const require = createRequire(join(process.env.NODE_TOOLS_DIR, "package.json"));
const { Client, StreamableHTTPClientTransport } = require("@modelcontextprotocol/client");

const { values: args } = parseArgs({
  options: {
    url: { type: "string" },
    token: { type: "string" },
    mode: { type: "string", default: "auto" },
    call: { type: "string" },
    arguments: { type: "string", default: "{}" },
  },
});
if (!args.url || !args.token || !["auto", "legacy"].includes(args.mode)) {
  console.error("usage: node mcp_client.mjs --url URL --token TOKEN [--mode auto|legacy] [--call NAME --arguments JSON]");
  process.exit(2);
}

const seen = { mode: args.mode, pages: 0 };
// What the SDK does not surface: the status of a refusal, the session header, and how many
// tools/list pages it fetched (its listTools() walks every page itself).
const fetchSeen = async (input, init) => {
  if (typeof init?.body === "string" && JSON.parse(init.body).method === "tools/list") {
    seen.pages += 1;
  }
  const response = await fetch(input, init);
  if (response.status >= 400) {
    seen.status = response.status;
  }
  const session = response.headers.get("mcp-session-id");
  if (session) {
    seen.protocol_session = session;
  }
  if ((init?.method ?? "GET") === "DELETE") {
    seen.delete_status = response.status;
  }
  return response;
};

const transport = new StreamableHTTPClientTransport(new URL(args.url), {
  requestInit: { headers: { Authorization: `Bearer ${args.token}` } },
  fetch: fetchSeen,
});
const client = new Client(
  { name: "agentauth-ts-peer", version: "1.0.0" },
  { versionNegotiation: { mode: args.mode } },
);
try {
  await client.connect(transport);
  seen.protocol_version = client.getNegotiatedProtocolVersion() ?? null;
  seen.server_name = client.getServerVersion()?.name ?? null;
  seen.tools = (await client.listTools()).tools.map((tool) => tool.name);
  if (args.call) {
    const result = await client.callTool({ name: args.call, arguments: JSON.parse(args.arguments) });
    seen.call = {
      is_error: Boolean(result.isError),
      structured: result.structuredContent ?? null,
      text: (result.content ?? []).filter((block) => block.type === "text").map((block) => block.text),
    };
  }
  if (transport.sessionId) {
    await transport.terminateSession();
  }
  await client.close();
} catch (error) {
  seen.error = {
    class: error?.constructor?.name ?? typeof error,
    code: error?.code ?? null,
    message: String(error?.message ?? error),
  };
}
console.log(JSON.stringify(seen));
