#include "peft4j/train/checkpoint_dirs.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "peft4j/error.h"
#include "peft4j/files.h"

namespace peft4j::train {

namespace fs = std::filesystem;

namespace {

const std::string kPrefix = "checkpoint-";

[[noreturn]] void io_failure(const std::string& what, const std::string& path, const std::error_code& ec) {
  fail(ErrorKind::Io, what + " '" + path + "': " + ec.message());
}

void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), directory ? (O_RDONLY | O_DIRECTORY) : O_RDONLY);
  if (fd < 0) fail(ErrorKind::Io, "cannot open '" + path + "' to flush it: " + std::strerror(errno));
  const bool ok = ::fsync(fd) == 0;
  const int error = errno;
  ::close(fd);
  if (!ok) fail(ErrorKind::Io, "cannot flush '" + path + "' to disk: " + std::strerror(error));
}

void remove_tree(const std::string& path) {
  std::error_code ec;
  fs::remove_all(path, ec);
  if (ec) io_failure("cannot remove", path, ec);
}

// The step of a "checkpoint-<digits>" name, or -1.
int64_t step_of(const std::string& name) {
  if (name.rfind(kPrefix, 0) != 0 || name.size() == kPrefix.size() || name.size() > kPrefix.size() + 18) return -1;
  for (size_t i = kPrefix.size(); i < name.size(); ++i)
    if (name[i] < '0' || name[i] > '9') return -1;
  return std::stoll(name.substr(kPrefix.size()));
}

}  // namespace

void prepare_output_dir(const std::string& output_dir) {
  std::error_code ec;
  if (fs::exists(output_dir, ec) && !fs::is_directory(output_dir, ec))
    fail(ErrorKind::Io, "output_dir '" + output_dir + "' exists and is not a directory");
  fs::create_directories(output_dir, ec);
  if (ec) io_failure("cannot create output_dir", output_dir, ec);
}

std::vector<CheckpointDir> list_checkpoints(const std::string& output_dir, const std::string& marker_file) {
  std::vector<CheckpointDir> out;
  std::error_code ec;
  if (!fs::is_directory(output_dir, ec)) return out;
  for (const auto& entry : fs::directory_iterator(output_dir, ec)) {
    const int64_t step = step_of(entry.path().filename().string());
    if (step < 0 || !entry.is_directory()) continue;
    if (!io::is_regular_file(io::join_path(entry.path().string(), marker_file))) continue;
    out.push_back({step, entry.path().string()});
  }
  if (ec) io_failure("cannot list", output_dir, ec);
  std::sort(out.begin(), out.end(), [](const CheckpointDir& a, const CheckpointDir& b) { return a.step < b.step; });
  return out;
}

std::string write_checkpoint(const std::string& output_dir, int64_t step, int64_t keep, const std::string& marker_file,
                             const std::function<void(const std::string& dir)>& write) {
  prepare_output_dir(output_dir);
  const std::string name = kPrefix + std::to_string(step);
  const std::string final_dir = io::join_path(output_dir, name);
  const std::string temp_dir = io::join_path(output_dir, "." + name + ".tmp");
  remove_tree(temp_dir);  // left by a run that died while writing
  std::error_code ec;
  fs::create_directory(temp_dir, ec);
  if (ec) io_failure("cannot create", temp_dir, ec);
  try {
    write(temp_dir);
    for (const auto& entry : fs::directory_iterator(temp_dir)) fsync_path(entry.path().string(), false);
    fsync_path(temp_dir, true);
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(temp_dir, ignored);
    throw;
  }
  if (fs::exists(final_dir, ec)) {
    // A checkpoint of the same step (saved again after a resume): moved aside first, since rename() does not
    // replace a non-empty directory.
    const std::string old_dir = io::join_path(output_dir, "." + name + ".old");
    remove_tree(old_dir);
    fs::rename(final_dir, old_dir, ec);
    if (ec) io_failure("cannot move aside", final_dir, ec);
    fs::rename(temp_dir, final_dir, ec);
    if (ec) io_failure("cannot rename checkpoint into", final_dir, ec);
    remove_tree(old_dir);
  } else {
    fs::rename(temp_dir, final_dir, ec);
    if (ec) io_failure("cannot rename checkpoint into", final_dir, ec);
  }
  fsync_path(output_dir, true);
  if (keep > 0) {
    auto all = list_checkpoints(output_dir, marker_file);
    for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i)
      if (all[i].path != final_dir) remove_tree(all[i].path);
  }
  return final_dir;
}

}  // namespace peft4j::train
