/**
 * The `store` section (store.connectTimeoutMs, store.statementTimeoutMs):
 * documented defaults, and a bad value stops start-up naming the field.
 * (That the values reach the PostgreSQL pool: test/store/pg-freeze.test.ts.)
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { configFiles } from '../helpers/config-files.ts';
import { mandate } from '../cli/run.ts';

const { dir, dataDir, file } = configFiles('mandate-store-config-');

describe('the store section of the configuration', { timeout: 60_000, concurrency: 3 }, () => {
  const bad: { name: string; yaml: string; message: RegExp }[] = [
    { name: 'a connect timeout under 100 ms', yaml: 'store:\n  connectTimeoutMs: 50\n', message: /store\.connectTimeoutMs: .*100/ },
    { name: 'a connect timeout over a minute', yaml: 'store:\n  connectTimeoutMs: 600000\n', message: /store\.connectTimeoutMs/ },
    { name: 'a statement timeout as a string', yaml: 'store:\n  statementTimeoutMs: 5s\n', message: /store\.statementTimeoutMs/ },
    { name: 'a fractional statement timeout', yaml: 'store:\n  statementTimeoutMs: 2500.5\n', message: /store\.statementTimeoutMs/ },
    { name: 'an unknown key under store', yaml: 'store:\n  statementTimeout: 1000\n', message: /store: Unrecognized key.*"statementTimeout"/ },
  ];
  it('mandate up refuses each bad value (exit 2), naming the field and the file, and serves nothing', async () => {
    const configs = bad.map(({ yaml }) => file(yaml));
    const outs = await Promise.all(configs.map((config) => mandate(['up', '--config', config, '--port', '0', '--data', dataDir], { timeoutMs: 20_000 })));
    for (const [i, { name, message }] of bad.entries()) {
      const out = outs[i];
      assert.ok(out && !out.killed, `${name}: mandate up started serving:\n${out?.stdout}`);
      assert.deepEqual([out.code, message.test(out.stderr), out.stderr.includes(configs[i] ?? '?')], [2, true, true], `${name}: ${out.stderr}`);
    }
  });

  it('defaults: 3000 ms to connect, 5000 ms per statement; configured values are kept', async () => {
    const defaults = await mandate(['config', '--config', file('servers: []\n'), '--json']);
    assert.equal(defaults.code, 0, defaults.stderr);
    assert.deepEqual((JSON.parse(defaults.stdout) as { store: unknown }).store, { connectTimeoutMs: 3000, statementTimeoutMs: 5000 });
    const set = await mandate(['config', '--config', file('store:\n  connectTimeoutMs: 800\n  statementTimeoutMs: 1500\n'), '--json']);
    assert.equal(set.code, 0, set.stderr);
    assert.deepEqual((JSON.parse(set.stdout) as { store: unknown }).store, { connectTimeoutMs: 800, statementTimeoutMs: 1500 });
  });
});
