#include "kernels/spec/expressions.h"

#include <algorithm>
#include <cctype>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "kernels/expr/ast.h"
#include "kernels/spec/dtype.h"
#include "kernels/spec/finite_inputs.h"

namespace attnbench {
namespace {

absl::Status Invalid(const std::string& what) { return absl::InvalidArgumentError(what); }

bool Reserved(const std::string& name) {
  for (int v = 0; v < expr::kNumVars; ++v) {
    if (name == expr::VarName(static_cast<expr::Var>(v))) return true;
  }
  for (int f = 0; f <= static_cast<int>(expr::Func::kCeil); ++f) {
    if (name == expr::FuncName(static_cast<expr::Func>(f))) return true;
  }
  return false;
}

bool Identifier(const std::string& name) {
  if (name.empty() || name.size() > 64) return false;
  if (!std::isalpha(static_cast<unsigned char>(name[0])) && name[0] != '_') return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_';
  });
}

absl::StatusOr<std::vector<expr::AuxTensor>> DecodeAux(const Problem& p) {
  std::vector<expr::AuxTensor> out;
  int64_t total = 0;
  for (size_t k = 0; k < p.aux.size(); ++k) {
    const NamedTensor& in = p.aux[k];
    const std::string path = absl::StrCat("spec.aux[", k, "]");
    if (!Identifier(in.name)) {
      return Invalid(absl::StrCat(path, ".name \"", in.name.substr(0, 64),
                                  "\" must be an identifier of at most 64 characters "
                                  "([A-Za-z_][A-Za-z0-9_]*)"));
    }
    if (Reserved(in.name)) {
      return Invalid(absl::StrCat(path, ".name \"", in.name,
                                  "\" is a variable or function name of the expression language"));
    }
    for (size_t j = 0; j < k; ++j) {
      if (p.aux[j].name == in.name) {
        return Invalid(absl::StrCat(path, ".name \"", in.name, "\" repeats spec.aux[", j, "].name"));
      }
    }
    const HostTensor& t = in.tensor;
    if (t.dtype == DType::kUnspecified) return Invalid(path + ".tensor.dtype must be set");
    if (t.shape.empty() || t.shape.size() > 2) {
      return Invalid(absl::StrCat(path, ".tensor.shape has ", t.shape.size(),
                                  " dimensions; an aux tensor has 1 or 2"));
    }
    int64_t elements = 1;
    for (int64_t d : t.shape) {
      if (d < 1 || d > kMaxAuxElements) {
        return Invalid(absl::StrCat(path, ".tensor.shape dimensions must be in [1, ",
                                    kMaxAuxElements, "], not ", d));
      }
      elements *= d;
    }
    total += elements;
    if (elements > kMaxAuxElements || total > kMaxAuxElements) {
      return absl::ResourceExhaustedError(
          absl::StrCat("spec.aux: ", total, " elements in all, over the limit of ",
                       kMaxAuxElements));
    }
    if (static_cast<int64_t>(t.data.size()) != elements * DTypeBytes(t.dtype)) {
      return Invalid(absl::StrCat(path, ".tensor.data has ", t.data.size(), " bytes; ", elements,
                                  " elements of ", DTypeName(t.dtype), " need ",
                                  elements * DTypeBytes(t.dtype)));
    }
    if (absl::Status s = CheckFiniteClientTensor(path + ".tensor", t); !s.ok()) return s;
    expr::AuxTensor a;
    a.name = in.name;
    a.shape = t.shape;
    a.values.resize(elements);
    const auto* bytes = reinterpret_cast<const unsigned char*>(t.data.data());
    for (int64_t i = 0; i < elements; ++i) {
      a.values[i] = DecodeElement(bytes + i * DTypeBytes(t.dtype), t.dtype);
    }
    const auto [lo, hi] = std::minmax_element(a.values.begin(), a.values.end());
    a.min = *lo;
    a.max = *hi;
    out.push_back(std::move(a));
  }
  return out;
}

}  // namespace

absl::StatusOr<std::shared_ptr<const ProblemExpressions>> CompileExpressions(const Problem& p) {
  if (!p.score_mod.has_value() && !p.mask_mod.has_value()) {
    if (!p.aux.empty()) {
      return Invalid("spec.aux is only valid with spec.score_mod or spec.mask_mod, which index it");
    }
    return std::shared_ptr<const ProblemExpressions>();
  }
  absl::StatusOr<HeadConfig> heads = ResolveHeads(p.layout);
  if (!heads.ok()) return heads.status();
  auto out = std::make_shared<ProblemExpressions>();
  absl::StatusOr<std::vector<expr::AuxTensor>> aux = DecodeAux(p);
  if (!aux.ok()) return aux.status();
  out->aux = *std::move(aux);
  expr::Env env;
  env.batch = p.batch_size;
  env.output_heads = heads->num_output_heads;
  env.query_heads = heads->num_query_heads;
  env.kv_heads = heads->num_kv_heads;
  env.seq_q = p.seq_len_q;
  env.seq_kv = p.seq_len_kv;
  env.aux = &out->aux;
  const struct {
    const std::optional<std::string>* text;
    expr::Kind kind;
    std::optional<expr::Program>* target;
    const char* field;
  } mods[] = {{&p.score_mod, expr::Kind::kScoreMod, &out->score_mod, "spec.score_mod.expression"},
              {&p.mask_mod, expr::Kind::kMaskMod, &out->mask_mod, "spec.mask_mod.expression"}};
  for (const auto& m : mods) {
    if (!m.text->has_value()) continue;
    if ((*m.text)->empty()) return Invalid(absl::StrCat(m.field, " is empty"));
    absl::StatusOr<expr::Program> program = expr::Compile(**m.text, m.kind, env);
    if (!program.ok()) {
      return absl::Status(program.status().code(),
                          absl::StrCat(m.field, ": ", program.status().message()));
    }
    *m.target = *std::move(program);
  }
  return std::shared_ptr<const ProblemExpressions>(std::move(out));
}

}  // namespace attnbench
