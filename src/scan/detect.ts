/**
 * Detection of hard-coded credentials in the values of an MCP client
 * configuration: pure functions, no file system, no network.
 *
 * A value is looked at in three ways:
 *  - known token formats anywhere in it (GitHub, Slack, AWS, OpenAI,
 *    Anthropic, Stripe, Google, JWTs, PEM private keys), whatever it is named;
 *  - URLs in it: a password in the userinfo, or a query parameter named like
 *    a credential (`?api_key=`, `token=`);
 *  - its name: a value named like a secret (`*_KEY`, `*_TOKEN`, `*_SECRET`,
 *    `*PASSWORD*`, `Authorization`…) that is long and random enough
 *    (Shannon entropy) to be one, after a `Bearer ` scheme is taken off.
 * Placeholders (`${VAR}`, `${input:id}`, `$VAR`, `<your-key>`, `changeme`,
 * `xxxx`, `***`…) are never findings, nor are paths, URLs without
 * credentials, numbers and booleans.
 *
 * A detection carries the secret so that `--fix` can move it; everything
 * that is shown carries `mask(secret)` instead, never the secret.
 */

export type Severity = 'high' | 'medium' | 'low';

/** Every kind a finding can have, with its severity and what it is (SARIF rules are made from this). */
export const KINDS = {
  'github-token': { severity: 'high', title: 'GitHub token' },
  'slack-token': { severity: 'high', title: 'Slack token' },
  'aws-access-key-id': { severity: 'high', title: 'AWS access key ID' },
  'aws-secret-access-key': { severity: 'high', title: 'AWS secret access key' },
  'openai-api-key': { severity: 'high', title: 'OpenAI API key' },
  'anthropic-api-key': { severity: 'high', title: 'Anthropic API key' },
  'stripe-live-key': { severity: 'high', title: 'Stripe live secret or restricted key' },
  'stripe-test-key': { severity: 'low', title: 'Stripe test secret or restricted key' },
  'google-api-key': { severity: 'high', title: 'Google API key' },
  'private-key': { severity: 'high', title: 'Private key (PEM)' },
  jwt: { severity: 'medium', title: 'JSON Web Token' },
  'url-password': { severity: 'high', title: 'Password in a URL' },
  'url-query-secret': { severity: 'medium', title: 'Credential in a URL query parameter' },
  'basic-auth': { severity: 'high', title: 'HTTP Basic credentials' },
  'high-entropy': { severity: 'medium', title: 'High-entropy value named like a secret' },
  password: { severity: 'medium', title: 'Literal password' },
} as const satisfies Record<string, { severity: Severity; title: string }>;

export type Kind = keyof typeof KINDS;

/** Where a value sits in a server's entry, which decides how it is read. */
export type Role = 'env' | 'header' | 'arg' | 'url' | 'input';

/** One value of a configuration to look at. */
export interface Field {
  /** Shown in findings: `env.GITHUB_TOKEN`, `headers.Authorization`, `args[3]`, `url`. */
  location: string;
  role: Role;
  /** The name the value goes by (an environment variable, a header, an option before an argument), when it has one. */
  name?: string;
  value: string;
  /** 1-based line of the value in its file, when known. */
  line?: number;
}

export interface Detection {
  kind: Kind;
  severity: Severity;
  /** The secret itself (the token, not the `Bearer ` before it). Never printed: use `masked`. */
  secret: string;
  /** What may be shown of it: at most its first 4 and last 2 characters. */
  masked: string;
  /** The field it was found in. */
  field: Field;
}

// ---------------------------------------------------------------- masking and measures

/**
 * What may be shown of a secret: its first 4 and last 2 characters with `…`
 * between (`ghp_…x9`); less of a shorter one (the first 2 of 8 to 15
 * characters, nothing of fewer), so that most of it always stays hidden.
 */
export function mask(secret: string): string {
  const chars = [...secret];
  if (chars.length >= 16) return `${chars.slice(0, 4).join('')}…${chars.slice(-2).join('')}`;
  if (chars.length >= 8) return `${chars.slice(0, 2).join('')}…`;
  return '…';
}

