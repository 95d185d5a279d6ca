#include "kernels/spec/gradients.h"

namespace attnbench {

std::vector<GradientSlot> GradientSlotsOf(const ProblemShapes& s) {
  if (s.layer) {
    return {{"dx", &GradientTensors::dx, s.x},
            {"dw_q", &GradientTensors::dw_q, s.w_q},
            {"dw_k", &GradientTensors::dw_k, s.w_k},
            {"dw_v", &GradientTensors::dw_v, s.w_v},
            {"dw_o", &GradientTensors::dw_o, s.w_o}};
  }
  return {{"dq", &GradientTensors::dq, s.query},
          {"dk", &GradientTensors::dk, s.key},
          {"dv", &GradientTensors::dv, s.value}};
}

}  // namespace attnbench
