/**
 * Per-request notes shared between Mandate's steps around the authorization
 * server and its storage adapter (which oidc-provider calls without a request).
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import type { ClientClass, ClientStatus } from '../store/types.ts';

export interface RequestNotes {
  /** The caller's network address. */
  address: string;
  /** Set by the registration intake: what the new client becomes. */
  registration?: { status: ClientStatus; class: ClientClass; owner: string | null; via: string };
  /** Set by the adapter when a known client was refused for its status. */
  inactiveClient?: { id: string; status: ClientStatus };
}

export const requestNotes = new AsyncLocalStorage<RequestNotes>();

/**
 * A client that exists but is not active reads as unknown to the
 * authorization server (invalid_client); this says why, for the answer.
 */
export function inactiveClientReason(): string | null {
  const inactive = requestNotes.getStore()?.inactiveClient;
  if (!inactive) return null;
  return inactive.status === 'pending' ? 'this client is pending approval by an administrator' : `this client is ${inactive.status}`;
}
