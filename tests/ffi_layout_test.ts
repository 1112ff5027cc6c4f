// ffi/structs.ts hand-computes the C layouts of the nsn.h structs; this compiles a tiny C++
// program against the real header and compares sizeof/offsetof of every field with them.

import assert from "node:assert/strict";
import { LAYOUT } from "../ffi/structs.ts";

const HEADER = new URL("../cuda/include/nsn.h", import.meta.url).pathname;

function program(): string {
  const lines = ["#include <cstdio>", "#include <cstddef>", `#include "${HEADER}"`, "int main() {"];
  lines.push(`  std::printf("{");`);
  let first = true;
  for (const [struct, { fields }] of Object.entries(LAYOUT)) {
    const sep = first ? "" : ",";
    first = false;
    lines.push(
      `  std::printf("${sep}\\"${struct}\\":{\\"size\\":%zu,\\"fields\\":{", sizeof(${struct}));`,
    );
    Object.keys(fields).forEach((f, i) => {
      const comma = i === 0 ? "" : ",";
      lines.push(`  std::printf("${comma}\\"${f}\\":%zu", offsetof(${struct}, ${f}));`);
    });
    lines.push(`  std::printf("}}");`);
  }
  lines.push(`  std::printf("}\\n");`, "  return 0;", "}");
  return lines.join("\n");
}

Deno.test("nsn.h struct layouts match ffi/structs.ts", async () => {
  const dir = await Deno.makeTempDir({ prefix: "nsn_layout_" });
  try {
    await Deno.writeTextFile(`${dir}/layout.cpp`, program());
    const cc = await new Deno.Command("g++", {
      args: ["-std=c++17", "-o", `${dir}/layout`, `${dir}/layout.cpp`],
      stderr: "piped",
    }).output();
    assert.equal(cc.code, 0, new TextDecoder().decode(cc.stderr));
    const run = await new Deno.Command(`${dir}/layout`, { stdout: "piped" }).output();
    const actual = JSON.parse(new TextDecoder().decode(run.stdout));
    assert.deepEqual(actual, JSON.parse(JSON.stringify(LAYOUT)));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
