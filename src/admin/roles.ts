/**
 * Who holds which admin role (`admin.roles` in mandate.yaml): a role is held
 * by a user named `user:NAME`, or by any member of a group named
 * `group:NAME`. The one reading of that section; the catalog
 * (src/catalog/service.ts) and break-glass (src/breakglass/service.ts) decide
 * what each role may do.
 */
import type { AdminConfig, AdminRole } from '../config/catalog-schema.ts';

/** The roles `user` holds, in the order admin.roles lists them. */
export function rolesHeld(admin: AdminConfig, user: { name: string; groups: readonly string[] }): AdminRole[] {
  const members = new Set([`user:${user.name}`, ...user.groups.map((group) => `group:${group}`)]);
  return (Object.keys(admin.roles) as AdminRole[]).filter((role) => admin.roles[role].some((member) => members.has(member)));
}
