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
import { resourceId, toCedar, type DecisionRequest, type Needs } from './request.ts';

export interface Decision {
  allow: boolean;
  /** The determining policies: the permits that allowed it, or the forbids that denied it (none: default deny). */
  policies: readonly string[];
  /** Set when a policy could not be evaluated (the request is denied). */
  error: string | null;
  /**
   * Set when the decision depends on a tool's hints and the gateway has not
   * seen the upstream's tools/list that declares them (the request is denied
   * until it has).
   */
  unseen?: true;
  /** The policy set's SHA-256. */
  set: string;
  /**
   * Allowed, but one of the permits that allowed it asks for a person's
   * approval of the call first (`@approval("GROUP")`, docs/approvals.md):
   * the groups whose members may give it.
   */
  approval?: readonly string[];
}

/** The groups a permit's `@approval("a,b")` names (none: it asks for no approval). */
export function approvalGroups(policy: LoadedPolicy): string[] {
  if (policy.json.effect !== 'permit') return [];
  const value = policy.json.annotations?.approval;
  if (typeof value !== 'string') return [];
  return value
    .split(',')
    .map((group) => group.trim())
    .filter((group) => group !== '');
}

interface Subset {
  /** Cedar's id for the preparsed set. */
  id: string;
  policies: readonly LoadedPolicy[];
  /** Literal scopes the policies test for. */
  scopes: readonly string[];
  /** What the policies that can apply to one target read, by target. */
  views: Map<string, View>;
  /** Preparsed sets of some of these policies (by their ids), shared by the targets they decide. */
  sets: Map<string, string>;
  cache: Map<string, Decision>;
  lists: Map<string, boolean>;
}

/**
 * The policies of a subset that can apply to one target (those whose scope
 * names no other resource exactly), and what they read. Cedar evaluates a
 * policy's conditions only when its scope matches, so the context need hold
 * only what these read.
 */
interface View {
  /** Cedar's id for the preparsed set these policies decide with (the subset's when they are all of it). */
  id: string;
  relevant: readonly LoadedPolicy[];
  /** Their texts by id, as a partial evaluation is given them. */
  texts: Record<string, string>;
  reads: ReadonlySet<string>;
  /** Some of them read the arguments. */
  args: boolean;
  /** Some of them read context that changes per request: the decision is not cached. */
  perRequest: boolean;
  /** Some of them read context that changes per request besides the arguments: a list-time answer is not cached. */
  perRequestBesidesArgs: boolean;
  needs: Needs;
  /**
   * No policy names this target or depends on which one it is: every target
   * of its type on its server with the same attributes is decided alike, and
   * shares a cache entry (a long list costs a few decisions, not one per item).
   */
  generic: boolean;
}

const CACHE_LIMIT = 10_000;
/** Targets per engine that get a preparsed set of their own policies (each decision then evaluates only those). */
const VIEW_SETS = 20_000;
const ARG_ATTRS = new Set(['args', 'argsOmitted', '*']);
let serial = 0;

/** Policies by id, as Cedar takes a set. */
function textsOf(policies: readonly LoadedPolicy[]): Record<string, string> {
  const texts: Record<string, string> = {};
  for (const policy of policies) texts[policy.id] = policy.text;
  return texts;
}

function setCached<V>(cache: Map<string, V>, key: string, value: V): void {
  if (cache.size >= CACHE_LIMIT) cache.clear();
  cache.set(key, value);
}

export interface EngineOptions {
  /** Cache decisions that read nothing per request (default true; off only to measure). */
  cache?: boolean;
}

export class PolicyEngine {
  readonly source: PolicySource;
  readonly hash: string;
  private readonly serial = ++serial;
  private readonly global: readonly LoadedPolicy[];
  private readonly byServer = new Map<string, LoadedPolicy[]>();
  private readonly subsets = new Map<string, Subset>();

  private readonly caching: boolean;
  private viewSets = 0;
  /** Permits that ask for approval: their groups, by policy id. */
  private readonly approvals = new Map<string, string[]>();

  constructor(source: PolicySource, options: EngineOptions = {}) {
    this.source = source;
    this.caching = options.cache ?? true;
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
    for (const policy of source.policies) {
      const groups = approvalGroups(policy);
      if (groups.length > 0) this.approvals.set(policy.id, groups);
    }
  }

