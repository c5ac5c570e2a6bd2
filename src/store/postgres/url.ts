/** PostgreSQL URL handling: a credential-free description, and secrets to redact. */

export interface ParsedPostgresUrl {
  /** `postgres host:port/database`, never user or password. */
  description: string;
  /** Values that must never appear in a message (the password, if any). */
  secrets: string[];
  /** The `options` query parameter, if any (it would override the pool's `options`). */
  options: string | null;
  /** The URL to give pg, without its `options` parameter. */
  connectionString: string;
}

export function isPostgresUrl(value: string): boolean {
  return /^postgres(ql)?:\/\//i.test(value);
}

export function parsePostgresUrl(databaseUrl: string): ParsedPostgresUrl {
  let url: URL;
  try {
    url = new URL(databaseUrl);
  } catch {
    // Never echo the URL: it may hold a password.
    throw new Error('the PostgreSQL database URL is not a valid URL');
  }
  const host = url.hostname || url.searchParams.get('host') || 'localhost';
  const port = url.port || url.searchParams.get('port') || '5432';
  const database = decodeURIComponent(url.pathname.replace(/^\//, '')) || '(default database)';
  const secrets = [url.password, safeDecode(url.password), url.searchParams.get('password') ?? '']
    .filter((s) => s.length > 0);
  const options = url.searchParams.get('options');
  let connectionString = databaseUrl;
  if (options !== null) {
    url.searchParams.delete('options');
    connectionString = url.toString();
  }
  return { description: `postgres ${host}:${port}/${database}`, secrets, options, connectionString };
}

/** Replaces every secret in `text` with `***`. */
export function redact(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) out = out.split(secret).join('***');
  return out;
}

function safeDecode(value: string): string {
  try {
    return decodeURIComponent(value);
  } catch {
    return value;
  }
}
