/** The client address behind trusted proxies: only the proxies' own X-Forwarded-For entries count. */
import assert from 'node:assert/strict';
import type { IncomingMessage } from 'node:http';
import { describe, it } from 'node:test';
import { clientAddress } from '../../src/identity/service.ts';

const request = (peer: string, forwarded?: string): IncomingMessage =>
  ({ socket: { remoteAddress: peer }, headers: forwarded === undefined ? {} : { 'x-forwarded-for': forwarded } }) as unknown as IncomingMessage;

describe('clientAddress', () => {
  it('without trusted proxies: the peer, whatever X-Forwarded-For says', () => {
    assert.equal(clientAddress(request('203.0.113.5', '198.51.100.1'), []), '203.0.113.5');
  });
  it('from a trusted proxy: the nearest untrusted hop', () => {
    assert.equal(clientAddress(request('10.0.0.2', '198.51.100.7'), ['10.0.0.2']), '198.51.100.7');
    assert.equal(clientAddress(request('::ffff:10.0.0.2', '1.2.3.4, 198.51.100.7, 10.0.0.3'), ['10.0.0.2', '10.0.0.3']), '198.51.100.7');
  });
  it('a client cannot pick its address by sending X-Forwarded-For itself', () => {
    // The leftmost entry is the client's own claim; the proxy appends the real peer.
    assert.equal(clientAddress(request('10.0.0.2', 'spoofed-by-client, 198.51.100.7'), ['10.0.0.2']), '198.51.100.7');
  });
  it('from an untrusted peer: the header is ignored; a trusted peer without the header is itself', () => {
    assert.equal(clientAddress(request('198.51.100.9', '1.1.1.1'), ['10.0.0.2']), '198.51.100.9');
    assert.equal(clientAddress(request('10.0.0.2'), ['10.0.0.2']), '10.0.0.2');
  });
});
