/**
 * Decisions: one loaded policy set, evaluated by Cedar (WebAssembly).
 *
 * The set is parsed into Cedar once per server that asks: each decision is
 * given only the policies that can apply to its server (those confined to it
 * plus the global ones), and only the context attributes those policies
 * read. A decision whose applicable policies read nothing that changes per
 * request (arguments, time, token age, address) is cached, keyed by
 * everything else it was built from; the cache belongs to the set, so a new
 * set starts with none.
 *
 * Default deny; a forbid wins; a policy that cannot be evaluated denies the
 * request (fail closed) and says which policy.
 */
import * as cedar from '@cedar-policy/cedar-wasm/nodejs';
import { PER_REQUEST } from './analyse.ts';
import type { LoadedPolicy, PolicySource } from './load.ts';
import { resourceId, toCedar, type DecisionRequest } from './request.ts';

export interface Decision {
  allow: boolean;
  /** The determining policies: the permits that allowed it, or the forbids that denied it (none: default deny). */
  policies: readonly string[];
  /** Set when a policy could not be evaluated (the request is denied). */
  error: string | null;
  /** The policy set's SHA-256. */
  set: string;
}

interface Subset {
  /** Cedar's id for the preparsed set. */
  id: string;
  policies: readonly LoadedPolicy[];
  texts: Record<string, string>;
  reads: ReadonlySet<string>;
  /** Some applicable policy reads per-request context other than arguments. */
  perRequest: boolean;
  /** The policies that read the arguments. */
  argPolicies: readonly LoadedPolicy[];
  /** Literal scopes the policies test for. */
  scopes: readonly string[];
  cache: Map<string, Decision>;
  lists: Map<string, boolean>;
}

const CACHE_LIMIT = 10_000;
const ARG_ATTRS = new Set(['args', 'argsOmitted', '*']);
let serial = 0;

function setCached<V>(cache: Map<string, V>, key: string, value: V): void {
  if (cache.size >= CACHE_LIMIT) cache.clear();
  cache.set(key, value);
}

export class PolicyEngine {
  readonly source: PolicySource;
  readonly hash: string;
  private readonly serial = ++serial;
  private readonly global: readonly LoadedPolicy[];
  private readonly byServer = new Map<string, LoadedPolicy[]>();
  private readonly subsets = new Map<string, Subset>();

  constructor(source: PolicySource) {
    this.source = source;
    this.hash = source.hash;
    const global: LoadedPolicy[] = [];
    for (const policy of source.policies) {
      if (policy.server === null) global.push(policy);
      else {
        const list = this.byServer.get(policy.server) ?? [];
        list.push(policy);
        this.byServer.set(policy.server, list);
      }
    }
    this.global = global;
  }

  get size(): number {
    return this.source.policies.length;
  }

  /** The policies that can apply to a server, preparsed once. */
  private subset(server: string): Subset {
    const key = this.byServer.has(server) ? server : '';
    let subset = this.subsets.get(key);
    if (subset !== undefined) return subset;
    const policies = key === '' ? this.global : [...this.global, ...(this.byServer.get(key) as LoadedPolicy[])];
    const texts: Record<string, string> = {};
    const reads = new Set<string>();
    const scopes = new Set<string>();
    for (const policy of policies) {
      texts[policy.id] = policy.text;
      for (const attr of policy.reads) reads.add(attr);
      for (const scope of policy.scopes) scopes.add(scope);
    }
    const id = `mandate-${this.serial}-${key}`;
    const parsed = cedar.preparsePolicySet(id, { staticPolicies: texts });
    if (parsed.type === 'failure') throw new Error(`the policy set could not be prepared: ${parsed.errors.map((e) => e.message).join('; ')}`);
    subset = {
      id,
      policies,
      texts,
      reads,
      perRequest: [...reads].some((attr) => attr === '*' || (PER_REQUEST.has(attr) && !ARG_ATTRS.has(attr))),
      argPolicies: policies.filter((policy) => [...policy.reads].some((attr) => ARG_ATTRS.has(attr))),
      scopes: [...scopes],
      cache: new Map(),
      lists: new Map(),
    };
    this.subsets.set(key, subset);
    return subset;
  }

  /** Prepares every server's policies now (at load, not on the first request). */
  prepare(servers: Iterable<string>): void {
    this.subset('');
    for (const server of servers) this.subset(server);
  }

