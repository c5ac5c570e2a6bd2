/**
 * The catalog seal: an HMAC, under a key derived from the deployment secret
 * (secret.key or MANDATE_SECRET_KEY), over everything an approval decided
 * about an entry: its server.json, governance record, signature, tool pins
 * and revision. Mandate writes it with every change; the gateway checks it
 * before routing. A row edited in the database by anyone without the secret
 * (a changed URL, an owner, a status, an expiry, a pin) no longer matches,
 * and the entry is refused until it is approved again through Mandate.
 *
 * What it cannot catch: a whole earlier row put back (its revision and seal
 * with it). The history and the audit log still show what was decided last.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';
import canonicalize from 'canonicalize';
import type { CatalogEntry } from './types.ts';

const PREFIX = 'v1.';

export interface Sealer {
  seal(entry: CatalogEntry): string;
  /** Constant-time: whether the entry carries the seal Mandate would give it. */
  verify(entry: CatalogEntry): boolean;
}

function sealed(entry: CatalogEntry): string {
  const { serverJson, governance, signature, pins, revision } = entry;
  return canonicalize({ serverJson, governance, signature, pins, revision }) ?? '';
}

export function catalogSealer(secret: Buffer): Sealer {
  const key = createHmac('sha256', secret).update('mandate-catalog-seal:v1').digest();
  const mac = (entry: CatalogEntry): Buffer => createHmac('sha256', key).update(sealed(entry)).digest();
  return {
    seal: (entry) => `${PREFIX}${mac(entry).toString('base64url')}`,
    verify(entry) {
      const seal = entry.seal;
      if (typeof seal !== 'string' || !seal.startsWith(PREFIX)) return false;
      const given = Buffer.from(seal.slice(PREFIX.length), 'base64url');
      const expected = mac(entry);
      return given.length === expected.length && timingSafeEqual(given, expected);
    },
  };
}
