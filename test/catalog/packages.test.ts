/**
 * Packages checked before they are started: an npm package whose entry
 * gives its file hash is fetched once from the registry (npm pack), checked,
 * kept under its own hash, and every session starts from that file; a file
 * that is not the approved one is never started and suspends the entry. The
 * package is the real @modelcontextprotocol/server-everything from the npm
 * registry; its hash is npm's own record of it (`npm view … dist.integrity`).
 */
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { binOf, fileHashes, PackageMismatchError, PackageStore } from '../../src/catalog/packages.ts';
import type { ServerJson } from '../../src/catalog/types.ts';
import { checkPackage } from '../../src/gateway/upstream/identity.ts';
import { createUsers } from '../helpers/users.ts';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { tempDir } from '../helpers/process.ts';
import { errorOf, eventually, initializeMessage, post } from '../gateway/raw.ts';

const ID = '@modelcontextprotocol/server-everything';
const VERSION = '2026.8.31';
const DAY = 86_400_000;

/** The registry's own record of the file's integrity, independent of the code under test. */
function registryIntegrity(): string {
  return JSON.parse(execFileSync('npm', ['view', `${ID}@${VERSION}`, 'dist.integrity', '--json'], { encoding: 'utf8' })) as string;
}

describe('binOf', () => {
  it('takes the only command, or the one named like the package; refuses none or an ambiguous set', () => {
    assert.equal(binOf({ name: '@scope/tool', bin: 'dist/cli.js' }), 'tool');
    assert.equal(binOf({ name: '@scope/tool', bin: { 'tool-server': 'x.js' } }), 'tool-server');
    assert.equal(binOf({ name: 'tool', bin: { tool: 'a.js', other: 'b.js' } }), 'tool');
    assert.throws(() => binOf({ name: 'tool', bin: { a: 'a.js', b: 'b.js' } }), /several commands/);
    assert.throws(() => binOf({ name: 'tool' }), /no command/);
  });
});

describe('packages checked before they start', { timeout: 180_000 }, () => {
  const dir = tempDir('mandate-packages-');
  let integrity: string;
  let sha256: string;
  let mandate: InProcessMandate;

  before(async () => {
    integrity = registryIntegrity();
    const store = new PackageStore(path.join(dir, 'first'));
    const verified = await store.verify({ registryType: 'npm', identifier: ID, version: VERSION, integrity });
    sha256 = verified.sha256;
    mandate = await startInProcess({ servers: [], extra: { admin: { roles: { publisher: ['user:alice'], approver: ['user:bob'] } } } });
    await createUsers(mandate.store, { alice: [], bob: [] });
  });
  after(async () => {
    await mandate?.stop();
  });

  it('fetches the file once, keeps it under its SHA-256, and knows its command', async () => {
    const store = new PackageStore(path.join(dir, 'second'));
    const verified = await store.verify({ registryType: 'npm', identifier: ID, version: VERSION, fileSha256: sha256 });
    assert.equal(verified.integrity, integrity, 'the file npm pack fetched is the one the registry records');
    assert.equal(path.basename(verified.tarball), `${sha256}.tgz`);
    assert.ok(existsSync(verified.tarball));
    assert.equal(verified.bin, 'mcp-server-everything');
    assert.deepEqual(fileHashes(verified.tarball), { sha256, integrity });
  });

  it('refuses a file whose hash is not the approved one, naming both', async () => {
    const store = new PackageStore(path.join(dir, 'third'));
    await assert.rejects(store.verify({ registryType: 'npm', identifier: ID, version: VERSION, fileSha256: 'f'.repeat(64) }), (error: unknown) => {
      assert.ok(error instanceof PackageMismatchError);
      assert.equal(error.expected, `sha256 ${'f'.repeat(64)}`);
      assert.equal(error.actual, `sha256 ${sha256}`);
      return true;
    });
    await assert.rejects(store.verify({ registryType: 'pypi', identifier: 'x', version: '1.0', fileSha256: sha256 }), /cannot be checked before it is started/);
  });

  it('at each start the file must still be the checked one', () => {
    const file = path.join(dir, 'copy.tgz');
    writeFileSync(file, 'not the package');
    const expected = { registryType: 'npm', identifier: ID, version: VERSION, tarball: file, tarballSha256: sha256 };
    const mismatch = checkPackage(expected, 'npx', ['-y', `--package=${file}`, 'mcp-server-everything', 'stdio']);
    assert.equal(mismatch?.check, 'package');
    assert.equal(mismatch?.expected, `sha256 ${sha256}`);
    assert.equal(checkPackage(expected, 'npx', ['-y', `${ID}@${VERSION}`])?.check, 'package', 'the registry spec instead of the checked file');
  });

  function serverJson(name: string, fileSha256: string): ServerJson {
    return {
      name,
      description: 'everything, from a checked file',
      version: '1.0.0',
      packages: [{ registryType: 'npm', identifier: ID, version: VERSION, fileSha256, transport: { type: 'stdio' }, packageArguments: [{ type: 'positional', value: 'stdio' }] }],
    };
  }

  async function admit(route: string, fileSha256: string): Promise<void> {
    await mandate.app.catalog.propose({ serverJson: serverJson(`io.example/${route}`, fileSha256), route, owner: 'alice', risk: 'low', environment: 'dev', expiresAt: new Date(Date.now() + DAY) }, 'alice', 'stdio package');
    await mandate.app.catalog.approve(route, 'bob', 'reviewed');
    await mandate.app.catalogRuntime.refresh();
  }

  it('through the gateway: the approved file starts every session; another file is never started and suspends the entry', async () => {
    await admit('everything', sha256);
    const ok = await eventually(() => post(mandate.endpoint('everything'), initializeMessage(1)), (res) => res.status === 200, 'the checked package to serve', 60_000);
    assert.equal(ok.status, 200);
    const started = mandate.app.registry.get('everything');
    assert.deepEqual(started?.args.slice(0, 3), ['-y', `--package=${path.join(mandate.dataDir, 'packages', `${sha256}.tgz`)}`, 'mcp-server-everything']);

    await admit('tampered', 'e'.repeat(64));
    const message = async () => String((await errorOf(await post(mandate.endpoint('tampered'), initializeMessage(1)))).body.error?.message);
    assert.match(await message(), /MCP server "tampered" is not available: its package is being checked against the approved file hash/);
    const refused = await eventually(message, (text) => !text.includes('being checked'), 'the check to end', 60_000);
    assert.match(refused, /MCP server "tampered" is not available: (its package is not the approved file|its upstream did not present the identity approved for it|it is suspended in the catalog)/);
    const events = await eventually(() => mandate.audit({ types: ['server.identity_mismatch'] }), (list) => list.some((e) => e.server === 'tampered'), 'server.identity_mismatch');
    const event = events.find((e) => e.server === 'tampered');
    assert.equal(event?.data?.check, 'package');
    assert.equal(event?.data?.actual, `sha256 ${sha256}`);
    assert.equal((await mandate.app.catalog.get('tampered')).governance.status, 'suspended');
  });
});
