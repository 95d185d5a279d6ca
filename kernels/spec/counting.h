// Analytic work of a problem (§7 of docs/variants.md): kept pairs, FLOPs, exponentials and the
// minimum bytes any implementation must move. Independent of how or where the problem runs.
#ifndef ATTNBENCH_KERNELS_SPEC_COUNTING_H_
#define ATTNBENCH_KERNELS_SPEC_COUNTING_H_

#include <cstdint>

#include "absl/status/statusor.h"
#include "kernels/spec/problem.h"
#include "kernels/spec/shapes.h"

namespace attnbench {

// With w the storage width in bytes, |T| a tensor's element count, N the kept pairs of one
// (b, h) and L = 4 * B * H_out * S_q (the float32 log-sum-exp, one per output row):
//
//   phase                  flops, flash convention   exponentials    min_bytes
//   prefill                1x                        B*H_out*N       w(|Q|+|K|+|V|+|O|)
//   decode                 1x                        B*H_out*N       w(|Q|+|O|) + the stored cache
//   backward               2.5x                      B*H_out*N       w(|Q|+|K|+|V|+|O|+|dO|) + L
//                                                                    + w(|dQ|+|dK|+|dV|)
//   backward, training     3.5x                      2*B*H_out*N     the backward's
//   step                                                             + w(|Q|+|K|+|V|+|O|) + L
//
// (|dO| = |O|, |dQ| = |Q|, ...). The backward reads Q, K, V, O, dO and the log-sum-exp once and
// writes dQ, dK, dV once; a training step's forward reads Q, K, V once more and writes O and the
// log-sum-exp. The backward's exponentials are those of P recomputed from the log-sum-exp.
//
// At layer scope (§6) the core counts as above and the projections add P = the forward's four
// products (projection_flops): P forward, 2P backward (each projection's input and weight
// gradients), 3P a training step. With |W| the four weights' elements together, min_bytes is
//   prefill                w(|X| + |W| + |Y|)
//   backward               w(|X| + |W| + |dY| + |Q| + |K| + |V| + |O|) + L + w(|dX| + |dW|)
//   backward, training     the backward's + w(|X| + |W| + |Y|) + w(|Q| + |K| + |V| + |O|) + L
//   step
// (the backward reads X, the weights, dY and the forward's saved Q, K, V, O and log-sum-exp, and
// writes dX and the weight gradients; a step's forward also writes what the backward reads).
struct WorkCounts {
  uint64_t kept_pairs = 0;            // kept (i, j) pairs summed over batch and output heads
  double flops = 0;                   // 2 * B * H_out * N * (D_qk + D_v) x the phase's factor
  double flops_flash_convention = 0;  // 4 * B * H_out * S_q * S_kv * D_qk, halved when causal,
                                      // x the phase's factor
  double projection_flops = 0;        // layer scope only: 1x, 2x backward, 3x training step
  uint64_t exponentials = 0;          // see the table
  uint64_t min_bytes = 0;             // see the table
};

// Kept pairs for one (b, h); exact for every mask (block-sparse masks are counted block by block,
// probabilistic ones by drawing the same blocks the kernels keep).
uint64_t KeptPairs(const Problem& problem, int64_t batch, int output_head);
// The same from the mask's tile coverage alone (MaskEvaluator::Coverage and FillTile), which any
// mask has: what KeptPairs falls back to for a mask without a closed form, and what tests compare
// the closed forms with.
uint64_t KeptPairsFromCoverage(const Problem& problem, int64_t batch, int output_head);

// Most random draws CountWork makes for a probabilistic block-sparse mask, bounded by batch x
// output heads x block rows x block columns (a few seconds of one core): the time a request may
// take before it runs. 256 sequences x heads at 128k tokens in 128-token blocks stay within it.
inline constexpr int64_t kMaxProbabilisticDraws = int64_t{1} << 28;
// Tiles of 64 x 64 pairs CountWork may classify for a mask_mod (interval analysis per tile, then
// per pair in tiles it keeps only partly): the bound keeps counting to seconds.
inline constexpr int64_t kMaxMaskModTiles = int64_t{1} << 23;

// The FLOPs of a layer's four forward projections (§7): 2 B S d_model (H_q D_qk + H_kv D_qk +
// H_kv D_v) for Q, K, V and 2 B S H_out D_v d_model for Y; 0 at core scope.
double LayerProjectionFlops(const ProblemShapes& shapes);

// Counts for a normalized, valid problem. INVALID_ARGUMENT if a count overflows 64 bits;
// RESOURCE_EXHAUSTED if a probabilistic mask would take over kMaxProbabilisticDraws draws.
absl::StatusOr<WorkCounts> CountWork(const Problem& problem);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_SPEC_COUNTING_H_
