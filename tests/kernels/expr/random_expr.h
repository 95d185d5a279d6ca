// Random well-typed score_mod / mask_mod expressions from the language's grammar, for the tests
// that check properties over many programs (interval soundness, tile bounds, the CUDA emitter
// against the interpreter, fuzzing). Seeded, so a failure names the seed and repeats. The
// generator leans on the corners where analyses break: 0, -1, int64 extremes, float32 overflow,
// NaN-producing functions, and aux indexes clamped with min/max so the checker can prove them.
#ifndef ATTNBENCH_TESTS_KERNELS_EXPR_RANDOM_EXPR_H_
#define ATTNBENCH_TESTS_KERNELS_EXPR_RANDOM_EXPR_H_

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "kernels/expr/program.h"

namespace attnbench::expr::testing {

// An aux tensor with the given shape and values (min and max filled in).
inline AuxTensor MakeAux(std::string name, std::vector<int64_t> shape, std::vector<float> values) {
  AuxTensor t;
  t.name = std::move(name);
  t.shape = std::move(shape);
  t.values = std::move(values);
  t.min = t.max = t.values.at(0);
  for (float v : t.values) {
    t.min = std::min(t.min, v);
    t.max = std::max(t.max, v);
  }
  return t;
}

class RandomExpr {
 public:
  // `aux` names the tensors an expression may index (1-D or 2-D), with their shapes.
  RandomExpr(uint64_t seed, Kind kind, const std::vector<AuxTensor>* aux)
      : rng_(seed), kind_(kind), aux_(aux) {}

  std::string Next(int max_depth) {
    return kind_ == Kind::kMaskMod ? Bool(max_depth) : Number(max_depth);
  }

 private:
  int Pick(int n) { return static_cast<int>(rng_() % static_cast<uint64_t>(n)); }

  std::string Int(int depth) {
    if (depth <= 0 || Pick(4) == 0) {
      static const char* kLeaves[] = {"0",
                                      "1",
                                      "2",
                                      "3",
                                      "7",
                                      "16",
                                      "2147483647",
                                      "9223372036854775807",
                                      "(-9223372036854775807 - 1)",
                                      "b",
                                      "h",
                                      "q",
                                      "kv",
                                      "hq",
                                      "hkv",
                                      "S_q",
                                      "S_kv",
                                      "kv",
                                      "q",
                                      "(kv - 2)"};
      return kLeaves[Pick(sizeof(kLeaves) / sizeof(kLeaves[0]))];
    }
    const int d = depth - 1;
    switch (Pick(11)) {
      case 0:
        return absl::StrCat("(", Int(d), " + ", Int(d), ")");
      case 1:
        return absl::StrCat("(", Int(d), " - ", Int(d), ")");
      case 2:
        return absl::StrCat("(", Int(d), " * ", Int(d), ")");
      case 3:
        return absl::StrCat("(", Int(d), " / ", Int(d), ")");
      case 4:
        return absl::StrCat("(", Int(d), " % ", Int(d), ")");
      case 5:
        return absl::StrCat("-", Int(d));
      case 6:
        return absl::StrCat("(", Bool(d), " ? ", Int(d), " : ", Int(d), ")");
      case 7:
        return absl::StrCat(Pick(2) ? "min(" : "max(", Int(d), ", ", Int(d), ")");
      case 8:
        return absl::StrCat("abs(", Int(d), ")");
      case 9:
        return absl::StrCat(Pick(2) ? "floor(" : "ceil(", Float(d), ")");
      default:
        return absl::StrCat("(", Int(d), " - ", Int(d), ")");
    }
  }

  // An index the checker can prove lies in [0, n).
  std::string Index(int depth, int64_t n) {
    return absl::StrCat("min(max(", Int(depth), ", 0), ", n - 1, ")");
  }

  std::string Float(int depth) {
    if (depth <= 0 || Pick(4) == 0) {
      static const char* kLeaves[] = {"0.0",  "0.5",   "-1.5",  "1e-3", ".25", "2.",
                                      "3e38", "1e-40", "100.0", "1e20", "s"};
      const int n = sizeof(kLeaves) / sizeof(kLeaves[0]);
      // `s` only in a score_mod; an int leaf promotes as in C.
      const int k = Pick(n + 2);
      if (k >= n - 1) return kind_ == Kind::kScoreMod && k == n - 1 ? "s" : Int(0);
      return kLeaves[k];
    }
    const int d = depth - 1;
    switch (Pick(13)) {
      case 0:
        return absl::StrCat("(", Float(d), " + ", Number(d), ")");
      case 1:
        return absl::StrCat("(", Number(d), " - ", Float(d), ")");
      case 2:
        return absl::StrCat("(", Float(d), " * ", Number(d), ")");
      case 3:
        return absl::StrCat("(", Number(d), " / ", Float(d), ")");
      case 4:
        return absl::StrCat("-", Float(d));
      case 5:
        return absl::StrCat("(", Bool(d), " ? ", Float(d), " : ", Number(d), ")");
      case 6:
        return absl::StrCat(Pick(2) ? "min(" : "max(", Float(d), ", ", Number(d), ")");
      case 7: {
        static const char* kFuncs[] = {"abs",  "exp",  "exp2", "log",
                                       "log2", "sqrt", "tanh", "sigmoid"};
        return absl::StrCat(kFuncs[Pick(8)], "(", Number(d), ")");
      }
      case 8:
      case 9:
        if (aux_ != nullptr && !aux_->empty()) {
          const AuxTensor& t = (*aux_)[Pick(static_cast<int>(aux_->size()))];
          std::string out = absl::StrCat(t.name, "[", Index(d, t.shape[0]));
          if (t.shape.size() > 1) absl::StrAppend(&out, ", ", Index(d, t.shape[1]));
          return out + "]";
        }
        return absl::StrCat("(", Float(d), " * ", Float(d), ")");
      default:
        return absl::StrCat("(", Float(d), " + ", Float(d), ")");
    }
  }

  std::string Number(int depth) { return Pick(2) ? Int(depth) : Float(depth); }

  std::string Bool(int depth) {
    if (depth <= 0) return absl::StrCat("(", Int(0), " < ", Int(0), ")");
    const int d = depth - 1;
    static const char* kCompare[] = {"<", "<=", ">", ">=", "==", "!="};
    switch (Pick(7)) {
      case 0:
      case 1:
        return absl::StrCat("(", Int(d), " ", kCompare[Pick(6)], " ", Int(d), ")");
      case 2:
        return absl::StrCat("(", Number(d), " ", kCompare[Pick(6)], " ", Float(d), ")");
      case 3:
        return absl::StrCat("(", Bool(d), Pick(2) ? " && " : " || ", Bool(d), ")");
      case 4:
        return absl::StrCat("!", Bool(d));
      case 5:
        return absl::StrCat("(", Bool(d), " ? ", Bool(d), " : ", Bool(d), ")");
      default:
        return absl::StrCat("(", Bool(d), Pick(2) ? " == " : " != ", Bool(d), ")");
    }
  }

  std::mt19937_64 rng_;
  Kind kind_;
  const std::vector<AuxTensor>* aux_;
};

}  // namespace attnbench::expr::testing

#endif  // ATTNBENCH_TESTS_KERNELS_EXPR_RANDOM_EXPR_H_
