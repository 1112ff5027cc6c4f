// The CUDA kernels' logic on CI: tools/emu_kernel_tests.sh --small compiles the KV kernels
// (NSN encode/dequant, decode attention, every kernel variant), prefill attention (nsn.h's
// rule for which pages a query reads) and the fused batch-1 GEMVs for
// the CPU emulator (cuda/tests/gpu/cuda_emu.h) and checks them against the CPU reference. It
// says nothing about speed or async races (those are measured on the GPU machine). Skipped
// when no CUDA headers are installed (the emulator needs cuda_fp16.h for the fp16 types).

import assert from "node:assert/strict";
import { cudaHeaders } from "./helpers/cuda_headers.ts";

const headers = cudaHeaders();

Deno.test({
  name: "CUDA kernels under the CPU emulator (tools/emu_kernel_tests.sh --small)",
  ignore: !headers,
  fn: async () => {
    const root = new URL("..", import.meta.url).pathname;
    const out = await new Deno.Command("bash", {
      args: [`${root}tools/emu_kernel_tests.sh`, "--small"],
      cwd: root,
      env: { BUILD_DIR: `${root}cuda/build/emu_kernels_test`, CUDA_INC: headers! },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
    const failed = text.split("\n").filter((l) => /FAIL|error/i.test(l));
    assert.equal(
      out.code,
      0,
      `emulator kernel tests failed:\n${failed.join("\n") || text.slice(-3000)}`,
    );
    assert.match(text, /PASSED: 0 failure\(s\)/);
    assert.ok((text.match(/^\s+ok\s/gm) ?? []).length >= 20, "too few kernel checks ran");
  },
});
