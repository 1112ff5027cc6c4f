// use_beam_search on a completion run: one BeamSearch per prompt; when it ends, its n best
// beams are replayed into the prompt's choices (text, logprobs, finish_reason), best first.
// Not streamed: the beams are only known at the end.

import { BeamAborted, BeamSearch } from "./beam_search.ts";
import type { CompletionRun } from "./completion.ts";
import type { Choice } from "./completion_choice.ts";
import { asError } from "./scheduler_errors.ts";

export function startBeams(
  run: CompletionRun,
  choices: Choice[],
  eosIds: number[],
): { cancel(): void; cachedTokens(): number } {
  const req = run.req;
  const stopIds = [...new Set([...(req.ignoreEos ? [] : eosIds), ...req.stopTokenIds])];
  const searches = req.prompts.map((prompt, p) => {
    const search = new BeamSearch(run.deps.scheduler, {
      prompt,
      kvBits: req.kvBits,
      maxTokens: req.maxTokens,
      stopIds,
      logprobs: req.logprobs ?? 0,
      cacheSalt: req.cacheSalt ?? undefined,
      beam: req.beam!,
    });
    const mine = choices.slice(p * req.n, (p + 1) * req.n);
    search.run().then(
      (beams) => {
        run.tokenArrived();
        mine.forEach((choice, i) => {
          const beam = beams[i];
          for (const out of beam?.outs ?? []) choice.onToken(out);
          choice.onFinish(beam?.finish ?? "length");
        });
      },
      (e) => {
        const error = asError(e);
        for (const c of mine) c.onFinish(e instanceof BeamAborted ? "abort" : "error", error);
      },
    );
    return search;
  });
  return {
    cancel: () => searches.forEach((s) => s.cancel()),
    cachedTokens: () => searches.reduce((a, s) => a + s.cachedTokens, 0),
  };
}