  /** Releases what Cedar holds for this set. */
  dispose(): void {
    for (const subset of this.subsets.values()) cedar.preparsePolicySet(subset.id, { staticPolicies: {} });
    this.subsets.clear();
  }

  private cacheKey(request: DecisionRequest): string {
    const { principal, client, target, hints } = request;
    const who = principal.type === 'User' ? `U${principal.id}\u0001${principal.groups.join('\u0001')}` : `C${principal.id}`;
    const hinted = hints === undefined ? '' : `${hints.readOnlyHint}${hints.destructiveHint}${hints.idempotentHint}${hints.openWorldHint}`;
    return `${who}\0${client.id}\0${client.name}\0${client.owner}\0${client.kind}\0${request.scopes.join(' ')}\0${request.method}\0${target.type}\0${resourceId(request.server, target)}\0${hinted}`;
  }

  /** Decides one request. */
  decide(request: DecisionRequest): Decision {
    const subset = this.subset(request.server);
    const cacheable = !subset.perRequest && subset.argPolicies.length === 0;
    const key = cacheable ? this.cacheKey(request) : '';
    if (cacheable) {
      const hit = subset.cache.get(key);
      if (hit !== undefined) return hit;
    }
    const decision = this.evaluate(subset, request);
    if (cacheable && decision.error === null) setCached(subset.cache, key, decision);
    return decision;
  }

  private evaluate(subset: Subset, request: DecisionRequest): Decision {
    const built = toCedar(request, subset.reads);
    let answer: cedar.AuthorizationAnswer;
    try {
      answer = cedar.statefulIsAuthorized({ ...built, preparsedPolicySetId: subset.id, validateRequest: false });
    } catch (error) {
      return { allow: false, policies: [], error: `the policy engine failed: ${(error as Error).message}`, set: this.hash };
    }
    if (answer.type === 'failure') {
      return { allow: false, policies: [], error: `the policy engine failed: ${answer.errors.map((e) => e.message).join('; ')}`, set: this.hash };
    }
    const { decision, diagnostics } = answer.response;
    if (diagnostics.errors.length > 0) {
      const first = diagnostics.errors[0] as cedar.AuthorizationError;
      return {
        allow: false,
        policies: diagnostics.errors.map((e) => e.policyId),
        error: `policy "${first.policyId}" could not be evaluated: ${first.error.message}`,
        set: this.hash,
      };
    }
    return { allow: decision === 'allow', policies: diagnostics.reason, error: null, set: this.hash };
  }

  /**
   * Whether some call of a listed item could be allowed (list filtering).
   * Its arguments are unknown until it is called: when a policy that reads
   * them could apply, Cedar evaluates partially, and the item is shown
   * unless the residual is a certain deny. A policy that cannot be evaluated
   * hides the item.
   */
  couldAllow(request: DecisionRequest): boolean {
    const subset = this.subset(request.server);
    const target = `${request.target.type}::${resourceId(request.server, request.target)}`;
    const relevant = subset.argPolicies.filter((policy) => policy.resource === null || policy.resource === target);
    if (relevant.length === 0) {
      const decision = this.decide({ ...request, args: {} });
      return decision.allow;
    }
    const key = subset.perRequest ? '' : this.cacheKey(request);
    if (key !== '') {
      const hit = subset.lists.get(key);
      if (hit !== undefined) return hit;
    }
    const policies: Record<string, string> = {};
    for (const policy of subset.policies) if (policy.resource === null || policy.resource === target) policies[policy.id] = policy.text;
    const built = toCedar(request, subset.reads, true);
    let shown: boolean;
    try {
      const answer = cedar.isAuthorizedPartial({ ...built, policies: { staticPolicies: policies }, validateRequest: false });
      shown = answer.type === 'residuals' && answer.response.errored.length === 0 && answer.response.decision !== 'deny';
    } catch {
      shown = false;
    }
    if (key !== '') setCached(subset.lists, key, shown);
    return shown;
  }

  /**
   * A scope the token lacks whose presence would allow this denied request,
   * for the step-up challenge; null when no such scope is named in a policy.
   */
  stepUp(request: DecisionRequest): string | null {
    const subset = this.subset(request.server);
    const have = new Set(request.scopes);
    for (const scope of subset.scopes.slice(0, 16)) {
      if (have.has(scope)) continue;
      const decision = this.evaluate(subset, { ...request, scopes: [...request.scopes, scope] });
      if (decision.allow) return scope;
    }
    return null;
  }
}
