"""approvalctl's MCP faces: `approvalctl mcp serve` and `approvalctl mcp proxy`.

- `serve` (serve.py) is an MCP server (stdio, the official `mcp` SDK) whose tools let a
  model ask for an approval, wait for it and withdraw it — never decide one.
- `proxy` (proxy.py) is a gateway in front of any stdio MCP server: it relays the raw
  JSON-RPC lines both ways and gates each `tools/call` through the policy and the operator.

Both reach approvalctl like the hooks do (backend.py): through the server with a `user` key
when APPROVALCTL_SERVER is set, on the local database otherwise. The package is not named
`mcp` so that it never shadows the SDK. Only serve.py imports the SDK (the optional extra
`approvalctl[mcp]`); the proxy speaks the wire format itself, with the standard library.
"""
