// Kernels' result types -> attnbench.v1 result messages.
#include "absl/strings/string_view.h"
#include "server/convert.h"

namespace attnbench::server {

void WorkCountsToProto(const WorkCounts& counts, pb::WorkCounts* out) {
  out->set_kept_pairs(counts.kept_pairs);
  out->set_flops(counts.flops);
  out->set_flops_flash_convention(counts.flops_flash_convention);
  out->set_projection_flops(counts.projection_flops);
  out->set_exponentials(counts.exponentials);
  out->set_min_bytes(counts.min_bytes);
}

void CorrectnessToProto(const CorrectnessReport& report, pb::Correctness* out) {
  out->set_checked(true);
  out->set_rows_checked(report.rows_checked);
  out->set_rows_total(report.rows_total);
  out->set_max_abs_error(report.max_abs_error);
  out->set_relative_error(report.relative_error);
  out->set_passed(report.passed);
  out->set_tolerance(report.tolerance);
  for (const TensorCheckReport& tensor : report.tensors) {
    TensorCheckToProto(tensor, out->add_tensors());
  }
  if (report.quantization.has_value()) {
    const QuantizationSplit& q = *report.quantization;
    pb::QuantizationErrors* errors = out->mutable_quantization();
    errors->set_kernel_relative_error(q.kernel_relative_error);
    errors->set_kernel_max_abs_error(q.kernel_max_abs_error);
    errors->set_kernel_tolerance(q.kernel_tolerance);
    errors->set_kernel_passed(q.kernel_passed);
    errors->set_quantization_relative_error(q.quantization_relative_error);
  }
}

void TensorCheckToProto(const TensorCheckReport& report, pb::TensorCheck* out) {
  out->set_name(report.name);
  out->set_rows_checked(report.rows_checked);
  out->set_rows_total(report.rows_total);
  out->set_max_abs_error(report.max_abs_error);
  out->set_relative_error(report.relative_error);
  out->set_tolerance(report.tolerance);
  out->set_non_finite_elements(report.non_finite_elements);
  out->set_passed(report.passed);
}

void OutputSummaryToProto(const OutputSummary& summary, pb::OutputSummary* out) {
  out->set_checksum(summary.checksum);
  out->set_mean(summary.mean);
  out->set_abs_max(summary.abs_max);
  out->set_num_elements(summary.num_elements);
  out->set_non_finite_elements(summary.non_finite_elements);
}

void DeviceToProto(const DeviceDescription& device, pb::DeviceInfo* out) {
  out->set_name(device.name);
  out->set_kind(device.kind);
  out->set_index(device.index);
  out->set_compute_units(device.compute_units);
  out->set_memory_bytes(device.memory_bytes);
  out->set_compute_capability(device.compute_capability);
  out->set_peak_tflops(device.peak_tflops);
  out->set_peak_gbps(device.peak_gbps);
}

void SupportToProto(const BackendSupport& support, pb::BackendCapabilities* out) {
  for (DType d : support.dtypes) out->add_dtypes(DTypeToProto(d));
  for (Phase p : support.phases) out->add_phases(PhaseToProto(p));
  for (Scope s : support.scopes) out->add_scopes(ScopeToProto(s));
  for (LayoutKind l : support.layouts) out->add_layouts(LayoutName(l));
  for (MaskKind m : support.masks) out->add_masks(MaskName(m));
  for (Modifier m : support.modifiers) out->add_modifiers(ModifierName(m));
  for (CacheFormat f : support.cache_formats) out->add_cache_formats(CacheFormatToProto(f));
  out->set_paged_kv_cache(support.paged_kv_cache);
  out->set_layer_backward(support.layer_backward);
  for (Phase p : support.deterministic_phases) out->add_deterministic_phases(PhaseToProto(p));
  for (int d : support.head_dims) out->add_head_dims(d);
  for (const std::string& l : support.limitations) out->add_limitations(l);
  out->set_cuda_graphs(support.cuda_graphs);
  for (const KernelSupport& k : support.kernels) {
    pb::KernelSupport* kernel = out->add_kernels();
    kernel->set_name(k.name);
    for (const std::string& cc : k.compute_capabilities) kernel->add_compute_capabilities(cc);
    for (DType d : k.dtypes) kernel->add_dtypes(DTypeToProto(d));
    for (Phase p : k.phases) kernel->add_phases(PhaseToProto(p));
    for (MaskKind m : k.masks) kernel->add_masks(MaskName(m));
    for (Modifier m : k.modifiers) kernel->add_modifiers(ModifierName(m));
    for (const auto& [qk, v] : k.head_dims) {
      pb::HeadDimPair* dims = kernel->add_head_dims();
      dims->set_qk(qk);
      dims->set_v(v);
    }
    for (const std::string& r : k.requirements) kernel->add_requirements(r);
  }
}

void HeadMapToProto(const std::vector<HeadPair>& map,
                    google::protobuf::RepeatedPtrField<pb::HeadLayout::HeadPair>* out) {
  for (const HeadPair& p : map) {
    pb::HeadLayout::HeadPair* pair = out->Add();
    pair->set_query_head(p.query_head);
    pair->set_kv_head(p.kv_head);
  }
}

void TimingToProto(const TimingStats& stats, const std::vector<double>& samples_ms,
                   bool include_samples, pb::TimingStats* out) {
  out->set_count(stats.count);
  out->set_min_ms(stats.min);
  out->set_p10_ms(stats.p10);
  out->set_median_ms(stats.median);
  out->set_mean_ms(stats.mean);
  out->set_p90_ms(stats.p90);
  out->set_max_ms(stats.max);
  out->set_stdev_ms(stats.stdev);
  if (include_samples) out->mutable_samples_ms()->Add(samples_ms.begin(), samples_ms.end());
}

void TensorToProto(const FloatTensor& tensor, pb::Tensor* out) {
  out->set_dtype(DTypeToProto(tensor.dtype));
  for (int64_t d : tensor.shape) out->add_shape(d);
  out->set_data(EncodeTensor(tensor));
}

pb::Tensor* MutableGradientField(pb::RunResult* result, absl::string_view name) {
  if (name == "dq") return result->mutable_dq();
  if (name == "dk") return result->mutable_dk();
  if (name == "dv") return result->mutable_dv();
  if (name == "dx") return result->mutable_dx();
  if (name == "dw_q") return result->mutable_dw_q();
  if (name == "dw_k") return result->mutable_dw_k();
  if (name == "dw_v") return result->mutable_dw_v();
  if (name == "dw_o") return result->mutable_dw_o();
  return nullptr;
}

}  // namespace attnbench::server
