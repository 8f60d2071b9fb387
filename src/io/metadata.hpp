#pragma once
// What bnorm's two safetensors formats (model files, checkpoints) read from
// __metadata__ alike: the format tag and version, and JSON-valued entries.
// One copy, so the two loaders refuse a bad file in the same words.
#include <nlohmann/json.hpp>
#include <string>

#include "bnorm/error.hpp"
#include "bnorm/io/safetensors.hpp"

namespace bnorm::io_detail {

// Refuses a file whose "format" is not format or whose "version" is not
// version; kind names the format in the message ("model", "checkpoint").
inline void check_format_and_version(const SafetensorsFile& file, const char* format, const char* version,
                                     const std::string& kind, const std::string& path) {
  const auto f = file.metadata.find("format");
  if (f == file.metadata.end() || f->second != format)
    fail_file(path, "not a bnorm " + kind + " (metadata \"format\" is not \"" + format + "\")");
  const auto v = file.metadata.find("version");
  if (v == file.metadata.end() || v->second != version)
    fail_file(path, kind + " format version " + (v == file.metadata.end() ? std::string("(none)") : v->second) +
                        " is not supported (this bnorm reads version " + version + ")");
}

// The metadata entry key parsed as JSON; an Error naming the file when it is
// absent or not JSON. label starts the message ("metadata", "checkpoint metadata").
inline nlohmann::json metadata_json(const SafetensorsFile& file, const std::string& key, const std::string& path,
                                    const std::string& label = "metadata") {
  const auto it = file.metadata.find(key);
  if (it == file.metadata.end()) fail_file(path, label + " lacks \"" + key + "\"");
  try {
    return nlohmann::json::parse(it->second);
  } catch (const nlohmann::json::exception& e) {
    fail_file(path, label + " \"" + key + "\" is not valid JSON: " + e.what());
  }
}

}  // namespace bnorm::io_detail
