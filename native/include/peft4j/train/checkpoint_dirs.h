// Checkpoint directories under a training output dir: output_dir/checkpoint-<step>/, each written whole into a
// hidden temporary directory and renamed into place, and renamed to a hidden name before it is deleted, so a crash
// leaves the earlier set of checkpoints or the new one, never a partial checkpoint under a checkpoint-<step> name.
// The hidden names (".checkpoint-<step>.tmp", ".old", ".deleting") and write_file_atomic's temporary files are
// what remove_leftovers() clears.
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

// Checks, creating nothing, that the output dir can be written: an existing directory this process can create
// files in, or a path whose nearest existing ancestor is such a directory. Error(Io) naming the path and the
// problem otherwise (a file, a path below a file, no permission, a read-only file system).
void check_output_dir(const std::string& output_dir);

// Creates the output dir when missing; a path that exists and is not a directory -> Error(Io).
void prepare_output_dir(const std::string& output_dir);

// What a run killed while saving leaves in output_dir: a checkpoint moved aside for replacement whose successor
// never arrived is renamed back; temporary checkpoint directories, checkpoints being deleted and temporary files
// of atomic writes are removed. Nothing when output_dir does not exist. Only one run may use an output dir.
void remove_leftovers(const std::string& output_dir);

// The complete checkpoints (checkpoint-<step> directories holding `marker_file`), oldest first.
std::vector<CheckpointDir> list_checkpoints(const std::string& output_dir, const std::string& marker_file);

// Calls `write(temp_dir)` on an empty temporary directory, flushes every file in it to disk, renames it to
// output_dir/checkpoint-<step> (replacing one of that step) and then removes the oldest checkpoints beyond
// `keep` (0: keep all). Returns the checkpoint's path. If `write` throws, the temporary directory is removed
// and the checkpoints on disk are as before.
std::string write_checkpoint(const std::string& output_dir, int64_t step, int64_t keep, const std::string& marker_file,
                             const std::function<void(const std::string& dir)>& write);

}  // namespace peft4j::train
