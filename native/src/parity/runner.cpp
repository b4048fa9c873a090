#include <dirent.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/generation.h"
#include "peft4j/models/model.h"
#include "peft4j/parity.h"
#include "peft4j/safetensors.h"

namespace peft4j::parity {

namespace {

using Status = CheckResult::Status;

std::vector<std::string> list_cases(const std::string& dir) {
  std::string cases_dir = io::join_path(dir, "cases");
  if (!io::is_directory(cases_dir)) fail(ErrorKind::NotFound, "parity directory '" + dir + "' has no cases/ folder");
  std::vector<std::string> names;
  DIR* d = ::opendir(cases_dir.c_str());
  if (!d) fail(ErrorKind::Io, "cannot list '" + cases_dir + "'");
  while (dirent* entry = ::readdir(d)) {
    std::string name = entry->d_name;
    if (name != "." && name != ".." && io::is_regular_file(io::join_path(io::join_path(cases_dir, name), "case.json")))
      names.push_back(name);
  }
  ::closedir(d);
  std::sort(names.begin(), names.end());
  return names;
}

std::string index_text(const at::Tensor& shape_source, int64_t flat) {
  std::string out = "[";
  auto sizes = shape_source.sizes();
  std::vector<int64_t> index(sizes.size());
  for (int64_t d = static_cast<int64_t>(sizes.size()) - 1; d >= 0; --d) {
    index[d] = sizes[d] ? flat % sizes[d] : 0;
    flat = sizes[d] ? flat / sizes[d] : 0;
  }
  for (size_t i = 0; i < index.size(); ++i) out += (i ? ", " : "") + std::to_string(index[i]);
  return out + "]";
}

// What one case holds, loaded once for all its checks.
struct Case {
  std::string name;
  std::string folder;
  nlohmann::json spec;
  io::TensorMap io;
  double rtol = 1e-4;
  double atol = 1e-5;