/** Shannon entropy of a string, bits per character. */
export function shannonEntropy(text: string): number {
  const chars = [...text];
  if (chars.length === 0) return 0;
  const counts = new Map<string, number>();
  for (const c of chars) counts.set(c, (counts.get(c) ?? 0) + 1);
  let bits = 0;
  for (const n of counts.values()) {
    const p = n / chars.length;
    bits -= p * Math.log2(p);
  }
  return bits;
}

/** How many of lowercase letters, uppercase letters and digits a string mixes. */
function characterClasses(text: string): number {
  return Number(/[a-z]/.test(text)) + Number(/[A-Z]/.test(text)) + Number(/[0-9]/.test(text));
}

/** Generic rule: at least this many characters… */
export const MIN_SECRET_LENGTH = 16;
/** …and at least this many bits of Shannon entropy per character. */
export const MIN_ENTROPY = 3;

// ---------------------------------------------------------------- what is not a secret

const PLACEHOLDER_WORDS = /your|change[-_ .]?me|replace|placeholder|example|dummy|redacted|insert[-_ ]|todo|fixme|xxxx|\*\*\*|\.\.\.|…|[-_ ]here\b|^here[-_ ]/i;
const PLACEHOLDER_EXACT = new Set([
  'secret', 'password', 'passwd', 'pass', 'token', 'apikey', 'api_key', 'api-key', 'key', 'none', 'null', 'nil', 'undefined', 'empty', 'tbd', 'n/a', 'na', 'test', 'foo', 'bar',
]);

/**
 * A value that stands for a secret without being one: a reference the client
 * or the shell fills in (`${VAR}`, `${env:VAR}`, `${input:id}`, `$VAR`,
 * `%VAR%`, `{{var}}`), a template (`<your-key>`, `your-api-key-here`,
 * `changeme`, `xxxx`, `***`), or nothing at all.
 */
