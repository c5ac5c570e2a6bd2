/**
 * The interaction pages' forms: the refusal shown as an error page
 * (PageError) and its common messages, CSRF tokens bound to an interaction
 * and a form's purpose, the same-origin (Origin / Sec-Fetch-Site) check, and
 * reading a small urlencoded body.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { OAuthRefusal } from '../errors.ts';

/** A refusal shown as an error page. */
export class PageError extends OAuthRefusal {
  override name = 'PageError';
}

export const EXPIRED = 'this sign-in request has expired or was already completed; return to the application and start again';
export const AUDIT_DOWN = 'this step cannot be recorded right now, so it was not taken; try again in a moment';

// ---------------------------------------------------------------------------
// CSRF tokens

export type FormPurpose = 'login' | 'consent' | 'abort' | 'upstream';
/** The account pages' forms (src/identity/account.ts), bound to the account session instead of an interaction. */
export type AccountPurpose = 'connect' | 'disconnect' | 'signout' | 'decide';

/** HMAC-SHA256(key, purpose and interaction uid), base64url. */
export function csrfToken(key: string, uid: string, purpose: FormPurpose | AccountPurpose): string {
  return createHmac('sha256', key).update(`mandate-csrf\n${purpose}\n${uid}`).digest('base64url');
}

/** Constant-time check of a submitted token against the one for this interaction and purpose. */
export function checkCsrfToken(key: string, uid: string, purpose: FormPurpose | AccountPurpose, token: unknown): boolean {
  if (typeof token !== 'string' || token.length > 256) return false;
  const expected = Buffer.from(csrfToken(key, uid, purpose));
  const actual = Buffer.from(token);
  return expected.length === actual.length && timingSafeEqual(expected, actual);
}

// ---------------------------------------------------------------------------
// Where a form comes from

/**
 * A POST must come from the issuer's own pages: Origin, when sent, must be the
 * issuer's. `Origin: null` (a browser hiding the origin) passes only when the
 * browser itself vouches the request is same-origin (Sec-Fetch-Site).
 */
export function fromOwnPage(headers: IncomingMessage['headers'], issuer: string): boolean {
  const site = headers['sec-fetch-site'];
  if (site !== undefined && site !== 'same-origin' && site !== 'none') return false;
  const origin = headers.origin;
  if (origin === undefined) return true;
  if (origin === 'null') return site === 'same-origin';
  return origin === new URL(issuer).origin;
}

// ---------------------------------------------------------------------------
// Reading a form

export const MAX_FORM_BYTES = 8 * 1024;

/** Reads an application/x-www-form-urlencoded body of at most `limit` bytes; a repeated field is refused. */
export async function readForm(req: IncomingMessage, limit = MAX_FORM_BYTES): Promise<Map<string, string>> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type !== 'application/x-www-form-urlencoded') throw new PageError(415, 'invalid_request', 'the form must be sent as application/x-www-form-urlencoded');
  const tooLarge = () => new PageError(413, 'invalid_request', `the form is larger than ${limit} bytes`, { Connection: 'close' });
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw tooLarge();
    chunks.push(chunk as Buffer);
  }
  const fields = new Map<string, string>();
  for (const [name, value] of new URLSearchParams(Buffer.concat(chunks).toString('utf8'))) {
    if (fields.has(name)) throw new PageError(400, 'invalid_request', `the form field "${name.slice(0, 64)}" appears more than once`);
    fields.set(name, value);
  }
  return fields;
}

/** A submitted form whose CSRF token matches this interaction and purpose; refused otherwise. */
export async function readCheckedForm(req: IncomingMessage, csrfKey: string, uid: string, purpose: FormPurpose | AccountPurpose): Promise<Map<string, string>> {
  const form = await readForm(req);
  if (!checkCsrfToken(csrfKey, uid, purpose, form.get('csrf'))) {
    throw new PageError(403, 'invalid_request', 'the form has expired or did not come from this page; go back to the application and start again');
  }
  return form;
}
