/**
 * What a delegated or task-bound access token says beyond an ordinary one
 * (docs/identity.md "Delegation", docs/tasks.md): its actor chain (`act`,
 * RFC 8693) and its task (`task`). Read by the gateway's verifier and by
 * the token exchange grant.
 */

/** The actors an `act` claim names (RFC 8693 §4.1): the current one first; at most 16 deep. */
export function actorChain(act: unknown): string[] {
  const chain: string[] = [];
  let current = act;
  while (typeof current === 'object' && current !== null && !Array.isArray(current) && chain.length < 16) {
    const { sub, client_id: clientId, act: next } = current as { sub?: unknown; client_id?: unknown; act?: unknown };
    const id = typeof clientId === 'string' ? clientId : sub;
    if (typeof id !== 'string' || id === '') break;
    chain.push(id);
    current = next;
  }
  return chain;
}

/** The `task` claim of a task-bound token (docs/tasks.md): what policy sees as `context.task`. */
export interface TaskClaim {
  id: string;
  purpose: string;
  ticket?: string;
  /** The task's tools on its server ([]: every tool). */
  tools: string[];
}

/** A token's `task` claim, if it is a well-formed one. */
export function readTaskClaim(value: unknown): TaskClaim | null {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return null;
  const { id, purpose, ticket, tools } = value as Record<string, unknown>;
  if (typeof id !== 'string' || typeof purpose !== 'string' || !Array.isArray(tools) || !tools.every((tool) => typeof tool === 'string')) return null;
  return { id, purpose, ...(typeof ticket === 'string' ? { ticket } : {}), tools: tools as string[] };
}
