// A kept-alive MCP client over streamable HTTP, as the TypeScript SDK's transport is: Node's
// own fetch (its bundled undici), which keeps a connection open and reuses it.
//
//   node keepalive_client.mjs URL CALLS [TOKEN]
//
// Initializes a session, calls `echo` CALLS times one after another (each answer checked), and prints one line of
// JSON: {"ms": [each call's time in milliseconds], "sockets": connections opened}.
import diagnostics_channel from "node:diagnostics_channel";

const [url, callsText, token] = process.argv.slice(2);
const calls = Number(callsText);
let sockets = 0; // connections fetch opened: 1 when it kept the first one alive throughout
diagnostics_channel.subscribe("undici:client:connected", () => { sockets += 1; });

let session;
async function post(message) {
  const headers = {
    "content-type": "application/json",
    accept: "application/json, text/event-stream",
    "mcp-protocol-version": "2025-11-25",
  };
  if (token) headers.authorization = `Bearer ${token}`;
  if (session) headers["mcp-session-id"] = session;
  const response = await fetch(url, { method: "POST", headers, body: JSON.stringify(message) });
  session = response.headers.get("mcp-session-id") ?? session;
  const text = await response.text();
  if (response.status >= 300) throw new Error(`HTTP ${response.status}: ${text}`);
  return text;
}

await post({
  jsonrpc: "2.0", id: 0, method: "initialize",
  params: { protocolVersion: "2025-11-25", capabilities: {}, clientInfo: { name: "keepalive", version: "1" } },
});
await post({ jsonrpc: "2.0", method: "notifications/initialized" });
const ms = [];
for (let i = 1; i <= calls; i++) {
  const start = performance.now();
  const text = await post({
    jsonrpc: "2.0", id: i, method: "tools/call",
    params: { name: "echo", arguments: { message: `call ${i}` } },
  });
  ms.push(performance.now() - start);
  const answers = text.split(/\r?\n/).filter((l) => l.startsWith("data: ") && l.length > 6).map((l) => JSON.parse(l.slice(6)));
  const answer = answers.length ? answers.at(-1) : JSON.parse(text);
  if (answer.id !== i || !answer.result) throw new Error(`not the answer to call ${i}: ${text}`);
}
console.log(JSON.stringify({ ms, sockets }));
