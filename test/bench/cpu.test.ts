/** The bench's CPU accounting (bench/cpu.ts): /proc stat lines, and this process's own time. */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { cpuMs, statTicks, usPerRequest } from '../../bench/cpu.ts';

describe('bench/cpu.ts', () => {
  it('reads user plus system ticks, counting fields from the last parenthesis of the command name', () => {
    const rest = 'S 1 2 3 4 5 6 7 8 9 10 250 40 0 0 20 0 9 0 100 0 0';
    assert.equal(statTicks(`123 (node) ${rest}`), 290);
    // A command name with spaces and parentheses does not shift the fields.
    assert.equal(statTicks(`123 (a (b) c) ${rest}`), 290);
    assert.throws(() => statTicks('not a stat line'), /not a \/proc stat line/);
    assert.throws(() => statTicks('123 (node) S 1 2'), /not a \/proc stat line/);
  });

  it('µs per request from two readings; null without both readings or without requests', () => {
    assert.equal(usPerRequest(1000, 1500, 5000), 100);
    assert.equal(usPerRequest(null, 1500, 5000), null);
    assert.equal(usPerRequest(1000, null, 5000), null);
    assert.equal(usPerRequest(1000, 1500, 0), null);
  });

  it('this process: its CPU time grows with work; a process that is not there reads as null', { skip: !existsSync('/proc/self/stat') && 'no /proc here' }, () => {
    const before = cpuMs(process.pid);
    assert.ok(before !== null && before > 0);
    const until = performance.now() + 150;
    while (performance.now() < until); // busy: the ticks must move
    const after = cpuMs(process.pid);
    assert.ok(after !== null && after > before, `${before} -> ${String(after)}`);
    assert.equal(cpuMs(undefined), null);
    assert.equal(cpuMs(2 ** 30), null);
  });
});
