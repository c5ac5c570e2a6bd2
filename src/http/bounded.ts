/** Reading a fetched answer without trusting its size. */

/**
 * The body of `response`, refused (with `tooLarge()`'s error) once it is
 * larger than `limit` bytes: a declared content-length over the limit is
 * refused before reading, and the count is kept as it streams, so a missing
 * or lying content-length does not matter. Nothing past the limit is read.
 */
export async function readLimited(response: Response, limit: number, tooLarge: () => Error): Promise<Buffer> {
  const declared = Number(response.headers.get('content-length') ?? Number.NaN);
  if (Number.isFinite(declared) && declared > limit) {
    await response.body?.cancel().catch(() => {});
    throw tooLarge();
  }
  if (response.body === null) return Buffer.alloc(0);
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let total = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    total += value.byteLength;
    if (total > limit) {
      await reader.cancel().catch(() => {});
      throw tooLarge();
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks);
}
