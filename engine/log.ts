// The server's log: one line per event on stderr, `<ISO time> <LEVEL> <message>`, filtered by
// --log-level. The request lines and the periodic stats line (engine/stats_log.ts) are info.

export const LOG_LEVELS = ["debug", "info", "warning", "error"] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export class Logger {
  readonly level: LogLevel;
  #rank: number;
  #write: (line: string) => void;

  constructor(level: LogLevel = "info", write: (line: string) => void = (l) => console.error(l)) {
    this.level = level;
    this.#rank = LOG_LEVELS.indexOf(level);
    this.#write = write;
  }

  enabled(level: LogLevel): boolean {
    return LOG_LEVELS.indexOf(level) >= this.#rank;
  }

  log(level: LogLevel, message: string): void {
    if (this.enabled(level)) {
      this.#write(`${new Date().toISOString()} ${level.toUpperCase()} ${message}`);
    }
  }

  debug(message: string): void {
    this.log("debug", message);
  }

  info(message: string): void {
    this.log("info", message);
  }

  warning(message: string): void {
    this.log("warning", message);
  }

  error(message: string): void {
    this.log("error", message);
  }
}
