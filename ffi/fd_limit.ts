// Raises this process's soft limit on open files to its hard limit (Linux, libc setrlimit).
// A server's connections are files: the common soft default of 1024 (or 256) caps it far below
// what the hard limit allows. Best effort: where libc cannot be opened, the limit stays.

const RLIMIT_NOFILE = 7; // Linux

/** The soft and hard limits after raising the soft one; null where they cannot be read. */
export function raiseFdLimit(): { soft: number; hard: number } | null {
  let lib: Deno.DynamicLibrary<{
    getrlimit: { parameters: ["i32", "buffer"]; result: "i32" };
    setrlimit: { parameters: ["i32", "buffer"]; result: "i32" };
  }>;
  try {
    lib = Deno.dlopen("libc.so.6", {
      getrlimit: { parameters: ["i32", "buffer"], result: "i32" }, // (int, struct rlimit*)
      setrlimit: { parameters: ["i32", "buffer"], result: "i32" }, // (int, const struct rlimit*)
    });
  } catch {
    return null;
  }
  try {
    const lim = new BigUint64Array(2); // struct rlimit { rlim_t rlim_cur, rlim_max; }
    if (lib.symbols.getrlimit(RLIMIT_NOFILE, lim) !== 0) return null;
    if (lim[0] < lim[1]) {
      const want = new BigUint64Array([lim[1], lim[1]]);
      if (lib.symbols.setrlimit(RLIMIT_NOFILE, want) === 0) lim[0] = lim[1];
    }
    const n = (v: bigint) => v > BigInt(Number.MAX_SAFE_INTEGER) ? Infinity : Number(v);
    return { soft: n(lim[0]), hard: n(lim[1]) };
  } finally {
    lib.close();
  }
}
