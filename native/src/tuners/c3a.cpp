// C3A. Random state: none is shared or derived — the kernels are saved with the adapter and loaded from it; their
// fresh init (init_weights "xavier_uniform", "kaiming_uniform" or "gaussian") uses the global generator, as PEFT's
// nn.init calls do.
//
// PEFT computes the convolution with its own autograd Function whose backward is not the exact gradient of its
// forward for the input (the kernel's gradient is exact); training through a C3A layer therefore follows that
// backward, which is reproduced here formula for formula.
#include "peft4j/tuners/c3a.h"

#include <torch/csrc/autograd/custom_function.h>

#include <cmath>

#include "peft4j/error.h"
#include "peft4j/tuners/config.h"

namespace peft4j::tuners {

namespace {

// Every field of PEFT 0.21's C3AConfig with its default.
const nlohmann::json kDefaults = {
    {"peft_type", "C3A"}, {"task_type", nullptr}, {"base_model_name_or_path", nullptr}, {"revision", nullptr},
    {"inference_mode", false}, {"auto_mapping", nullptr}, {"block_size", 256}, {"target_modules", nullptr},
    {"bias", "none"}, {"modules_to_save", nullptr}, {"layers_to_transform", nullptr}, {"layers_pattern", nullptr},
    {"block_size_pattern", nlohmann::json::object()}, {"init_weights", "xavier_uniform"}};

std::vector<int64_t> split_last(const at::Tensor& t, int64_t blocks, int64_t size) {
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end() - 1);
  shape.push_back(blocks);
  shape.push_back(size);
  return shape;
}

std::vector<int64_t> merge_last_two(const at::Tensor& t) {
  std::vector<int64_t> shape(t.sizes().begin(), t.sizes().end() - 2);
  shape.push_back(-1);
  return shape;
}

// PEFT's BlockCircularConvolution: x [..., in] with kernel w [m, n, b] (in = n·b) gives [..., m·b].
struct BlockCircularConvolution : public torch::autograd::Function<BlockCircularConvolution> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& input, const at::Tensor& w) {
    const int64_t n = w.size(1), b = w.size(2);
    at::Tensor x = input.reshape(split_last(input, n, b));
    ctx->save_for_backward({x, w});
    at::Tensor y = at::einsum("...nb,mnb->...mb", {at::fft_ifft(x), at::fft_fft(w)});
    y = at::real(at::fft_fft(y));
    return y.reshape(merge_last_two(y));
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto saved = ctx->get_saved_variables();
    const at::Tensor& x = saved[0];
    const at::Tensor& w = saved[1];
    const int64_t m = w.size(0), b = w.size(2);
    at::Tensor grad = grad_outputs[0];
    grad = grad.reshape(split_last(grad, m, b));
    at::Tensor grad_fft = at::fft_fft(grad);
    at::Tensor x_grad = at::real(at::fft_fft(at::einsum("...mb,mnb->...nb", {grad_fft, at::fft_ifft(w)})));
    x_grad = x_grad.reshape(merge_last_two(x_grad));
    at::Tensor w_grad = at::real(at::fft_fft(at::einsum("...mb,...nb->mnb", {grad_fft, at::fft_ifft(x)})));
    return {x_grad, w_grad};
  }
};

// PEFT's get_circulant_fast: the dense [m·b, n·b] matrix of the block-circulant kernel.
at::Tensor circulant(const at::Tensor& w) {
  const int64_t n = w.size(1), b = w.size(2);
  at::Tensor eye = at::eye(n * b, w.options()).reshape({n * b, n, b});
  at::Tensor x = at::einsum("...nb,mnb->...mb", {at::fft_ifft(eye), at::fft_fft(w)});
  return at::real(at::fft_fft(x)).flatten(1).t();
}

class C3ATuner : public WrappingTuner<C3ALayer> {
 public:
  // init_weights true: zero kernels, so ΔW = 0.
  C3ATuner() : WrappingTuner({"C3A", kDefaults, kLinear, {{"init_weights", true}}}) {}

