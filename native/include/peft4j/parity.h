// The parity runner: runs the reference cases that python-parity/generate.py writes (HF transformers + PEFT
// outputs, format in python-parity/README.md) against the core and reports one line per case and check:
//   PASS <case> <check>
//   FAIL <case> <check>: <what differed, max abs/rel error, where>
//   SKIP <case> <check>: <why>
// The Java CLI (`peft4j parity`) and peft4j-native call this same code.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

namespace peft4j::parity {

struct CheckResult {
  enum class Status { Pass, Fail, Skip } status;
  std::string case_name;
  std::string check;
  std::string detail;  // empty for PASS
  std::string line() const;
};

// Elementwise |got - want| <= atol + rtol * |want| (numpy.allclose); on failure `text` says the max absolute and
// relative error and the index of the worst element. Shape mismatch fails with both shapes.
struct Comparison {
  bool ok = false;
  std::string text;
};
Comparison compare(const at::Tensor& got, const at::Tensor& want, double rtol, double atol);

class Runner {
 public:
  // `dir` holds cases/<name>/case.json; `only` restricts to these case names (each must exist).
  Runner(const std::string& dir, const std::vector<std::string>& only = {});
  // After training, write each single-adapter case's adapter in PEFT's format to <dir>/<case> (check "save"),
  // for HF PEFT to load back (python-parity/check_adapter.py --saved-root).
  void save_adapters_to(const std::string& dir) { save_dir_ = dir; }
  const std::vector<std::string>& cases() const { return cases_; }
  // Runs every check of one case; a case that cannot even load reports one FAIL naming why.
  std::vector<CheckResult> run_case(const std::string& name);
  int passed() const { return passed_; }
  int failed() const { return failed_; }
  int skipped() const { return skipped_; }
  // "N passed, M failed" plus ", K skipped" when any were skipped.
  std::string summary() const;

 private:
  std::string dir_;
  std::string save_dir_;
  std::vector<std::string> cases_;
  int passed_ = 0, failed_ = 0, skipped_ = 0;
};

}  // namespace peft4j::parity
