/**
 * Catalog fields as Cedar attributes: a Server admitted through the catalog
 * carries owner, team, tenant, environment, risk, classification and status;
 * its tools name it as `resource.entry` and say whether they are `pinned`.
 * Policies validate against the schema and decide on them; a cached decision
 * never outlives a change of those attributes.
 */
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PolicyEngine } from '../../src/policy/engine.ts';
import { loadPolicyTexts } from '../../src/policy/load.ts';
import type { CatalogFacts, DecisionRequest } from '../../src/policy/request.ts';

const POLICIES = `
@id("everyone-reads")
permit (principal, action, resource);

@id("no-high-risk-for-machines")
forbid (principal is Client, action == Action::"tools/call", resource)
  when { resource has entry && resource.entry has risk && resource.entry.risk == "high" };

@id("only-pinned-tools")
forbid (principal, action == Action::"tools/call", resource)
  when { resource has pinned && !resource.pinned };

@id("prod-lists-for-owners")
forbid (principal, action == Action::"tools/list", resource)
  when { resource has environment && resource.environment == "prod" && !(resource has owner && resource.owner == principal) };
`;

const engine = new PolicyEngine(loadPolicyTexts('test', [{ name: 'main.cedar', text: POLICIES }], []));

const FACTS: CatalogFacts = { owner: 'alice', team: 'payments', tenant: 'acme', environment: 'prod', risk: 'high', classification: 'confidential', status: 'approved' };

function ask(overrides: Partial<DecisionRequest> = {}): DecisionRequest {
  return {
    principal: { type: 'Client', id: 'mc_1' },
    client: { id: 'mc_1', name: 'agent', owner: null, kind: 'machine' },
    method: 'tools/call',
    server: 'payments',
    target: { type: 'Tool', name: 'refund' },
    scopes: ['mcp:payments'],
    args: {},
    now: Date.parse('2026-12-03T08:00:00Z'),
    tokenAge: 5,
    sourceAddress: '127.0.0.1',
    ...overrides,
  };
}

describe('catalog fields as Cedar attributes', () => {
  it('a tool call reads its server catalog entry: high risk is refused to a machine client, not without a catalog entry', () => {
    const denied = engine.decide(ask({ catalog: FACTS, pinned: true }));
    assert.equal(denied.allow, false);
    assert.deepEqual(denied.policies, ['no-high-risk-for-machines']);
    assert.equal(engine.decide(ask({ catalog: { ...FACTS, risk: 'low' }, pinned: true })).allow, true, 'the risk changed: not a stale cached answer');
    assert.equal(engine.decide(ask()).allow, true, 'a server from mandate.yaml has no entry');
  });

  it('resource.pinned: a tool without a reviewed pin is refused by a policy that asks for one', () => {
    const low = { ...FACTS, risk: 'low' };
    assert.equal(engine.decide(ask({ catalog: low, pinned: false })).allow, false);
    assert.equal(engine.decide(ask({ catalog: low, pinned: true })).allow, true);
  });

  it('a Server carries owner (a User), environment and the rest: only its owner lists a prod server', () => {
    const list = (id: string) => ask({ principal: { type: 'User', id, groups: [] }, client: { id: 'c', name: 'c', owner: null, kind: 'interactive' }, method: 'tools/list', target: { type: 'Server', name: 'payments' }, catalog: FACTS });
    assert.equal(engine.decide(list('alice')).allow, true);
    assert.equal(engine.decide(list('bob')).allow, false);
    assert.equal(engine.decide({ ...list('bob'), catalog: { ...FACTS, environment: 'dev' } }).allow, true);
  });
});
