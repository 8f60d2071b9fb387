#include "bnorm/kernels/cpu_caches.hpp"

#include <cstdlib>
#include <fstream>
#include <iterator>
#include <string>

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

namespace bnorm::kernels {
namespace {

// Kept for machines that say nothing: a common core of the last years, so
// that the kernels' blocking stays sensible rather than degenerate.
constexpr CacheSizes kDefaultCaches{std::int64_t{32} << 10, std::int64_t{1} << 20, std::int64_t{32} << 20};

constexpr int kLevels = 3;  // L1d, L2, L3: the index into the arrays below

struct Detected {
  std::int64_t bytes[kLevels] = {0, 0, 0};  // 0: not known (yet)
  const char* source[kLevels] = {"default", "default", "default"};
};

// Fills the sizes still unknown in `detected` from `found` (0 = not found).
void take_unknown(Detected& detected, const std::int64_t (&found)[kLevels], const char* source) {
  for (int level = 0; level < kLevels; ++level)
    if (detected.bytes[level] == 0 && found[level] > 0) {
      detected.bytes[level] = found[level];
      detected.source[level] = source;
    }
}

std::string read_small_file(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// cpu0's caches as Linux describes them: one folder per cache, with its
// level, its type (Data, Instruction, Unified) and its size.
void read_sysfs(std::int64_t (&found)[kLevels]) {
  const std::string base = "/sys/devices/system/cpu/cpu0/cache/index";
  for (int index = 0; index < 16; ++index) {
    const std::string dir = base + std::to_string(index) + "/";
    const std::string level = read_small_file(dir + "level");
    if (level.empty()) break;  // the indices are numbered without gaps
    const std::string type = read_small_file(dir + "type");
    if (type.rfind("Instruction", 0) == 0) continue;
    const std::int64_t level_number = parse_cache_size(level);
    if (level_number >= 1 && level_number <= kLevels)
      found[level_number - 1] = parse_cache_size(read_small_file(dir + "size"));
  }
}

#if defined(__x86_64__) || defined(__i386__)
// CPUID's deterministic cache parameters: leaf 4 on Intel, 0x8000001D on AMD
// (the same layout). Each subleaf describes one cache until type 0.
void read_cpuid_leaf(unsigned leaf, std::int64_t (&found)[kLevels]) {
  for (unsigned subleaf = 0; subleaf < 16; ++subleaf) {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(leaf, subleaf, &eax, &ebx, &ecx, &edx)) return;
    const unsigned type = eax & 0x1f;  // 1 data, 2 instruction, 3 unified
    if (type == 0) return;
    const unsigned level = (eax >> 5) & 0x7;
    if (type == 2 || level < 1 || level > kLevels) continue;
    const std::int64_t ways = (ebx >> 22) + 1, partitions = ((ebx >> 12) & 0x3ff) + 1, line = (ebx & 0xfff) + 1,
                       sets = std::int64_t{ecx} + 1;
    found[level - 1] = ways * partitions * line * sets;
  }
}

void read_cpuid(std::int64_t (&found)[kLevels]) {
  unsigned max_leaf = 0, vendor_b = 0, vendor_c = 0, vendor_d = 0;
  if (!__get_cpuid(0, &max_leaf, &vendor_b, &vendor_c, &vendor_d)) return;
  // Vendor strings "GenuineIntel" and "AuthenticAMD" in EBX: "Genu", "Auth".
  constexpr unsigned kGenu = 0x756e6547, kAuth = 0x68747541;
  if (vendor_b == kGenu && max_leaf >= 4) {
    read_cpuid_leaf(4, found);
  } else if (vendor_b == kAuth) {
    unsigned max_extended = 0, ebx = 0, ecx = 0, edx = 0;
    __get_cpuid(0x80000000, &max_extended, &ebx, &ecx, &edx);
    unsigned eax = 0;
    // Leaf 0x8000001D exists only with the topology extensions (0x80000001 ECX bit 22).
    if (max_extended >= 0x8000001D && __get_cpuid(0x80000001, &eax, &ebx, &ecx, &edx) && ((ecx >> 22) & 1))
      read_cpuid_leaf(0x8000001D, found);
  }
}
#endif

Detected detect() {
  Detected detected;
  const char* variables[kLevels] = {"BNORM_L1D_BYTES", "BNORM_L2_BYTES", "BNORM_L3_BYTES"};
  std::int64_t from_environment[kLevels] = {0, 0, 0};
  for (int level = 0; level < kLevels; ++level)
    if (const char* text = std::getenv(variables[level])) from_environment[level] = parse_cache_size(text);
  take_unknown(detected, from_environment, "environment");
  std::int64_t from_sysfs[kLevels] = {0, 0, 0};
  read_sysfs(from_sysfs);
  take_unknown(detected, from_sysfs, "sysfs");
#if defined(__x86_64__) || defined(__i386__)
  std::int64_t from_cpuid[kLevels] = {0, 0, 0};
  read_cpuid(from_cpuid);
  take_unknown(detected, from_cpuid, "cpuid");
#endif
  const std::int64_t defaults[kLevels] = {kDefaultCaches.l1d_bytes, kDefaultCaches.l2_bytes, kDefaultCaches.l3_bytes};
  take_unknown(detected, defaults, "default");
  return detected;
}

const Detected& detected_once() {
  static const Detected detected = detect();
  return detected;
}

}  // namespace

std::int64_t parse_cache_size(std::string_view text) {
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.remove_suffix(1);
  std::int64_t value = 0;
  std::size_t i = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) {
    if (value > (std::int64_t{1} << 40)) return 0;  // no cache is a terabyte: a corrupt file
    value = value * 10 + (text[i] - '0');
  }
  if (i == 0) return 0;
  const std::string_view unit = text.substr(i);
  if (unit.empty()) return value;
  if (unit == "K") return value << 10;
  if (unit == "M") return value << 20;
  return 0;
}

const CacheSizes& cpu_caches() {
  static const CacheSizes sizes{detected_once().bytes[0], detected_once().bytes[1], detected_once().bytes[2]};
  return sizes;
}

const char* cpu_cache_source(int level_index) {
  return level_index >= 0 && level_index < kLevels ? detected_once().source[level_index] : "none";
}

}  // namespace bnorm::kernels