 protected:
  void validate(nlohmann::json& config) const override {
    check_linear_method_config(config, /*has_bias=*/true);
    config_positive_int(config, "block_size");
    const auto& init = config["init_weights"];
    const bool known = init.is_boolean() || init.is_null() ||
                       (init.is_string() && (init == "gaussian" || init == "kaiming_uniform" || init == "xavier_uniform"));
    if (!known)
      fail(ErrorKind::InvalidArgument, "C3A config field 'init_weights' must be true, false, \"gaussian\", "
                                       "\"kaiming_uniform\" or \"xavier_uniform\", got " + init.dump());
    check_pattern(config, "block_size_pattern", /*positive_ints=*/true);
  }

  void add(C3ALayer& layer, const InjectContext& ctx) const override {
    layer.add(ctx.adapter, pattern_int(ctx.config, "block_size_pattern", ctx.key, "block_size"), ctx.config,
              ctx.initialise);
  }
};

[[maybe_unused]] const bool registered = register_tuner(std::make_shared<C3ATuner>());

}  // namespace

C3ALayer::C3ALayer(std::shared_ptr<torch::nn::Module> base, std::shared_ptr<AdapterState> state)
    : LinearDeltaLayer(std::move(base), std::move(state), "C3A", /*conv1d=*/false) {}

void C3ALayer::add(const std::string& adapter, int64_t block_size, const nlohmann::json& config, bool initialise) {
  const int64_t in = shape_.in_features, out = shape_.out_features;
  if (block_size <= 0 || in % block_size != 0 || out % block_size != 0)
    fail(ErrorKind::InvalidArgument, "C3A config field 'block_size' = " + std::to_string(block_size) +
                                         " must divide the layer's input size " + std::to_string(in) +
                                         " and output size " + std::to_string(out));
  at::Tensor weight = linear_weight(*base_layer());
  // The kernel is made in f32 (FFTs need it), then takes the base weight's dtype as PEFT moves adapters there.
  at::Tensor kernel = at::zeros({out / block_size, in / block_size, block_size}, at::kFloat);
  const auto& init = config["init_weights"];
  if (initialise && !(init.is_boolean() && init.get<bool>())) {
    at::NoGradGuard no_grad;
    if (init.is_string() && init == "gaussian") {
      kernel.normal_();
    } else if (init.is_string() && init == "kaiming_uniform") {
      double a = std::sqrt(1.0 / static_cast<double>(in));
      kernel.uniform_(-a, a);
    } else {
      double a = std::sqrt(3.0) * std::sqrt(2.0 / static_cast<double>(in + out));
      kernel.uniform_(-a, a);
    }
  }
  c3a_kernel_->put_parameter(adapter, kernel.to(weight.device(), weight.scalar_type()));
  block_size_[adapter] = block_size;
}

// PEFT feeds each active adapter the previous adapter's output rather than the layer input (its forward reassigns
// x); with one active adapter that is the plain C3A update, and with several it is what PEFT computes.
at::Tensor C3ALayer::adapted_forward(const at::Tensor& x) {
  at::Tensor result = base_forward(x);
  at::Tensor h = x.to(at::kFloat);
  for (const auto& adapter : state_->active) {
    if (!has_adapter(adapter)) continue;
    at::Tensor kernel = c3a_kernel_->parameter(adapter).to(at::kFloat);
    h = BlockCircularConvolution::apply(h, kernel) / static_cast<double>(h.size(-1));
    result = result + h.to(result.scalar_type());
  }
  return result.to(x.scalar_type());
}

at::Tensor C3ALayer::apply(const at::Tensor& x, const at::Tensor& result, const std::string& adapter) {
  at::Tensor kernel = c3a_kernel_->parameter(adapter).to(at::kFloat);
  at::Tensor h = BlockCircularConvolution::apply(x.to(at::kFloat), kernel) / static_cast<double>(x.size(-1));
  return result + h.to(result.scalar_type());
}

at::Tensor C3ALayer::delta_weight(const std::string& adapter) const {
  at::Tensor weight = linear_weight(*base_layer());
  at::Tensor kernel = c3a_kernel_->parameter(adapter).to(at::kFloat);
  return circulant(kernel).to(weight.scalar_type()) / static_cast<double>(weight.size(-1));
}

void C3ALayer::forget_adapter(const std::string& adapter) { block_size_.erase(adapter); }

}  // namespace peft4j::tuners
