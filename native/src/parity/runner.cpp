#include <dirent.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>
#include <sstream>

#include "peft4j/error.h"
#include "peft4j/files.h"
#include "peft4j/models/generation.h"
#include "peft4j/models/model.h"
#include "peft4j/parity.h"
#include "peft4j/safetensors.h"
#include "peft4j/tuners/lora.h"
#include "peft4j/tuners/lora_init.h"
#include "peft4j/tuners/peft_model.h"
#include "peft4j/train/train_step.h"
#include "peft4j/tuners/tuner.h"

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
  // After training the reference is only as exact as its own sensitivity to rounding: generate.py measures it
  // (the spread of PEFT's step-3 results when the initial weights move by one ulp) and writes step3_tolerance.
  double step3_rtol = 1e-4;
  double step3_atol = 1e-5;

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
  c.step3_rtol = c.rtol;
  c.step3_atol = c.atol;
  if (c.spec.contains("step3_tolerance")) {
    const auto& tol = c.spec["step3_tolerance"];
    if (!tol.is_object() || !tol.value("rtol", nlohmann::json()).is_number() ||
        !tol.value("atol", nlohmann::json()).is_number())
      fail(ErrorKind::Format, "case " + name + ": step3_tolerance must be {rtol: number, atol: number}");
    c.step3_rtol = std::max(c.rtol, tol["rtol"].get<double>());
    c.step3_atol = std::max(c.atol, tol["atol"].get<double>());
  }
  c.io = io::read_safetensors(io::join_path(c.folder, c.spec.value("io", std::string("io.safetensors"))));
  return c;
}

// generate.py stores causal-LM logits as 0 where attention_mask is 0 (HF's values there depend on the attention
// kernel), so ours are zeroed there too before comparing. Virtual tokens in front (prompt learning) are kept: the
// mask covers the last positions.
at::Tensor masked(const Case& c, at::Tensor logits) {
  if (c.task() != "causal-lm" || !c.has("attention_mask") || logits.dim() != 3) return logits;
  at::Tensor keep = c.at("attention_mask").ne(0).to(logits.scalar_type());
  const int64_t extra = logits.size(1) - keep.size(1);
  if (extra > 0) keep = at::cat({at::ones({keep.size(0), extra}, keep.options()), keep}, 1);
  return logits * keep.unsqueeze(-1);
}

at::Tensor forward_logits(models::Model& model, const Case& c) {
  at::NoGradGuard no_grad;
  model.eval();
  return masked(c, model.forward(c.inputs(false)).logits);
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

std::string join_names(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size() && i < 5; ++i) out += (i ? ", " : "") + names[i];
  if (names.size() > 5) out += ", ... (" + std::to_string(names.size()) + ")";
  return out;
}

// PEFT saves a prompt-learning adapter as its encoder's output table; a reparameterised encoder (prefix projection,
// P-tuning's MLP/LSTM) is not in the file. When init/ names parameters the loaded adapter lacks, the adapter is
// rebuilt in training mode from the case's config and takes the initial weights from init/, as the reference trained.
void train_from_init(tuners::PeftModel& model, const Case& c) {
  std::map<std::string, at::Tensor> initial;
  for (const auto& [key, value] : c.io)
    if (key.rfind("init/", 0) == 0) initial[key.substr(5)] = value;
  std::set<std::string> trainable;
  for (auto& [name, p] : model.trainable_parameters()) trainable.insert(name);
  bool all_present = true;
  for (const auto& [name, value] : initial) all_present = all_present && trainable.count(name);
  if (initial.empty() || all_present) return;
  nlohmann::json config = model.adapter_config("default");
  config["inference_mode"] = false;
  model.delete_adapter("default");
  model.add_adapter("default", config);
  model.set_adapter("default");
  std::map<std::string, at::Tensor> params;
  for (auto& [name, p] : model.trainable_parameters()) params[name] = p;
  at::NoGradGuard no_grad;
  for (const auto& [name, value] : initial) {
    auto it = params.find(name);
    if (it == params.end()) fail(ErrorKind::Format, "case " + c.name + ": init/" + name + " names no parameter here");
    it->second.copy_(value);
  }
}

