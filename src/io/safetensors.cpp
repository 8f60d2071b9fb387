#include "bnorm/io/safetensors.hpp"

#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

#include "bnorm/error.hpp"
#include "bnorm/io/atomic_file.hpp"
#include "read_bounded.hpp"

namespace bnorm {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors data is little-endian; a big-endian port must byte-swap here");

// A header this large is not a model bnorm wrote; refusing it early keeps a
// hostile length from turning into a huge allocation.
constexpr std::uint64_t kMaxHeaderBytes = 100u << 20;

std::size_t element_size(const std::string& dtype) {
  if (dtype == "F32") return 4;
  if (dtype == "I64") return 8;
  return 0;
}

}  // namespace

std::vector<float> SafeTensor::to_f32() const {
  if (dtype != "F32") throw Error("tensor has dtype " + dtype + ", expected F32");
  std::vector<float> v(bytes.size() / 4);
  if (!v.empty()) std::memcpy(v.data(), bytes.data(), bytes.size());
  return v;
}

std::int64_t SafeTensor::to_i64_scalar() const {
  if (dtype != "I64" || bytes.size() != 8) throw Error("tensor is not a single I64 value");
  std::int64_t v;
  std::memcpy(&v, bytes.data(), 8);
  return v;
}

const SafeTensor* SafetensorsFile::find(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return &t;
  return nullptr;
}

const SafeTensor& SafetensorsFile::at(const std::string& name, const std::string& path) const {
  const SafeTensor* t = find(name);
  if (!t) fail_file(path, "missing tensor '" + name + "'");
  return *t;
}

SafeTensor make_f32_tensor(const Shape& shape, const float* data) {
  SafeTensor t{"F32", shape, std::vector<std::uint8_t>(static_cast<std::size_t>(numel(shape)) * 4)};
  if (!t.bytes.empty()) std::memcpy(t.bytes.data(), data, t.bytes.size());
  return t;
}

SafeTensor make_i64_tensor(const Shape& shape, const std::int64_t* data) {
  SafeTensor t{"I64", shape, std::vector<std::uint8_t>(static_cast<std::size_t>(numel(shape)) * 8)};
  if (!t.bytes.empty()) std::memcpy(t.bytes.data(), data, t.bytes.size());
  return t;
}

std::string serialize_safetensors(const SafetensorsFile& file) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!file.metadata.empty()) header["__metadata__"] = file.metadata;
  std::uint64_t offset = 0;
  for (const auto& [name, t] : file.tensors) {
    header[name] = {{"dtype", t.dtype}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.bytes.size()}}};
    offset += t.bytes.size();
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // aligns the data section to 8 bytes
  std::string out(8, '\0');
  const std::uint64_t n = json.size();
  std::memcpy(out.data(), &n, 8);
  out += json;
  for (const auto& [name, t] : file.tensors) out.append(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  return out;
}

void write_safetensors(const std::string& path, const SafetensorsFile& file) {
  write_file_atomically(path, serialize_safetensors(file));
}

