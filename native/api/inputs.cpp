#include "inputs.h"

#include <sstream>
#include <string>
#include <vector>

#include "access.h"
#include "peft4j/safetensors.h"

namespace peft4j::api {

namespace {

void require_real(const at::Tensor& t, const char* name) {
  if (at::isComplexType(t.scalar_type()))
    fail(ErrorKind::InvalidArgument, std::string(name) + " must be real, got " + c10::toString(t.scalar_type()));
}

// "<name> holds <value> at [i, j]" for the first element where `bad` is true, or empty when there is none.
std::string first_bad(const at::Tensor& t, const at::Tensor& bad, const char* name) {
  at::Tensor where = bad.flatten().nonzero();
  if (where.size(0) == 0) return "";
  int64_t flat = where[0][0].item<int64_t>();
  at::Tensor value = t.flatten()[flat];
  std::vector<int64_t> position(t.dim());
  for (int64_t d = t.dim() - 1; d >= 0; --d) {
    position[d] = flat % t.size(d);
    flat /= t.size(d);
  }
  std::ostringstream out;
  out << name << " holds ";
  if (at::isFloatingType(t.scalar_type()))
    out << value.item<double>();
  else
    out << value.item<int64_t>();
  out << " at " << at::IntArrayRef(position);
  return out.str();
}

}  // namespace

at::Tensor index_input(const TensorHandle& handle, const char* name, const at::Device& device) {
  at::Tensor t = Access::optional_tensor(handle);
  if (!t.defined()) return t;
  require_real(t, name);
  if (at::isFloatingType(t.scalar_type()))
    fail(ErrorKind::InvalidArgument, std::string(name) + " must be an integer tensor, got " +
                                         io::safetensors_dtype_name(t.scalar_type()));
  return t.to(device, at::kLong);
}

at::Tensor token_ids(const TensorHandle& handle, const char* name, int64_t vocab, const at::Device& device,
                     bool required) {
  if (!Access::optional_tensor(handle).defined()) {
    if (required) fail(ErrorKind::InvalidArgument, std::string(name) + " is required");
    return at::Tensor();
  }
  at::Tensor ids = index_input(handle, name, device);
  if (ids.dim() != 2)
    fail(ErrorKind::InvalidArgument,
         std::string(name) + " must have shape [batch, length], got " + c10::str(ids.sizes()));
  if (ids.numel() == 0)
    fail(ErrorKind::InvalidArgument, std::string(name) + " is empty (shape " + c10::str(ids.sizes()) +
                                         "): every row needs at least one token");
  std::string bad = first_bad(ids, ids.lt(0).logical_or(ids.ge(vocab)), name);
  if (!bad.empty())
    fail(ErrorKind::InvalidArgument,
         bad + ": token ids must lie in [0, " + std::to_string(vocab) + "), the model's vocab_size");
  return ids;
}

at::Tensor attention_mask(const TensorHandle& handle, const at::Device& device) {
  at::Tensor mask = Access::optional_tensor(handle);
  if (!mask.defined()) return mask;
  require_real(mask, "attention_mask");
  std::string bad = first_bad(mask, mask.ne(0).logical_and(mask.ne(1)), "attention_mask");
  if (!bad.empty()) fail(ErrorKind::InvalidArgument, bad + ": a mask holds only 0 (padding) and 1 (token)");
  return mask.to(device, at::kLong);
}

}  // namespace peft4j::api