// Gradients of one backward pass against grad/<param>, and the set of trainable parameters against PEFT's.
CheckResult grad_check(tuners::PeftModel& model, const Case& c) {
  train_from_init(model, c);
  model.train();
  for (auto& [name, p] : model.trainable_parameters()) p.mutable_grad() = at::Tensor();
  at::Tensor loss = model.forward(c.inputs(true)).loss;
  loss.backward();
  std::map<std::string, at::Tensor> grads;
  for (auto& [name, p] : model.trainable_parameters()) grads[name] = p.grad();
  std::vector<std::string> missing, extra, differ;
  std::string first_difference;
  for (const auto& [key, want] : c.io) {
    if (key.rfind("grad/", 0) != 0) continue;
    std::string name = key.substr(5);
    auto it = grads.find(name);
    if (it == grads.end()) {
      missing.push_back(name);
      continue;
    }
    Comparison cmp = compare(it->second.defined() ? it->second : at::zeros_like(want), want, c.rtol, c.atol);
    if (!cmp.ok) {
      if (first_difference.empty()) first_difference = name + " " + cmp.text;
      differ.push_back(name);
    }
    grads.erase(it);
  }
  for (const auto& [name, g] : grads) extra.push_back(name);
  for (auto& [name, p] : model.trainable_parameters()) p.mutable_grad() = at::Tensor();
  int64_t expected = c.spec.value("trainable_params", int64_t(-1));
  std::string detail;
  if (!missing.empty()) detail += "not trainable here: " + join_names(missing) + "; ";
  if (!extra.empty()) detail += "trainable here but not in PEFT: " + join_names(extra) + "; ";
  if (!differ.empty()) detail += std::to_string(differ.size()) + " gradients differ, first " + first_difference + "; ";
  if (expected >= 0 && model.trainable_parameter_count() != expected)
    detail += "trainable parameters " + std::to_string(model.trainable_parameter_count()) + " != PEFT's " +
              std::to_string(expected) + "; ";
  if (detail.empty()) return {Status::Pass, c.name, "grad", ""};
  return {Status::Fail, c.name, "grad", detail.substr(0, detail.size() - 2)};
}

// Three AdamW steps on the same batch as torch.optim.AdamW takes them (case.json's optimizer).
CheckResult step3_check(tuners::PeftModel& model, const Case& c) {
  const auto& opt = c.spec.at("optimizer");
  if (opt.value("name", std::string()) != "adamw")
    return {Status::Skip, c.name, "step3", "optimizer " + opt.dump() + " is not AdamW"};
  std::vector<at::Tensor> params;
  for (auto& [name, p] : model.trainable_parameters()) params.push_back(p);
  train::OptimizerSettings settings;
  settings.learning_rate = opt.at("lr").get<double>();
  settings.beta1 = opt.at("betas")[0].get<double>();
  settings.beta2 = opt.at("betas")[1].get<double>();
  settings.epsilon = opt.at("eps").get<double>();
  settings.weight_decay = opt.at("weight_decay").get<double>();
  auto adamw = train::make_optimizer(params, settings);
  int64_t steps = opt.value("steps", int64_t(3));
  std::vector<float> losses;
  for (int64_t i = 0; i < steps; ++i) {
    // PEFT's reference loop calls no update_and_allocate, so the tuners' hooks stay off; no clipping either.
    train::StepOptions options;
    options.step = i + 1;
    options.tuner_hooks = false;
    losses.push_back(static_cast<float>(train::optimizer_step(model, *adamw, {c.inputs(true)}, options).loss));
  }
  std::string detail;
  Comparison cmp = compare(at::tensor(losses), c.at("step_losses"), c.step3_rtol, c.step3_atol);
  if (!cmp.ok) detail += "step_losses " + cmp.text + "; ";
  std::map<std::string, at::Tensor> named;
  for (auto& [name, p] : model.trainable_parameters()) named[name] = p;
  int differ = 0;
  for (const auto& [key, want] : c.io) {
    if (key.rfind("step3/", 0) != 0) continue;
    auto it = named.find(key.substr(6));
    if (it == named.end()) continue;  // reported by the grad check
    at::Tensor got = it->second.detach();
    std::string grad_key = "grad/" + key.substr(6);
    if (c.has(grad_key)) {
      // Elements whose gradient is below the gradients' rounding noise (|g| < 1e-5 max|g|) have an Adam step
      // whose size and sign that noise decides (Adam divides by sqrt(v) ~ |g|): any implementation may move them
      // anywhere within lr per step. They are held to that bound; every other element to the case's tolerance.
      const at::Tensor& g = c.at(grad_key);
      at::Tensor noise = g.abs() < 1e-5 * g.abs().max();
      double bound = static_cast<double>(steps) * opt.at("lr").get<double>() * 1.01 + c.step3_atol;
      at::Tensor wild = (got - want).abs().masked_select(noise);
      if (wild.numel() && wild.max().item<double>() > bound && differ++ == 0)
        detail += key + " moves a noise-level element by " + c10::str(wild.max().item<double>()) + ", beyond " +
                  std::to_string(steps) + " AdamW steps; ";
      got = at::where(noise, want, got);
    }
    Comparison p = compare(got, want, c.step3_rtol, c.step3_atol);
    if (!p.ok && differ++ == 0) detail += key + " " + p.text + "; ";
  }
  if (differ > 1) detail += std::to_string(differ) + " parameters differ; ";
  if (c.has("step3_logits")) {
    Comparison l = compare(forward_logits(model, c), c.at("step3_logits"), c.step3_rtol, c.step3_atol);
    if (!l.ok) detail += "step3_logits " + l.text + "; ";
  }
  if (detail.empty()) return {Status::Pass, c.name, "step3", ""};
  return {Status::Fail, c.name, "step3", detail.substr(0, detail.size() - 2)};
}

