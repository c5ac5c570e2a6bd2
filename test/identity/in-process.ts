/**
 * Mandate in the test's own process, started as `mandate up` starts it
 * (a configuration file, loadConfig, startApp), for identity tests that drive
 * the authorization server and the gateway's challenges over HTTP. Also a raw
 * HTTP request, for what fetch will not send (a Host header of our choosing,
 * an absolute-form request target).
 */
import { rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { startApp, type App } from '../../src/app.ts';
import { loadConfig } from '../../src/config/load.ts';
import { createLogger } from '../../src/observability/log.ts';
import { freePort, tempDir } from '../helpers/process.ts';

export interface InProcess {
  app: App;
  /** Where the test reaches it: http://127.0.0.1:PORT. */
  base: string;
  stop(): Promise<void>;
}

/**
 * Starts Mandate with the configuration `yaml(base)` returns (`base` is
 * http://127.0.0.1:PORT, for an issuer that is the test's address). A port
 * taken by another process between picking and binding is retried.
 */
export async function startInProcess(yaml: (base: string) => string): Promise<InProcess> {
  const dir = tempDir('mandate-identity-');
  const file = path.join(dir, 'mandate.yaml');
  for (let attempt = 1; ; attempt += 1) {
    const port = await freePort();
    const base = `http://127.0.0.1:${port}`;
    writeFileSync(file, yaml(base));
    const config = loadConfig({ config: file, port, data: path.join(dir, `data-${attempt}`) }, {});
    try {
      const app = await startApp(config, { log: createLogger('silent') });
      return {
        app,
        base,
        stop: async () => {
          await app.stop();
          rmSync(dir, { recursive: true, force: true });
        },
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== 'EADDRINUSE' || attempt >= 3) throw error;
    }
  }
}

export interface RawAnswer {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

/** One HTTP/1.1 request exactly as given: `target` is sent as the request target, `headers` as they are (Host included). */
export function rawRequest(base: string, target: string, options: { method?: string; headers?: Record<string, string>; body?: string } = {}): Promise<RawAnswer> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = http.request({ host: hostname, port, method: options.method ?? 'GET', path: target, headers: options.headers, setHost: false }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end(options.body);
  });
}
