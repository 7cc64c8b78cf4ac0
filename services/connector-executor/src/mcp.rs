//! MCP dispatch: calls an upstream MCP server (Asana's V2, or the sandbox) over Streamable HTTP
//! with an account's MCP token, one session per account reused across calls.