std::string adapter_dir(const Case& c, const std::string& relative) { return io::join_path(c.folder, relative); }

// ---- Initialisation cases (case.json "init"; python-parity/README.md, "Initialisations") ----------------------
// PEFT initialised the adapter from the base weight, random draws or data; peft4j makes it the same way (the config as
// PEFT was given it, the seed PEFT's get_peft_model ran under, the data of io's init_data/*) instead of loading it.

// init_data/* as the trainer's batches: consecutive rows, init.batch_size at a time.
std::vector<models::ModelInputs> init_batches(const Case& c) {
  const at::Tensor& ids = c.at("init_data/input_ids");
  const int64_t size = c.spec.at("init").value("batch_size", ids.size(0));
  if (size <= 0) fail(ErrorKind::Format, "case " + c.name + ": init.batch_size must be positive");
  std::vector<models::ModelInputs> batches;
  for (int64_t start = 0; start < ids.size(0); start += size) {
    models::ModelInputs batch;
    const int64_t end = std::min(start + size, ids.size(0));
    batch.input_ids = ids.slice(0, start, end);
    if (c.has("init_data/attention_mask")) batch.attention_mask = c.at("init_data/attention_mask").slice(0, start, end);
    if (c.has("init_data/labels")) batch.labels = c.at("init_data/labels").slice(0, start, end);
    batches.push_back(batch);
  }
  return batches;
}

void initialise_adapter(tuners::PeftModel& model, const Case& c) {
  const auto& init = c.spec.at("init");
  if (!init.is_object() || !init.contains("config") || !init.value("seed", nlohmann::json()).is_number_integer())
    fail(ErrorKind::Format, "case " + c.name + ": init must be {config: PEFT config, seed: int[, batch_size: int]}");
  at::manual_seed(init["seed"].get<uint64_t>());
  if (c.has("init_data/input_ids"))
    model.add_adapter("default", init["config"], init_batches(c));
  else
    model.add_adapter("default", init["config"]);
}

