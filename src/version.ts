/** The release version (kept apart so that `mandate --version` loads nothing else). */
export const VERSION = '0.1.0';
