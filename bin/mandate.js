#!/usr/bin/env node
// The `mandate` command. Mandate runs on Node.js 24 or later; on an older
// Node it re-runs itself with the Node 24 the project pins (node_modules/node).
//
// The launcher and the process it starts live and die together:
// - SIGINT, SIGTERM and SIGHUP sent to the launcher are passed on (SIGHUP asks
//   the gateway to reload; it does not stop the launcher);
// - if the launcher dies, even by SIGKILL, the other process sees its IPC
//   channel close and stops itself in order, as on SIGTERM (no orphaned gateway);
// - the launcher exits with the other process's exit code, or its signal.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import module from 'node:module';
import { fileURLToPath } from 'node:url';

const LAUNCHED = 'MANDATE_LAUNCHER_CHANNEL';
const FORWARDED = ['SIGINT', 'SIGTERM', 'SIGHUP'];

const major = Number(process.versions.node.split('.')[0]);
if (major >= 24) {
  if (process.env[LAUNCHED] !== undefined) {
    // Started by the launcher below (the mark goes no further, to servers this process starts):
    // its channel closing means the launcher is gone.
    const launched = process.env[LAUNCHED] === '1' && process.channel;
    delete process.env[LAUNCHED];
    if (launched) {
      process.channel.unref();
      process.once('disconnect', () => process.kill(process.pid, 'SIGTERM'));
    }
  }
  // Node keeps what it compiled (the TypeScript it stripped included) in its
  // compile cache in the temporary directory: a command starts in about half
  // the time from the second run on. NODE_COMPILE_CACHE, if set, names another directory.
  module.enableCompileCache?.();
  await import('../src/cli/main.ts');
} else {
  const pinned = fileURLToPath(new URL('../node_modules/node/bin/node', import.meta.url));
  if (!existsSync(pinned)) {
    process.stderr.write(`mandate: Node.js 24 or later is required (this is ${process.version}); run \`npm ci\` to install the pinned runtime\n`);
    process.exit(2);
  }
  const child = spawn(pinned, [fileURLToPath(import.meta.url), ...process.argv.slice(2)], {
    stdio: ['inherit', 'inherit', 'inherit', 'ipc'],
    env: { ...process.env, [LAUNCHED]: '1' },
  });
  const forward = (signal) => {
    if (child.exitCode === null && child.signalCode === null) child.kill(signal);
  };
  for (const signal of FORWARDED) process.on(signal, forward);
  child.on('error', (error) => {
    process.stderr.write(`mandate: could not start ${pinned}: ${error.message}\n`);
    process.exit(1);
  });
  child.on('exit', (code, signal) => {
    if (signal) {
      // End the same way; our own handlers would only pass the signal on again.
      for (const name of FORWARDED) process.removeAllListeners(name);
      process.kill(process.pid, signal);
    } else process.exit(code ?? 1);
  });
}
