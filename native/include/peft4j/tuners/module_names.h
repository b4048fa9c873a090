// How PEFT matches a name from a config against a module path, shared by target selection (config.cpp), weight
// tying and modules_to_save.
#pragma once

#include <string>
#include <vector>

namespace peft4j::tuners {

// Whether module `path` is one of `names` or ends with ".<name>" (PEFT's match of a target or excluded name, and of a
// tied module in _check_tied_module_exists).
bool names_module(const std::vector<std::string>& names, const std::string& path);

// PEFT's re.match(rf"(^|.*\.){pattern}($|\..*)", path): `pattern` (a regular expression) names the module at `path`
// or one of its parents (how modules_to_save and the tied-module lists are matched).
bool names_module_pattern(const std::string& pattern, const std::string& path);

}  // namespace peft4j::tuners
