// Crash points for the crash-safety tests, and nothing else: when the environment variable PEFT4J_TEST_KILL_AT
// is "<phase>:<detail>", reaching kill_point(phase, detail) raises SIGKILL on this process, so a test can stop a
// run at an exact moment of saving (which files then exist is what it checks). Unset, it costs one getenv.
//   checkpoint-partial:<step>   the checkpoint's adapter written into its temporary directory, the rest not yet
//   checkpoint-rename:<step>    the temporary directory complete and flushed, not yet renamed to checkpoint-<step>
//   checkpoint-replace:<step>   an existing checkpoint-<step> moved aside, the new one not yet renamed in
//   checkpoint-rotate:<step>    after checkpoint-<step> was saved, an old checkpoint renamed for deletion, not deleted
//   atomic-rename:<path>        a file written atomically: its temporary file flushed, not yet renamed to <path>
#pragma once

#include <string>

namespace peft4j {

void kill_point(const std::string& phase, const std::string& detail);

}  // namespace peft4j
