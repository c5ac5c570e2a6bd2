/**
 * The configured publishers as admission and routing use them
 * (src/catalog/provenance.ts): a key set from a file, and a domain proven
 * at https://DOMAIN/.well-known/mcp-registry-auth (served here by a fake
 * fetch: the real one refuses local addresses), whose prefixes may narrow
 * but never widen what the domain proves.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import { exportJWK, generateKeyPair } from 'jose';
import { signatureCheck } from '../../src/catalog/provenance.ts';
import type { GuardedFetch } from '../../src/catalog/publishers.ts';
import { signEntry } from '../../src/catalog/signature.ts';
import type { ServerJson } from '../../src/catalog/types.ts';
import { catalogSchema } from '../../src/config/catalog-schema.ts';
import { tempDir } from '../helpers/process.ts';

const entry = (name: string): ServerJson => ({ name, description: 'x', version: '1.0.0', remotes: [{ type: 'streamable-http', url: 'https://mcp.example.com/mcp' }] });

describe('publishers at admission and routing', () => {
  it('a publisher proven by its domain may sign its own namespace only', async () => {
    const { publicKey, privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519' });
    const raw = Buffer.from((await exportJWK(publicKey)).x as string, 'base64url').toString('base64');
    const fetched: string[] = [];
    const fetch = (async (url: string | URL | Request) => {
      fetched.push(String(url));
      return new Response(`v=MCPv1; k=ed25519; p=${raw}\n`, { status: 200 });
    }) as GuardedFetch;
    const catalog = catalogSchema.parse({ publishers: [{ name: 'example-domain', domain: 'example.com' }] });
    const check = signatureCheck(catalog, null, fetch);
    const mine = entry('com.example/weather');
    const verified = await check(mine, await signEntry(mine, privateKey, { alg: 'EdDSA' }));
    assert.equal(verified.publisher, 'example-domain');
    assert.deepEqual(fetched, ['https://example.com/.well-known/mcp-registry-auth']);
    const other = entry('io.other/weather');
    await assert.rejects(check(other, await signEntry(other, privateKey, { alg: 'EdDSA' })), /may not publish|no publisher/);
    // A configured prefix wider than the proof is refused when the publishers load.
    const wider = signatureCheck(catalogSchema.parse({ publishers: [{ name: 'greedy', domain: 'example.com', prefixes: ['io.'] }] }), null, fetch);
    await assert.rejects(wider(mine, await signEntry(mine, privateKey, { alg: 'EdDSA' })), /proves com\.example\/, not io\./);
  });

  it('a publisher with a key set file; the configuration needs exactly one of jwks and domain', async () => {
    const dir = tempDir('mandate-provenance-');
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    writeFileSync(path.join(dir, 'keys.json'), JSON.stringify({ keys: [{ ...(await exportJWK(publicKey)), kid: 'k1' }] }));
    const check = signatureCheck(catalogSchema.parse({ publishers: [{ name: 'example', jwks: './keys.json', prefixes: ['io.example/'] }] }), path.join(dir, 'mandate.yaml'));
    const mine = entry('io.example/notes');
    assert.equal((await check(mine, await signEntry(mine, privateKey, { alg: 'ES256', kid: 'k1' }))).kid, 'k1');
    assert.throws(() => catalogSchema.parse({ publishers: [{ name: 'both', jwks: 'x', domain: 'example.com', prefixes: ['io.x/'] }] }), /exactly one of `jwks`/);
    assert.throws(() => catalogSchema.parse({ publishers: [{ name: 'none', prefixes: ['io.x/'] }] }), /exactly one of `jwks`/);
    assert.throws(() => catalogSchema.parse({ publishers: [{ name: 'noprefix', jwks: 'x' }] }), /names the prefixes it may sign/);
  });
});
