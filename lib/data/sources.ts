/**
 * The source registry: opens a {@link SampleSource} from its {@link SourceDescriptor}, in any thread.
 * The loader's workers call {@link openSource} with `source.describe()` of the main thread's source.
 *
 * | kind | opened with |
 * |---|---|
 * | `recordio` | `RecordIO.open(path)` from ./recordio |
 * | `folder` | `ImageFolder.open(root)` from ./folder |
 * | `list` | `ImageList.open(path, root)` from ./folder |
 * | `synthetic` | `new SyntheticFaces(options)` from ./synthetic |
 *
 * Each module is required when its kind is first opened, so a thread loads only what it uses.
 */
import { FacecudaError, invalidParameterError } from '../errors';
import { is } from '../validate';
import type { SampleSource, SourceDescriptor } from './types';

/** The kinds {@link openSource} knows. */
export const SOURCE_KINDS: readonly SourceDescriptor['kind'][] = ['recordio', 'folder', 'list', 'synthetic'];

interface RecordIOModule {
  RecordIO: { open(path: string): SampleSource | Promise<SampleSource> };
}

interface SyntheticModule {
  SyntheticFaces: new (options: Record<string, unknown>) => SampleSource;
}

function lazy<T>(id: string, what: string): T {
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require(id) as T;
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'MODULE_NOT_FOUND' && e.message.includes(id)) {
      throw new FacecudaError('NOT_IMPLEMENTED', `Cannot open a ${what} source: its module (${id}) is not available: ${e.message.split('\n')[0]}`);
    }
    throw err;
  }
}

/**
 * Opens the source a descriptor describes.
 *
 * @example
 * const src = await openSource({ kind: 'folder', root: '/data/faces' });
 */
export async function openSource(descriptor: SourceDescriptor): Promise<SampleSource> {
  // Validate arguments
  if (!is.object(descriptor)) throw invalidParameterError('descriptor', 'a source descriptor object', descriptor);
  const kind = (descriptor as { kind?: unknown }).kind;
  if (!is.inArray(kind, SOURCE_KINDS)) throw invalidParameterError('descriptor.kind', `one of ${SOURCE_KINDS.map((k) => `'${k}'`).join(', ')}`, kind);
  // Interpret options
  switch (descriptor.kind) {
    case 'recordio':
      return lazy<RecordIOModule>('./recordio', 'RecordIO').RecordIO.open(descriptor.path);
    case 'folder': {
      const { ImageFolder } = lazy<typeof import('./folder')>('./folder', 'image folder');
      return ImageFolder.open(descriptor.root);
    }
    case 'list': {
      const { ImageList } = lazy<typeof import('./folder')>('./folder', 'image list');
      return ImageList.open(descriptor.path, descriptor.root);
    }
    case 'synthetic': {
      const { SyntheticFaces } = lazy<SyntheticModule>('./synthetic', 'synthetic');
      return new SyntheticFaces(descriptor.options);
    }
  }
}
