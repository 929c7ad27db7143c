// peftserve::grouped_lora: y[rows] += scale * (x[rows] @ A[slot]) @ B[slot] for bf16 activations
// and bf16 LoRA weights, accumulating in fp32, for tokens grouped by adapter slot.
//
// Why a kernel: with many distinct adapters in a decode step each slot has a row or two, so a
// layer's LoRA is a few dozen tiny mat-vecs. In torch that is ~10 ops per module (gather, casts,
// batched matmuls, scatter-add), each paying dispatch and an fp32 copy, and fp32 weights double
// the bytes read. Here one call reads each active slot's bf16 weights once per block of up to 4
// rows, sums in fp32, and writes only the adapter rows (one bf16 rounding each).
//
// Plain C++ in fixed-width blocks that the compiler vectorises for the machine it is built on
// (the plugin compiles it there, with -march=native).
#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kChunkRows = 8;  // rows of one slot per work item (weights read once per item)
#if defined(__AVX512F__)
constexpr int kLanes = 16;  // floats per column block: one register
#else
constexpr int kLanes = 8;
#endif

inline float widen(uint16_t bits) {
  uint32_t u = static_cast<uint32_t>(bits) << 16;
  float f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline uint16_t narrow(float f) {  // round to nearest even, as torch does; NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, sizeof(u));
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return f != f ? uint16_t{0x7FC0} : static_cast<uint16_t>(rounded);
}

// Weights come from DRAM (the base model's layers evict them between steps) and one core's
// hardware prefetcher stops at each 4 KiB page: asking for the line this far ahead of the one
// being read keeps more misses in flight (a decode step's calls 1.1-1.2x slower without it, with
// the caches on huge pages: benchmarks/lora_op.py).
constexpr int64_t kPrefetchBytes = 1024;

inline void prefetch_ahead(const uint16_t* at) {
  __builtin_prefetch(reinterpret_cast<const char*>(at) + kPrefetchBytes, 0, 3);
}

// GCC/Clang vector types: one register of kLanes floats on AVX-512, two on AVX2.
typedef float f32v __attribute__((vector_size(4 * kLanes)));
typedef uint32_t u32v __attribute__((vector_size(4 * kLanes)));
typedef int32_t i32v __attribute__((vector_size(4 * kLanes)));
typedef uint16_t u16v __attribute__((vector_size(2 * kLanes)));

inline f32v widen_v(const uint16_t* src) {
  u16v h;
  std::memcpy(&h, src, sizeof(h));
  const u32v u = __builtin_convertvector(h, u32v) << 16;
  f32v f;
  std::memcpy(&f, &u, sizeof(f));
  return f;
}

inline void narrow_v(uint16_t* dst, f32v f) {
  u32v u;
  std::memcpy(&u, &f, sizeof(u));
  u32v rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  const i32v nan = f != f;
  rounded = nan ? u32v{} + 0x7FC0u : rounded;
  const u16v h = __builtin_convertvector(rounded, u16v);
  std::memcpy(dst, &h, sizeof(h));
}

struct Chunk {
  int64_t slot, begin, end;  // rows[begin:end] all use this slot
};

struct Problem {
  const uint16_t* x;  // (T, in) rows xs apart
  uint16_t* y;        // (T, >= out) rows ys apart
  const uint16_t* a;  // (S, in, nr)
  const uint16_t* b;  // (S, R, out)
  const int64_t* row;
  const int64_t* off;  // (n_slices + 1,) output columns of each slice
  int64_t xs, ys, in, nr, out, rank, n_slices;
  float scale;
};

// h (RB, nr) = x[rows] (RB, in) @ A (in, nr) with all NB * kLanes columns of a row of A at once:
// A is read front to back, one stream the hardware prefetcher follows (weights come from DRAM).
template <int RB, int NB>
void shrink(const Problem& p, const uint16_t* A, const int64_t* rows, float* h) {
  // KU independent sums per output: fewer than ~4 chains would wait on each FMA's latency.
  constexpr int KU = RB * NB >= 4 ? 1 : (RB * NB >= 2 ? 2 : 4);
  const uint16_t* xr[RB];
  for (int r = 0; r < RB; ++r) xr[r] = p.x + rows[r] * p.xs;
  f32v acc[KU][RB][NB] = {};
  int64_t k = 0;
  for (; k + KU <= p.in; k += KU) {
    for (int64_t q = 0; q < KU * p.nr; q += 64 / sizeof(uint16_t)) prefetch_ahead(A + k * p.nr + q);
    for (int u = 0; u < KU; ++u) {
      f32v w[NB];
      for (int nb = 0; nb < NB; ++nb) w[nb] = widen_v(A + (k + u) * p.nr + nb * kLanes);
      for (int r = 0; r < RB; ++r) {
        const float xv = widen(xr[r][k + u]);
        for (int nb = 0; nb < NB; ++nb) acc[u][r][nb] += xv * w[nb];
      }
    }
  }
  for (; k < p.in; ++k) {
    for (int r = 0; r < RB; ++r) {
      const float xv = widen(xr[r][k]);
      for (int nb = 0; nb < NB; ++nb) acc[0][r][nb] += xv * widen_v(A + k * p.nr + nb * kLanes);
    }
  }
  for (int r = 0; r < RB; ++r) {
    for (int nb = 0; nb < NB; ++nb) {
      f32v v = acc[0][r][nb];
      for (int u = 1; u < KU; ++u) v += acc[u][r][nb];
      v *= p.scale;
      std::memcpy(h + r * p.nr + nb * kLanes, &v, sizeof(v));
    }
  }
}

// Any other width: one block of kLanes columns at a time (A read NB times, strided), then the
// columns left over one by one.
template <int RB>
void shrink_any(const Problem& p, const uint16_t* A, const int64_t* rows, float* h) {
  const uint16_t* xr[RB];
  for (int r = 0; r < RB; ++r) xr[r] = p.x + rows[r] * p.xs;
  int64_t j0 = 0;
  for (; j0 + kLanes <= p.nr; j0 += kLanes) {
    f32v acc[RB] = {};
    for (int64_t k = 0; k < p.in; ++k) {
      const f32v w = widen_v(A + k * p.nr + j0);
      for (int r = 0; r < RB; ++r) acc[r] += widen(xr[r][k]) * w;
    }
    for (int r = 0; r < RB; ++r) {
      const f32v v = p.scale * acc[r];
      std::memcpy(h + r * p.nr + j0, &v, sizeof(v));
    }
  }
  for (; j0 < p.nr; ++j0) {
    for (int r = 0; r < RB; ++r) {
      float s = 0.f;
      for (int64_t k = 0; k < p.in; ++k) s += widen(xr[r][k]) * widen(A[k * p.nr + j0]);
      h[r * p.nr + j0] = p.scale * s;
    }
  }
}

// y[rows, cols of slice i] += h's rank block i (RB, R) @ B_i (R, out_i), summed in fp32.
template <int RB>
void expand_in_registers(const Problem& p, const uint16_t* B, const int64_t* rows, const float* h) {
  uint16_t* yr[RB];
  for (int r = 0; r < RB; ++r) yr[r] = p.y + rows[r] * p.ys;
  for (int64_t i = 0; i < p.n_slices; ++i) {
    const float* hi = h + i * p.rank;
    int64_t o0 = p.off[i];
    for (; o0 + kLanes <= p.off[i + 1]; o0 += kLanes) {
      f32v acc[RB] = {};
      for (int64_t j = 0; j < p.rank; ++j) {
        const f32v w = widen_v(B + j * p.out + o0);
        for (int r = 0; r < RB; ++r) acc[r] += hi[r * p.nr + j] * w;
      }
      for (int r = 0; r < RB; ++r) narrow_v(yr[r] + o0, widen_v(yr[r] + o0) + acc[r]);
    }
    for (; o0 < p.off[i + 1]; ++o0) {  // a slice width that is not a multiple of kLanes
      for (int r = 0; r < RB; ++r) {
        float s = 0.f;
        for (int64_t j = 0; j < p.rank; ++j) s += hi[r * p.nr + j] * widen(B[j * p.out + o0]);
        yr[r][o0] = narrow(widen(yr[r][o0]) + s);
      }
    }
  }
}

// The same for one or two rows, where B's bytes cost more than the arithmetic: the sums go to an
// L1-resident buffer so that B is read front to back, row after row; then they are added to y.
template <int RB>
void expand_streaming(const Problem& p, const uint16_t* B, const int64_t* rows, const float* h, float* acc) {
  std::fill(acc, acc + RB * p.out, 0.f);
  for (int64_t j = 0; j < p.rank; ++j) {
    const uint16_t* bj = B + j * p.out;
    for (int64_t o = 0; o < p.out; o += 64 / sizeof(uint16_t)) prefetch_ahead(bj + o);
    for (int64_t i = 0; i < p.n_slices; ++i) {
      float hv[RB];
      for (int r = 0; r < RB; ++r) hv[r] = h[r * p.nr + i * p.rank + j];
      int64_t o = p.off[i];
      for (; o + kLanes <= p.off[i + 1]; o += kLanes) {
        const f32v w = widen_v(bj + o);
        for (int r = 0; r < RB; ++r) {
          f32v a;
          std::memcpy(&a, acc + r * p.out + o, sizeof(a));
          a += hv[r] * w;
          std::memcpy(acc + r * p.out + o, &a, sizeof(a));
        }
      }
      for (; o < p.off[i + 1]; ++o)  // a slice width that is not a multiple of kLanes
        for (int r = 0; r < RB; ++r) acc[r * p.out + o] += hv[r] * widen(bj[o]);
    }
  }
  for (int r = 0; r < RB; ++r) {
    uint16_t* yr = p.y + rows[r] * p.ys;
    const float* ar = acc + r * p.out;
    int64_t o = 0;
    for (; o + kLanes <= p.out; o += kLanes) {
      f32v a;
      std::memcpy(&a, ar + o, sizeof(a));
      narrow_v(yr + o, widen_v(yr + o) + a);
    }
    for (; o < p.out; ++o) yr[o] = narrow(widen(yr[o]) + ar[o]);
  }
}

template <int RB>
void rows_block(const Problem& p, int64_t slot, const int64_t* rows, float* h, float* acc) {
  const uint16_t* A = p.a + slot * p.in * p.nr;
  switch (p.nr % kLanes == 0 && RB <= 2 ? p.nr / kLanes : 0) {
    case 1: shrink<RB, 1>(p, A, rows, h); break;
    case 2: shrink<RB, 2>(p, A, rows, h); break;
    case 3: shrink<RB, 3>(p, A, rows, h); break;
    case 4: shrink<RB, 4>(p, A, rows, h); break;
    case 6: shrink<RB, 6>(p, A, rows, h); break;
    default: shrink_any<RB>(p, A, rows, h); break;
  }
  const uint16_t* B = p.b + slot * p.rank * p.out;
  if constexpr (RB <= 2)
    expand_streaming<RB>(p, B, rows, h, acc);
  else
    expand_in_registers<RB>(p, B, rows, h);
}

void run_chunk(const Problem& p, const Chunk& c, float* h, float* acc) {
  int64_t r = c.begin;
  for (; r + 4 <= c.end; r += 4) rows_block<4>(p, c.slot, p.row + r, h, acc);
  switch (c.end - r) {
    case 3: rows_block<3>(p, c.slot, p.row + r, h, acc); break;
    case 2: rows_block<2>(p, c.slot, p.row + r, h, acc); break;
    case 1: rows_block<1>(p, c.slot, p.row + r, h, acc); break;
    default: break;
  }
}

// y: (T, >= out) bf16, unit column stride; x: (T, in) bf16, unit column stride
// a: (S, in, n*R) bf16 contiguous: the slices' A transposed, side by side
// b: (S, R, out) bf16 contiguous: slice i's B transposed in columns offsets[i]:offsets[i+1]
// rows: (N,) int64 token rows grouped by slot; bounds: (G+1,) int64; group_slots: (G,) int64
// offsets: (n+1,) int64, the output columns of each slice
void grouped_lora(at::Tensor y, const at::Tensor& x, const at::Tensor& a, const at::Tensor& b,
                  const at::Tensor& rows, const at::Tensor& bounds, const at::Tensor& group_slots,
                  const at::Tensor& offsets, double scale) {
  TORCH_CHECK(y.scalar_type() == at::kBFloat16 && x.scalar_type() == at::kBFloat16, "bf16 activations");
  TORCH_CHECK(a.scalar_type() == at::kBFloat16 && b.scalar_type() == at::kBFloat16, "bf16 weights");
  TORCH_CHECK(a.is_contiguous() && b.is_contiguous() && a.dim() == 3 && b.dim() == 3, "contiguous weights");
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2 && x.stride(1) == 1 && y.stride(1) == 1, "row-major x, y");
  for (const auto* t : {&rows, &bounds, &group_slots, &offsets})
    TORCH_CHECK(t->scalar_type() == at::kLong && t->is_contiguous() && t->dim() == 1, "int64 index vectors");
  TORCH_CHECK(offsets.numel() >= 2, "offsets");
  at::assert_no_overlap(y, x);
  Problem p{};
  p.in = a.size(1);
  p.nr = a.size(2);
  p.rank = b.size(1);
  p.out = b.size(2);
  p.n_slices = offsets.numel() - 1;
  TORCH_CHECK(x.size(1) == p.in && y.size(1) >= p.out && p.nr == p.n_slices * p.rank, "shapes");
  TORCH_CHECK(a.size(0) == b.size(0) && bounds.numel() == group_slots.numel() + 1, "slots");
  p.x = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  p.y = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
  p.a = reinterpret_cast<const uint16_t*>(a.data_ptr<at::BFloat16>());
  p.b = reinterpret_cast<const uint16_t*>(b.data_ptr<at::BFloat16>());
  p.row = rows.data_ptr<int64_t>();
  p.off = offsets.data_ptr<int64_t>();
  p.xs = x.stride(0);
  p.ys = y.stride(0);
  p.scale = static_cast<float>(scale);
  const int64_t* bound = bounds.data_ptr<int64_t>();
  const int64_t* slot_of = group_slots.data_ptr<int64_t>();
  TORCH_CHECK(p.off[0] == 0 && p.off[p.n_slices] == p.out, "offsets");
  for (int64_t i = 0; i < p.n_slices; ++i) TORCH_CHECK(p.off[i] <= p.off[i + 1], "offsets");
  TORCH_CHECK(bound[0] == 0 && bound[group_slots.numel()] <= rows.numel(), "bounds");

  std::vector<Chunk> chunks;
  for (int64_t g = 0; g < group_slots.numel(); ++g) {
    TORCH_CHECK(slot_of[g] >= 0 && slot_of[g] < a.size(0), "slot out of range");
    TORCH_CHECK(bound[g] <= bound[g + 1], "bounds");
    for (int64_t r = bound[g]; r < bound[g + 1]; r += kChunkRows)
      chunks.push_back({slot_of[g], r, std::min(r + kChunkRows, bound[g + 1])});
  }
  // Chunks write rows in parallel: each row once, and rows of y that do not overlap.
  TORCH_CHECK(y.size(0) <= 1 || y.stride(0) >= p.out, "rows of y overlap");
  const int64_t n_rows = std::min(x.size(0), y.size(0));
  std::vector<bool> seen(n_rows, false);
  for (int64_t i = 0; i < rows.numel(); ++i) {
    TORCH_CHECK(p.row[i] >= 0 && p.row[i] < n_rows, "row out of range");
    TORCH_CHECK(!seen[p.row[i]], "row listed twice");
    seen[p.row[i]] = true;
  }

  at::parallel_for(0, static_cast<int64_t>(chunks.size()), 1, [&](int64_t first, int64_t last) {
    std::vector<float> h(4 * p.nr), acc(4 * p.out);
    for (int64_t c = first; c < last; ++c) run_chunk(p, chunks[c], h.data(), acc.data());
  });
}

}  // namespace

TORCH_LIBRARY(peftserve, m) {
  m.def("grouped_lora(Tensor(a!) y, Tensor x, Tensor a, Tensor b, Tensor rows, Tensor bounds, "
        "Tensor group_slots, Tensor offsets, float scale) -> ()");
}

TORCH_LIBRARY_IMPL(peftserve, CPU, m) { m.impl("grouped_lora", &grouped_lora); }
