/**
 * SyntheticFaces written in the formats real data sets use, so that every reader, tool and script
 * can be exercised without a download: a RecordIO pack (InsightFace RecBuilder layout, JPEG images,
 * SPEC §9.3) of the training identities, and `.bin` verification packs (SPEC §10.1) of held-out
 * identities.
 *
 * @example
 * const faces = new SyntheticFaces({ seed: 1, identities: 100, samplesPerIdentity: 20 });
 * await writeSyntheticRecordIO(faces, 'data/synth/train');
 * const held = new SyntheticFaces({ seed: 1, identities: 50, samplesPerIdentity: 8, firstIdentity: 100 });
 * await writeSyntheticBinPack(held.pairs({ count: 600, seed: 2 }), 'data/synth/synth_val.bin');
 */
import { writeBinPack } from './binpack';
import { loadSharp } from './image';
import { packImages } from './recordio';
import type { SyntheticFaces, SyntheticPairs } from './synthetic';
import type { RawImage } from './types';

/** JPEG bytes of a raw image (sharp; quality 95 as RecBuilder's cv2.imencode). */
export async function encodeJpeg(img: RawImage, quality = 95): Promise<Uint8Array> {
  const sharp = loadSharp() as unknown as (input: Buffer, o: { raw: { width: number; height: number; channels: 3 } }) => {
    jpeg(o: { quality: number }): { toBuffer(): Promise<Buffer> };
  };
  const buf = await sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength), {
    raw: { width: img.width, height: img.height, channels: 3 },
  })
    .jpeg({ quality })
    .toBuffer();
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}

/** Writes every sample of `faces` (identity-major, labels 0..) as a RecordIO pack at `prefix`. */
export async function writeSyntheticRecordIO(faces: SyntheticFaces, prefix: string, options: { quality?: number } = {}): Promise<{ size: number; recPath: string }> {
  const quality = options.quality ?? 95;
  async function* samples() {
    for (let i = 0; i < faces.size; i++) {
      const s = await faces.get(i);
      if (!s.pixels) throw new Error(`sample ${i} has no pixels`);
      yield { label: s.label, encoded: await encodeJpeg(s.pixels, quality) };
    }
  }
  return packImages(prefix, samples(), { numClasses: faces.numClasses, imageSize: faces.imageSize });
}

/** Writes verification pairs as a `.bin` pack (JPEG images, the legacy protocol-2 pickle). */
export async function writeSyntheticBinPack(pairs: SyntheticPairs, path: string, options: { quality?: number } = {}): Promise<void> {
  const images: Uint8Array[] = [];
  for (const img of pairs.images) images.push(await encodeJpeg(img, options.quality ?? 95));
  await writeBinPack(path, images, pairs.issame);
}
