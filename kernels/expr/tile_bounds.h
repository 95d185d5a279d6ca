// Whether a mask_mod keeps none, all or some of the pairs of a tile (query positions [q0, q1),
// keys [kv0, kv1)) for one (batch, head), decided by interval analysis without visiting the
// pairs: what lets the CPU kernel and counting skip empty tiles and test no pair of a full one,
// as FlexAttention's block mask does. "Some" is only a maybe: the caller then tests each pair.
#ifndef ATTNBENCH_KERNELS_EXPR_TILE_BOUNDS_H_
#define ATTNBENCH_KERNELS_EXPR_TILE_BOUNDS_H_

#include <cstdint>
#include <vector>

#include "kernels/expr/evaluate.h"
#include "kernels/expr/program.h"

namespace attnbench::expr {

enum class TileKeeps { kNone, kSome, kAll };

// `bind.q` is ignored: the query position ranges over [q0, q1).
TileKeeps MaskTileBounds(const Program& mask, const std::vector<AuxTensor>& aux,
                         const Bindings& bind, int64_t q0, int64_t q1, int64_t kv0, int64_t kv1);

}  // namespace attnbench::expr

#endif  // ATTNBENCH_KERNELS_EXPR_TILE_BOUNDS_H_
