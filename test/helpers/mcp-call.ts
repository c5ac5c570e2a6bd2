/** One tools/call through the SDK client in a session of its own: the answer's text, or `refused: …` with the error. */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';

export async function callWithToken(endpoint: string, accessToken: string, tool: string, args: Record<string, unknown> = { text: 'x' }): Promise<string> {
  const client = new Client({ name: 'mandate-test', version: '1.0.0' });
  try {
    await client.connect(new StreamableHTTPClientTransport(new URL(endpoint), { requestInit: { headers: { authorization: `Bearer ${accessToken}` } } }));
    const result = await client.callTool({ name: tool, arguments: args });
    return (result.content as { text: string }[])[0]!.text;
  } catch (error) {
    return `refused: ${String(error)}`;
  } finally {
    await client.close().catch(() => undefined);
  }
}
