// Stop strings over a text stream that arrives in token-sized pieces. A stop string can span
// several tokens, so text that might be the start of one is held back until it either
// completes the stop (the response ends just before it) or can no longer match (released).

export interface StopResult {
  /** Text now safe to send. */
  release: string;
  /** A stop string matched: `release` ends right before it and nothing follows. */
  stopped: boolean;
}

export class StopMatcher {
  #stops: string[];
  #held = "";

  constructor(stops: readonly string[]) {
    this.#stops = stops.filter((s) => s.length > 0);
  }

  /** Text held back because it may begin a stop string. */
  get held(): string {
    return this.#held;
  }

  push(delta: string): StopResult {
    if (this.#stops.length === 0) return { release: delta, stopped: false };
    const text = this.#held + delta;
    // Earliest match wins; the held text never contains a whole stop string, so any match
    // ends inside this delta.
    let cut = -1;
    for (const s of this.#stops) {
      const i = text.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.#held = "";
      return { release: text.slice(0, cut), stopped: true };
    }
    const keep = this.#partialSuffix(text);
    this.#held = text.slice(text.length - keep);
    return { release: text.slice(0, text.length - keep), stopped: false };
  }

  /** The sequence ended for another reason: whatever was held is plain text after all. */
  flush(): string {
    const rest = this.#held;
    this.#held = "";
    return rest;
  }

  /** Length of the longest suffix of `text` that is a proper prefix of some stop string. */
  #partialSuffix(text: string): number {
    let best = 0;
    for (const s of this.#stops) {
      for (let k = Math.min(s.length - 1, text.length); k > best; k--) {
        if (text.endsWith(s.slice(0, k))) {
          best = k;
          break;
        }
      }
    }
    return best;
  }
}
