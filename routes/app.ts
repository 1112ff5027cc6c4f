// createApp(state): the whole HTTP surface as one Hono app of small sub-apps. Tests drive it
// with app.request(); main.ts serves app.fetch (net/http_server.ts behind net/front_door.ts).

import { Hono } from "hono";
import { cors } from "hono/cors";
import { bodyLimit } from "./body_limit.ts";
import { chatRoutes } from "./chat.ts";
import { completionsRoutes } from "./completions.ts";
import { ApiError, notFound, onError } from "./errors.ts";
import { healthRoutes } from "./health.ts";
import { metricsRoutes } from "./metrics.ts";
import { modelsRoutes } from "./models.ts";
import { apiKeyGuard, echoRequestId, requireJson } from "./protocol.ts";
import type { AppState } from "./state.ts";
import { tokenizeRoutes } from "./tokenize.ts";

/** Whether a route pattern such as /v1/models/:model matches a request path. */
function routeMatches(pattern: string, path: string): boolean {
  const re = pattern.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/:[^/]+/g, "[^/]+");
  return new RegExp(`^${re}$`).test(path);
}

export function createApp(state: AppState): Hono {
  const app = new Hono();
  app.onError(onError);
  app.notFound((c) => {
    // A route that exists with other methods: 405 naming them, not 404.
    const allow = [
      ...new Set(
        app.routes.filter((r) => r.method !== "ALL" && routeMatches(r.path, c.req.path)).map((r) =>
          r.method
        ),
      ),
    ];
    if (allow.length === 0) return notFound(c);
    c.header("Allow", allow.join(", "));
    const msg = `Method ${c.req.method} is not allowed on ${c.req.path}; use ${
      allow.join(" or ")
    }.`;
    return onError(new ApiError(405, msg, null, "method_not_allowed"), c);
  });
  if (state.config.cors) {
    // Browsers may read X-KV-Bits only when it is exposed.
    app.use(
      "*",
      cors({
        origin: "*",
        allowHeaders: ["Authorization", "Content-Type", "X-KV-Bits", "X-Request-Id"],
        exposeHeaders: ["X-KV-Bits", "Retry-After", "X-Request-Id"],
      }),
    );
  }
  app.use("*", echoRequestId);
  const key = state.config.apiKey;
  if (key) app.use("*", apiKeyGuard(key));
  app.use("*", requireJson);
  app.use("*", bodyLimit(state.config.maxBodyBytes));
  app.route("/", healthRoutes(state));
  app.route("/", metricsRoutes(state));
  app.route("/", modelsRoutes(state));
  app.route("/", tokenizeRoutes(state));
  app.route("/", completionsRoutes(state));
  app.route("/", chatRoutes(state));
  return app;
}
