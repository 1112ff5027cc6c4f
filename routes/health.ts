// GET /health: 200 once the model serves, 503 while it loads (the port is bound first, so
// orchestrators can tell "starting" from "dead").

import { Hono } from "hono";
import type { AppState } from "./state.ts";

export function healthRoutes(state: AppState): Hono {
  const app = new Hono();
  app.get("/health", (c) => {
    state.requireReady(); // throws the 503
    return c.json({ status: state.draining ? "draining" : "ok" });
  });
  return app;
}
