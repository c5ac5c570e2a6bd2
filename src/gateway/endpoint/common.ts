/** Edge checks shared by the MCP endpoint's handlers. */
import { isUtf8 } from 'node:buffer';
import type { IncomingMessage } from 'node:http';
import { GatewayError } from '../errors.ts';

export function header(req: IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  if (Array.isArray(value)) throw new GatewayError('invalid_request', `the ${name} header must appear once`);
  return value;
}

/** Rejects a browser request from an origin that is not allowed (DNS-rebinding protection). */
export function checkOrigin(req: IncomingMessage, allowed: readonly string[]): void {
  const origin = header(req, 'origin');
  if (origin === undefined || allowed.includes('*') || allowed.includes(origin)) return;
  throw new GatewayError('origin', `origin ${origin.slice(0, 100)} is not allowed (gateway.allowedOrigins)`);
}

function mediaTypes(value: string | undefined): string[] {
  return (value ?? '').split(',').map((part) => (part.split(';')[0] ?? '').trim().toLowerCase());
}

/** The `charset` parameter of a media type, lower-cased, if given. */
function charsetOf(value: string | undefined): string | undefined {
  const match = /;\s*charset\s*=\s*"?([^";\s]*)"?/i.exec(value ?? '');
  return match?.[1]?.toLowerCase();
}

export function checkPostHeaders(req: IncomingMessage): void {
  const accept = mediaTypes(header(req, 'accept'));
  const any = accept.includes('*/*');
  if (!any && !(accept.includes('application/json') && accept.includes('text/event-stream'))) {
    throw new GatewayError('not_acceptable', 'Accept must list both application/json and text/event-stream');
  }
  const contentType = header(req, 'content-type');
  const type = mediaTypes(contentType)[0];
  if (type !== 'application/json') throw new GatewayError('unsupported_media_type', 'Content-Type must be application/json');
  const charset = charsetOf(contentType);
  if (charset !== undefined && charset !== 'utf-8' && charset !== 'utf8') {
    throw new GatewayError('unsupported_media_type', `the body must be UTF-8 (Content-Type says charset=${charset.slice(0, 40)})`);
  }
}

export function checkGetHeaders(req: IncomingMessage): void {
  const accept = mediaTypes(header(req, 'accept'));
  if (!accept.includes('text/event-stream') && !accept.includes('*/*')) {
    throw new GatewayError('not_acceptable', 'Accept must list text/event-stream');
  }
}

/** The body's text; bytes that are not UTF-8 are refused, never replaced. */
function decode(bytes: Buffer): string {
  if (!isUtf8(bytes)) throw new GatewayError('parse', 'the body is not valid UTF-8');
  return bytes.toString('utf8');
}

/** Reads the body up to `limit` bytes; larger bodies are refused without reading them all. */
export function readBody(req: IncomingMessage, limit: number): Promise<string> {
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) {
    return Promise.reject(new GatewayError('body_too_large', `the request body exceeds ${limit} bytes`, { headers: { connection: 'close' } }));
  }
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) {
        req.removeAllListeners('data');
        req.pause();
        reject(new GatewayError('body_too_large', `the request body exceeds ${limit} bytes`, { headers: { connection: 'close' } }));
        return;
      }
      chunks.push(chunk);
    });
    req.once('end', () => {
      try {
        resolve(decode(Buffer.concat(chunks, size)));
      } catch (error) {
        reject(error);
      }
    });
    req.once('error', (error) => reject(new GatewayError('invalid_request', 'the request body could not be read', { cause: error })));
  });
}
