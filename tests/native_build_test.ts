// Builds the native library's C++ test binary and runs it (make -C cuda test): ABI validation,
// allocator, forward-pass consistency and sampling on the CPU backend; and the message a first
// start prints before it builds the library.
//
// `deno task test` runs test files in parallel and other tests build libnsn through
// ffi/library.ts; both take the same lock (cuda/build/.lock, via flock) so that two makes never
// work on one build tree at once.
import assert from "node:assert/strict";

const CUDA_DIR = new URL("../cuda/", import.meta.url).pathname;

async function hasFlock(): Promise<boolean> {
  try {
    const { code } = await new Deno.Command("flock", {
      args: ["--version"],
      stdout: "null",
      stderr: "null",
    })
      .output();
    return code === 0;
  } catch {
    return false;
  }
}

Deno.test("native library: make -C cuda test passes", async () => {
  await Deno.mkdir(`${CUDA_DIR}build`, { recursive: true });
  const make = ["make", "-C", CUDA_DIR, "-j2", "test"];
  const [cmd, ...args] = await hasFlock() ? ["flock", `${CUDA_DIR}build/.lock`, ...make] : make;
  const { code, stdout, stderr } = await new Deno.Command(cmd, {
    args,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  const dec = new TextDecoder();
  const log = dec.decode(stdout) + dec.decode(stderr);
  assert.equal(code, 0, `make -C cuda test failed (exit ${code}):\n${log.slice(-8000)}`);
  // The speed lines are informative; show them in the test output.
  for (const line of log.split("\n")) if (line.startsWith("demo model")) console.log(line);
});

Deno.test("the first start says what it builds, how long it may take, and that it happens once", async () => {
  const { buildMessage } = await import("../ffi/library.ts");
  const text = await buildMessage("/x/libnsn.so");
  assert.match(
    text,
    /^building the native library \/x\/libnsn\.so \(make -C cuda\): the CPU backend/,
  );
  assert.match(text, /minute/);
  assert.match(text, /This happens once; later starts reuse it until cuda\/ changes\.$/);
  const nvcc = await new Deno.Command("sh", { args: ["-c", "command -v nvcc"] }).output();
  assert.equal(text.includes("CUDA backend (nvcc:"), nvcc.code === 0, text);
});
