// @file gemm_args.cc
// @brief The argument checks shared by the CPU and CUDA GEMMs, so both devices reject alike.
#include <algorithm>

#include "facecuda/error.h"
#include "facecuda/gemm.h"

namespace fc {

void check_gemm_args(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda, const float* B,
                     int64_t ldb, const float* C, int64_t ldc) {
  FC_CHECK(M >= 0, InvalidArgument, "Expected M >= 0 but received ", M);
  FC_CHECK(N >= 0, InvalidArgument, "Expected N >= 0 but received ", N);
  FC_CHECK(K >= 0, InvalidArgument, "Expected K >= 0 but received ", K);
  const char* tas = ta ? "true" : "false";
  const char* tbs = tb ? "true" : "false";
  const int64_t need_lda = std::max<int64_t>(1, ta ? M : K);
  FC_CHECK(lda >= need_lda, InvalidArgument, "Expected lda >= ", need_lda, " (", ta ? "M" : "K", ", trans_a=", tas,
           ") but received ", lda);
  const int64_t need_ldb = std::max<int64_t>(1, tb ? K : N);
  FC_CHECK(ldb >= need_ldb, InvalidArgument, "Expected ldb >= ", need_ldb, " (", tb ? "K" : "N", ", trans_b=", tbs,
           ") but received ", ldb);
  const int64_t need_ldc = std::max<int64_t>(1, N);
  FC_CHECK(ldc >= need_ldc, InvalidArgument, "Expected ldc >= ", need_ldc, " (N) but received ", ldc);
  FC_CHECK(A != nullptr || M == 0 || K == 0, InvalidArgument, "Expected a non-null A for M=", M, " K=", K,
           " but received a null pointer");
  FC_CHECK(B != nullptr || K == 0 || N == 0, InvalidArgument, "Expected a non-null B for K=", K, " N=", N,
           " but received a null pointer");
  FC_CHECK(C != nullptr || M == 0 || N == 0, InvalidArgument, "Expected a non-null C for M=", M, " N=", N,
           " but received a null pointer");
}

}  // namespace fc
