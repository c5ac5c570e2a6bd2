/**
 * The keys of the pipeline's limits (gateway.limits.*, gateway.maxJsonDepth,
 * audit.summaryIntervalSeconds): documented defaults, and a bad value is
 * refused naming the field. In-process through loadConfig, as `mandate up`
 * and `mandate reload` read the file (a refused reload names the same field).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { configFiles } from '../helpers/config-files.ts';
import { ConfigError, loadConfig } from '../../src/config/load.ts';

const { dir, dataDir, file } = configFiles('mandate-limits-config-');

function load(yaml: string) {
  return loadConfig({ config: file(yaml), data: dataDir }, {}, dir);
}

describe('limits in the configuration', () => {
  it('defaults: 20 sessions per principal, 100 stdio processes, no principal rate, 10/s (burst 50) per address, depth 64, summaries every 60 s', () => {
    const config = load('servers: []\n');
    assert.deepEqual(config.gateway.limits, {
      sessionsPerPrincipal: 20,
      stdioProcesses: 100,
      principalRate: { perSecond: 0, burst: 1 },
      addressRate: { perSecond: 10, burst: 50 },
    });
    assert.equal(config.gateway.maxJsonDepth, 64);
    assert.equal(config.audit.summaryIntervalSeconds, 60);
  });

  it('a partial limits section keeps the other defaults', () => {
    const config = load('gateway:\n  limits:\n    sessionsPerPrincipal: 3\n');
    assert.equal(config.gateway.limits.sessionsPerPrincipal, 3);
    assert.equal(config.gateway.limits.stdioProcesses, 100);
    assert.deepEqual(config.gateway.limits.addressRate, { perSecond: 10, burst: 50 });
  });

  const bad: [string, string, RegExp][] = [
    ['no sessions per principal', 'gateway:\n  limits:\n    sessionsPerPrincipal: 0\n', /gateway\.limits\.sessionsPerPrincipal/],
    ['a fractional process cap', 'gateway:\n  limits:\n    stdioProcesses: 2.5\n', /gateway\.limits\.stdioProcesses/],
    ['a negative rate', 'gateway:\n  limits:\n    addressRate: { perSecond: -1, burst: 5 }\n', /gateway\.limits\.addressRate\.perSecond/],
    ['a rate without its burst', 'gateway:\n  limits:\n    principalRate: { perSecond: 5 }\n', /gateway\.limits\.principalRate\.burst/],
    ['an unknown key under limits', 'gateway:\n  limits:\n    sessionsPerUser: 5\n', /gateway\.limits: Unrecognized key.*"sessionsPerUser"/],
    ['a depth under 8', 'gateway:\n  maxJsonDepth: 2\n', /gateway\.maxJsonDepth/],
    ['a summary interval of 0', 'audit:\n  summaryIntervalSeconds: 0\n', /audit\.summaryIntervalSeconds/],
  ];
  for (const [name, yaml, field] of bad) {
    it(`refuses ${name}, naming the field`, () => {
      assert.throws(() => load(yaml), (error: unknown) => error instanceof ConfigError && field.test(error.message) && error.message.includes(dir));
    });
  }
});
