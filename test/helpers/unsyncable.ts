/**
 * Real faults for tests of what happens when a file cannot be synced or
 * written: the test process's open descriptor of a file is swapped for one
 * on /dev/null, which (opened for appending) takes writes but whose
 * fdatasync fails (EINVAL), as a failing disk's would, or (opened read-only)
 * refuses writes (EBADF). The code under test keeps its descriptor number
 * and notices nothing until it syncs or writes.
 */
import assert from 'node:assert/strict';
import { closeSync, openSync, readdirSync, readlinkSync } from 'node:fs';

export function makeUnsyncable(file: string): void {
  swapDescriptor(file, 'a');
}

export function makeUnwritable(file: string): void {
  swapDescriptor(file, 'r');
}

function swapDescriptor(file: string, flags: 'a' | 'r'): void {
  const fd = readdirSync('/proc/self/fd')
    .map(Number)
    .find((n) => {
      try {
        return readlinkSync(`/proc/self/fd/${n}`) === file;
      } catch {
        return false;
      }
    });
  assert.ok(fd !== undefined, `${file} is not held open`);
  closeSync(fd);
  // The lowest free descriptor is the one taken: lower ones are filled first, then let go.
  const lower: number[] = [];
  for (let taken = openSync('/dev/null', flags); taken !== fd; taken = openSync('/dev/null', flags)) {
    assert.ok(taken < fd, 'the descriptor was taken by another file');
    lower.push(taken);
  }
  for (const n of lower) closeSync(n);
}