  std::string method() const { return spec.value("method", std::string("NONE")); }
  std::string task() const { return spec.value("task", std::string()); }
  bool has(const std::string& key) const { return io.count(key) > 0; }
  const at::Tensor& at(const std::string& key) const {
    auto it = io.find(key);
    if (it == io.end()) fail(ErrorKind::Format, "case " + name + ": io.safetensors has no '" + key + "'");
    return it->second;
  }
  std::shared_ptr<models::Model> load_base() const {
    std::string base = spec.value("base_model", std::string());
    if (base.empty()) fail(ErrorKind::Format, "case " + name + ": case.json has no base_model");
    return models::load_model(io::join_path(folder, base));
  }
  models::ModelInputs inputs(bool with_labels) const {
    models::ModelInputs in;
    in.input_ids = at("input_ids");
    if (has("attention_mask")) in.attention_mask = at("attention_mask");
    if (has("token_type_ids")) in.token_type_ids = at("token_type_ids");
    // seq2seq models derive decoder inputs from labels (shifted right), as transformers does.
    if (with_labels || task() == "seq2seq-lm") in.labels = at("labels");
    return in;
  }
};

Case load_case(const std::string& dir, const std::string& name) {
  Case c;
  c.name = name;
  c.folder = io::join_path(io::join_path(dir, "cases"), name);
  c.spec = io::read_json_file(io::join_path(c.folder, "case.json"));
  if (!c.spec.is_object()) fail(ErrorKind::Format, "case " + name + ": case.json is not an object");
  if (c.spec.contains("tolerance")) {
    const auto& tol = c.spec["tolerance"];
    if (!tol.is_object() || !tol.value("rtol", nlohmann::json()).is_number() ||
        !tol.value("atol", nlohmann::json()).is_number())
      fail(ErrorKind::Format, "case " + name + ": tolerance must be {rtol: number, atol: number}");
    c.rtol = tol["rtol"].get<double>();
    c.atol = tol["atol"].get<double>();
  }
  c.io = io::read_safetensors(io::join_path(c.folder, c.spec.value("io", std::string("io.safetensors"))));
  return c;
}

at::Tensor forward_logits(models::Model& model, const Case& c) {
  at::NoGradGuard no_grad;
  model.eval();
  return model.forward(c.inputs(false)).logits;
}

CheckResult compared(const Case& c, const std::string& check, const at::Tensor& got, const std::string& key) {
  Comparison cmp = compare(got, c.at(key), c.rtol, c.atol);
  if (cmp.ok) return {Status::Pass, c.name, check, ""};
  return {Status::Fail, c.name, check, key + " " + cmp.text};
}

CheckResult greedy_check(models::Model& model, const Case& c) {
  const at::Tensor& want = c.at("greedy_ids");
  at::Tensor prompt = c.at("input_ids").slice(0, 0, 1);
  at::Tensor mask = c.has("attention_mask") ? c.at("attention_mask").slice(0, 0, 1) : at::Tensor();
  models::GenerationConfig config;
  config.max_new_tokens = want.size(1) - prompt.size(1);
  config.do_sample = false;
  model.eval();
  at::Tensor got = models::generate(model, prompt, mask, config);
  if (got.sizes() == want.sizes() && at::equal(got, want)) return {Status::Pass, c.name, "greedy", ""};
  std::ostringstream text;
  text << "greedy_ids differ: got " << got << " want " << want;
  std::string flat = text.str();
  std::replace(flat.begin(), flat.end(), '\n', ' ');
  return {Status::Fail, c.name, "greedy", flat};
}

const std::vector<std::string> kAdapterChecks = {"logits", "loss", "grad", "step3", "merged", "greedy", "mixed",
                                                 "weighted"};

}  // namespace

std::string CheckResult::line() const {
  switch (status) {
    case Status::Pass: return "PASS " + case_name + " " + check;
    case Status::Fail: return "FAIL " + case_name + " " + check + ": " + detail;
    case Status::Skip: return "SKIP " + case_name + " " + check + ": " + detail;
  }
  return "";
}

Comparison compare(const at::Tensor& got_in, const at::Tensor& want_in, double rtol, double atol) {
  Comparison out;
  if (!got_in.defined()) {
    out.text = "no output was produced";
    return out;
  }
  if (got_in.sizes() != want_in.sizes()) {
    out.text = "shape " + c10::str(got_in.sizes()) + " != expected " + c10::str(want_in.sizes());
    return out;
  }
  at::Tensor got = got_in.detach().to(at::kCPU, at::kDouble);
  at::Tensor want = want_in.detach().to(at::kCPU, at::kDouble);
  at::Tensor diff = (got - want).abs();
  at::Tensor excess = diff - (atol + rtol * want.abs());
  bool finite = got.isfinite().all().item<bool>() || !want.isfinite().all().item<bool>();
  out.ok = finite && (got.numel() == 0 || excess.max().item<double>() <= 0);
  if (out.ok) return out;
  int64_t worst = got.numel() ? excess.reshape({-1}).argmax().item<int64_t>() : 0;
  double max_abs = got.numel() ? diff.max().item<double>() : 0;
  double max_rel = got.numel() ? (diff / want.abs().clamp_min(1e-12)).max().item<double>() : 0;
  std::ostringstream text;
  text.precision(3);
  text << std::scientific << "max abs err " << max_abs << ", max rel err " << max_rel << " (rtol " << rtol << ", atol "
       << atol << "); worst at " << index_text(got, worst) << ": got " << got.reshape({-1})[worst].item<double>()
       << " want " << want.reshape({-1})[worst].item<double>();
  if (!finite) text << "; output has NaN/inf";
  out.text = text.str();
  return out;
}

Runner::Runner(const std::string& dir, const std::vector<std::string>& only) : dir_(dir) {
  std::vector<std::string> all = list_cases(dir);
  if (only.empty()) {
    cases_ = all;
    return;
  }
  for (const auto& name : only) {
    if (!std::count(all.begin(), all.end(), name))
      fail(ErrorKind::NotFound, "no case '" + name + "' under '" + io::join_path(dir, "cases") + "'");
    cases_.push_back(name);
  }
}

std::vector<CheckResult> Runner::run_case(const std::string& name) {
  std::vector<CheckResult> results;
  auto record = [&](CheckResult r) {
    (r.status == Status::Pass ? passed_ : r.status == Status::Fail ? failed_ : skipped_) += 1;
    results.push_back(std::move(r));
  };
  // Each check runs on its own: one that throws reports FAIL with the message, the others still run.
  auto attempt = [&](const std::string& check, const std::function<CheckResult()>& body) {
    try {
      record(body());
    } catch (const std::exception& e) {
      record({Status::Fail, name, check, e.what()});
    }
  };
  Case c;
  std::shared_ptr<models::Model> base;
  try {
    c = load_case(dir_, name);
    base = c.load_base();
  } catch (const std::exception& e) {
    record({Status::Fail, name, "load", e.what()});
    return results;
  }
  const bool plain = c.method() == "NONE";
  if (c.has("base_logits")) attempt("base", [&] { return compared(c, "base", forward_logits(*base, c), "base_logits"); });
  if (plain) {
    // Base-model rows: the reference outputs are the plain model's.
    if (c.has("logits")) attempt("logits", [&] { return compared(c, "logits", forward_logits(*base, c), "logits"); });
    if (c.has("loss"))
      attempt("loss", [&] {
        at::NoGradGuard no_grad;
        base->eval();
        return compared(c, "loss", base->forward(c.inputs(true)).loss.reshape({1}), "loss");
      });
    if (c.has("greedy_ids")) attempt("greedy", [&] { return greedy_check(*base, c); });
    return results;
  }
  for (const auto& check : kAdapterChecks) {
    bool applies = (check == "logits" && c.has("logits")) || (check == "loss" && c.has("loss")) ||
                   (check == "grad" && c.has("step_losses")) || (check == "step3" && c.has("step3_logits")) ||
                   (check == "merged" && c.has("merged_logits")) || (check == "greedy" && c.has("greedy_ids")) ||
                   (check == "mixed" && c.has("mixed_logits")) || (check == "weighted" && c.has("cat_0.7_0.3_logits"));
    if (applies) record({Status::Skip, name, check, c.method() + " adapters are not implemented yet"});
  }
  return results;
}

std::string Runner::summary() const {
  std::string out = std::to_string(passed_) + " passed, " + std::to_string(failed_) + " failed";
  if (skipped_) out += ", " + std::to_string(skipped_) + " skipped";
  return out;
}

}  // namespace peft4j::parity