  /** An allowing decision, with the approval its determining permits ask for (if any). */
  private allowed(policies: readonly string[]): Decision {
    const groups = new Set<string>();
    for (const id of policies) for (const group of this.approvals.get(id) ?? []) groups.add(group);
    return groups.size === 0 ? { allow: true, policies, error: null, set: this.hash } : { allow: true, policies, error: null, set: this.hash, approval: [...groups] };
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
    const scopes = new Set(policies.flatMap((policy) => policy.scopes));
    const id = `mandate-${this.serial}-${key}`;
    const parsed = cedar.preparsePolicySet(id, { staticPolicies: textsOf(policies) });
    if (parsed.type === 'failure') throw new Error(`the policy set could not be prepared: ${parsed.errors.map((e) => e.message).join('; ')}`);
    subset = { id, policies, scopes: [...scopes], views: new Map(), sets: new Map(), cache: new Map(), lists: new Map() };
    this.subsets.set(key, subset);
    return subset;
  }

  private view(subset: Subset, request: DecisionRequest): View {
    const target = `${request.target.type}::${resourceId(request.server, request.target)}`;
    let view = subset.views.get(target);
    if (view !== undefined) return view;
    const relevant = subset.policies.filter((policy) => policy.resource === null || policy.resource === target);
    const reads = new Set<string>();
    for (const policy of relevant) for (const attr of policy.reads) reads.add(attr);
    const attrs = [...reads];
    const texts = textsOf(relevant);
    const kept = subset.views.size < CACHE_LIMIT;
    let id = subset.id;
    if (relevant.length < subset.policies.length) {
      // Targets that no policy names exactly share one set: the subset without the exact-target policies.
      const ids = relevant.map((policy) => policy.id).join('\0');
      const shared = subset.sets.get(ids);
      if (shared !== undefined) id = shared;
      else if (this.viewSets < VIEW_SETS) {
        const own = `${subset.id}#${this.viewSets}`;
        if (cedar.preparsePolicySet(own, { staticPolicies: texts }).type === 'success') {
          id = own;
          this.viewSets += 1;
          subset.sets.set(ids, own);
        }
      }
    }
    view = {
      id,
      relevant,
      texts,
      reads,
      args: attrs.some((attr) => ARG_ATTRS.has(attr)),
      perRequest: attrs.some((attr) => attr === '*' || PER_REQUEST.has(attr)),
      perRequestBesidesArgs: attrs.some((attr) => attr === '*' || (PER_REQUEST.has(attr) && !ARG_ATTRS.has(attr))),
      needs: { actionGroup: relevant.some((policy) => policy.actionGroups), resourceAttributes: relevant.some((policy) => policy.resourceAttributes) },
      generic: relevant.every((policy) => policy.resource === null && !policy.resourceIdentity),
    };
    if (kept) subset.views.set(target, view);
    return view;
  }

  /** Prepares every server's policies now (at load, not on the first request). */
  prepare(servers: Iterable<string>): void {
    this.subset('');
    for (const server of servers) this.subset(server);
  }

  /** Releases what Cedar holds for this set. */
  dispose(): void {
    for (const subset of this.subsets.values()) {
      for (const id of subset.sets.values()) cedar.preparsePolicySet(id, { staticPolicies: {} });
      cedar.preparsePolicySet(subset.id, { staticPolicies: {} });
    }
    this.subsets.clear();
  }

  /** Everything a cached decision was built from, and only that: what the view's policies cannot read is left out, so more requests share an entry. */
  private cacheKey(request: DecisionRequest, view: View): string {
    const { principal, client, target, hints } = request;
    const who = principal.type === 'User' ? `U${principal.id}\u0001${principal.groups.join('\u0001')}` : `C${principal.id}`;
    const all = view.reads.has('*');
    const withClient = all || view.reads.has('client') || principal.type === 'Client';
    const via = withClient ? `${client.id}\u0001${client.name}\u0001${client.owner}\u0001${client.kind}` : '';
    const scopes = all || view.reads.has('scopes') ? request.scopes.join(' ') : '';
    const hinted = hints === undefined || !view.needs.resourceAttributes ? '' : `${hints.readOnlyHint}${hints.destructiveHint}${hints.idempotentHint}${hints.openWorldHint}`;
    // The catalog's attributes and the pin change while the gateway runs (an approval, a renewal): part of the key when read.
    const catalog = !view.needs.resourceAttributes || (request.catalog === undefined && request.pinned === undefined) ? '' : `${JSON.stringify(request.catalog ?? null)}\u0001${request.pinned}`;
    const what = view.generic ? `${request.server}\u0001*` : resourceId(request.server, target);
    // A break-glass grant is read as a whole: its id names all of it.
    const breakglass = all || view.reads.has('breakglass') ? (request.breakglass?.id ?? '') : '';
    const actors = all || view.reads.has('actors') ? (request.actors ?? []).join('\u0001') : '';
    // A task's facts are fixed for its id.
    const task = all || view.reads.has('task') ? (request.task?.id ?? '') : '';
    return `${who}\0${via}\0${scopes}\0${request.method}\0${target.type}\0${what}\0${hinted}\0${catalog}\0${breakglass}\0${actors}\0${task}`;
  }

