/**
 * Result types of {@link FaceIndex} searches and the shard merge.
 */

/** Top-k results: `ids` and `scores` are flat, row q holds query q's k slots, best first. */
export interface SearchResult {
  /** Q·k ids (safe integers); -1 in slots past the number of entries available. */
  ids: Float64Array;
  /** Q·k scores (inner products; cosine for unit vectors); -Infinity in empty slots. */
  scores: Float32Array;
  /** Slots per query. */
  k: number;
}

/** Range results: query q's entries are `[offsets[q], offsets[q + 1])` of `ids` / `scores`, best first. */
export interface RangeSearchResult {
  offsets: Float64Array;
  ids: Float64Array;
  scores: Float32Array;
}
