/**
 * Merging the top-k results of several shards (indexes over disjoint rows of one gallery).
 */
import { FacecudaError, invalidParameterError, invalidParameterMessage } from '../errors';
import { assertBool, assertInteger, assertKnownOptions, is, optionsObject } from '../validate';
import type { SearchResult } from './types';

/** Realm-independent typed-array check (arrays made by the addon or another context fail instanceof). */
export function isTyped(v: unknown, tag: string): boolean {
  return ArrayBuffer.isView(v) && Object.prototype.toString.call(v) === `[object ${tag}]`;
}

/**
 * Merges per-shard top-k results of the same queries into the global top-k: for every query the
 * best `k` entries of all shards, in the order of a single index (higher score first, equal scores
 * by smaller id). Each shard's k may differ, but all must cover the same number of queries; a
 * shard's k must be at least `k` for the merge to equal an unsharded search.
 *
 * With `{ unique: true }` an id that several shards return (an identity whose embeddings were
 * spread over shards, searched with `aggregate: 'max'`) is kept once, with its best score.
 *
 * @example
 * const parts = await Promise.all(shards.map((s) => s.search(q, 10)));
 * const { ids, scores } = mergeTopK(parts, 10);
 * @throws TypeError / RangeError for bad arguments; `SHAPE_MISMATCH` when shards disagree on Q
 */
export function mergeTopK(results: readonly SearchResult[], k: number, options?: { unique?: boolean }): SearchResult {
  // Apply defaults
  const opts = optionsObject(options, 'options');
  assertKnownOptions(opts, 'mergeTopK', ['unique']);
  const unique = opts.unique ?? false;

  // Validate arguments
  if (!Array.isArray(results) || results.length === 0) throw invalidParameterError('results', 'a non-empty array of search results', results);
  assertInteger(k, 'k', 1, 1 << 24);
  assertBool(unique, 'options.unique');
  let Q = -1;
  results.forEach((r: SearchResult, i) => {
    if (!is.object(r as unknown) || !isTyped(r.ids, 'Float64Array') || !isTyped(r.scores, 'Float32Array') || !is.integer(r.k) || r.k < 1) {
      throw invalidParameterError(`results[${i}]`, 'a search result { ids: Float64Array, scores: Float32Array, k }', r);
    }
    if (r.ids.length !== r.scores.length || r.ids.length % r.k !== 0) {
      throw invalidParameterError(`results[${i}]`, `ids and scores of equal length, a multiple of k=${r.k}`, r.ids.length);
    }
    const q = r.ids.length / r.k;
    if (Q >= 0 && q !== Q) {
      throw new FacecudaError('SHAPE_MISMATCH', invalidParameterMessage(`results[${i}]`, `results for ${Q} queries like results[0]`, `${q} queries`));
    }
    Q = q;
  });

  // Interpret options
  const ids = new Float64Array(Q * k).fill(-1);
  const scores = new Float32Array(Q * k).fill(-Infinity);
  const cand: { s: number; id: number }[] = [];
  for (let q = 0; q < Q; q++) {
    cand.length = 0;
    for (const r of results) {
      for (let j = 0; j < r.k; j++) {
        const id = r.ids[q * r.k + j];
        if (id < 0) break; // slots past the available count
        cand.push({ s: r.scores[q * r.k + j], id });
      }
    }
    cand.sort((a, b) => (a.s !== b.s ? b.s - a.s : a.id - b.id));
    const seen = unique ? new Set<number>() : undefined;
    let j = 0;
    for (const c of cand) {
      if (j >= k) break;
      if (seen) {
        if (seen.has(c.id)) continue;
        seen.add(c.id);
      }
      ids[q * k + j] = c.id;
      scores[q * k + j] = c.s;
      j++;
    }
  }
  return { ids, scores, k };
}
