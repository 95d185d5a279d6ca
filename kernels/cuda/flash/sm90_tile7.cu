// The Hopper kernel for tile row 7 of kSm90Tiles (configs.h), every policy (launch_sm90.cuh).
#include "kernels/cuda/flash/launch_sm90.cuh"

namespace attnbench::cuda::flash {
template cudaError_t LaunchSm90Tile<7>(const AttentionArgs&, cudaStream_t, bool);
}  // namespace attnbench::cuda::flash
