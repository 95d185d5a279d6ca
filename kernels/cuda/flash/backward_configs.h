// The tile table of cuda_flash's backward (PHASE_BACKWARD) on mma.sync, sm_80 and newer
// (backward_sm80.cuh): which head-dim pairs are compiled and with which tiles. Its own header,
// beside configs.h (the forward's tables, which the Hopper kernel's slow-compiling units include),
// so that tuning the backward recompiles only the backward. Plain C++ (constexpr), for host code,
// device code and tests alike.
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_BACKWARD_CONFIGS_H_
#define ATTNBENCH_KERNELS_CUDA_FLASH_BACKWARD_CONFIGS_H_

namespace attnbench::cuda::flash {

// One thread block per (batch, key/value head, K/V tile of 16 * warps keys): each warp owns 16
// keys and keeps their dK and dV in float32 registers (D_qk / 4 + D_v / 4 floats a thread) while
// the block walks query tiles of block_q rows. Per query tile a thread also holds S^T and dP^T
// (block_q / 2 floats each), so block_q shrinks as the head dims grow. Ordered by cost: a request
// runs on the first row whose dims hold both of its own (smaller dims zero-padded).
struct Sm80BackwardTile {
  int dim_qk;
  int dim_v;
  int warps;  // block_kv = 16 * warps keys
  int block_q;
  int min_blocks;
};
inline constexpr Sm80BackwardTile kSm80BackwardTiles[] = {
    {64, 64, 4, 64, 2},
    {128, 128, 4, 32, 1},
};
inline constexpr int kNumSm80BackwardTiles =
    sizeof(kSm80BackwardTiles) / sizeof(kSm80BackwardTiles[0]);

constexpr int Sm80BackwardBlockKv(const Sm80BackwardTile& t) { return 16 * t.warps; }

// Dynamic shared memory of one block: K and V of the block's keys, Q and dO of the current query
// tile, dS^T of the tile (rows padded by 8 elements against bank conflicts, 2-byte elements),
// the tile's log-sum-exp and D (floats); at the end the region stages dK in float32 for RoPE's
// transpose (rows of D_qk + 4 floats), whichever is larger.
constexpr int Sm80BackwardSmemBytes(const Sm80BackwardTile& t) {
  const int bc = Sm80BackwardBlockKv(t);
  const int tiles = (bc * (t.dim_qk + 8) + bc * (t.dim_v + 8) + t.block_q * (t.dim_qk + 8) +
                     t.block_q * (t.dim_v + 8) + bc * (t.block_q + 8)) *
                        2 +
                    2 * t.block_q * 4;
  const int stage = bc * (t.dim_qk + 4) * 4;
  return tiles > stage ? tiles : stage;
}

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_BACKWARD_CONFIGS_H_