  /** Decides one request. */
  decide(request: DecisionRequest): Decision {
    const subset = this.subset(request.server);
    const view = this.view(subset, request);
    if (request.target.type === 'Tool' && request.hints === undefined && view.needs.resourceAttributes) return this.withoutHints(view, request);
    const cacheable = this.caching && !view.perRequest;
    const key = cacheable ? this.cacheKey(request, view) : '';
    if (cacheable) {
      const hit = subset.cache.get(key);
      if (hit !== undefined) return hit;
    }
    const decision = this.evaluate(view, request);
    if (cacheable && decision.error === null) setCached(subset.cache, key, decision);
    return decision;
  }

  /**
   * A call to a tool whose hints the gateway has not seen, decided by
   * policies that read a tool's attributes: the hints are unknown to Cedar,
   * so a forbid on a hint can never be skipped because the hint was not
   * known. A decision that depends on them is a denial until the upstream's
   * list has been seen. Not cached.
   */
  private withoutHints(view: View, request: DecisionRequest): Decision {
    const answer = this.partial(view, request, false);
    if (typeof answer === 'string') return this.failed(answer);
    const { decision, errored, mustBeDetermining, nontrivialResiduals } = answer;
    if (errored.length > 0) return { allow: false, policies: errored, error: `policy "${errored[0]}" could not be evaluated`, set: this.hash };
    if (decision === null) return { allow: false, policies: nontrivialResiduals, error: null, set: this.hash, unseen: true };
    return decision === 'allow' ? this.allowed(mustBeDetermining) : { allow: false, policies: mustBeDetermining, error: null, set: this.hash };
  }

  /** Cedar itself failed: a denial that says so. */
  private failed(message: string): Decision {
    return { allow: false, policies: [], error: `the policy engine failed: ${message}`, set: this.hash };
  }

  /** Partial evaluation with the view's policies (the arguments unknown when `unknownArgs`); Cedar's message when it failed. */
  private partial(view: View, request: DecisionRequest, unknownArgs: boolean): cedar.ResidualResponse | string {
    const built = toCedar(request, view.reads, unknownArgs, view.needs);
    try {
      const answer = cedar.isAuthorizedPartial({ ...built, policies: { staticPolicies: view.texts }, validateRequest: false });
      return answer.type === 'failure' ? answer.errors.map((e) => e.message).join('; ') : answer.response;
    } catch (error) {
      return (error as Error).message;
    }
  }

  private evaluate(view: View, request: DecisionRequest): Decision {
    const built = toCedar(request, view.reads, false, view.needs);
    let answer: cedar.AuthorizationAnswer;
    try {
      answer = cedar.statefulIsAuthorized({ ...built, preparsedPolicySetId: view.id, validateRequest: false });
    } catch (error) {
      return this.failed((error as Error).message);
    }
    if (answer.type === 'failure') return this.failed(answer.errors.map((e) => e.message).join('; '));
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
    return decision === 'allow' ? this.allowed(diagnostics.reason) : { allow: false, policies: diagnostics.reason, error: null, set: this.hash };
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
    const view = this.view(subset, request);
    if (!view.args) return this.decide({ ...request, args: {} }).allow;
    const key = this.caching && !view.perRequestBesidesArgs ? this.cacheKey(request, view) : '';
    if (key !== '') {
      const hit = subset.lists.get(key);
      if (hit !== undefined) return hit;
    }
    const answer = this.partial(view, request, true);
    const shown = typeof answer !== 'string' && answer.errored.length === 0 && answer.decision !== 'deny';
    if (key !== '') setCached(subset.lists, key, shown);
    return shown;
  }

  /**
   * A scope the token lacks whose presence would allow this denied request,
   * for the step-up challenge; null when no such scope is named in a policy.
   */
  stepUp(request: DecisionRequest): string | null {
    const subset = this.subset(request.server);
    const view = this.view(subset, request);
    const have = new Set(request.scopes);
    for (const scope of subset.scopes.slice(0, 16)) {
      if (have.has(scope)) continue;
      const decision = this.evaluate(view, { ...request, scopes: [...request.scopes, scope] });
      if (decision.allow) return scope;
    }
    return null;
  }
}