export function isPlaceholder(value: string): boolean {
  const text = value.trim();
  if (text === '') return true;
  if (text.includes('${') || text.includes('{{')) return true;
  if (/^\$(?:env:)?[A-Za-z_][A-Za-z0-9_]*$/.test(text) || /^%[A-Za-z_][A-Za-z0-9_]*%$/.test(text)) return true;
  if (/<[^<>]*>/.test(text)) return true;
  if (/^[*xX.#•_-]+$/.test(text)) return true;
  if (PLACEHOLDER_EXACT.has(text.toLowerCase())) return true;
  return PLACEHOLDER_WORDS.test(text);
}

/** A file system path (absolute, home-relative, relative with ./ or ../, or a Windows drive path). */
export function isPath(value: string): boolean {
  return /^(?:~|\.{1,2})?[\\/]/.test(value) || /^[A-Za-z]:[\\/]/.test(value) || /^file:/i.test(value);
}

const isNumber = (value: string) => /^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$/.test(value);
const isBoolean = (value: string) => /^(?:true|false|yes|no|on|off)$/i.test(value);
const isUrl = (value: string) => /^[A-Za-z][A-Za-z0-9+.-]*:\/\//.test(value);

// ---------------------------------------------------------------- names

/** A name split into upper-case words: `apiKey`, `api-key` and `API_KEY` all become `API_KEY`. */
export function normalizeName(name: string): string {
  return name
    .replace(/([a-z0-9])([A-Z])/g, '$1_$2')
    .replace(/[^A-Za-z0-9]+/g, '_')
    .replace(/^_+|_+$/g, '')
    .toUpperCase();
}

/** Names that never hold a secret although they end like one. */
const NOT_SECRET_NAME = /(?:^|_)(?:PUBLIC_KEY|PUBKEY|PUBLISHABLE_KEY|PRIMARY_KEY|SORT_KEY|PARTITION_KEY|KEY_ID|CACHE_KEY|TOKEN_URL|TOKEN_ENDPOINT)$/;

/** Whether a name says its value is a credential: `*_KEY`, `*_TOKEN`, `*_SECRET`, `*PASSWORD*`, `Authorization`, `X-API-Key`… */
export function isSecretName(name: string | undefined): boolean {
  if (name === undefined) return false;
  const upper = normalizeName(name);
  if (upper === '' || NOT_SECRET_NAME.test(upper)) return false;
  if (/PASSWORD|PASSWD|PASSPHRASE|SECRET/.test(upper)) return true;
  return /(?:^|_)(?:KEY|APIKEY|TOKEN|PAT|PASS|PWD|CREDENTIALS?|AUTH|AUTHORIZATION|SIG|SIGNATURE)$/.test(upper) || /(?:API|ACCESS|AUTH|PRIVATE|SECRET)KEY$/.test(upper);
}

/** Names of passwords, which may be shorter than other secrets. */
function isPasswordName(name: string | undefined): boolean {
  return name !== undefined && /PASSWORD|PASSWD|PASSPHRASE|(?:^|_)(?:PASS|PWD)$/.test(normalizeName(name));
}

// ---------------------------------------------------------------- known formats

interface Format {
  kind: Kind;
  pattern: RegExp;
  /** The part after the fixed prefix, checked for placeholders and randomness. */
  body?: (match: string) => string;
  check?: (match: string) => boolean;
}

/** Base64url JSON whose object has an `alg` (a JWT header), without throwing. */
function isJwtHeader(part: string): boolean {
  try {
    const header: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return typeof header === 'object' && header !== null && 'alg' in header;
  } catch {
    return false;
  }
}

/** The base64 of a PEM block: without its armour lines and headers; a backslash followed by n (an escaped line break) counts as one. */
function pemBody(block: string): string {
  return block
    .replace(/-----[A-Z0-9 ]+-----/g, '')
    .replace(/\\n/g, '\n')
    .replace(/^[A-Za-z-]+:.*$/gm, '')
    .replace(/\s+/g, '');
}

const B = '(?<![A-Za-z0-9_])';
const E = '(?![A-Za-z0-9_])';

/** Known token formats, most specific first (an Anthropic key is not also an OpenAI key). */
const FORMATS: Format[] = [
  { kind: 'github-token', pattern: new RegExp(`${B}gh[pousr]_[A-Za-z0-9]{36,251}${E}`, 'g'), body: (m) => m.slice(4) },
  { kind: 'github-token', pattern: new RegExp(`${B}github_pat_[A-Za-z0-9_]{22,251}${E}`, 'g'), body: (m) => m.slice(11) },
  { kind: 'slack-token', pattern: /(?<![A-Za-z0-9])xox[baprs]-[A-Za-z0-9-]{10,250}(?![A-Za-z0-9-])/g, body: (m) => m.slice(5) },
  { kind: 'aws-access-key-id', pattern: /(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])/g, body: (m) => m.slice(4) },
  { kind: 'anthropic-api-key', pattern: /(?<![A-Za-z0-9_-])sk-ant-[A-Za-z0-9_-]{20,250}(?![A-Za-z0-9_-])/g, body: (m) => m.slice(7) },
  { kind: 'openai-api-key', pattern: /(?<![A-Za-z0-9_-])sk-(?!ant-)(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,250}(?![A-Za-z0-9_-])/g, body: (m) => m.replace(/^sk-(?:proj-|svcacct-|admin-)?/, '') },
  { kind: 'stripe-live-key', pattern: new RegExp(`${B}(?:sk|rk)_live_[A-Za-z0-9]{10,247}${E}`, 'g'), body: (m) => m.slice(8) },
  { kind: 'stripe-test-key', pattern: new RegExp(`${B}(?:sk|rk)_test_[A-Za-z0-9]{10,247}${E}`, 'g'), body: (m) => m.slice(8) },
  { kind: 'google-api-key', pattern: /(?<![A-Za-z0-9_-])AIza[A-Za-z0-9_-]{35}(?![A-Za-z0-9_-])/g, body: (m) => m.slice(4) },
  {
    kind: 'jwt',
    pattern: /(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*(?![A-Za-z0-9_-])/g,
    check: (m) => isJwtHeader(m.split('.')[0] ?? ''),
    body: (m) => m.split('.')[1] ?? '',
  },
  {
    kind: 'private-key',
    pattern: /-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY(?: BLOCK)?-----|$)/g,
    body: pemBody,
    // A real key has a body of base64 (a documentation example has `...`).
    check: (m) => /^[A-Za-z0-9+/=]{64,}$/.test(pemBody(m)),
  },
];

/** A token of a known format that is a template rather than a token (`ghp_XXXX…`, `sk-your-key-here…`, `AKIA…EXAMPLE`). */
function isTemplateToken(match: string, body: string): boolean {
  if (/xxxx|your|example|placeholder|redacted|dummy|changeme|replace|insert|\*\*\*/i.test(match)) return true;
  const chars = [...body];
  if (chars.length > 0 && new Set(chars).size <= 2) return true;
  return body.length >= 16 && shannonEntropy(body) < 2.5;
}

/** Tokens of a known format anywhere in a text: kind, the token, and where it starts. */
export function knownTokens(text: string): { kind: Kind; secret: string; index: number }[] {
  const found: { kind: Kind; secret: string; index: number }[] = [];
  for (const format of FORMATS) {
    for (const match of text.matchAll(format.pattern)) {
      const secret = match[0];
      const index = match.index;
      if (found.some((f) => index < f.index + f.secret.length && f.index < index + secret.length)) continue;
      if (format.check && !format.check(secret)) continue;
      if (isTemplateToken(secret, format.body ? format.body(secret) : secret)) continue;
      found.push({ kind: format.kind, secret, index });
    }
  }
  return found.sort((a, b) => a.index - b.index);
}

// ---------------------------------------------------------------- URLs

const URL_IN_TEXT = /[A-Za-z][A-Za-z0-9+.-]*:\/\/[^\s"'<>`]+/g;

/** Query parameter names that carry a credential. */
function isSecretParam(name: string): boolean {
  return isSecretName(name) || /^(?:SIG|SIGNATURE|ACCESS_TOKEN|API_KEY|APIKEY|KEY|AUTH|TOKEN|SECRET|CODE_SECRET|X_API_KEY)$/.test(normalizeName(name));
}

function decode(text: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    return text;
  }
}

/** Credentials in the URLs of a text: a userinfo password, query parameters named like credentials. */
function urlSecrets(text: string): { kind: Kind; secret: string }[] {
  const found: { kind: Kind; secret: string }[] = [];
  for (const match of text.matchAll(URL_IN_TEXT)) {
    let url: URL;
    try {
      url = new URL(match[0]);
    } catch {
      continue;
    }
    const password = decode(url.password);
    if (password !== '' && !isPlaceholder(password)) found.push({ kind: 'url-password', secret: password });
    for (const [name, value] of url.searchParams) {
      if (!isSecretParam(name) || isPlaceholder(value) || isNumber(value) || isBoolean(value) || [...value].length < 8) continue;
      found.push({ kind: 'url-query-secret', secret: value });
    }
  }
  return found;
}

// ---------------------------------------------------------------- one value

/** `Bearer X`, `token X`: the credential after an HTTP authentication scheme. */
function afterScheme(value: string): { scheme: string | null; credential: string } {
  const match = /^(Bearer|Token|Basic|Digest|ApiKey|Api-Key)\s+(\S+)$/i.exec(value.trim());
  return match ? { scheme: match[1]!.toLowerCase(), credential: match[2]! } : { scheme: null, credential: value.trim() };
}

/** `user:password` out of Basic credentials, when they decode to that. */
function basicPassword(credential: string): string | null {
  if (!/^[A-Za-z0-9+/]+=*$/.test(credential)) return null;
  const text = Buffer.from(credential, 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon < 0 || !/^[\x20-\x7e]+$/.test(text)) return null;
  const password = text.slice(colon + 1);
  return password === '' || isPlaceholder(password) ? null : password;
}

/** The generic rule: a literal that is long and random enough to be a secret (named like one, which the caller checks). */
function looksRandom(value: string, minLength = MIN_SECRET_LENGTH, minEntropy = MIN_ENTROPY): boolean {
  if (isPlaceholder(value) || isPath(value) || isUrl(value) || isNumber(value) || isBoolean(value)) return false;
  if (/\s/.test(value) || [...value].length < minLength) return false;
  return characterClasses(value) >= 2 && shannonEntropy(value) >= minEntropy;
}

/** What one value holds, without the neighbours' context (see `detect` for that). */
export function detectField(field: Field): Detection[] {
  const detections: Detection[] = [];
  const add = (kind: Kind, secret: string) => {
    if (detections.some((d) => d.secret === secret || d.secret.includes(secret) || secret.includes(d.secret))) return;
    detections.push({ kind, severity: KINDS[kind].severity, secret, masked: mask(secret), field });
  };
  const value = field.value;
  for (const token of knownTokens(value)) add(token.kind, token.secret);
  for (const found of urlSecrets(value)) add(found.kind, found.secret);
  if (detections.length > 0 || isUrl(value.trim())) return detections;

  if (isSecretName(field.name)) {
    const { scheme, credential } = afterScheme(value);
    if (scheme === 'basic') {
      if (basicPassword(credential) !== null) add('basic-auth', credential);
    } else if (looksRandom(credential)) add('high-entropy', credential);
    else if (isPasswordName(field.name) && scheme === null && looksRandom(credential, 8, 2.5)) add('password', credential);
  }
  return detections;
}

/** An AWS secret access key's shape: 40 characters of base64. */
const AWS_SECRET = /^[A-Za-z0-9/+]{40}$/;

/**
 * Every detection in a set of values that belong together (one server's
 * `env`, or its `headers`): each value on its own, and an AWS secret access
 * key recognised by its shape next to an AWS access key ID, or by its name.
 */
export function detect(fields: readonly Field[]): Detection[] {
  const detections = fields.flatMap((field) => detectField(field));
  const hasKeyId = detections.some((d) => d.kind === 'aws-access-key-id');
  for (const field of fields) {
    const value = field.value.trim();
    if (!AWS_SECRET.test(value) || isTemplateToken(value, value) || shannonEntropy(value) < 4) continue;
    const named = field.name !== undefined && /SECRET_ACCESS_KEY|AWS_SECRET/.test(normalizeName(field.name));
    if (!hasKeyId && !named) continue;
    const index = detections.findIndex((d) => d.field === field);
    const detection: Detection = { kind: 'aws-secret-access-key', severity: KINDS['aws-secret-access-key'].severity, secret: value, masked: mask(value), field };
    if (index >= 0 && detections[index]!.secret === value) detections[index] = detection;
    else if (index < 0) detections.push(detection);
  }
  return detections;
}

// ---------------------------------------------------------------- arguments

/**
 * A server's `args` as fields, each with the name it goes by: `--api-key=V`
 * and `--api-key V` name V `api-key`; `NAME=V` (as in `-e NAME=V`) names it
 * NAME; `Name: V` (a header given as an argument) names it Name.
 */
export function argFields(args: readonly { value: string; line?: number }[]): Field[] {
  return args.map((arg, index) => {
    const field: Field = { location: `args[${index}]`, role: 'arg', value: arg.value, line: arg.line };
    const option = /^--?([A-Za-z][A-Za-z0-9_.-]*)=([\s\S]*)$/.exec(arg.value);
    const assignment = /^([A-Za-z_][A-Za-z0-9_]*)=([\s\S]*)$/.exec(arg.value);
    const header = /^([A-Za-z][A-Za-z0-9-]*):\s*([\s\S]+)$/.exec(arg.value);
    const previous = index > 0 ? /^--?([A-Za-z][A-Za-z0-9_.-]*)$/.exec(args[index - 1]!.value) : null;
    if (option) return { ...field, name: option[1], value: option[2]! };
    if (assignment) return { ...field, name: assignment[1], value: assignment[2]! };
    if (header && !isUrl(arg.value)) return { ...field, name: header[1], value: header[2]! };
    if (previous) return { ...field, name: previous[1] };
    return field;
  });
}
