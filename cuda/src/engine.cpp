// engine.cpp: the nsn_* ABI of the engine's lifecycle, weights, sequences and info (nsn_step is
// in engine_step.cpp). Every argument is checked here, before a backend sees it.
#include "engine.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include <algorithm>
#include <thread>

#include "kv_layout.h"
#include "weights.h"

using namespace nsn;

namespace nsn {

nsn_sampling default_sampling() {
  nsn_sampling s{};
  s.temperature = 0.0f;
  s.top_p = 1.0f;
  s.min_p = 0.0f;
  s.repetition_penalty = 1.0f;
  s.top_k = 0;
  return s;
}

bool has_penalty(const nsn_sampling& s) {
  return s.repetition_penalty != 1.0f || s.frequency_penalty != 0.0f || s.presence_penalty != 0.0f;
}

}  // namespace nsn

namespace {

#define REQUIRE(cond, ...) \
  if (!(cond)) return set_error(NSN_E_INVALID, __VA_ARGS__)

nsn_status validate_config(const nsn_model_config& c) {
  REQUIRE(c.vocab_size > 0 && c.vocab_size <= (1 << 24),
          "model config: vocab_size %d must be in [1, 16777216]", c.vocab_size);
  REQUIRE(c.hidden_size > 0 && c.hidden_size <= (1 << 16),
          "model config: hidden_size %d must be in [1, 65536]", c.hidden_size);
  REQUIRE(c.intermediate_size > 0 && c.intermediate_size <= (1 << 20),
          "model config: intermediate_size %d must be in [1, 1048576]", c.intermediate_size);
  REQUIRE(c.n_layers > 0 && c.n_layers <= 1024, "model config: n_layers %d must be in [1, 1024]",
          c.n_layers);
  REQUIRE(c.n_heads > 0 && c.n_heads <= 1024, "model config: n_heads %d must be in [1, 1024]",
          c.n_heads);
  REQUIRE(c.n_kv_heads > 0 && c.n_kv_heads <= c.n_heads,
          "model config: n_kv_heads %d must be in [1, n_heads = %d]", c.n_kv_heads, c.n_heads);
  REQUIRE(c.n_heads % c.n_kv_heads == 0, "model config: n_heads %d is not a multiple of n_kv_heads %d",
          c.n_heads, c.n_kv_heads);
  REQUIRE(c.head_dim > 0, "model config: head_dim %d must be positive", c.head_dim);
  if (c.head_dim != 64 && c.head_dim != 128 && c.head_dim != 256) {
    return set_error(NSN_E_UNSUPPORTED, "model config: head_dim %d is not supported (64, 128 or 256)",
                     c.head_dim);
  }
  REQUIRE(c.max_position > 0 && c.max_position <= (1 << 24),
          "model config: max_position %d must be in [1, 16777216]", c.max_position);
  REQUIRE(isfinite(c.rms_eps) && c.rms_eps > 0, "model config: rms_eps %g must be positive",
          (double)c.rms_eps);
  REQUIRE(isfinite(c.rope_theta) && c.rope_theta > 0, "model config: rope_theta %g must be positive",
          (double)c.rope_theta);
  REQUIRE(c.rope_scaling >= NSN_ROPE_NONE && c.rope_scaling <= NSN_ROPE_LINEAR,
          "model config: rope_scaling %d must be 0 (none), 1 (llama3) or 2 (linear)", c.rope_scaling);
  if (c.rope_scaling != NSN_ROPE_NONE) {
    REQUIRE(isfinite(c.rope_factor) && c.rope_factor > 0,
            "model config: rope_factor %g must be positive", (double)c.rope_factor);
  }
  if (c.rope_scaling == NSN_ROPE_LLAMA3) {
    REQUIRE(isfinite(c.rope_low_freq_factor) && c.rope_low_freq_factor > 0,
            "model config: rope_low_freq_factor %g must be positive", (double)c.rope_low_freq_factor);
    REQUIRE(isfinite(c.rope_high_freq_factor) && c.rope_high_freq_factor > c.rope_low_freq_factor,
            "model config: rope_high_freq_factor %g must exceed rope_low_freq_factor %g",
            (double)c.rope_high_freq_factor, (double)c.rope_low_freq_factor);
    REQUIRE(c.rope_original_max_position > 0,
            "model config: rope_original_max_position %d must be positive",
            c.rope_original_max_position);
  }
  REQUIRE((c.flags & ~(NSN_MODEL_TIED | NSN_MODEL_QKV_BIAS)) == 0,
          "model config: flags 0x%x has unknown bits", c.flags);
  return NSN_OK;
}

// Checks the options and fills in the defaults (kv_pool_bytes stays 0 until finalize, when
// the backend knows how much memory the weights left).
nsn_status resolve_options(nsn_engine_options& o) {
  REQUIRE(o.backend >= NSN_BACKEND_AUTO && o.backend <= NSN_BACKEND_CUDA,
          "options: backend %d must be 0 (auto), 1 (cpu) or 2 (cuda)", o.backend);
  REQUIRE(o.n_threads >= 0 && o.n_threads <= 1024, "options: n_threads %d must be in [0, 1024]",
          o.n_threads);
  REQUIRE(o.max_seqs >= 0 && o.max_seqs <= 65536, "options: max_seqs %d must be in [0, 65536]",
          o.max_seqs);
  REQUIRE(o.max_step_tokens >= 0 && o.max_step_tokens <= (1 << 20),
          "options: max_step_tokens %d must be in [0, 1048576]", o.max_step_tokens);
  REQUIRE(o.device >= 0, "options: device %d must be >= 0", o.device);
  REQUIRE(o.quant_method == NSN_QUANT_NSN || o.quant_method == NSN_QUANT_RTN,
          "options: quant_method %d must be 0 (nsn) or 1 (rtn)", o.quant_method);
  REQUIRE((o.ablation & ~(NSN_ABL_NO_NORM1 | NSN_ABL_NO_SHIFT | NSN_ABL_NO_HADAMARD |
                          NSN_ABL_CPU_ONLY)) == 0,
          "options: ablation 0x%x has unknown bits", o.ablation);
  REQUIRE(o.ablation == 0 || o.quant_method == NSN_QUANT_NSN,
          "options: ablation 0x%x applies to the nsn method only", o.ablation);
  REQUIRE(o.debug_checks == 0 || o.debug_checks == 1, "options: debug_checks %d must be 0 or 1",
          o.debug_checks);
  if (o.n_threads == 0) o.n_threads = (int32_t)std::max(1u, std::thread::hardware_concurrency());
  if (o.max_seqs == 0) o.max_seqs = 16384;
  if (o.max_step_tokens == 0) o.max_step_tokens = 2048;
  return NSN_OK;
}

nsn_status require_engine(nsn_engine* e, bool finalized) {
  if (!e) return set_error(NSN_E_INVALID, "engine handle is null");
  if (finalized && !e->finalized) {
    return set_error(NSN_E_STATE, "engine is not finalized (call nsn_engine_finalize first)");
  }
  if (!finalized && e->finalized) {
    return set_error(NSN_E_STATE, "engine is already finalized: weights can no longer change");
  }
  return NSN_OK;
}

nsn_status require_seq(nsn_engine* e, int32_t seq, Seq** out) {
  nsn_status st = require_engine(e, true);
  if (st != NSN_OK) return st;
  REQUIRE(seq >= 0 && seq < (int32_t)e->seqs.size(), "seq %d is out of range [0, %d)", seq,
          (int32_t)e->seqs.size());
  REQUIRE(e->seqs[seq].live, "seq %d is not live (never created, or freed)", seq);
  *out = &e->seqs[seq];
  return NSN_OK;
}

bool valid_kv_bits(int32_t b) { return b == 16 || b == 2 || b == 1; }

}  // namespace

