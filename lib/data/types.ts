/**
 * The data contracts shared by the training pipeline (SPEC §9): what a data source yields, how a
 * worker thread re-opens a source from a plain description, and what a batch is.
 *
 * | producer | source kind |
 * |---|---|
 * | {@link ./recordio} RecordIO | `recordio`: MXNet `.rec` + `.idx` (MS1MV2/MS1MV3/Glint360K/WebFace packs) |
 * | {@link ./folder} image folders and lists | `folder`, `list` |
 * | {@link ./synthetic} SyntheticFaces | `synthetic`: procedural identities, rendered on demand |
 *
 * Pixels are RGB, 8 bits, height × width × 3 (HWC), row-major: what sharp and the synthetic renderer
 * produce. A batch is NCHW float32 normalized as (v/255 − 0.5)/0.5, the layout the backbones take.
 */

/** An image in memory: HWC, RGB (or BGR where a model asks for it), uint8. */
export interface RawImage {
  readonly width: number;
  readonly height: number;
  readonly channels: 3;
  /** width·height·3 bytes, row-major, channel-interleaved. */
  readonly data: Uint8Array;
}

/** One training or evaluation sample: a class label and either encoded bytes or pixels. */
export interface Sample {
  /** Class (identity) index in [0, numClasses). */
  readonly label: number;
  /** The encoded image file (JPEG/PNG), when the source stores files. */
  readonly encoded?: Uint8Array;
  /** The pixels, when the source renders or stores them decoded. */
  readonly pixels?: RawImage;
}

/**
 * A plain, structured-cloneable description from which any thread can open the same source (the
 * loader's workers re-open it rather than receive the object).
 */
export type SourceDescriptor =
  | { readonly kind: 'recordio'; readonly path: string }
  | { readonly kind: 'folder'; readonly root: string }
  | { readonly kind: 'list'; readonly path: string; readonly root?: string }
  | { readonly kind: 'synthetic'; readonly options: Record<string, unknown> };

/** A random-access collection of samples. */
export interface SampleSource {
  /** Number of samples. */
  readonly size: number;
  /** Number of classes (labels are in [0, numClasses)). */
  readonly numClasses: number;
  /** Sample i, i in [0, size). */
  get(i: number): Promise<Sample>;
  /** How a worker re-opens this source. */
  describe(): SourceDescriptor;
  /** Releases file handles (idempotent). */
  close(): Promise<void>;
}

/** A batch as the backbones take it. */
export interface Batch {
  /** [n, 3, size, size] float32, (v/255 − 0.5)/0.5, NCHW. */
  readonly images: Float32Array;
  readonly labels: Int32Array;
  /** The sample indices of the batch (for logs and resume checks). */
  readonly indices: Int32Array;
  readonly size: number;
}
