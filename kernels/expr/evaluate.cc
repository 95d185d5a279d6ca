#include "kernels/expr/evaluate.h"

#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>

namespace attnbench::expr {
namespace {

constexpr int64_t kMin = std::numeric_limits<int64_t>::min();
constexpr int64_t kMax = std::numeric_limits<int64_t>::max();

int64_t Wrap(uint64_t v) { return static_cast<int64_t>(v); }
int64_t Div(int64_t a, int64_t b) {
  if (b == 0) return 0;
  if (b == -1) return Wrap(0 - static_cast<uint64_t>(a));
  return a / b;
}
int64_t Mod(int64_t a, int64_t b) { return b == 0 || b == -1 ? 0 : a % b; }
template <typename F>
int64_t ToInt(F v) {
  if (std::isnan(v)) return 0;
  if (v >= static_cast<F>(9.2233720368547758e18)) return kMax;
  if (v <= static_cast<F>(-9.2233720368547758e18)) return kMin;
  return static_cast<int64_t>(v);
}

}  // namespace

template <typename F>
Evaluator<F>::Evaluator(const Program& program, const std::vector<AuxTensor>& aux)
    : program_(&program),
      aux_(&aux),
      ints_(program.ast.nodes.size() * kLanes),
      floats_(program.ast.nodes.size() * kLanes) {}

template <typename F>
void Evaluator<F>::Run(const Bindings& bind, int64_t kv0, int n, const F* s) {
  const std::vector<Node>& nodes = program_->ast.nodes;
  const std::vector<bool>& varies = program_->varies;
  for (size_t id = 0; id < nodes.size(); ++id) {
    const Node& node = nodes[id];
    const int lanes = varies[id] ? n : 1;
    int64_t* I = &ints_[id * kLanes];
    F* X = &floats_[id * kLanes];
    // Operand lane l: a row-invariant operand has only lane 0.
    const auto ia = [&](int child, int l) {
      return ints_[child * kLanes + (varies[child] ? l : 0)];
    };
    const auto fa = [&](int child, int l) {
      return floats_[child * kLanes + (varies[child] ? l : 0)];
    };
    const bool is_float = node.type == Type::kFloat;
    const Type operand = node.a >= 0 ? nodes[node.a].type : Type::kInt;
    for (int l = 0; l < lanes; ++l) {
      switch (node.op) {
        case Op::kIntLit:
          I[l] = node.int_value;
          break;
        case Op::kFloatLit:
          X[l] = static_cast<F>(node.float_value);
          break;
        case Op::kVar:
          switch (static_cast<Var>(node.index)) {
            case Var::kS:
              X[l] = s[l];
              break;
            case Var::kB:
              I[l] = bind.b;
              break;
            case Var::kH:
              I[l] = bind.h;
              break;
            case Var::kQ:
              I[l] = bind.q;
              break;
            case Var::kKv:
              I[l] = kv0 + l;
              break;
            case Var::kHq:
              I[l] = bind.hq;
              break;
            case Var::kHkv:
              I[l] = bind.hkv;
              break;
            case Var::kSeqQ:
              I[l] = program_->seq_q;
              break;
            case Var::kSeqKv:
              I[l] = program_->seq_kv;
              break;
          }
          break;
        case Op::kAux: {
          const AuxTensor& t = (*aux_)[node.index];
          int64_t offset = std::clamp<int64_t>(ia(node.a, l), 0, t.shape[0] - 1);
          if (node.b >= 0) {
            offset = offset * t.shape[1] + std::clamp<int64_t>(ia(node.b, l), 0, t.shape[1] - 1);
          }
          X[l] = static_cast<F>(t.values[offset]);
          break;
        }
        case Op::kToFloat:
          X[l] = static_cast<F>(ia(node.a, l));
          break;
        case Op::kNeg:
          if (is_float) {
            X[l] = -fa(node.a, l);
          } else {
            I[l] = Wrap(0 - static_cast<uint64_t>(ia(node.a, l)));
          }
          break;
        case Op::kNot:
          I[l] = !ia(node.a, l);
          break;
        case Op::kAdd:
          if (is_float) {
            X[l] = fa(node.a, l) + fa(node.b, l);
          } else {
            I[l] = Wrap(static_cast<uint64_t>(ia(node.a, l)) + static_cast<uint64_t>(ia(node.b, l)));
          }
          break;
        case Op::kSub:
          if (is_float) {
            X[l] = fa(node.a, l) - fa(node.b, l);
          } else {
            I[l] = Wrap(static_cast<uint64_t>(ia(node.a, l)) - static_cast<uint64_t>(ia(node.b, l)));
          }
          break;
        case Op::kMul:
          if (is_float) {
            X[l] = fa(node.a, l) * fa(node.b, l);
          } else {
            I[l] = Wrap(static_cast<uint64_t>(ia(node.a, l)) * static_cast<uint64_t>(ia(node.b, l)));
          }
          break;
        case Op::kDiv:
          if (is_float) {
            X[l] = fa(node.a, l) / fa(node.b, l);
          } else {
            I[l] = Div(ia(node.a, l), ia(node.b, l));
          }
          break;
        case Op::kMod:
          I[l] = Mod(ia(node.a, l), ia(node.b, l));
          break;
        case Op::kLt:
        case Op::kLe:
        case Op::kGt:
        case Op::kGe:
        case Op::kEq:
        case Op::kNe: {
          bool r;
          if (operand == Type::kFloat) {
            const F x = fa(node.a, l), y = fa(node.b, l);
            r = node.op == Op::kLt   ? x < y
                : node.op == Op::kLe ? x <= y
                : node.op == Op::kGt ? x > y
                : node.op == Op::kGe ? x >= y
                : node.op == Op::kEq ? x == y
                                     : x != y;
          } else {
            const int64_t x = ia(node.a, l), y = ia(node.b, l);
            r = node.op == Op::kLt   ? x < y
                : node.op == Op::kLe ? x <= y
                : node.op == Op::kGt ? x > y
                : node.op == Op::kGe ? x >= y
                : node.op == Op::kEq ? x == y
                                     : x != y;
          }
          I[l] = r;
          break;
        }
        case Op::kAnd:
          I[l] = ia(node.a, l) && ia(node.b, l);
          break;
        case Op::kOr:
          I[l] = ia(node.a, l) || ia(node.b, l);
          break;
        case Op::kSelect: {
          const bool c = ia(node.a, l) != 0;
          if (is_float) {
            X[l] = c ? fa(node.b, l) : fa(node.c, l);
          } else {
            I[l] = c ? ia(node.b, l) : ia(node.c, l);
          }
          break;
        }
        case Op::kCall:
          switch (static_cast<Func>(node.index)) {
            case Func::kMin:
              if (is_float) {
                X[l] = std::fmin(fa(node.a, l), fa(node.b, l));
              } else {
                I[l] = std::min(ia(node.a, l), ia(node.b, l));
              }
              break;
            case Func::kMax:
              if (is_float) {
                X[l] = std::fmax(fa(node.a, l), fa(node.b, l));
              } else {
                I[l] = std::max(ia(node.a, l), ia(node.b, l));
              }
              break;
            case Func::kAbs:
              if (is_float) {
                X[l] = std::fabs(fa(node.a, l));
              } else {
                const int64_t v = ia(node.a, l);
                I[l] = v < 0 ? Wrap(0 - static_cast<uint64_t>(v)) : v;
              }
              break;
            case Func::kExp:
              X[l] = std::exp(fa(node.a, l));
              break;
            case Func::kExp2:
              X[l] = std::exp2(fa(node.a, l));
              break;
            case Func::kLog:
              X[l] = std::log(fa(node.a, l));
              break;
            case Func::kLog2:
              X[l] = std::log2(fa(node.a, l));
              break;
            case Func::kSqrt:
              X[l] = std::sqrt(fa(node.a, l));
              break;
            case Func::kTanh:
              X[l] = std::tanh(fa(node.a, l));
              break;
            case Func::kSigmoid:
              X[l] = F(1) / (F(1) + std::exp(-fa(node.a, l)));
              break;
            case Func::kFloor:
              I[l] = operand == Type::kInt ? ia(node.a, l) : ToInt(std::floor(fa(node.a, l)));
              break;
            case Func::kCeil:
              I[l] = operand == Type::kInt ? ia(node.a, l) : ToInt(std::ceil(fa(node.a, l)));
              break;
          }
          break;
      }
    }
  }
}

template <typename F>
void Evaluator<F>::Scores(const Bindings& bind, int64_t kv0, int64_t n, F* s) {
  const int root = program_->ast.root;
  for (int64_t start = 0; start < n; start += kLanes) {
    const int lanes = static_cast<int>(std::min<int64_t>(kLanes, n - start));
    Run(bind, kv0 + start, lanes, s + start);
    const F* out = &floats_[root * kLanes];
    for (int l = 0; l < lanes; ++l) s[start + l] = out[program_->varies[root] ? l : 0];
  }
}

template <typename F>
void Evaluator<F>::Differentiate(int n) {
  const std::vector<Node>& nodes = program_->ast.nodes;
  const std::vector<bool>& varies = program_->varies;
  slopes_.assign(nodes.size() * kLanes, F(0));
  for (size_t id = 0; id < nodes.size(); ++id) {
    const Node& node = nodes[id];
    // Only float nodes that vary across the row can depend on s; the rest stay 0.
    if (node.type != Type::kFloat || !varies[id]) continue;
    F* D = &slopes_[id * kLanes];
    const F* X = &floats_[id * kLanes];
    const auto at = [&](const std::vector<F>& v, int child, int l) {
      return v[child * kLanes + (varies[child] ? l : 0)];
    };
    const auto x = [&](int child, int l) { return at(floats_, child, l); };
    const auto d = [&](int child, int l) {
      return nodes[child].type == Type::kFloat ? at(slopes_, child, l) : F(0);
    };
    for (int l = 0; l < n; ++l) {
      switch (node.op) {
        case Op::kVar:
          D[l] = static_cast<Var>(node.index) == Var::kS ? F(1) : F(0);
          break;
        case Op::kNeg:
          D[l] = -d(node.a, l);
          break;
        case Op::kAdd:
          D[l] = d(node.a, l) + d(node.b, l);
          break;
        case Op::kSub:
          D[l] = d(node.a, l) - d(node.b, l);
          break;
        case Op::kMul:
          D[l] = d(node.a, l) * x(node.b, l) + x(node.a, l) * d(node.b, l);
          break;
        case Op::kDiv:
          D[l] = (d(node.a, l) - X[l] * d(node.b, l)) / x(node.b, l);
          break;
        case Op::kSelect:
          D[l] = ints_[node.a * kLanes + (varies[node.a] ? l : 0)] != 0 ? d(node.b, l)
                                                                          : d(node.c, l);
          break;
        case Op::kCall: {
          const F a = x(node.a, l), da = d(node.a, l);
          switch (static_cast<Func>(node.index)) {
            case Func::kMin:
            case Func::kMax:
              // fmin / fmax return an operand: follow the one returned (a on a tie).
              D[l] = (X[l] == a || (std::isnan(X[l]) && std::isnan(a))) ? da : d(node.b, l);
              break;
            case Func::kAbs:
              D[l] = a > 0 ? da : a < 0 ? -da : F(0);
              break;
            case Func::kExp:
              D[l] = X[l] * da;
              break;
            case Func::kExp2:
              D[l] = X[l] * static_cast<F>(0.69314718055994530942) * da;
              break;
            case Func::kLog:
              D[l] = da / a;
              break;
            case Func::kLog2:
              D[l] = da / (a * static_cast<F>(0.69314718055994530942));
              break;
            case Func::kSqrt:
              D[l] = da / (F(2) * X[l]);
              break;
            case Func::kTanh:
              D[l] = (F(1) - X[l] * X[l]) * da;
              break;
            case Func::kSigmoid:
              D[l] = X[l] * (F(1) - X[l]) * da;
              break;
            case Func::kFloor:
            case Func::kCeil:
              D[l] = 0;  // int-typed: never reached
              break;
          }
          break;
        }
        default:  // literals, aux elements, promoted ints: constant in s
          D[l] = 0;
          break;
      }
    }
  }
}

template <typename F>
void Evaluator<F>::ScoresAndSlopes(const Bindings& bind, int64_t kv0, int64_t n, F* s, F* slope) {
  const int root = program_->ast.root;
  for (int64_t start = 0; start < n; start += kLanes) {
    const int lanes = static_cast<int>(std::min<int64_t>(kLanes, n - start));
    Run(bind, kv0 + start, lanes, s + start);
    Differentiate(lanes);
    const int lane_of_root = program_->varies[root] ? 1 : 0;
    const F* out = &floats_[root * kLanes];
    const F* dout = &slopes_[root * kLanes];
    for (int l = 0; l < lanes; ++l) {
      s[start + l] = out[lane_of_root * l];
      slope[start + l] = dout[lane_of_root * l];
    }
  }
}

template <typename F>
void Evaluator<F>::Mask(const Bindings& bind, int64_t kv0, int64_t n, uint8_t* keep) {
  const int root = program_->ast.root;
  for (int64_t start = 0; start < n; start += kLanes) {
    const int lanes = static_cast<int>(std::min<int64_t>(kLanes, n - start));
    Run(bind, kv0 + start, lanes, nullptr);
    const int64_t* out = &ints_[root * kLanes];
    for (int l = 0; l < lanes; ++l) keep[start + l] = out[program_->varies[root] ? l : 0] != 0;
  }
}

template <typename F>
F Evaluator<F>::Score(const Bindings& bind, int64_t kv, F s) {
  Scores(bind, kv, 1, &s);
  return s;
}

template <typename F>
bool Evaluator<F>::Keeps(const Bindings& bind, int64_t kv) {
  uint8_t keep;
  Mask(bind, kv, 1, &keep);
  return keep != 0;
}

template <typename F>
ThreadEvaluators<F>::ThreadEvaluators(const Program& program, const std::vector<AuxTensor>& aux)
    : program_(&program), aux_(&aux) {
  static std::atomic<uint64_t> next{1};
  serial_ = next.fetch_add(1);
}

template <typename F>
Evaluator<F>& ThreadEvaluators<F>::Get() const {
  struct Slot {
    uint64_t serial = 0;
    std::unique_ptr<Evaluator<F>> evaluator;
  };
  thread_local Slot slot;
  if (slot.serial != serial_) {
    slot.evaluator = std::make_unique<Evaluator<F>>(*program_, *aux_);
    slot.serial = serial_;
  }
  return *slot.evaluator;
}

template class Evaluator<float>;
template class Evaluator<double>;
template class ThreadEvaluators<float>;
template class ThreadEvaluators<double>;

}  // namespace attnbench::expr
