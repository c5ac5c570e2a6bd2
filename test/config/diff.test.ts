/** What a reload changes (diffConfig) and what is in force after it (inForce): restart-only settings keep their running value. */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { configFiles } from '../helpers/config-files.ts';
import { diffConfig, inForce } from '../../src/config/diff.ts';
import { loadConfig } from '../../src/config/load.ts';

const { dir, dataDir, file } = configFiles('mandate-diff-');

function load(yaml: string) {
  return loadConfig({ config: file(yaml), data: dataDir }, {}, dir);
}

describe('reload: what changes and what needs a restart', () => {
  const before = load('issuer: http://localhost:8080\nservers: []\n');
  const after_ = load(
    [
      'issuer: http://gw.example:8080',
      'listen: { port: 9090 }',
      'servers: [{ name: alpha, url: "http://127.0.0.1:1/mcp" }]',
      'gateway: { maxBodyBytes: 4096 }',
      'audit: { durability: process, summaryIntervalSeconds: 5 }',
      'identity: { accessTokenTtl: 120 }',
      'store: { statementTimeoutMs: 1000 }',
      'approvals: { ttlSeconds: 600 }',
      'log: { level: debug }',
      '',
    ].join('\n'),
  );

  it('sorts each changed setting into applied or restart-required', () => {
    const diff = diffConfig(before, after_);
    assert.deepEqual(diff.applied, ['gateway.maxBodyBytes', 'audit.summaryIntervalSeconds', 'approvals.ttlSeconds', 'log.level']);
    // The allowed origins default to the issuer's origin: with the issuer, they wait for the restart.
    assert.deepEqual(diff.restartRequired, ['issuer', 'listen.port', 'audit.durability', 'identity.accessTokenTtl', 'store.statementTimeoutMs', 'gateway.allowedOrigins']);
  });

  it('the configuration in force keeps every restart-only setting and takes the rest', () => {
    const config = inForce(before, after_);
    assert.equal(config.issuer, before.issuer);
    assert.deepEqual(config.gateway.allowedOrigins, ['http://localhost:8080'], 'the origins follow the issuer in force');
    assert.deepEqual(config.listen, before.listen);
    assert.equal(config.audit.durability, before.audit.durability);
    assert.deepEqual(config.identity, before.identity);
    assert.deepEqual(config.store, before.store);
    assert.equal(config.audit.summaryIntervalSeconds, 5);
    assert.equal(config.gateway.maxBodyBytes, 4096);
    assert.equal(config.log.level, 'debug');
    assert.equal(config.approvals.ttlSeconds, 600);
    assert.equal(before.approvals.ttlSeconds, 900, 'the default is 15 minutes');
    assert.deepEqual(config.servers.map((s) => s.name), ['alpha']);
  });
});
