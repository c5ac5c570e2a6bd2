/**
 * Outbound fetches on behalf of clients (Client ID Metadata Documents) may
 * only reach public addresses: a name that resolves to a private, loopback,
 * link-local or otherwise special address is refused before any connection,
 * unless its host is allow-listed. No redirects, a timeout, a size cap.
 */
import { lookup as dnsLookup, type LookupAddress } from 'node:dns';
import { BlockList, isIP, type LookupFunction } from 'node:net';
import { Agent, fetch as undiciFetch } from 'undici';
import { hostMatches } from './hosts.ts';

const SPECIAL = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], ['10.0.0.0', 8], ['100.64.0.0', 10], ['127.0.0.0', 8], ['169.254.0.0', 16], ['172.16.0.0', 12],
  ['192.0.0.0', 24], ['192.0.2.0', 24], ['192.88.99.0', 24], ['192.168.0.0', 16], ['198.18.0.0', 15], ['198.51.100.0', 24],
  ['203.0.113.0', 24], ['224.0.0.0', 4], ['240.0.0.0', 4],
] as const) SPECIAL.addSubnet(net, prefix, 'ipv4');
for (const [net, prefix] of [
  ['::', 128], ['::1', 128], ['64:ff9b::', 96], ['64:ff9b:1::', 48], ['100::', 64], ['2001::', 23], ['2001:db8::', 32],
  ['2002::', 16], ['fc00::', 7], ['fe80::', 10], ['ff00::', 8],
] as const) SPECIAL.addSubnet(net, prefix, 'ipv6');
// No rule for ::ffff:0:0/96 (IPv4-mapped): BlockList checks mapped addresses against the IPv4 rules
// itself, and such a rule would also match every plain IPv4 address.

/** True for addresses that are not globally routable (IPv4-mapped IPv6 is judged by its IPv4 part). */
export function isSpecialAddress(address: string): boolean {
  const bare = address.replace(/^\[|\]$/g, '');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  if (mapped?.[1]) return SPECIAL.check(mapped[1], 'ipv4');
  const family = isIP(bare);
  if (family === 4) return SPECIAL.check(bare, 'ipv4');
  if (family === 6) return SPECIAL.check(bare, 'ipv6');
  return true;
}

export class SsrfError extends Error {
  override readonly name = 'SsrfError';
}

export interface GuardedFetchOptions {
  /** Hosts that may resolve to special addresses. */
  allowPrivate: readonly string[];
  timeoutMs: number;
}

/** A fetch for oidc-provider's `fetch` option that applies the guard. */
export function guardedFetch(options: GuardedFetchOptions): (input: string | URL | Request, init?: RequestInit) => Promise<Response> {
  const guardedLookup: LookupFunction = (hostname, lookupOptions, callback) => {
    dnsLookup(hostname, { ...lookupOptions, all: true }, (error, addresses) => {
      if (error) return callback(error, '', 0);
      const list = addresses as LookupAddress[];
      const allowed = hostMatches(options.allowPrivate, hostname);
      const refused = list.find((entry) => !allowed && isSpecialAddress(entry.address));
      if (refused || list.length === 0) return callback(new SsrfError(`${hostname} resolves to a non-public address`), '', 0);
      if (lookupOptions.all) return (callback as unknown as (e: null, a: LookupAddress[]) => void)(null, list);
      const first = list[0]!;
      callback(null, first.address, first.family);
    });
  };
  const agent = new Agent({ connect: { lookup: guardedLookup, timeout: options.timeoutMs } });
  return async (input, init) => {
    const url = new URL(input instanceof Request ? input.url : input);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    if (isIP(host) && isSpecialAddress(host) && !hostMatches(options.allowPrivate, url.hostname)) {
      throw new SsrfError(`${url.hostname} is a non-public address`);
    }
    const { dispatcher: _ignored, signal: _signal, ...rest } = (init ?? {}) as RequestInit & { dispatcher?: unknown };
    const response = await undiciFetch(url, {
      ...(rest as object),
      redirect: 'manual',
      dispatcher: agent,
      signal: AbortSignal.timeout(options.timeoutMs),
    } as Parameters<typeof undiciFetch>[1]);
    return response as unknown as Response;
  };
}
