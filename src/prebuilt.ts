/**
 * Which prebuilt binary of the native core fits this machine, and the one
 * line that tells a user what to do when none loads. The per-platform npm
 * packages (npm/*, `narcache-<platform>`) are the optional dependencies of
 * the main package; npm installs the one whose os/cpu/libc match.
 */

const PACKAGE_PREFIX = 'narcache-';

/**
 * This machine in napi-rs's naming, the suffix of the package that carries
 * its binary: `linux-x64-gnu`, `linux-arm64-musl`, `darwin-arm64`, …
 */
export function platformTag(): string {
  const { platform, arch } = process;
  if (platform === 'linux') {
    const libc = isMusl() ? 'musl' : 'gnu';
    return `linux-${arch}-${arch === 'arm' ? `${libc}eabihf` : libc}`;
  }
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

// Node reports the glibc it runs on; on musl (Alpine) there is none.
function isMusl(): boolean {
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  return report?.header !== undefined && !report.header.glibcVersionRuntime;
}

/** The platforms narcache publishes binaries for: its optional dependencies. */
export function publishedPlatforms(): string[] {
  const { optionalDependencies = {} } = require('../package.json') as { optionalDependencies?: Record<string, string> };
  return Object.keys(optionalDependencies)
    .filter((name) => name.startsWith(PACKAGE_PREFIX))
    .map((name) => name.slice(PACKAGE_PREFIX.length));
}

/**
 * Why the native core did not load, and what to do, in one line — instead of
 * the generated loader's error, which lists every path it tried.
 */
export function loadFailureMessage(error: unknown): string {
  const override = process.env.NAPI_RS_NATIVE_LIBRARY_PATH;
  if (override) return `cannot load the native core from NAPI_RS_NATIVE_LIBRARY_PATH=${override}: ${firstLine(error)}`;
  const tag = platformTag();
  const pkg = PACKAGE_PREFIX + tag;
  const published = publishedPlatforms();
  if (!published.includes(tag)) {
    return (
      `no prebuilt binary for ${tag} (there are for ${published.join(', ')}); ` +
      'build the native core from source with Rust (npm run build:native in a checkout of narcache) ' +
      'and set NAPI_RS_NATIVE_LIBRARY_PATH to the .node file it writes'
    );
  }
  if (!isInstalled(pkg)) {
    return (
      `no prebuilt binary for ${tag} installed; its package ${pkg} is an optional dependency that was left out: ` +
      'reinstall narcache without --omit=optional (if npm still skips it, remove node_modules and package-lock.json first)'
    );
  }
  return `the prebuilt binary for ${tag} (${pkg}) does not load: ${firstLine(requireError(pkg) ?? error)}`;
}

function isInstalled(pkg: string): boolean {
  try {
    require.resolve(`${pkg}/package.json`);
    return true;
  } catch {
    return false;
  }
}

// The generated loader's own error only says that every candidate failed;
// the package's error says why (a glibc too old, a truncated file…).
function requireError(pkg: string): unknown {
  try {
    require(pkg);
    return undefined;
  } catch (e) {
    return e;
  }
}

function firstLine(error: unknown): string {
  const message = error instanceof Error ? error.message : String(error);
  return message.split('\n')[0];
}
