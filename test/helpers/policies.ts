/**
 * A sample policy set for tests of the policy plane (engine and CLI): four
 * policies on a server `files`, at fixed lines (2, 5, 9, 13), with argument
 * conditions that need `type Args = { path?: String }`.
 */
export const FILES_POLICIES = `// a comment line
@id("readers-read")
permit (principal in Group::"readers", action in Action::"read", resource in Server::"files");

@id("readers-read-file")
permit (principal in Group::"readers", action == Action::"tools/call", resource == Tool::"files/read_file")
  when { context.args has path && context.args.path like "/srv/public/*" };

@id("no-secrets")
forbid (principal, action, resource == Tool::"files/read_file")
  when { context.args has path && context.args.path like "*secret*" };

@id("machines-list")
permit (principal is Client, action == Action::"tools/list", resource)
  when { principal.kind == "machine" };
`;
