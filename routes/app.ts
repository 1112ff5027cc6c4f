// createApp(state): the whole HTTP surface as one Hono app of small sub-apps. Tests drive it
// with app.request(); main.ts hands app.fetch to Deno.serve.

import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { cors } from "hono/cors";
import { chatRoutes } from "./chat.ts";
import { completionsRoutes } from "./completions.ts";
import { ApiError, notFound, onError } from "./errors.ts";
import { healthRoutes } from "./health.ts";
import { metricsRoutes } from "./metrics.ts";
import { modelsRoutes } from "./models.ts";
import { apiKeyGuard, echoRequestId, requireJson } from "./protocol.ts";
import type { AppState } from "./state.ts";
import { tokenizeRoutes } from "./tokenize.ts";

export function createApp(state: AppState): Hono {
  const app = new Hono();
  app.onError(onError);
  app.notFound(notFound);
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
  app.use(
    "*",
    bodyLimit({
      maxSize: state.config.maxBodyBytes,
      onError: () => {
        throw new ApiError(
          413,
          `The request body exceeds ${state.config.maxBodyBytes} bytes.`,
          null,
          "request_too_large",
        );
      },
    }),
  );
  app.route("/", healthRoutes(state));
  app.route("/", metricsRoutes(state));
  app.route("/", modelsRoutes(state));
  app.route("/", tokenizeRoutes(state));
  app.route("/", completionsRoutes(state));
  app.route("/", chatRoutes(state));
  return app;
}
