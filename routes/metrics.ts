// GET /metrics: Prometheus text from the app's private registry.

import { Hono } from "hono";
import type { AppState } from "./state.ts";

export function metricsRoutes(state: AppState): Hono {
  const app = new Hono();
  app.get("/metrics", async (c) => {
    const text = await state.metrics.text();
    return c.body(text, 200, { "Content-Type": state.metrics.contentType });
  });
  return app;
}