// LAPACK leaves the sign of each singular vector pair open, and MKL (PEFT's torch) and OpenBLAS choose differently:
// PiSSA's, MiCA's and CorDA's factors can differ from PEFT's by the sign of a rank (row i of A with column i of B,
// the same function), LoRA-GA's also by the sign of A's row or B's column alone (A and B come from different
// singular vectors there). Each row of A and column of B takes the sign of PEFT's initial adapter; where that changes
// B·A (LoRA-GA), the residual base weight is corrected by the same amount, W_res − s·(B'·A' − B·A). Everything after
// is then compared as it is.
void align_to_reference(tuners::PeftModel& model, const Case& c) {
  io::TensorMap reference = io::read_safetensors(
      io::join_path(adapter_dir(c, c.spec.value("adapter", std::string("adapter"))), "adapter_model.safetensors"));
  at::NoGradGuard no_grad;
  for (const auto& [path, layer] : model.adapter_layers()) {
    auto* lora = dynamic_cast<tuners::LoraLayer*>(layer);
    if (!lora || !lora->has_adapter("default")) continue;
    const bool embedding = lora->is_embedding();
    const std::string prefix = "base_model.model." + path + (embedding ? ".lora_embedding_" : ".lora_");
    auto ref_a = reference.find(prefix + "A" + (embedding ? "" : ".weight"));
    auto ref_b = reference.find(prefix + "B" + (embedding ? "" : ".weight"));
    if (ref_a == reference.end() || ref_b == reference.end()) continue;
    at::Tensor a = lora->lora_a("default"), b = lora->lora_b("default");
    if (a.sizes() != ref_a->second.sizes() || b.sizes() != ref_b->second.sizes()) continue;  // the init check says so
    at::Tensor before = embedding ? at::Tensor() : lora->delta_weight("default");
    bool unpaired = false;
    for (int64_t i = 0; i < a.size(0); ++i) {
      double da = (a[i].to(at::kDouble) * ref_a->second[i].to(at::kDouble)).sum().item<double>();
      double db = (b.select(1, i).to(at::kDouble) * ref_b->second.select(1, i).to(at::kDouble)).sum().item<double>();
      double sa = da < 0 ? -1 : 1, sb = db < 0 ? -1 : 1;
      if (da == 0) sa = sb;  // a zero row (MiCA's A) follows its column
      if (db == 0) sb = sa;  // a zero column (EVA's B) follows its row
      if (sa < 0) a[i].neg_();
      if (sb < 0) b.select(1, i).neg_();
      unpaired = unpaired || sa != sb;
    }
    if (unpaired && !embedding) {
      at::Tensor weight = lora->base_layer()->named_parameters(false)["weight"];
      weight.add_((before - lora->delta_weight("default")).to(weight.scalar_type()));
    }
  }
}

// The adapter peft4j initialised against PEFT's: every initial trainable tensor (init/), and what EVA rewrote in the
// config (target_modules as a set, rank_pattern, alpha_pattern) against PEFT's adapter_config.json.
CheckResult init_check(tuners::PeftModel& model, const Case& c) {
  std::map<std::string, at::Tensor> ours;
  for (auto& [name, p] : model.trainable_parameters()) ours[name] = p;
  std::string detail;
  int differ = 0;
  for (const auto& [key, want] : c.io) {
    if (key.rfind("init/", 0) != 0) continue;
    auto it = ours.find(key.substr(5));
    if (it == ours.end()) {
      detail += "no " + key.substr(5) + " here; ";
      continue;
    }
    Comparison cmp = compare(it->second, want, c.rtol, c.atol);
    if (!cmp.ok && differ++ == 0) detail += key + " " + cmp.text + "; ";
  }
  if (differ > 1) detail += std::to_string(differ) + " tensors differ; ";
  nlohmann::json theirs = tuners::read_adapter_config(adapter_dir(c, c.spec.value("adapter", std::string("adapter"))));
  const nlohmann::json& mine = model.adapter_config("default");
  auto as_set = [](const nlohmann::json& v) {
    std::set<std::string> out;
    if (v.is_string()) out.insert(v.get<std::string>());
    if (v.is_array())
      for (const auto& x : v) out.insert(x.get<std::string>());
    return out;
  };
  if (as_set(mine["target_modules"]) != as_set(theirs["target_modules"]))
    detail += "target_modules " + mine["target_modules"].dump() + " != PEFT's " + theirs["target_modules"].dump() + "; ";
  for (const char* pattern : {"rank_pattern", "alpha_pattern"}) {
    const nlohmann::json& m = mine[pattern];
    const nlohmann::json& t = theirs.value(pattern, nlohmann::json::object());
    bool same = m.size() == t.size();
    for (auto it = t.begin(); same && it != t.end(); ++it)
      same = m.contains(it.key()) && std::abs(m[it.key()].get<double>() - it.value().get<double>()) <= 1e-9;
    if (!same) detail += std::string(pattern) + " " + m.dump() + " != PEFT's " + t.dump() + "; ";
  }
  if (detail.empty()) return {Status::Pass, c.name, "init", ""};
  return {Status::Fail, c.name, "init", detail.substr(0, detail.size() - 2)};
}

