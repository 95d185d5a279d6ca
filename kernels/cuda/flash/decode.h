// cuda_flash's decode kernel (docs/variants.md §5, issue #13): flash-decoding for S_q from 1 to
// 64 against a KV cache read at its stored width. One block takes the query rows of one KV head
// (every output head that reads it, times S_q: GQA, MQA, SQA and explicit maps read each cache
// byte once per 16 rows) over one split of the keys; a combine kernel merges the splits by their
// log-sum-exp. The cache is always read through KvCacheArgs (a cache that is not paged has one
// page per sequence), in any mix of native, int8 and int4 rows (SAQ bands), dequantized in
// registers. Masks and built-in modifiers are applied per score with the shared definitions
// (common/mask.cuh, common/score_mods.cuh); client expressions are not.
//
// Host code: the allow-list (DecodeRefusal), the split plan (PlanDecode), the workspace and the
// launch. Everything here but LaunchDecode runs without a device.
#ifndef ATTNBENCH_KERNELS_CUDA_FLASH_DECODE_H_
#define ATTNBENCH_KERNELS_CUDA_FLASH_DECODE_H_

#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/cuda/common/attention_args.h"
#include "kernels/cuda/common/kv_cache_args.h"
#include "kernels/cuda/flash/support.h"

namespace attnbench::cuda::flash {

// Query rows a block holds (output heads of one KV head times S_q, in tiles of this many) and
// keys it scores per step.
inline constexpr int kDecodeRowTile = 16;
inline constexpr int kDecodeChunk = 64;
inline constexpr int kDecodeMaxSeqQ = 64;
// At most this many splits, and at least this many key chunks in each.
inline constexpr int kDecodeMaxSplits = 64;
inline constexpr int kDecodeMinChunksPerSplit = 4;

// Whether cuda_flash uses the decode kernel at all: the one switch (kFlashDecodeEnabled in
// decode.cu), on since its GPU test passed (CudaFlashDecodeTest.* in kernels_cuda_backends_test,
// which also turns it on in its own process through EnableFlashDecodeForTest). Off, cuda_flash
// lists neither the kernel nor paged or quantized caches, and runs a native decode on its forward
// kernels.
bool FlashDecodeEnabled();
void EnableFlashDecodeForTest();

// The decode kernel's allow-list (sm_80 and newer): float16 and bfloat16, D_qk = D_v in {32, 64,
// 128, 256}, every mask, RoPE, ALiBi and softcap (no score_mod or mask_mod), and in words S_q
// from 1 to 64 and S_kv below 2^31.
const KernelAllowList& DecodeAllowList();
// Why the decode kernel cannot run `args`, "" when it can: DecodeAllowList checked.
std::string DecodeRefusal(const AttentionArgs& args);

// How a launch splits its work. rows of a KV head = (output heads reading it) * S_q.
struct DecodePlan {
  int row_tiles = 0;          // ceil(max rows of a KV head / kDecodeRowTile)
  int splits = 1;             // key splits; 1 writes O directly, with no combine
  int64_t key_begin = 0;      // the keys some query row keeps: [key_begin, key_end)
  int64_t key_end = 0;
  int64_t split_tokens = 0;   // keys per split, a multiple of kDecodeChunk
};

// The plan for `args` on a device of `sms` multiprocessors holding `blocks_per_sm` of the
// kernel's blocks each (DecodeBlocksPerSm). kv_head_of_output[h] is the KV head output head h
// reads (the head map's second column). The splits minimize waves x chunks per split: a grid
// that fills the device in whole waves, where the keys allow.
DecodePlan PlanDecode(const AttentionArgs& args, const std::vector<int32_t>& kv_head_of_output,
                      int sms, int blocks_per_sm);

// How many blocks of the kernel that runs `args` one multiprocessor of the current device holds
// (registers and shared memory decide: 4 at D 128, 2 at D 256 on an H100).
int DecodeBlocksPerSm(const AttentionArgs& args);

// Device scratch a launch with `plan` needs (each split's float32 output rows and log-sum-exp);
// 0 when it has one split.
size_t DecodeWorkspaceBytes(const AttentionArgs& args, const DecodePlan& plan);

// Launches the decode kernel (and the combine when plan.splits > 1) on `stream`. `cache` must
// have its native rows in args.storage (KvCachePool::stored) wherever a range is native;
// `workspace` at least DecodeWorkspaceBytes. cudaErrorNotSupported when DecodeRefusal is not empty.
cudaError_t LaunchDecode(const AttentionArgs& args, const KvCacheArgs& cache,
                         const DecodePlan& plan, void* workspace, cudaStream_t stream);

}  // namespace attnbench::cuda::flash

#endif  // ATTNBENCH_KERNELS_CUDA_FLASH_DECODE_H_
