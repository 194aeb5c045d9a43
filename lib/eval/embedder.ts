/**
 * What the evaluation protocols need from an embedder. lib/embed's FaceEmbedder implements both
 * interfaces; tests use fakes. Keeping the protocols on these interfaces keeps lib/eval free of
 * model code: any object with these methods can be evaluated (an ONNX model, a remote service, a
 * cache of precomputed embeddings).
 */

/** One batch of embeddings. */
export interface EmbedResult {
  /** [n, dim] row-major, each row L2-normalized (a zero vector may stay zero). */
  embeddings: Float32Array;
  /**
   * [n] the raw L2 norm of each row before normalization: with flip, the norm of the sum of the
   * original and the flipped image's raw embeddings (SPEC §10.2). unit × norm = the raw vector.
   */
  norms: Float32Array;
  dim: number;
  /**
   * Optional [n, 2]: the raw norms of the original (column 0) and, with flip, the flipped image's
   * embedding (column 1; 0 without flip). When given, XNorm is their mean as arcface_torch computes
   * it (over both views, SPEC §10.2); otherwise XNorm is the mean of `norms`.
   */
  viewNorms?: Float32Array;
}

/** Embeds encoded, already aligned face images (a verification pack's 112×112 crops). */
export interface EmbedderLike {
  /**
   * @param images encoded image files (JPEG, PNG, …)
   * @param options.flip test-time augmentation: embed the image and its horizontal mirror, sum the raw
   *   embeddings, then normalize (SPEC §10.2)
   */
  embed(images: Uint8Array[], options: { flip: boolean }): Promise<EmbedResult>;
}

/** Aligns faces from 5 landmarks, then embeds them (IJB-B/C loose crops, SPEC §10.3). */
export interface IjbEmbedderLike {
  /**
   * @param images encoded image files
   * @param landmarks [n, 5, 2] pixel coordinates in each image (left eye, right eye, nose, left and
   *   right mouth corners), to be mapped to the ArcFace 112×112 template by a similarity transform
   * @param options.flip as {@link EmbedderLike.embed}
   */
  embedFaces(images: Uint8Array[], landmarks: Float32Array, options: { flip: boolean }): Promise<EmbedResult>;
}
