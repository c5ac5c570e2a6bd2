/**
 * The garbage-collection setting of `mandate up` (src/cli/heap.ts): V8's
 * incremental marking is off unless MANDATE_INCREMENTAL_MARKING=on; any
 * other value stops start-up with a message naming the variable (exit 2).
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { heapFlags } from '../../src/cli/heap.ts';
import { runCli } from '../helpers/process.ts';

describe('MANDATE_INCREMENTAL_MARKING', () => {
  it('off by default (unset, empty or "off"); "on" keeps V8\'s default', () => {
    for (const value of [undefined, '', 'off']) assert.deepEqual(heapFlags({ MANDATE_INCREMENTAL_MARKING: value }), ['--no-incremental-marking'], String(value));
    assert.deepEqual(heapFlags({ MANDATE_INCREMENTAL_MARKING: 'on' }), []);
  });

  it('another value is refused by name', () => {
    assert.throws(() => heapFlags({ MANDATE_INCREMENTAL_MARKING: 'yes' }), /MANDATE_INCREMENTAL_MARKING must be "on" or "off", not "yes"/);
  });

  it('`mandate up` with an unknown value exits 2 before starting', async () => {
    const result = await runCli(['up', '--port', '0'], { MANDATE_INCREMENTAL_MARKING: 'sometimes' });
    assert.equal(result.code, 2, result.stderr);
    assert.match(result.stderr, /^mandate: MANDATE_INCREMENTAL_MARKING must be "on" or "off", not "sometimes"/m);
  });
});
