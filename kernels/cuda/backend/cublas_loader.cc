// The cuBLAS entry points attnbench calls, resolved from libcublas.so at run time instead of at
// link time. Why: libcublasLt carries about 94 KB of static TLS, and once it is linked in every
// thread needs that much stack for TLS alone; civetweb (under prometheus-cpp's /metrics exposer)
// starts its threads with a 100 KB stack, and they then fail to start. Loaded with dlopen, cuBLAS's
// TLS is allocated per thread on demand and only in threads that use it. A machine without cuBLAS
// gets CUBLAS_STATUS_NOT_INITIALIZED from every call (it has no GPU backends to call them either).
#include <cublas_v2.h>
#include <dlfcn.h>

namespace {

void* Library() {
  static void* const handle = [] {
    void* h = dlopen("libcublas.so.13", RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) h = dlopen("libcublas.so", RTLD_NOW | RTLD_LOCAL);
    return h;
  }();
  return handle;
}

template <typename Fn>
Fn Resolve(const char* name) {
  void* lib = Library();
  return lib == nullptr ? nullptr : reinterpret_cast<Fn>(dlsym(lib, name));
}

// Defines `name` with the header's signature, forwarding to the library's symbol of that name.
// NOLINTBEGIN(bugprone-macro-parentheses): `params` and `args` are parenthesized lists.
#define ATTNBENCH_FORWARD(name, params, args)                       \
  extern "C" cublasStatus_t CUBLASWINAPI name params {              \
    using Fn = cublasStatus_t(CUBLASWINAPI*) params;                \
    static const Fn fn = Resolve<Fn>(#name);                        \
    return fn == nullptr ? CUBLAS_STATUS_NOT_INITIALIZED : fn args; \
  }
// NOLINTEND(bugprone-macro-parentheses)

}  // namespace

ATTNBENCH_FORWARD(cublasCreate_v2, (cublasHandle_t * handle), (handle))
ATTNBENCH_FORWARD(cublasDestroy_v2, (cublasHandle_t handle), (handle))
ATTNBENCH_FORWARD(cublasSetStream_v2, (cublasHandle_t handle, cudaStream_t stream),
                  (handle, stream))
ATTNBENCH_FORWARD(cublasSetWorkspace_v2, (cublasHandle_t handle, void* workspace, size_t bytes),
                  (handle, workspace, bytes))
ATTNBENCH_FORWARD(cublasSetPointerMode_v2, (cublasHandle_t handle, cublasPointerMode_t mode),
                  (handle, mode))
ATTNBENCH_FORWARD(cublasGemmEx,
                  (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                   int n, int k, const void* alpha, const void* A, cudaDataType Atype, int lda,
                   const void* B, cudaDataType Btype, int ldb, const void* beta, void* C,
                   cudaDataType Ctype, int ldc, cublasComputeType_t computeType,
                   cublasGemmAlgo_t algo),
                  (handle, transa, transb, m, n, k, alpha, A, Atype, lda, B, Btype, ldb, beta, C,
                   Ctype, ldc, computeType, algo))
ATTNBENCH_FORWARD(cublasGemmBatchedEx,
                  (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                   int n, int k, const void* alpha, const void* const Aarray[], cudaDataType Atype,
                   int lda, const void* const Barray[], cudaDataType Btype, int ldb,
                   const void* beta, void* const Carray[], cudaDataType Ctype, int ldc,
                   int batchCount, cublasComputeType_t computeType, cublasGemmAlgo_t algo),
                  (handle, transa, transb, m, n, k, alpha, Aarray, Atype, lda, Barray, Btype, ldb,
                   beta, Carray, Ctype, ldc, batchCount, computeType, algo))
ATTNBENCH_FORWARD(cublasGemmStridedBatchedEx,
                  (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m,
                   int n, int k, const void* alpha, const void* A, cudaDataType Atype, int lda,
                   long long int strideA, const void* B, cudaDataType Btype, int ldb,
                   long long int strideB, const void* beta, void* C, cudaDataType Ctype, int ldc,
                   long long int strideC, int batchCount, cublasComputeType_t computeType,
                   cublasGemmAlgo_t algo),
                  (handle, transa, transb, m, n, k, alpha, A, Atype, lda, strideA, B, Btype, ldb,
                   strideB, beta, C, Ctype, ldc, strideC, batchCount, computeType, algo))

// The status strings: plain functions returning text, not statuses.
extern "C" const char* CUBLASWINAPI cublasGetStatusName(cublasStatus_t status) {
  using Fn = const char*(CUBLASWINAPI*)(cublasStatus_t);
  static const Fn fn = Resolve<Fn>("cublasGetStatusName");
  return fn == nullptr ? "CUBLAS_STATUS_NOT_INITIALIZED (libcublas not loaded)" : fn(status);
}
extern "C" const char* CUBLASWINAPI cublasGetStatusString(cublasStatus_t status) {
  using Fn = const char*(CUBLASWINAPI*)(cublasStatus_t);
  static const Fn fn = Resolve<Fn>("cublasGetStatusString");
  return fn == nullptr ? "libcublas.so could not be loaded" : fn(status);
}
