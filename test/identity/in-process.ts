/**
 * For identity tests that drive the authorization server and the gateway's
 * challenges over HTTP: Mandate in the test's own process with a whole
 * configuration file of the test's own (test/helpers/inprocess.ts starts
 * it), and a raw HTTP request, for what fetch will not send (a Host header
 * of our choosing, an absolute-form request target).
 */
import { writeFileSync } from 'node:fs';
import http from 'node:http';
import { startWithConfig, type InProcessMandate } from '../helpers/inprocess.ts';

export type InProcess = InProcessMandate;

/** Starts Mandate with the configuration `yaml(base)` returns (`base` is http://127.0.0.1:PORT, for an issuer that is the test's address). */
export function startInProcess(yaml: (base: string) => string): Promise<InProcess> {
  return startWithConfig((configPath, base) => writeFileSync(configPath, yaml(base)));
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
