/**
 * The control socket: a Unix socket in the data directory
 * (`{dataDir}/control.sock`, owner-only) through which `mandate reload` asks
 * the gateway serving that directory to re-read its configuration and waits
 * for the outcome. Only the owner of the data directory can reach it.
 */
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import path from 'node:path';
import { sendJson } from '../http/json.ts';

export const CONTROL_SOCKET = 'control.sock';

export function controlSocketPath(dataDir: string): string {
  return path.join(dataDir, CONTROL_SOCKET);
}

export interface ControlHandlers {
  /** Re-reads the configuration; resolves with the outcome (applied or refused). */
  reload(): Promise<{ ok: boolean } & Record<string, unknown>>;
  /** Re-reads the policy directory; resolves with the outcome (in force or refused). */
  reloadPolicies(): Promise<{ ok: boolean } & Record<string, unknown>>;
}

export interface ControlSocket {
  readonly path: string;
  close(): Promise<void>;
}

/** Whether a live process answers on the socket at `file`. */
function answers(file: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = http.request({ socketPath: file, method: 'GET', path: '/', timeout: 1000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => {
      req.destroy();
      resolve(false);
    });
    req.end();
  });
}

async function handle(handlers: ControlHandlers, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const requests: Record<string, () => Promise<unknown>> = { '/reload': () => handlers.reload(), '/policy/reload': () => handlers.reloadPolicies() };
  const run = req.method === 'POST' && req.url !== undefined && Object.hasOwn(requests, req.url) ? requests[req.url] : undefined;
  if (run === undefined) {
    sendJson(res, 404, { error: 'not_found', detail: `${Object.keys(requests).map((path) => `POST ${path}`).join(' and ')} are the control requests` });
    return;
  }
  req.resume();
  sendJson(res, 200, await run());
}

/**
 * Listens on the data directory's control socket. A socket left by a run
 * that crashed is replaced; one that another live gateway answers on is
 * left to it (null: this gateway has no control socket).
 */
export async function openControlSocket(dataDir: string, handlers: ControlHandlers, onError: (error: unknown) => void): Promise<ControlSocket | null> {
  const file = controlSocketPath(dataDir);
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  if (await answers(file)) return null;
  rmSync(file, { force: true });
  const server = http.createServer((req, res) => {
    handle(handlers, req, res).catch((error: unknown) => {
      onError(error);
      if (!res.headersSent) sendJson(res, 500, { ok: false, error: 'the reload failed unexpectedly; see the gateway log' });
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(file, () => {
      server.off('error', reject);
      resolve();
    });
  });
  chmodSync(file, 0o600);
  return {
    path: file,
    close: () =>
      new Promise((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
