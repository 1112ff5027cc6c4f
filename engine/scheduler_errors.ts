// Why a request did not run to the end on the scheduler's side; routes/errors.ts maps them to
// HTTP statuses.

/** The waiting queue is full; the route answers 429 with Retry-After. */
export class QueueFullError extends Error {
  constructor(readonly retryAfterSeconds: number) {
    super("The server is busy: the request queue is full. Retry later.");
    this.name = "QueueFullError";
  }
}

/** The server stopped before the sequence finished; its client must not mistake it for done. */
export class ShutdownError extends Error {
  constructor() {
    super("The server shut down before the request finished.");
    this.name = "ShutdownError";
  }
}

export function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(String(e));
}
