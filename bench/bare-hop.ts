/**
 * Bare pass-through hop: the cheapest reasonable HTTP forwarder, used as the
 * reference point for the cost of "one more process in the path".
 *
 *   node bench/bare-hop.ts --port N --target http://127.0.0.1:U
 *
 * Every request is forwarded to the same path on the target with a keep-alive
 * Agent; method, headers and body go through unchanged (minus hop-by-hop
 * headers), and the response status, headers and body are piped back as they
 * arrive (so SSE streams work too). No parsing, no inspection.
 *
 * Listens on 127.0.0.1 only (port 0 picks a free port). When ready it prints
 * one JSON line on stdout: `{"listening":<port>}`.
 */
import { Agent, createServer, request } from 'node:http';
import type { IncomingHttpHeaders, OutgoingHttpHeaders } from 'node:http';
import { parseArgs } from 'node:util';
import { serve } from './serve.ts';

const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'proxy-authenticate',
  'proxy-authorization',
  'proxy-connection',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
]);

function endToEnd(headers: IncomingHttpHeaders): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  }
  return out;
}

const { values } = parseArgs({
  options: {
    port: { type: 'string', default: '0' },
    target: { type: 'string' },
  },
});
const port = Number(values.port);
if (!Number.isInteger(port) || port < 0 || port > 65535) {
  process.stderr.write(`bare-hop: invalid --port ${String(values.port)}\n`);
  process.exit(2);
}
if (values.target === undefined) {
  process.stderr.write('bare-hop: --target http://127.0.0.1:PORT is required\n');
  process.exit(2);
}
const target = new URL(values.target);
if (target.protocol !== 'http:' || target.hostname !== '127.0.0.1') {
  process.stderr.write('bare-hop: --target must be http://127.0.0.1:PORT\n');
  process.exit(2);
}
const targetPort = Number(target.port || 80);

const agent = new Agent({ keepAlive: true, keepAliveMsecs: 1000, maxSockets: Infinity, maxFreeSockets: 1024 });

const server = createServer((req, res) => {
  const upstreamReq = request(
    {
      agent,
      host: '127.0.0.1',
      port: targetPort,
      method: req.method,
      path: req.url,
      headers: endToEnd(req.headers),
    },
    (upstreamRes) => {
      res.writeHead(upstreamRes.statusCode ?? 502, endToEnd(upstreamRes.headers));
      upstreamRes.pipe(res);
      upstreamRes.on('error', () => res.destroy());
    },
  );
  upstreamReq.on('error', () => {
    if (!res.headersSent) {
      res.writeHead(502, { 'content-type': 'text/plain', 'content-length': 11 });
      res.end('bad gateway');
    } else {
      res.destroy();
    }
  });
  // Client went away before the exchange finished: drop the upstream leg too.
  res.on('close', () => {
    if (!res.writableFinished) upstreamReq.destroy();
  });
  req.pipe(upstreamReq);
});

serve(server, port, () => agent.destroy());
