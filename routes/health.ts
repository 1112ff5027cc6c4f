// Probes: GET /health is 200 once the model serves, 503 while it loads (the port is bound
// first, so orchestrators can tell "starting" from "dead"); GET /ping answers the same (the
// SageMaker-style liveness path vLLM also serves); GET /version names the server's version.
// None of them needs the API key (routes/app.ts).

import { Hono } from "hono";
import config from "../deno.json" with { type: "json" };
import type { AppState } from "./state.ts";

export const VERSION: string = config.version;

export function healthRoutes(state: AppState): Hono {
  const app = new Hono();
  const health = () => {
    state.requireReady(); // throws the 503
    return { status: state.draining ? "draining" : "ok" };
  };
  app.get("/health", (c) => c.json(health()));
  app.get("/ping", (c) => c.json(health()));
  app.get("/version", (c) => c.json({ version: VERSION }));
  return app;
}
