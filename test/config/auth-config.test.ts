/** `servers[].auth`: what the gateway presents to an upstream; each misuse is refused with the field named. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConfigError, loadConfig } from '../../src/config/load.ts';
import { configFiles } from '../helpers/config-files.ts';

const { dir, dataDir, file } = configFiles('mandate-auth-');
const load = (server: string) => loadConfig({ config: file(`servers:\n  - ${server}\n`), data: dataDir }, {}, dir);

describe('servers[].auth', () => {
  it('a secret in a header for an HTTP server, in an environment variable for a stdio one', () => {
    const http = load('{ name: weather, url: "http://127.0.0.1:1/mcp", auth: { kind: secret, secret: weather-key, header: Authorization, scheme: Bearer } }');
    assert.deepEqual(http.servers[0]?.auth, { kind: 'secret', secret: 'weather-key', header: 'Authorization', scheme: 'Bearer' });
    const stdio = load('{ name: local, command: node, auth: { kind: secret, secret: local-token, env: LOCAL_TOKEN } }');
    assert.equal(stdio.servers[0]?.auth?.kind, 'secret');
    assert.equal(load('{ name: plain, url: "http://127.0.0.1:1/mcp" }').servers[0]?.auth, undefined);
    const oauth = load('{ name: notes, url: "http://127.0.0.1:1/mcp", auth: { kind: oauth, issuer: "http://127.0.0.1:2", clientId: mandate, clientSecret: notes-oauth } }');
    assert.deepEqual(oauth.servers[0]?.auth, { kind: 'oauth', issuer: 'http://127.0.0.1:2', clientId: 'mandate', clientSecret: 'notes-oauth', scopes: [] });
    const exchange = load('{ name: internal, url: "http://127.0.0.1:1/mcp", auth: { kind: token-exchange, tokenEndpoint: "http://127.0.0.1:2/token", clientId: mandate, audience: api } }');
    assert.equal(exchange.servers[0]?.auth?.kind, 'token-exchange');
  });

  it('refuses what cannot work, naming the field', () => {
    const refused = (server: string, message: RegExp) =>
      assert.throws(() => load(server), (error: unknown) => error instanceof ConfigError && message.test(error.message));
    refused('{ name: a, url: "http://127.0.0.1:1/mcp", auth: { kind: secret, secret: k, env: TOKEN } }', /servers\[0\]\.auth\.env: an HTTP server \(`url`\) takes its secret in a `header`/);
    refused('{ name: a, command: node, auth: { kind: secret, secret: k, header: X-Key } }', /servers\[0\]\.auth\.header: a stdio server/);
    refused('{ name: a, url: "http://127.0.0.1:1/mcp", auth: { kind: secret, secret: k } }', /exactly one of `header`/);
    refused('{ name: a, url: "http://127.0.0.1:1/mcp", auth: { kind: secret, secret: k, header: Mcp-Session-Id } }', /a protocol header, not a credential header/);
    refused('{ name: a, url: "http://127.0.0.1:1/mcp", auth: { kind: secret, secret: "Bad Name", header: X-Key } }', /servers\[0\]\.auth\.secret/);
    refused('{ name: a, url: "http://127.0.0.1:1/mcp", auth: { kind: oauth } }', /servers\[0\]\.auth/);
    refused('{ name: a, command: node, auth: { kind: jwt } }', /`jwt` is for an HTTP server/);
    refused('{ name: a, url: "http://127.0.0.1:1/mcp", auth: { kind: oauth, clientId: m } }', /set `issuer` \(its metadata is discovered\) or both `authorizationEndpoint` and `tokenEndpoint`/);
    refused('{ name: a, url: "http://127.0.0.1:1/mcp", auth: { kind: oauth, clientId: m, tokenEndpoint: "http://127.0.0.1:2/token" } }', /or both `authorizationEndpoint` and `tokenEndpoint`/);
    refused('{ name: a, command: node, auth: { kind: oauth, clientId: m, issuer: "http://127.0.0.1:2" } }', /`oauth` is for an HTTP server/);
    refused('{ name: a, url: "http://127.0.0.1:1/mcp", auth: { kind: oauth, clientId: m, issuer: "http://127.0.0.1:2", clientSecret: "Not A Name" } }', /servers\[0\]\.auth\.clientSecret/);
    refused('{ name: a, url: "http://127.0.0.1:1/mcp", auth: { kind: oauth, clientId: m, issuer: "http://127.0.0.1:2", scopes: ["two words"] } }', /servers\[0\]\.auth\.scopes\[0\]: must be an OAuth scope/);
    refused('{ name: a, url: "http://127.0.0.1:1/mcp", auth: { kind: token-exchange, clientId: m } }', /set `issuer` \(its metadata is discovered\) or `tokenEndpoint`/);
    refused('{ name: a, url: "http://127.0.0.1:1/mcp", auth: { kind: token-exchange, clientId: m, issuer: "http://127.0.0.1:2", authorizationEndpoint: "http://127.0.0.1:2/auth" } }', /a token exchange uses the token endpoint only/);
    refused('{ name: a, command: node, auth: { kind: token-exchange, clientId: m, issuer: "http://127.0.0.1:2" } }', /`token-exchange` is for an HTTP server/);
    refused('{ name: a, url: "http://127.0.0.1:1/mcp", auth: { kind: jwt, ttlSeconds: 3600 } }', /servers\[0\]\.auth\.ttlSeconds/);
    refused('{ name: a, url: "http://127.0.0.1:1/mcp", auth: { kind: secret, secret: k, header: X-Key, value: plain } }', /servers\[0\]\.auth/);
  });
});
