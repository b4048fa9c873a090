// Checkpoint directories under a training output dir: output_dir/checkpoint-<step>/, each written whole into a
// hidden temporary directory and renamed into place, so a crash leaves the earlier set of checkpoints or the new
// one, never a partial checkpoint under a checkpoint-<step> name.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace peft4j::train {

struct CheckpointDir {
  int64_t step;
  std::string path;
};

// Creates the output dir when missing; a path that exists and is not a directory -> Error(Io).
void prepare_output_dir(const std::string& output_dir);

// The complete checkpoints (checkpoint-<step> directories holding `marker_file`), oldest first.
std::vector<CheckpointDir> list_checkpoints(const std::string& output_dir, const std::string& marker_file);

// Calls `write(temp_dir)` on an empty temporary directory, flushes every file in it to disk, renames it to
// output_dir/checkpoint-<step> (replacing one of that step) and then removes the oldest checkpoints beyond
// `keep` (0: keep all). Returns the checkpoint's path. If `write` throws, the temporary directory is removed
// and the checkpoints on disk are as before.
std::string write_checkpoint(const std::string& output_dir, int64_t step, int64_t keep, const std::string& marker_file,
                             const std::function<void(const std::string& dir)>& write);

}  // namespace peft4j::train
