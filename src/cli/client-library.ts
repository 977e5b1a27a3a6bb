// Where openmps's own libcuda.so.1 is, and the environment that makes an unmodified CUDA program
// load it: its directory first on LD_LIBRARY_PATH, so the dynamic loader finds it before the real
// driver when cudart (or PyTorch, CuPy) dlopens "libcuda.so.1". The library is built by `npm run
// build` into dist/native/libcuda/, alone in that directory, so putting the directory first
// shadows nothing else; this module finds it from its own location in the package (dist/src/cli/),
// or from OPENMPS_CLIENT_LIBRARY_DIRECTORY when that is set (an install that keeps it elsewhere).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const CLIENT_LIBRARY_NAME = 'libcuda.so.1';
export const LIBRARY_DIRECTORY_VARIABLE = 'OPENMPS_CLIENT_LIBRARY_DIRECTORY';

/** dist/native/libcuda/ of the package this module is part of (it runs from dist/src/cli/). */
export function packagedLibraryDirectory(moduleUrl: string = import.meta.url): string {
  return fileURLToPath(new URL('../../native/libcuda/', moduleUrl)).replace(/\/$/, '');
}

export type LibraryLookup =
  | { readonly found: true; readonly directory: string }
  | { readonly found: false; readonly directory: string; readonly reason: string };

/** The library's directory, or why it cannot be used (not built, or the variable points nowhere). */
export function findClientLibrary(env: Readonly<Record<string, string | undefined>> = process.env): LibraryLookup {
  const override = env[LIBRARY_DIRECTORY_VARIABLE];
  const directory = override !== undefined && override !== '' ? override.replace(/\/+$/, '') : packagedLibraryDirectory();
  const file = join(directory, CLIENT_LIBRARY_NAME);
  if (existsSync(file)) return { found: true, directory };
  const reason = override !== undefined && override !== ''
    ? `${file} does not exist (${LIBRARY_DIRECTORY_VARIABLE}=${override})`
    : `${file} has not been built: run \`npm run build\` in the openmps package (it needs gcc, no CUDA toolkit)`;
  return { found: false, directory, reason };
}

/**
 * LD_LIBRARY_PATH with `directory` first. Earlier mentions of it are dropped (one entry is
 * enough, and a later one would change nothing); empty entries are dropped too, because the
 * loader reads an empty entry as the current directory.
 */
export function withLibraryFirst(ldLibraryPath: string | undefined, directory: string): string {
  const rest = (ldLibraryPath ?? '').split(':').filter((entry) => entry !== '' && entry.replace(/\/+$/, '') !== directory);
  return [directory, ...rest].join(':');
}
