// The whole CUDA backend on CI: tools/emu_backend.sh builds libnsn with the CUDA backend's host
// code (backend_cuda*.cu: memory, plan upload, the forward pass, CUDA graphs) and every kernel
// compiled for the CPU emulator (cuda/tests/gpu/cuda_emu.h, cuda_emu_runtime.h, cublas_emu.cpp),
// and a child `deno test` runs GPU tests (tests/gpu/) against it with NSN_LIB pointing there and
// NSN_TEST_GPU=1, so a missing "GPU" fails instead of skipping. The emulated device has 16 SMs
// (NSN_EMU_SMS): the grids sized by the SM count (decode attention, the batch-1 GEMVs) run the
// same code with fewer blocks. CUDA graphs stay on (the emulator records and replays captures).
//
// A subset fits CI's time (see SUBSET); `deno task test:gpu:emu` runs the four GPU test files
// (all of tests/gpu/ but the 8B speed test). Skipped when no CUDA headers are installed (the emulator needs cuda_fp16.h).

import assert from "node:assert/strict";
import { cudaHeaders } from "./helpers/cuda_headers.ts";

const headers = cudaHeaders();

// test file -> the tests of it that run here (a --filter regex; "" = all of them).
const SUBSET: [string, string][] = [
  ["tests/gpu/cuda_sampling_test.ts", ""],
  ["tests/gpu/cuda_backend_test.ts", ""],
  ["tests/gpu/cuda_demo_test.ts", "logits vs HF"],
];

Deno.test({
  name: "CUDA backend under the CPU emulator (tools/emu_backend.sh + tests/gpu subset)",
  ignore: !headers,
  fn: async () => {
    const root = new URL("..", import.meta.url).pathname;
    const dir = `${root}cuda/build/emu_backend_test`;
    const dec = new TextDecoder();
    const build = await new Deno.Command("bash", {
      args: [`${root}tools/emu_backend.sh`],
      cwd: root,
      env: { BUILD_DIR: dir, CUDA_INC: headers! },
      stdout: "piped",
      stderr: "piped",
    }).output();
    assert.equal(
      build.code,
      0,
      `tools/emu_backend.sh failed:\n${
        (dec.decode(build.stdout) + dec.decode(build.stderr)).slice(-4000)
      }`,
    );
    const env = {
      NSN_LIB: `${dir}/libnsn.so`,
      NSN_TEST_GPU: "1",
      NSN_EMU_SMS: "16",
      NO_COLOR: "1",
    };
    let passed = 0;
    for (const [file, filter] of SUBSET) {
      const args = ["test", "-A", file, ...(filter ? ["--filter", filter] : [])];
      const out = await new Deno.Command(Deno.execPath(), {
        args,
        cwd: root,
        env,
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = dec.decode(out.stdout) + dec.decode(out.stderr);
      assert.equal(out.code, 0, `${file} failed under the emulated backend:\n${text.slice(-6000)}`);
      // deno test's summary: "ok | N passed | 0 failed".
      const summary = text.match(/ok \| (\d+) passed \| 0 failed/);
      assert.ok(summary, `${file}: no test summary:\n${text.slice(-3000)}`);
      assert.doesNotMatch(text, /GPU tests skipped/);
      passed += Number(summary[1]);
    }
    assert.ok(passed >= 10, `only ${passed} GPU tests ran`);
  },
});
