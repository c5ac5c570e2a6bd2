/**
 * The `policies` key: where the policy directory is (relative to the
 * configuration file; by default the data directory's), and what a bad value
 * gets (start-up stops, naming the field).
 */
import assert from 'node:assert/strict';
import path from 'node:path';
import { describe, it } from 'node:test';
import { configFiles } from '../helpers/config-files.ts';
import { loadConfig } from '../../src/config/load.ts';
import { mandate } from '../cli/run.ts';

const { dir, dataDir, file } = configFiles('mandate-policies-config-');

describe('the policies key of the configuration', { timeout: 60_000 }, () => {
  it('is relative to the configuration file; without it, the data directory holds the policies', () => {
    const named = loadConfig({ config: file('policies: ./rules\n'), data: dataDir }, {}, '/');
    assert.deepEqual([named.policies, named.policiesConfigured], [path.join(dir, 'rules'), true]);
    const absolute = loadConfig({ config: file('policies: /srv/mandate/policies\n'), data: dataDir }, {}, '/');
    assert.equal(absolute.policies, '/srv/mandate/policies');
    const unset = loadConfig({ config: file('servers: []\n'), data: dataDir }, {}, '/');
    assert.deepEqual([unset.policies, unset.policiesConfigured], [path.join(dataDir, 'policies'), false]);
  });

  it('mandate up refuses an empty or non-string value (exit 2), naming the field and the file', async () => {
    for (const yaml of ['policies: ""\n', 'policies: [a, b]\n', 'policies: 7\n']) {
      const config = file(yaml);
      const out = await mandate(['up', '--config', config, '--port', '0', '--data', dataDir], { timeoutMs: 20_000 });
      assert.equal(out.killed, false, `mandate up started serving with ${yaml}`);
      assert.equal(out.code, 2, out.stderr);
      assert.match(out.stderr, /policies/);
      assert.ok(out.stderr.includes(config), out.stderr);
    }
  });
});
