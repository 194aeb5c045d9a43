/**
 * Argument predicates and assertions (after sharp's is.mjs). Wrong type → TypeError, value out of
 * range → RangeError, both with the message "Expected <expected> for <name> but received ...".
 * Public methods use three blocks: `// Apply defaults`, `// Validate arguments`, `// Interpret options`.
 */
import { invalidParameterError, outOfRangeError } from './errors';

export const is = {
  defined: (v: unknown): boolean => v !== undefined && v !== null,
  object: (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v),
  bool: (v: unknown): v is boolean => typeof v === 'boolean',
  string: (v: unknown): v is string => typeof v === 'string',
  number: (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v),
  integer: (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v),
  inRange: (v: number, min: number, max: number): boolean => v >= min && v <= max,
  inArray: <T>(v: unknown, list: readonly T[]): v is T => list.includes(v as T),
  typedArray: (v: unknown): v is ArrayBufferView => ArrayBuffer.isView(v) && !(v instanceof DataView),
};

export function assertBool(v: unknown, name: string): asserts v is boolean {
  if (!is.bool(v)) throw invalidParameterError(name, 'a boolean', v);
}

export function assertString(v: unknown, name: string): asserts v is string {
  if (!is.string(v)) throw invalidParameterError(name, 'a string', v);
}

/** A finite number in [min, max]. */
export function assertNumber(v: unknown, name: string, min = -Infinity, max = Infinity): asserts v is number {
  if (!is.number(v)) throw invalidParameterError(name, 'a finite number', v);
  if (!is.inRange(v, min, max)) throw outOfRangeError(name, `a number between ${min} and ${max}`, v);
}

/** An integer in [min, max]. */
export function assertInteger(v: unknown, name: string, min = Number.MIN_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER): asserts v is number {
  if (!is.integer(v)) throw invalidParameterError(name, 'an integer', v);
  if (!is.inRange(v, min, max)) throw outOfRangeError(name, `an integer between ${min} and ${max}`, v);
}

export function assertOneOf<T extends string>(v: unknown, name: string, list: readonly T[]): asserts v is T {
  if (!is.inArray(v, list)) throw invalidParameterError(name, `one of ${list.map((x) => `'${x}'`).join(', ')}`, v);
}

/**
 * Rejects unknown option keys, naming the likely intended one: a misspelled option must not be
 * silently ignored (better-sqlite3 rejects `readOnly` for `readonly`).
 */
export function assertKnownOptions(
  options: Record<string, unknown>,
  name: string,
  known: readonly string[],
  aliases: Readonly<Record<string, string>> = COMMON_ALIASES,
): void {
  for (const key of Object.keys(options)) {
    if (known.includes(key)) continue;
    const lower = key.toLowerCase();
    const alias = aliases[key];
    const hint = known.find((k) => k.toLowerCase() === lower) ?? (alias && known.includes(alias) ? alias : undefined);
    const expected = hint
      ? alias === hint
        ? `'${hint}' (the paper's '${key}' is spelled out in facecuda)`
        : `'${hint}' (option names are case-sensitive)`
      : `one of ${known.map((k) => `'${k}'`).join(', ')}`;
    throw invalidParameterError(`${name} option '${key}'`, `a known option: ${expected}`, options[key]);
  }
}

/** Short names from papers and other libraries, mapped to facecuda's option names. */
export const COMMON_ALIASES: Readonly<Record<string, string>> = {
  s: 'scale',
  m: 'margin',
  easy_margin: 'easyMargin',
  num_classes: 'numClasses',
  embedding_size: 'embeddingSize',
  t_alpha: 'tAlpha',
  sample_rate: 'sampleRate',
};

/** An options object (or undefined → {}). */
export function optionsObject(v: unknown, name: string): Record<string, unknown> {
  if (v === undefined) return {};
  if (!is.object(v)) throw invalidParameterError(name, 'an options object', v);
  return v;
}