// A directory for the initial adapter that PEFT's weight conversion reads back, removed with its files.
class InitialAdapterDir {
 public:
  InitialAdapterDir() {
    std::string pattern = "/tmp/peft4j-initial-XXXXXX";
    if (!::mkdtemp(pattern.data())) fail(ErrorKind::Io, "cannot create a temporary directory under /tmp");
    path_ = pattern;
  }
  ~InitialAdapterDir() {
    for (const char* f : {"adapter_config.json", "adapter_model.safetensors"}) ::unlink(io::join_path(path_, f).c_str());
    ::rmdir(path_.c_str());
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Runs every adapter check of a case whose method peft4j implements.
void run_adapter_checks(const Case& c, std::shared_ptr<models::Model> base, const std::string& save_dir,
                        const std::function<void(const std::string&, const std::function<CheckResult()>&)>& attempt) {
  auto model = std::make_shared<tuners::PeftModel>(base);
  if (c.spec.contains("adapters")) {
    // Several named adapters: each alone, a mixed batch, a weighted combination.
    std::vector<std::string> names;
    for (auto it = c.spec["adapters"].begin(); it != c.spec["adapters"].end(); ++it) {
      model->load_adapter(adapter_dir(c, it.value().get<std::string>()), it.key());
      names.push_back(it.key());
    }
    attempt("logits", [&] {
      std::string detail;
      for (const auto& name : names) {
        if (!c.has("logits_" + name)) continue;
        model->set_adapter(name);
        Comparison cmp = compare(forward_logits(*model, c), c.at("logits_" + name), c.rtol, c.atol);
        if (!cmp.ok) detail += "logits_" + name + " " + cmp.text + "; ";
      }
      if (detail.empty()) return CheckResult{Status::Pass, c.name, "logits", ""};
      return CheckResult{Status::Fail, c.name, "logits", detail};
    });
    if (c.has("mixed_logits"))
      attempt("mixed", [&] {
        std::vector<std::string> rows = c.spec.at("mixed_batch_adapter_names").get<std::vector<std::string>>();
        at::NoGradGuard no_grad;
        model->eval();
        return compared(c, "mixed", masked(c, model->forward_mixed(c.inputs(false), rows).logits), "mixed_logits");
      });
    if (c.spec.contains("weighted"))
      attempt("weighted", [&] {
        const auto& w = c.spec["weighted"];
        auto adapters = w.at("adapters").get<std::vector<std::string>>();
        auto weights = w.at("weights").get<std::vector<double>>();
        std::string type = w.at("combination_type").get<std::string>();
        // The golden case names its key "<type>_<w1>_<w2>_logits"; generated cases say it in logits_key.
        std::string key = w.value("logits_key", std::string());
        if (key.empty()) {
          key = type + "_";
          for (size_t i = 0; i < weights.size(); ++i) key += (i ? "_" : "") + c10::str(weights[i]);
          key += "_logits";
        }
        model->add_weighted_adapter(adapters, weights, "weighted", type, w.value("svd_rank", int64_t(0)));
        model->set_adapter("weighted");
        CheckResult r = compared(c, "weighted", forward_logits(*model, c), key);
        model->delete_adapter("weighted");
        return r;
      });
    if (c.has("base_logits"))
      attempt("base", [&] {
        model->set_disabled(true);
        at::Tensor logits = forward_logits(*model, c);
        model->set_disabled(false);
        return compared(c, "base", logits, "base_logits");
      });
    if (c.spec.contains("delete"))
      attempt("delete", [&] {
        // Deleting one adapter leaves the others exactly as they were.
        const auto& d = c.spec["delete"];
        model->delete_adapter(d.at("adapter").get<std::string>());
        model->set_adapter(d.at("then_active").get<std::string>());
        return compared(c, "delete", forward_logits(*model, c), d.at("logits_key").get<std::string>());
      });
    return;
  }
  // Adapters the case's own adapter builds on (Arrow's experts), under their names; the case's adapter is then
  // the active one.
  if (c.spec.contains("expert_adapters"))
    for (auto it = c.spec["expert_adapters"].begin(); it != c.spec["expert_adapters"].end(); ++it)
      model->load_adapter(adapter_dir(c, it.value().get<std::string>()), it.key());
  // An adapter whose init changed the base weight (PiSSA, OLoRA, CorDA, LoRA-GA) is saved converted against its
  // initial state, so that HF PEFT loads it onto the untouched base (path_initial_model_for_weight_conversion).
  std::unique_ptr<InitialAdapterDir> initial;
  if (c.spec.contains("init")) {
    initialise_adapter(*model, c);
    align_to_reference(*model, c);
    attempt("init", [&] { return init_check(*model, c); });
    if (!save_dir.empty() && tuners::init_mutates_base(model->adapter_config("default"))) {
      initial = std::make_unique<InitialAdapterDir>();
      model->save_adapter(initial->path(), "default");
    }
  } else {
    model->load_adapter(adapter_dir(c, c.spec.value("adapter", std::string("adapter"))), "default", /*trainable=*/true);
  }
  model->set_adapter("default");
  if (c.has("base_logits"))
    attempt("base", [&] {
      model->set_disabled(true);
      at::Tensor logits = forward_logits(*model, c);
      model->set_disabled(false);
      return compared(c, "base", logits, "base_logits");
    });
  if (c.has("logits")) attempt("logits", [&] { return compared(c, "logits", forward_logits(*model, c), "logits"); });
  if (c.has("loss"))
    attempt("loss", [&] {
      at::NoGradGuard no_grad;
      model->eval();
      return compared(c, "loss", model->forward(c.inputs(true)).loss.reshape({1}), "loss");
    });
  if (c.has("greedy_ids")) attempt("greedy", [&] { return greedy_check(*model, c); });
  if (c.io.count("step_losses")) {
    attempt("grad", [&] { return grad_check(*model, c); });
    attempt("step3", [&] { return step3_check(*model, c); });
  }
  // After training where the case trains (check_adapter.py then compares step3_logits), else as loaded (logits).
  if (!save_dir.empty())
    attempt("save", [&] {
      if (initial)
        tuners::save_converted_adapter(*model, io::join_path(save_dir, c.name), "default", initial->path());
      else
        model->save_adapter(io::join_path(save_dir, c.name), "default");
      return CheckResult{Status::Pass, c.name, "save", ""};
    });
  if (c.has("merged_logits"))
    attempt("merged", [&] {
      auto merged = model->merge_and_unload();
      Comparison cmp = compare(forward_logits(*merged, c), c.at("merged_logits"), c.step3_rtol, c.step3_atol);
      if (cmp.ok) return CheckResult{Status::Pass, c.name, "merged", ""};
      return CheckResult{Status::Fail, c.name, "merged", "merged_logits " + cmp.text};
    });
}

const std::vector<std::string> kAdapterChecks = {"base", "logits", "loss", "grad", "step3", "merged", "greedy",
                                                 "mixed", "weighted", "delete"};

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
  if (c.method() == "NONE") {
    // Base-model rows: the reference outputs are the plain model's.
    if (c.has("base_logits"))
      attempt("base", [&] { return compared(c, "base", forward_logits(*base, c), "base_logits"); });
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
  bool implemented = true;
  try {
    tuners::tuner_for(c.method());
  } catch (const Error&) {
    implemented = false;
  }
  if (!implemented) {
    // The base model is still checked; the method's own checks wait for its tuner.
    if (c.has("base_logits"))
      attempt("base", [&] { return compared(c, "base", forward_logits(*base, c), "base_logits"); });
    for (const auto& check : kAdapterChecks) {
      bool applies = (check == "logits" && c.has("logits")) || (check == "loss" && c.has("loss")) ||
                     (check == "grad" && c.has("step_losses")) || (check == "step3" && c.has("step3_logits")) ||
                     (check == "merged" && c.has("merged_logits")) || (check == "greedy" && c.has("greedy_ids")) ||
                     (check == "mixed" && c.has("mixed_logits"));
      if (applies) record({Status::Skip, name, check, c.method() + " adapters are not implemented yet"});
    }
    return results;
  }
  try {
    run_adapter_checks(c, base, save_dir_, attempt);
  } catch (const std::exception& e) {
    record({Status::Fail, name, "load", e.what()});
  }
  return results;
}

std::string Runner::summary() const {
  std::string out = std::to_string(passed_) + " passed, " + std::to_string(failed_) + " failed";
  if (skipped_) out += ", " + std::to_string(skipped_) + " skipped";
  return out;
}

}  // namespace peft4j::parity
