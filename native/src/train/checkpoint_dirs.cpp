#include "peft4j/train/checkpoint_dirs.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>

#include "peft4j/error.h"
#include "peft4j/fault_injection.h"
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

// The hidden name a checkpoint directory has while it is written ("tmp"), replaced ("old") or deleted ("deleting").
std::string hidden_name(const std::string& name, const std::string& state) { return "." + name + "." + state; }

// Creates and removes a file in `dir`: the one test of writability that also holds for root and read-only mounts.
// Its name is a temporary file's, so that remove_leftovers() clears it should the process die in between.
void probe_writable(const std::string& dir, const std::string& output_dir) {
  const std::string probe = io::join_path(dir, ".write-probe.tmp." + std::to_string(::getpid()) + ".0");
  const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    const std::string reason = std::strerror(errno);
    fail(ErrorKind::Io, "output directory '" + output_dir + "' " +
                            (dir == output_dir ? "is not writable: " : "cannot be created in '" + dir + "': ") + reason);
  }
  ::close(fd);
  ::unlink(probe.c_str());
}

}  // namespace

void check_output_dir(const std::string& output_dir) {
  if (output_dir.empty()) fail(ErrorKind::InvalidArgument, "output directory is empty");
  std::error_code ec;
  const fs::path path = fs::absolute(output_dir, ec);
  if (ec) io_failure("cannot resolve output directory", output_dir, ec);
  for (fs::path p = path;; p = p.parent_path()) {
    const fs::file_status status = fs::status(p, ec);
    if (fs::exists(status)) {
      if (!fs::is_directory(status))
        fail(ErrorKind::Io, "output directory '" + output_dir + "' " +
                                (p == path ? std::string(fs::is_regular_file(status) ? "is a file" : "is not a directory")
                                           : "is below the file '" + p.string() + "'"));
      probe_writable(p == path ? output_dir : p.string(), output_dir);
      return;
    }
    if (p == p.parent_path()) return;
  }
}

void prepare_output_dir(const std::string& output_dir) {
  std::error_code ec;
  if (fs::exists(output_dir, ec) && !fs::is_directory(output_dir, ec))
    fail(ErrorKind::Io, "output_dir '" + output_dir + "' exists and is not a directory");
  fs::create_directories(output_dir, ec);
  if (ec) io_failure("cannot create output_dir", output_dir, ec);
}

void remove_leftovers(const std::string& output_dir) {
  if (!io::is_directory(output_dir)) return;
  std::error_code ec;
  std::vector<fs::directory_entry> entries;
  for (const auto& entry : fs::directory_iterator(output_dir, ec)) entries.push_back(entry);
  if (ec) io_failure("cannot list", output_dir, ec);
  bool changed = false;
  for (const auto& entry : entries) {
    const std::string name = entry.path().filename().string();
    if (name.rfind("." + kPrefix, 0) == 0 && entry.is_directory(ec)) {
      const size_t dot = name.rfind('.');
      const std::string checkpoint = name.substr(1, dot - 1), state = name.substr(dot + 1);
      if (dot == 0 || step_of(checkpoint) < 0 || (state != "tmp" && state != "old" && state != "deleting")) continue;
      const std::string final_dir = io::join_path(output_dir, checkpoint);
      if (state == "old" && !fs::exists(final_dir, ec)) {
        // Killed between moving the checkpoint aside and renaming its successor in: the old one is still whole.
        fs::rename(entry.path(), final_dir, ec);
        if (ec) io_failure("cannot restore checkpoint", final_dir, ec);
      } else {
        remove_tree(entry.path().string());
      }
      changed = true;
    } else if (io::is_temporary_file_name(name) && entry.is_regular_file(ec)) {
      fs::remove(entry.path(), ec);
      if (ec) io_failure("cannot remove", entry.path().string(), ec);
      changed = true;
    }
  }
  if (changed) fsync_path(output_dir, true);
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
  const std::string temp_dir = io::join_path(output_dir, hidden_name(name, "tmp"));
  remove_tree(temp_dir);  // left by a run that died while writing
  std::error_code ec;
  fs::create_directory(temp_dir, ec);
  if (ec) io_failure("cannot create", temp_dir, ec);
  try {
    write(temp_dir);
    for (const auto& entry : fs::directory_iterator(temp_dir)) fsync_path(entry.path().string(), false);
    fsync_path(temp_dir, true);
    kill_point("checkpoint-rename", std::to_string(step));
  } catch (...) {
    std::error_code ignored;
    fs::remove_all(temp_dir, ignored);
    throw;
  }
  if (fs::exists(final_dir, ec)) {
    // A checkpoint of the same step (saved again after a resume): moved aside first, since rename() does not
    // replace a non-empty directory.
    const std::string old_dir = io::join_path(output_dir, hidden_name(name, "old"));
    remove_tree(old_dir);
    fs::rename(final_dir, old_dir, ec);
    if (ec) io_failure("cannot move aside", final_dir, ec);
    kill_point("checkpoint-replace", std::to_string(step));
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
    for (size_t i = 0; i + static_cast<size_t>(keep) < all.size(); ++i) {
      if (all[i].path == final_dir) continue;
      // Out of the checkpoint-<step> names first (one atomic rename), so that a crash while deleting leaves no
      // checkpoint that has its marker file but lacks its adapter.
      const std::string doomed =
          io::join_path(output_dir, hidden_name(fs::path(all[i].path).filename().string(), "deleting"));
      remove_tree(doomed);
      fs::rename(all[i].path, doomed, ec);
      if (ec) io_failure("cannot move aside", all[i].path, ec);
      kill_point("checkpoint-rotate", std::to_string(step));
      remove_tree(doomed);
    }
  }
  return final_dir;
}

}  // namespace peft4j::train
