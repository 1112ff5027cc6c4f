// Where the CUDA headers the CPU emulator builds need (cuda_fp16.h) are, as tools/cuda_headers.sh
// finds them for the emulator scripts: the one lookup, so the emulator tests skip exactly when
// the scripts would stop. Undefined when there are none.

const ROOT = new URL("../../", import.meta.url).pathname;

export function cudaHeaders(): string | undefined {
  const out = new Deno.Command("bash", {
    args: ["-c", 'source tools/cuda_headers.sh 2>/dev/null && echo "$CUDA_INC"'],
    cwd: ROOT,
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  const dir = new TextDecoder().decode(out.stdout).trim();
  return out.code === 0 && dir ? dir : undefined;
}
