// What each CUDA backend runs, decided without a device: its allow-lists (BackendSupport, with
// cuda_flash's per-kernel lists) and the whole support decision for a device of given traits.
// CudaBackend::CheckSupported is CheckCudaSupport on its first device; the host support test
// calls it with the traits of a Hopper and an Ampere device on a machine with neither.
#ifndef ATTNBENCH_KERNELS_CUDA_BACKEND_CUDA_SUPPORT_H_
#define ATTNBENCH_KERNELS_CUDA_BACKEND_CUDA_SUPPORT_H_

#include <vector>

#include "absl/status/status.h"
#include "kernels/backend.h"
#include "kernels/cuda/flash/support.h"
#include "kernels/spec/modifiers.h"
#include "kernels/spec/problem.h"

namespace attnbench {

enum class CudaBackendKind { kFlash, kUnfused, kReference };

const char* CudaBackendName(CudaBackendKind kind);
BackendSupport CudaBackendSupport(CudaBackendKind kind);
// The modifiers the backend's PHASE_BACKWARD runs (a subset of CudaBackendSupport's list, which
// is every phase's); CheckCudaSupport refuses the others with that phase, naming the field.
std::vector<Modifier> CudaBackwardModifiers(CudaBackendKind kind);

// Whether the CUDA backends declare PHASE_BACKWARD at SCOPE_LAYER (BackendSupport::layer_backward:
// layer_gradients.h around each backend's own core backward). The one switch, off until the layer
// backward has passed its GPU test once (CudaLayerBackwardTest.* in kernels_cuda_backward_test),
// which turns it on in its own process through EnableCudaLayerBackwardForTest.
bool CudaLayerBackwardEnabled();
void EnableCudaLayerBackwardForTest();

// Whether cuda_flash runs a normalized, valid problem with its decode kernel (flash/decode.h): a
// PHASE_DECODE inside the kernel's allow-list. Every cache kind (paged, int8, int4, SAQ bands)
// runs only there; a native contiguous cache outside it runs on the forward kernels as a short
// prefill.
bool UsesFlashDecode(const Problem& problem);

// OK when the backend runs the normalized, valid problem on such a device; otherwise
// FAILED_PRECONDITION naming the field (backend allow-lists) or the kernels' reasons.
absl::Status CheckCudaSupport(CudaBackendKind kind, const Problem& problem,
                              const cuda::flash::FlashDevice& device);

}  // namespace attnbench

#endif  // ATTNBENCH_KERNELS_CUDA_BACKEND_CUDA_SUPPORT_H_
