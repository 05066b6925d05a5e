// `inkgrad train --force`: removing the previous run's files from a folder all at once or not at
// all, so that a failure never leaves half of the old run.
#pragma once

#include <string>
#include <vector>

namespace ink::app {

// Removes `files` (names inside `dir`), and nothing else. Each is first moved into a hidden
// folder in `dir` (a rename, which fails before anything is lost); only when all have moved is
// that folder deleted. When one cannot be moved, those already moved are put back and an
// ink::Error names the file and says that nothing was removed.
void remove_run_files(const std::string& dir, const std::vector<std::string>& files);

}  // namespace ink::app
