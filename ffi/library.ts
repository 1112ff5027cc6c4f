// Finds, builds when stale, and opens libnsn. Nothing here runs at import time: routes and the
// scheduler import the engine types without a native library present (GPU-less tests).

import { EngineError } from "../engine/types.ts";
import { NSN_ABI_VERSION, NSN_OK, NSN_SYMBOLS, type NsnLib } from "./symbols.ts";

const CUDA_DIR = new URL("../cuda/", import.meta.url);
const DEFAULT_LIB = new URL("build/libnsn.so", CUDA_DIR);

export interface OpenLibraryOptions {
  /** Path of the shared library; default: env NSN_LIB, else cuda/build/libnsn.so. */
  path?: string;
  /** Build cuda/build/libnsn.so when missing or stale (default true; never for NSN_LIB). */
  build?: boolean;
  /** Told what is built before a build starts (default: printed on stderr). */
  onBuild?: (message: string) => void;
}

export interface NsnLibrary {
  readonly path: string;
  readonly symbols: NsnLib;
  /** Throws EngineError for a non-OK nsn_status, with nsn_last_error()'s text. */
  check(status: number, what: string): void;
  /** 1 when built with CUDA and a device is visible. */
  cudaAvailable(): boolean;
}

// nsn_status -> EngineError code; index = status value.
const CODES: EngineError["code"][] = [
  "internal", // NSN_OK never reaches the table
  "invalid",
  "oom",
  "unsupported",
  "backend",
  "no_device",
  "state",
  "internal",
];

/** Turns an nsn_status into an EngineError (the one place where that happens). */
export function statusError(lib: NsnLib, status: number, what: string): EngineError {
  const ptr = lib.nsn_last_error();
  const text = ptr === null ? "" : Deno.UnsafePointerView.getCString(ptr);
  const code = CODES[status] ?? "internal";
  return new EngineError(code, `${what}: ${text || `nsn status ${status}`}`);
}

const opened = new Map<string, NsnLibrary>();

/** Opens (building first if needed) the native library; one handle per path per process. */
export async function openLibrary(opts: OpenLibraryOptions = {}): Promise<NsnLibrary> {
  const envPath = Deno.env.get("NSN_LIB");
  const path = opts.path ?? envPath ?? DEFAULT_LIB.pathname;
  const cached = opened.get(path);
  if (cached) return cached;
  const isDefault = path === DEFAULT_LIB.pathname;
  if (isDefault && (opts.build ?? true) && await isStale(path)) {
    (opts.onBuild ?? ((m) => console.error(m)))(await buildMessage(path));
    await buildLibrary();
  }

  let dl: Deno.DynamicLibrary<typeof NSN_SYMBOLS>;
  try {
    dl = Deno.dlopen(path, NSN_SYMBOLS);
  } catch (e) {
    throw new EngineError("state", `cannot open native library ${path}: ${(e as Error).message}`);
  }
  const symbols = dl.symbols;
  const abi = symbols.nsn_abi_version();
  if (abi !== NSN_ABI_VERSION) {
    dl.close();
    throw new EngineError("state", `${path}: ABI version ${abi}, expected ${NSN_ABI_VERSION}`);
  }
  const lib: NsnLibrary = {
    path,
    symbols,
    check(status, what) {
      if (status !== NSN_OK) throw statusError(symbols, status, what);
    },
    cudaAvailable: () => symbols.nsn_cuda_available() === 1,
  };
  opened.set(path, lib);
  return lib;
}

/**
 * The library is stale when missing or older than the Makefile, flags.mk or any file under
 * cuda/src or cuda/include (not cuda/tests: make would not relink for those, and we would rerun
 * it forever).
 */
async function isStale(libPath: string): Promise<boolean> {
  let libTime: number;
  try {
    libTime = (await Deno.stat(libPath)).mtime?.getTime() ?? 0;
  } catch {
    return true;
  }
  const root = CUDA_DIR.pathname;
  const newest = Math.max(
    await newestSource(`${root}src`),
    await newestSource(`${root}include`),
    ...await Promise.all(
      ["Makefile", "flags.mk"].map(async (f) =>
        (await Deno.stat(`${root}${f}`).catch(() => null))?.mtime?.getTime() ?? 0
      ),
    ),
  );
  return newest > libTime;
}

async function newestSource(dir: string): Promise<number> {
  let newest = 0;
  for await (const entry of Deno.readDir(dir)) {
    if (entry.name.startsWith(".")) continue;
    const p = `${dir}${dir.endsWith("/") ? "" : "/"}${entry.name}`;
    if (entry.isDirectory) newest = Math.max(newest, await newestSource(p));
    else if (entry.isFile) newest = Math.max(newest, (await Deno.stat(p)).mtime?.getTime() ?? 0);
  }
  return newest;
}

/** What a first start is about to do, since it takes a while and happens only once. */
export async function buildMessage(path: string): Promise<string> {
  const nvcc = await new Deno.Command("sh", { args: ["-c", "command -v nvcc"], stdout: "piped" })
    .output().then((o) => new TextDecoder().decode(o.stdout).trim(), () => "");
  const what = nvcc
    ? `the CPU backend and the CUDA backend (nvcc: ${nvcc}), 2 to 5 minutes on 2 cores`
    : "the CPU backend (no nvcc found, so no CUDA backend), about a minute on 2 cores";
  return `building the native library ${path} (make -C cuda): ${what}. This happens once; ` +
    "later starts reuse it until cuda/ changes.";
}

/** Runs make under a file lock: tests open the library from parallel processes. */
export async function buildLibrary(): Promise<void> {
  const buildDir = new URL("build/", CUDA_DIR).pathname;
  await Deno.mkdir(buildDir, { recursive: true });
  const cmd = new Deno.Command("flock", {
    args: [`${buildDir}.lock`, "make", "-C", CUDA_DIR.pathname, "-j2"],
    stdout: "piped",
    stderr: "piped",
  });
  const { code, stdout, stderr } = await cmd.output();
  if (code !== 0) {
    const dec = new TextDecoder();
    const log = (dec.decode(stdout) + dec.decode(stderr)).slice(-4000);
    throw new EngineError("state", `building libnsn failed (make -C cuda, exit ${code}):\n${log}`);
  }
}