SafetensorsFile parse_safetensors(const std::string& bytes, const std::string& path) {
  if (bytes.size() < 8)
    fail_file(path, "not a safetensors file: " + std::to_string(bytes.size()) +
                        " bytes, shorter than the 8-byte header length");
  std::uint64_t header_len;
  std::memcpy(&header_len, bytes.data(), 8);
  if (header_len > bytes.size() - 8)
    fail_file(path, "not a safetensors file: header length " + std::to_string(header_len) +
                        " runs past the end of the file (" + std::to_string(bytes.size()) + " bytes)");
  if (header_len > kMaxHeaderBytes)
    fail_file(path, "header length " + std::to_string(header_len) + " is implausibly large");
  const std::string_view header_text(bytes.data() + 8, header_len);

  // nlohmann::json keeps the last of duplicate keys silently; a callback sees
  // every top-level key so a duplicate tensor name is refused instead.
  std::set<std::string> keys;
  std::string duplicate;
  auto on_event = [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
    if (depth == 1 && event == nlohmann::json::parse_event_t::key && !keys.insert(parsed.get<std::string>()).second)
      duplicate = parsed.get<std::string>();
    return true;
  };
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(header_text, on_event);
  } catch (const nlohmann::json::exception& e) {
    fail_file(path, std::string("header is not valid JSON: ") + e.what());
  }
  if (!duplicate.empty()) fail_file(path, "header names '" + duplicate + "' twice");
  if (!header.is_object()) fail_file(path, "header is not a JSON object");

  const std::uint64_t data_size = bytes.size() - 8 - header_len;
  const char* data = bytes.data() + 8 + header_len;
  SafetensorsFile file;
  struct Span {
    std::uint64_t begin, end;
    std::string name;
  };
  std::vector<Span> spans;
  for (const auto& [name, entry] : header.items()) {
    if (name == "__metadata__") {
      if (!entry.is_object()) fail_file(path, "__metadata__ is not an object");
      for (const auto& [k, v] : entry.items()) {
        if (!v.is_string()) fail_file(path, "__metadata__ value of '" + k + "' is not a string");
        file.metadata[k] = v.get<std::string>();
      }
      continue;
    }
    const std::string where = "tensor '" + name + "': ";
    if (!entry.is_object() || !entry.contains("dtype") || !entry.contains("shape") || !entry.contains("data_offsets"))
      fail_file(path, where + "needs dtype, shape and data_offsets");
    const auto& dtype = entry.at("dtype");
    const auto& shape = entry.at("shape");
    const auto& offsets = entry.at("data_offsets");
    if (!dtype.is_string()) fail_file(path, where + "dtype is not a string");
    const std::size_t esize = element_size(dtype.get<std::string>());
    if (esize == 0)
      fail_file(path, where + "dtype " + dtype.get<std::string>() + " is not supported (bnorm reads F32 and I64)");
    if (!shape.is_array() || shape.size() > 8) fail_file(path, where + "shape must be a list of at most 8 sizes");
    Shape dims;
    std::uint64_t count = 1;
    for (const auto& d : shape) {
      if (!d.is_number_unsigned()) fail_file(path, where + "shape entries must be non-negative integers");
      const std::uint64_t v = d.get<std::uint64_t>();
      if (v > (std::uint64_t{1} << 40) || (v != 0 && count > (std::uint64_t{1} << 40) / v))
        fail_file(path, where + "shape is too large");
      count *= v;
      dims.push_back(static_cast<std::int64_t>(v));
    }
    if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
        !offsets[1].is_number_unsigned())
      fail_file(path, where + "data_offsets must be two non-negative integers");
    const std::uint64_t begin = offsets[0].get<std::uint64_t>(), end = offsets[1].get<std::uint64_t>();
    if (begin > end || end > data_size)
      fail_file(path, where + "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                          "] lie outside the data section of " + std::to_string(data_size) + " bytes");
    if (end - begin != count * esize)
      fail_file(path, where + "shape " + shape_str(dims) + " needs " + std::to_string(count * esize) +
                          " bytes but data_offsets span " + std::to_string(end - begin));
    SafeTensor t{dtype.get<std::string>(), dims, std::vector<std::uint8_t>(data + begin, data + end)};
    file.tensors.emplace_back(name, std::move(t));
    spans.push_back({begin, end, name});
  }
  // The data section must be covered exactly: no overlaps, no holes, nothing after.
  std::vector<std::size_t> order(spans.size());
  for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](std::size_t a, std::size_t b) {
    return spans[a].begin != spans[b].begin ? spans[a].begin < spans[b].begin : spans[a].end < spans[b].end;
  });
  std::uint64_t covered = 0;
  for (std::size_t i : order) {
    if (spans[i].begin < covered) fail_file(path, "tensor '" + spans[i].name + "' overlaps the tensor before it");
    if (spans[i].begin > covered)
      fail_file(path,
                "bytes " + std::to_string(covered) + ".." + std::to_string(spans[i].begin) + " belong to no tensor");
    covered = spans[i].end;
  }
  if (covered != data_size)
    fail_file(path, std::to_string(data_size - covered) + " bytes after the last tensor belong to no tensor");
  std::vector<std::pair<std::string, SafeTensor>> sorted;
  for (std::size_t i : order) sorted.push_back(std::move(file.tensors[i]));
  file.tensors = std::move(sorted);
  return file;
}

SafetensorsFile read_safetensors(const std::string& path) {
  return parse_safetensors(io_detail::read_bounded<std::string>(path, std::uint64_t{1} << 34), path);
}

}  // namespace bnorm
