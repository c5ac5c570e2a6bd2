/**
 * Provenance at admission and at routing: the configured publishers
 * (`catalog.publishers`) are loaded once per configuration, and a detached
 * JWS over an entry's server.json is checked against the publishers allowed
 * to publish its name (src/catalog/signature.ts). The gateway checks every
 * signed entry again before serving it, so an entry whose server.json was
 * edited after signing, or whose publisher was removed from the
 * configuration, is refused.
 */
import path from 'node:path';
import { createHash } from 'node:crypto';
import type { CatalogConfig } from '../config/catalog-schema.ts';
import { guardedFetch } from '../identity/ssrf.ts';
import { domainPublisher, loadPublishers, prefixMatches, PublisherError, type GuardedFetch, type PublisherSet } from './publishers.ts';
import { canonicalServerJson, verifyEntry } from './signature.ts';
import type { EntrySignature, ServerJson } from './types.ts';

export type SignatureCheck = (serverJson: ServerJson, jws: string) => Promise<EntrySignature>;

/** Checks signatures against the publishers of one configuration (loaded on first use; a failed load is tried again next time). */
export function signatureCheck(catalog: CatalogConfig, configPath: string | null, fetch: GuardedFetch = guardedFetch({ allowPrivate: [], timeoutMs: 10_000 })): SignatureCheck {
  let loading: Promise<PublisherSet> | null = null;
  const baseDir = configPath === null ? process.cwd() : path.dirname(configPath);
  const load = async (): Promise<PublisherSet> => {
    const keyed = catalog.publishers.flatMap((p) => (p.jwks !== undefined ? [{ name: p.name, jwks: p.jwks, prefixes: p.prefixes ?? [] }] : []));
    const set = await loadPublishers(keyed, { baseDir, fetch });
    for (const publisher of catalog.publishers) {
      if (publisher.domain === undefined) continue;
      const proven = await domainPublisher(publisher.domain, fetch);
      // Configured prefixes may only narrow what the domain proves, never widen it.
      const prefixes = publisher.prefixes ?? proven.prefixes;
      for (const prefix of prefixes) {
        if (!proven.prefixes.some((own) => prefixMatches(own, prefix.endsWith('/') ? `${prefix}x` : prefix))) {
          throw new PublisherError(`publisher "${publisher.name}": the domain ${publisher.domain} proves ${proven.prefixes.join(', ')}, not ${prefix}`);
        }
      }
      set.add({ ...proven, name: publisher.name, prefixes });
    }
    return set;
  };
  const publishers = (): Promise<PublisherSet> => {
    loading ??= load().catch((error: unknown) => {
      loading = null;
      throw error;
    });
    return loading;
  };
  return async (serverJson, jws) => {
    if (catalog.publishers.length === 0) throw new Error('no publishers are configured (catalog.publishers)');
    const verified = await verifyEntry(serverJson, jws, await publishers());
    return { jws, publisher: verified.publisher, ...(verified.kid !== undefined ? { kid: verified.kid } : {}) };
  };
}

/** A cache key for one verification: the signed bytes and the signature. */
export function signatureKey(serverJson: ServerJson, jws: string): string {
  return `${createHash('sha256').update(canonicalServerJson(serverJson)).digest('hex')} ${jws}`;
}
