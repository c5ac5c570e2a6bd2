/**
 * The scope scheme (docs/identity.md):
 *   mcp:NAME             everything on server NAME
 *   mcp:NAME:tool:TOOL   initialize, list and ping on NAME, and call TOOL only
 *   mandate:admin        the admin API, {issuer}/admin/v1, as the signed-in user
 * A token's audience is exactly one server's canonical URI, {issuer}/mcp/NAME,
 * and it carries only that server's scopes; or exactly the admin API's URI,
 * with only mandate:admin.
 */
import type { ResolvedServer } from '../config/load.ts';

/** The scope of the admin API (src/admin/api.ts): act on the server catalog as the signed-in user, within that user's roles. */
export const ADMIN_SCOPE = 'mandate:admin';

/** The admin API's canonical resource URI, its tokens' only audience. */
export const adminResource = (issuer: string): string => `${issuer}/admin/v1`;

export const TOOL_NAME = /^[A-Za-z0-9_.\-/]{1,128}$/;

export const serverScope = (server: string): string => `mcp:${server}`;
export const toolScope = (server: string, tool: string): string => `mcp:${server}:tool:${tool}`;

/** Whether `scope` is one of `server`'s scopes: `mcp:NAME`, or `mcp:NAME:tool:T` with a valid tool name. */
export function isServerScope(server: string, scope: string): boolean {
  const prefix = `mcp:${server}:tool:`;
  return scope === serverScope(server) || (scope.startsWith(prefix) && TOOL_NAME.test(scope.slice(prefix.length)));
}

/** Whether the scopes `held` cover `scope` on `server`: the scope itself, or for a tool scope the server's whole scope. */
export function scopeCovered(held: ReadonlySet<string>, server: string, scope: string): boolean {
  return held.has(scope) || (scope.startsWith(`mcp:${server}:tool:`) && held.has(serverScope(server)));
}

/** The words of a scope string (anything else: none). */
export const scopeWords = (scope: unknown): string[] => (typeof scope === 'string' ? scope.split(' ').filter(Boolean) : []);

/** Tool scopes for this server among the words of a scope string. */
export function toolScopesIn(server: string, scope: string | undefined | null): string[] {
  if (!scope) return [];
  const prefix = `mcp:${server}:tool:`;
  return scope.split(' ').filter((word) => word.startsWith(prefix) && TOOL_NAME.test(word.slice(prefix.length)));
}

/**
 * The MCP servers behind the gateway, as the identity plane reads them: the
 * gateway's server registry (src/gateway/registry.ts), which changes when
 * the configuration is reloaded. Resources, scopes and consent follow it.
 */
export interface Servers {
  list(): readonly ResolvedServer[];
  /** The server whose canonical URI ({issuer}/mcp/NAME) is exactly `endpoint`. */
  forEndpoint(endpoint: string): ResolvedServer | undefined;
}

/** The server whose canonical URI is exactly `resource`. */
export function serverForResource(servers: Servers, resource: string): ResolvedServer | undefined {
  return servers.forEndpoint(resource);
}

/** Every server's scope, `mcp:NAME` (advertised in the authorization server metadata). */
export function serverScopes(servers: Servers): string[] {
  return servers.list().map((server) => serverScope(server.name));
}

export interface Grants {
  /** The whole server. */
  all: boolean;
  /** Tools callable by name. */
  tools: ReadonlySet<string>;
}

/** What a token's scopes allow on one server. */
export function grantsFor(server: string, scopes: readonly string[]): Grants {
  const tools = new Set<string>();
  let all = false;
  const prefix = `mcp:${server}:tool:`;
  for (const scope of scopes) {
    if (scope === serverScope(server)) all = true;
    else if (scope.startsWith(prefix)) tools.add(scope.slice(prefix.length));
  }
  return { all, tools };
}

/** Methods a tool-scoped token may use besides tools/call of its tools. */
export const TOOL_SCOPE_METHODS: ReadonlySet<string> = new Set([
  'initialize',
  'notifications/initialized',
  'ping',
  'tools/list',
  'server/discover',
  'notifications/cancelled',
  'notifications/progress',
  'notifications/roots/list_changed',
  'logging/setLevel',
]);

/** The scope a request needs, or null if the grants cover it. */
export function missingScope(server: string, grants: Grants, method: string, tool: string | null): string | null {
  if (grants.all) return null;
  if (method === 'tools/call') return tool !== null && grants.tools.has(tool) ? null : toolScope(server, tool ?? '*');
  if (grants.tools.size > 0 && (TOOL_SCOPE_METHODS.has(method) || method.startsWith('notifications/'))) return null;
  return serverScope(server);
}
