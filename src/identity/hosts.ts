/** Host allow-lists: `example.com` matches exactly, `*.example.com` any subdomain (not the apex). */
export function hostMatches(patterns: readonly string[], hostname: string): boolean {
  const host = hostname.toLowerCase().replace(/\.$/, '');
  return patterns.some((pattern) => (pattern.startsWith('*.') ? host.endsWith(pattern.slice(1)) && host.length > pattern.length - 1 : host === pattern));
}
