/**
 * `mandate scan` as a user runs it: a Cursor configuration with planted
 * (fake) secrets is reported with masked values and exit 1; `--fix` moves
 * each secret into Mandate's store (sealed, listed by name only) and points
 * the client at the gateway's endpoints; scanned again, it is clean (exit 0).
 */
import assert from 'node:assert/strict';
import { copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startInProcess, type InProcessMandate } from '../helpers/inprocess.ts';
import { ROOT, tempDir } from '../helpers/process.ts';
import { mandate as cli } from '../cli/run.ts';

const FIXTURE = path.join(ROOT, 'test/fixtures/scan/cursor/.cursor/mcp.json');
const PLANTED = ['gho_YnTXz8MZPmXEwTFXcyn5Qqu4ZIXyyj4nGAyj', '255cbcf612634f8e888971d8'];

describe('mandate scan, and scan --fix into the store', { timeout: 60_000 }, () => {
  let gateway: InProcessMandate;
  const dir = tempDir('mandate-scan-');
  const file = path.join(dir, '.cursor', 'mcp.json');

  before(async () => {
    gateway = await startInProcess({ servers: [] });
    mkdirSync(path.dirname(file), { recursive: true });
    copyFileSync(FIXTURE, file);
  });
  after(async () => {
    await gateway?.stop();
  });

  it('reports the planted secrets masked and exits 1; --fix moves them and the client is clean after', async () => {
    const found = await cli(['scan', file, '--json']);
    assert.equal(found.code, 1, found.stderr);
    const findings = JSON.parse(found.stdout) as { server: string; location: string; masked: string }[];
    assert.ok(findings.some((f) => f.server === 'github' && f.location === 'env.GITHUB_TOKEN'), found.stdout);
    for (const value of PLANTED) assert.ok(!found.stdout.includes(value) && !found.stderr.includes(value), 'a planted value was printed');

    const fixed = await cli(['scan', file, '--fix', '--config', gateway.configPath, '--data', gateway.dataDir, '--actor', 'secops']);
    for (const value of PLANTED) assert.ok(!fixed.stdout.includes(value) && !fixed.stderr.includes(value), 'a planted value was printed by --fix');
    const listed = JSON.parse((await cli(['secrets', 'list', '--json', '--data', gateway.dataDir])).stdout) as { name: string }[];
    assert.ok(listed.length >= 1, `secrets stored: ${JSON.stringify(listed)}`);
    const rewritten = readFileSync(file, 'utf8');
    assert.ok(rewritten.includes(`${gateway.base}/mcp/`), 'the client points at the gateway');
    assert.ok(!rewritten.includes(PLANTED[0]!), 'the GitHub token left the client file');
    const events = await gateway.audit({ types: ['credential.rotated'] });
    assert.ok(events.some((e) => e.actor === 'secops' && e.data?.via === 'scan --fix'));
    const again = await cli(['scan', file, '--json']);
    const left = JSON.parse(again.stdout) as { server: string }[];
    assert.ok(!left.some((f) => f.server === 'github'), `the github server is clean after --fix: ${again.stdout}`);
  });
});
