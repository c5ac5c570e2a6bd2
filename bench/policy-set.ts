/**
 * The policy set the benchmarks decide with: per server `srv-N`, a read
 * permit for its team, a forbid on its `danger` tool unless admin, a permit
 * on read-only tools for `ops`, and tool permits (every third with an
 * argument condition: a path prefix), `perServer` policies in all.
 */
export function benchPolicies(servers: number, perServer: number): string {
  const lines: string[] = [];
  for (let s = 0; s < servers; s += 1) {
    const server = `srv-${s}`;
    const team = `team-${s}`;
    const own = [
      `@id("${server}-read") permit (principal in Group::"${team}", action in Action::"read", resource in Server::"${server}");`,
      `@id("${server}-danger") forbid (principal, action == Action::"tools/call", resource == Tool::"${server}/danger") unless { principal in Group::"admins" };`,
      `@id("${server}-ops") permit (principal in Group::"ops", action == Action::"tools/call", resource in Server::"${server}") when { resource has readOnlyHint && resource.readOnlyHint };`,
    ];
    for (let k = 0; own.length < perServer; k += 1) {
      own.push(
        k % 3 === 2
          ? `@id("${server}-write-${k}") permit (principal in Group::"${team}", action == Action::"tools/call", resource == Tool::"${server}/tool-${k}") when { context.args has path && context.args.path like "/data/${s}/*" };`
          : `@id("${server}-tool-${k}") permit (principal in Group::"${team}", action == Action::"tools/call", resource == Tool::"${server}/tool-${k}");`,
      );
    }
    lines.push(...own);
  }
  return lines.join('\n');
}

/** The schema addition the set needs (its argument condition). */
export const BENCH_ARGS_SCHEMA = 'type Args = { path?: String };\n';