extern "C" {

int32_t nsn_abi_version(void) { return NSN_ABI_VERSION; }

int32_t nsn_cuda_available(void) {
  try {
    return cuda_backend_available() ? 1 : 0;
  } catch (...) {
    return 0;
  }
}

nsn_status nsn_engine_create(const nsn_model_config* cfg, const nsn_engine_options* opts,
                             nsn_engine** out) {
  return guarded([&]() -> nsn_status {
    REQUIRE(out, "out (engine pointer) is null");
    *out = nullptr;
    REQUIRE(cfg, "model config is null");
    nsn_status st = validate_config(*cfg);
    if (st != NSN_OK) return st;
    EngineSpec spec{};
    spec.cfg = *cfg;
    if (opts) spec.opts = *opts;
    if ((st = resolve_options(spec.opts)) != NSN_OK) return st;

    std::unique_ptr<Backend> backend;
    const int want = spec.opts.backend;
    if (want == NSN_BACKEND_CUDA || (want == NSN_BACKEND_AUTO && cuda_backend_available())) {
      if (!cuda_backend_available()) {
        return set_error(NSN_E_NO_DEVICE,
                         "backend cuda requested, but this library has no CUDA support or no "
                         "CUDA device is visible (use backend auto or cpu)");
      }
      if (spec.opts.ablation & NSN_ABL_CPU_ONLY) {
        return set_error(NSN_E_INVALID,
                         "options: ablation 0x%x (fp-s1, fp-mean, no-s2adj, s2-ls) exists in the CPU "
                         "reference only (use backend cpu)",
                         spec.opts.ablation);
      }
      spec.opts.backend = NSN_BACKEND_CUDA;
      st = NSN_E_BACKEND;
      backend = make_cuda_backend(spec, &st);
      if (!backend) return st == NSN_OK ? set_error(NSN_E_BACKEND, "CUDA backend failed") : st;
    } else {
      spec.opts.backend = NSN_BACKEND_CPU;
      backend = make_cpu_backend(spec);
    }
    auto e = std::make_unique<nsn_engine>();
    e->spec = spec;
    e->backend = std::move(backend);
    *out = e.release();
    return NSN_OK;
  });
}

void nsn_engine_destroy(nsn_engine* e) {
  try {
    delete e;
  } catch (...) {
  }
}

nsn_status nsn_engine_set_weight(nsn_engine* e, int32_t slot, int32_t layer, int32_t dtype,
                                 const void* data, uint64_t n_elements) {
  return guarded([&]() -> nsn_status {
    nsn_status st = require_engine(e, false);
    if (st != NSN_OK) return st;
    const nsn_model_config& c = e->spec.cfg;
    REQUIRE(slot >= 0 && slot < NSN_W_COUNT, "weight slot %d is out of range [0, %d)", slot,
            NSN_W_COUNT);
    REQUIRE(slot_in_model(c, slot), "weight %s is not part of this model (%s)", slot_name(slot),
            slot == NSN_W_LM_HEAD ? "tied embeddings" : "no qkv_bias flag");
    if (slot_is_global(slot)) {
      REQUIRE(layer == -1, "weight %s is global: layer must be -1, not %d", slot_name(slot), layer);
    } else {
      REQUIRE(layer >= 0 && layer < c.n_layers, "weight %s: layer %d is out of range [0, %d)",
              slot_name(slot), layer, c.n_layers);
    }
    REQUIRE(dtype == NSN_F32 || dtype == NSN_F16 || dtype == NSN_BF16,
            "weight %s: dtype %d must be 0 (f32), 1 (f16) or 2 (bf16)", slot_name(slot), dtype);
    REQUIRE(data, "weight %s: data is null", slot_name(slot));
    const uint64_t want = slot_elements(c, slot);
    REQUIRE(n_elements == want, "weight %s (layer %d): %llu elements given, the model needs %llu",
            slot_name(slot), layer, (unsigned long long)n_elements, (unsigned long long)want);
    return e->backend->set_weight(slot, layer, dtype, data, n_elements);
  });
}

nsn_status nsn_engine_init_random(nsn_engine* e, uint64_t seed) {
  return guarded([&]() -> nsn_status {
    nsn_status st = require_engine(e, false);
    if (st != NSN_OK) return st;
    return e->backend->init_random(seed);
  });
}

nsn_status nsn_engine_finalize(nsn_engine* e) {
  return guarded([&]() -> nsn_status {
    nsn_status st = require_engine(e, false);
    if (st != NSN_OK) return st;
    const nsn_model_config& c = e->spec.cfg;
    for (int slot = 0; slot < NSN_W_COUNT; slot++) {
      if (!slot_in_model(c, slot)) continue;
      const int layers = slot_is_global(slot) ? 1 : c.n_layers;
      for (int l = 0; l < layers; l++) {
        const int layer = slot_is_global(slot) ? -1 : l;
        if (!e->backend->has_weight(slot, layer)) {
          return set_error(NSN_E_STATE, "weight %s (layer %d) was never set", slot_name(slot), layer);
        }
      }
    }
    const int method = e->spec.opts.quant_method;
    for (int k = 0; k < kKinds; k++) {
      e->page_bytes[k] = page_bytes(k, c.head_dim, method, c.n_layers, c.n_kv_heads);
    }
    uint64_t bytes = e->spec.opts.kv_pool_bytes;
    if (bytes == 0) bytes = e->backend->default_arena_bytes();
    REQUIRE(bytes >= e->page_bytes[KV_F16],
            "kv_pool_bytes %llu cannot hold one fp16 page (%llu bytes = 64 tokens of this model)",
            (unsigned long long)bytes, (unsigned long long)e->page_bytes[KV_F16]);
    if ((st = e->backend->alloc_arena(bytes)) != NSN_OK) return st;
    e->arena_bytes = bytes;
    e->spec.opts.kv_pool_bytes = bytes;
    e->n_slabs = bytes / e->page_bytes[KV_F16];
    for (int k = 0; k < kKinds; k++) e->per_slab[k] = e->page_bytes[KV_F16] / e->page_bytes[k];
    e->seqs.assign(e->spec.opts.max_seqs, Seq{});
    e->free_slots.resize(e->seqs.size());
    for (size_t i = 0; i < e->seqs.size(); i++) e->free_slots[i] = (int32_t)(e->seqs.size() - 1 - i);
    e->finalized = true;
    return NSN_OK;
  });
}

nsn_status nsn_engine_get_info(nsn_engine* e, nsn_engine_info* out) {
  return guarded([&]() -> nsn_status {
    REQUIRE(e, "engine handle is null");
    REQUIRE(out, "out (info) is null");
    nsn_engine_info info{};
    const nsn_engine_options& o = e->spec.opts;
    info.backend = o.backend;
    info.max_seqs = o.max_seqs;
    info.max_step_tokens = o.max_step_tokens;
    info.n_threads = o.n_threads;
    info.kv_pool_bytes = e->arena_bytes;
    if (e->finalized) {
      info.n_slabs = e->n_slabs;
      for (int k = 0; k < kKinds; k++) {
        info.page_bytes[k] = e->page_bytes[k];
        info.pages_per_slab[k] = e->per_slab[k];
        info.page_ids[k] = e->page_ids(k);
        info.token_bytes[k] = e->page_bytes[k] / kWindow;
      }
    }
    info.weight_bytes = e->backend->weight_bytes();
    info.seqs_in_use = e->seqs_in_use;
    const int64_t gs = e->backend->graph_steps();
    info.graph_steps = gs > INT32_MAX ? INT32_MAX : (int32_t)gs;
    const std::string name = e->backend->device_name();
    strncpy(info.device_name, name.c_str(), sizeof info.device_name - 1);
    *out = info;
    return NSN_OK;
  });
}

nsn_status nsn_seq_create(nsn_engine* e, int32_t kv_bits, int32_t* seq_out) {
  return guarded([&]() -> nsn_status {
    nsn_status st = require_engine(e, true);
    if (st != NSN_OK) return st;
    REQUIRE(valid_kv_bits(kv_bits), "kv_bits %d must be 16, 2 or 1", kv_bits);
    REQUIRE(seq_out, "seq_out is null");
    if (e->free_slots.empty()) {
      return set_error(NSN_E_OOM, "all %d sequence slots are in use (max_seqs)",
                       (int32_t)e->seqs.size());
    }
    const int32_t i = e->free_slots.back();
    Seq& s = e->seqs[i];
    s = Seq{};
    s.live = true;
    s.kv_bits = kv_bits;
    s.sampling = default_sampling();
    e->free_slots.pop_back();
    e->seqs_in_use++;
    *seq_out = i;
    return NSN_OK;
  });
}

nsn_status nsn_seq_free(nsn_engine* e, int32_t seq) {
  return guarded([&]() -> nsn_status {
    Seq* s = nullptr;
    nsn_status st = require_seq(e, seq, &s);
    if (st != NSN_OK) return st;
    *s = Seq{};
    e->free_slots.push_back(seq);  // capacity = max_seqs: no allocation
    e->seqs_in_use--;
    return NSN_OK;
  });
}

nsn_status nsn_seq_set_sampling(nsn_engine* e, int32_t seq, const nsn_sampling* p,
                                const int32_t* bias_ids, const float* bias_values, int32_t n_bias) {
  return guarded([&]() -> nsn_status {
    Seq* s = nullptr;
    nsn_status st = require_seq(e, seq, &s);
    if (st != NSN_OK) return st;
    const int32_t V = e->spec.cfg.vocab_size;
    REQUIRE(p, "sampling params are null");
    REQUIRE(isfinite(p->temperature) && p->temperature >= 0,
            "sampling: temperature %g must be finite and >= 0", (double)p->temperature);
    REQUIRE(isfinite(p->top_p) && p->top_p > 0 && p->top_p <= 1, "sampling: top_p %g must be in (0, 1]",
            (double)p->top_p);
    REQUIRE(isfinite(p->min_p) && p->min_p >= 0 && p->min_p <= 1, "sampling: min_p %g must be in [0, 1]",
            (double)p->min_p);
    REQUIRE(isfinite(p->repetition_penalty) && p->repetition_penalty > 0,
            "sampling: repetition_penalty %g must be > 0", (double)p->repetition_penalty);
    REQUIRE(isfinite(p->presence_penalty) && fabsf(p->presence_penalty) <= 2,
            "sampling: presence_penalty %g must be in [-2, 2]", (double)p->presence_penalty);
    REQUIRE(isfinite(p->frequency_penalty) && fabsf(p->frequency_penalty) <= 2,
            "sampling: frequency_penalty %g must be in [-2, 2]", (double)p->frequency_penalty);
    REQUIRE(p->top_k >= -1, "sampling: top_k %d must be >= -1 (0 and -1 mean off)", p->top_k);
    REQUIRE(p->n_prompt >= 0, "sampling: n_prompt %d must be >= 0", p->n_prompt);
    REQUIRE(p->min_tokens >= 0, "sampling: min_tokens %d must be >= 0", p->min_tokens);
    REQUIRE(p->n_stop_ids >= 0 && p->n_stop_ids <= NSN_MAX_STOP_IDS,
            "sampling: n_stop_ids %d must be in [0, %d]", p->n_stop_ids, NSN_MAX_STOP_IDS);
    for (int32_t i = 0; i < p->n_stop_ids; i++) {
      REQUIRE(p->stop_ids[i] >= 0 && p->stop_ids[i] < V, "sampling: stop_ids[%d] = %d is not in [0, %d)",
              i, p->stop_ids[i], V);
    }
    REQUIRE(n_bias >= 0 && n_bias <= V, "sampling: n_bias %d must be in [0, vocab_size = %d]", n_bias, V);
    REQUIRE(n_bias == 0 || (bias_ids && bias_values), "sampling: n_bias %d but bias arrays are null",
            n_bias);
    for (int32_t i = 0; i < n_bias; i++) {
      REQUIRE(bias_ids[i] >= 0 && bias_ids[i] < V, "sampling: bias_ids[%d] = %d is not in [0, %d)", i,
              bias_ids[i], V);
      REQUIRE(isfinite(bias_values[i]), "sampling: bias_values[%d] is not finite", i);
    }
    std::vector<int32_t> ids(bias_ids, bias_ids + n_bias);
    std::vector<float> values(bias_values, bias_values + n_bias);
    s->sampling = *p;
    s->bias_ids.swap(ids);
    s->bias_values.swap(values);
    return NSN_OK;
  });
}

nsn_status nsn_seq_read_kv(nsn_engine* e, int32_t kv_bits, const int32_t* pages, int32_t n_pages,
                           int32_t tail_page, int32_t len, int32_t layer, int32_t kv_head,
                           int32_t start, int32_t count, float* k_out, float* v_out) {
  return guarded([&]() -> nsn_status {
    nsn_status st = require_engine(e, true);
    if (st != NSN_OK) return st;
    const nsn_model_config& c = e->spec.cfg;
    REQUIRE(valid_kv_bits(kv_bits), "kv_bits %d must be 16, 2 or 1", kv_bits);
    REQUIRE(len >= 0 && len <= c.max_position, "len %d must be in [0, max_position = %d]", len,
            c.max_position);
    REQUIRE(layer >= 0 && layer < c.n_layers, "layer %d is out of range [0, %d)", layer, c.n_layers);
    REQUIRE(kv_head >= 0 && kv_head < c.n_kv_heads, "kv_head %d is out of range [0, %d)", kv_head,
            c.n_kv_heads);
    REQUIRE(start >= 0 && count >= 0 && (int64_t)start + count <= len,
            "tokens [%d, %d + %d) are not in a cache of %d tokens", start, start, count, len);
    REQUIRE(count == 0 || (k_out && v_out), "k_out / v_out is null");
    const int32_t want = table_pages(kv_bits, len);
    REQUIRE(n_pages == want, "n_pages %d: a cache of %d tokens at kv_bits %d has %d pages", n_pages,
            len, kv_bits, want);
    REQUIRE(n_pages == 0 || pages, "pages is null");
    const int kind = kind_of_bits(kv_bits);
    std::vector<int64_t> table(n_pages);
    for (int32_t i = 0; i < n_pages; i++) {
      REQUIRE(pages[i] >= 0 && (uint64_t)pages[i] < e->page_ids(kind),
              "pages[%d] = %d is not a page id of kind %d (< %llu)", i, pages[i], kind,
              (unsigned long long)e->page_ids(kind));
      table[i] = e->page_offset(kind, pages[i]);
    }
    const bool need_tail = kv_bits != 16 && len % kWindow != 0;
    REQUIRE(!need_tail || (tail_page >= 0 && (uint64_t)tail_page < e->page_ids(KV_F16)),
            "tail_page %d is not an fp16 page id (< %llu)", tail_page,
            (unsigned long long)e->page_ids(KV_F16));
    if (count == 0) return NSN_OK;
    SeqStep view{};
    view.kv_bits = kv_bits;
    view.pos0 = len;
    view.n_windows = (len + kWindow - 1) / kWindow;
    if (need_tail) table.push_back(e->page_offset(KV_F16, tail_page));
    view.page_off = table.data();
    view.tail_off = need_tail ? e->page_offset(KV_F16, tail_page) : -1;
    return e->backend->read_kv(view, layer, kv_head, start, count, k_out, v_out);
  });
}

nsn_status nsn_engine_check(nsn_engine* e) {
  return guarded([&]() -> nsn_status {
    nsn_status st = require_engine(e, true);
    if (st != NSN_OK) return st;
    return e->check();
  });
}

nsn_status nsn_engine_inject_fault(nsn_engine* e, int32_t n_steps) {
  return guarded([&]() -> nsn_status {
    REQUIRE(e, "engine handle is null");
    REQUIRE(n_steps >= 0, "n_steps %d must be >= 0", n_steps);
    e->faults_pending = n_steps;
    return NSN_OK;
  });
}

}  // extern "C"
