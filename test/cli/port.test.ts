/**
 * Without `issuer`, the issuer is http://localhost:PORT for the port the
 * gateway listens on, --port (or MANDATE_PORT) included. Run in the project
 * root with its demo mandate.yaml, as `npm start` runs it: discovery, the
 * protected resource metadata, the 401 challenge and the start-up lines all
 * name that port.
 */
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import path from 'node:path';
import { after, describe, it } from 'node:test';
import { freePort, MANDATE, NODE, ROOT, startProcess, stopBounded, tempDir, waitFor } from '../helpers/process.ts';
import { mandate } from './run.ts';

const dir = tempDir('mandate-port-');
after(() => rmSync(dir, { recursive: true, force: true }));

describe('the default issuer follows the port', { timeout: 120_000, concurrency: 2 }, () => {
  for (const via of ['--port', 'MANDATE_PORT'] as const) {
    it(`mandate up ${via === '--port' ? '--port N' : 'with MANDATE_PORT=N'} with the demo configuration: every URL names port N`, async () => {
      const port = await freePort();
      const args = [MANDATE, 'up', '--data', path.join(dir, via)];
      if (via === '--port') args.push('--port', String(port));
      const proc = startProcess(NODE, args, { cwd: ROOT, env: via === 'MANDATE_PORT' ? { MANDATE_PORT: String(port) } : {} });
      try {
        await waitFor(async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200 && proc.output().includes('(stdio)'), `mandate up on port ${port}: ${proc.output()}`, 30_000);
        const issuer = `http://localhost:${port}`;
        assert.match(proc.output(), new RegExp(`everything\\s+${issuer}/mcp/everything`));

        const metadata = (await (await fetch(`http://127.0.0.1:${port}/.well-known/oauth-authorization-server`)).json()) as Record<string, unknown>;
        assert.equal(metadata.issuer, issuer);
        assert.equal(metadata.token_endpoint, `${issuer}/oauth/token`);
        assert.equal(metadata.authorization_endpoint, `${issuer}/oauth/authorize`);

        const resource = (await (await fetch(`http://127.0.0.1:${port}/.well-known/oauth-protected-resource/mcp/everything`)).json()) as Record<string, unknown>;
        assert.equal(resource.resource, `${issuer}/mcp/everything`);
        assert.deepEqual(resource.authorization_servers, [issuer]);

        const challenged = await fetch(`http://127.0.0.1:${port}/mcp/everything`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
          body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'ping' }),
        });
        await challenged.text();
        assert.equal(challenged.status, 401);
        assert.equal(challenged.headers.get('www-authenticate'), `Bearer resource_metadata="${issuer}/.well-known/oauth-protected-resource/mcp/everything", scope="mcp:everything"`);
      } finally {
        await stopBounded(proc);
      }
    });
  }

  it('without a port, the demo configuration resolves to http://localhost:8080 (what the README promises for npm start)', async () => {
    const out = await mandate(['config']);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stdout, /^issuer http:\/\/localhost:8080$/m);
    assert.match(out.stdout, /^ {2}everything: http:\/\/localhost:8080\/mcp\/everything -> /m);
  });
});
