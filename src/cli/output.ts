/**
 * Everything a `mandate` command prints. Much of it comes from outside: a
 * tool name an MCP client chose, a client's registered name, a value in a
 * configuration file, an argument typed on the command line. None of it may
 * drive the terminal, so text output shows control and format characters
 * escaped (C0, DEL, C1, bidi overrides and other format characters, U+2028
 * and U+2029), and JSON output escapes them as `\uXXXX`, which parses back to
 * the exact value.
 */

const UNSAFE = /[\p{Cc}\p{Cf}\u2028\u2029]/gu;
/** In JSON text: what JSON.stringify leaves raw (it already escapes C0). */
const UNSAFE_IN_JSON = /[\u007f-\u009f\p{Cf}\u2028\u2029]/gu;

/** One character as `\u{…}`, readable and inert on a terminal. */
const escapeCodePoint = (c: string): string => `\\u{${c.codePointAt(0)!.toString(16)}}`;

/** One character as JSON escapes, each UTF-16 unit on its own (an astral format character, U+E0001…, becomes its two surrogates). */
function escapeJson(c: string): string {
  let escaped = '';
  for (let i = 0; i < c.length; i += 1) escaped += `\\u${c.charCodeAt(i).toString(16).padStart(4, '0')}`;
  return escaped;
}

/** Text for one line of output: every control and format character, CR and LF included, escaped. */
export function clean(text: string): string {
  return text.replace(UNSAFE, escapeCodePoint);
}

/** Text of several lines (a message that has its own line breaks): each line cleaned, the line feeds kept. */
export function cleanLines(text: string): string {
  return text.split('\n').map(clean).join('\n');
}

/** JSON text with the characters JSON.stringify leaves raw escaped too; parsing it gives back exactly `value`. */
export function jsonText(value: unknown, indent?: number): string {
  return JSON.stringify(value, null, indent).replace(UNSAFE_IN_JSON, escapeJson);
}

/** JSON on stdout, indented (what `--json` prints). */
export function printJson(value: unknown): void {
  process.stdout.write(`${jsonText(value, 2)}\n`);
}

/** One line of text on stdout, cleaned. */
export function printLine(text: string): void {
  process.stdout.write(`${clean(text)}\n`);
}

/** One line of text on stderr (notes, hints), cleaned. */
export function printNote(text: string): void {
  process.stderr.write(`${clean(text)}\n`);
}

/** A compact table: a header row, columns padded to their widest cell, every cell cleaned. */
export function printTable(header: string[], rows: string[][], empty: string): void {
  if (rows.length === 0) {
    printLine(empty);
    return;
  }
  const cells = [header, ...rows.map((row) => row.map(clean))];
  const widths = header.map((_, i) => Math.max(...cells.map((row) => [...(row[i] ?? '')].length)));
  for (const row of cells) {
    process.stdout.write(`${row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  ').trimEnd()}\n`);
  }
}

/** `key: value` lines, keys aligned, values cleaned. */
export function printFields(fields: [string, string][]): void {
  const width = Math.max(...fields.map(([key]) => key.length)) + 1;
  for (const [key, value] of fields) process.stdout.write(`${`${key}:`.padEnd(width)} ${clean(value)}\n`);
}
