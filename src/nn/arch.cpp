#include "bnorm/nn/arch.hpp"

#include <charconv>
#include <vector>

#include "bnorm/error.hpp"
#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/group_norm.hpp"
#include "bnorm/nn/layer_norm.hpp"

namespace bnorm {
namespace {

constexpr const char* kDefaultCnn = "conv3x3:32,bn,relu,maxpool2,conv3x3:64,bn,relu,maxpool2,flatten,fc:10";
constexpr const char* kDefaultMlp = "fc:256,bn,relu,fc:256,bn,relu,fc:10";

std::vector<std::string> tokenize(const std::string& spec) {
  std::vector<std::string> tokens;
  std::string current;
  bool comment = false;
  for (char ch : spec + "\n") {
    if (comment) {
      comment = ch != '\n';
      if (comment) continue;
    }
    if (ch == '#') {
      comment = true;
      ch = ',';
    }
    if (ch == ',' || ch == '\n' || ch == ' ' || ch == '\t' || ch == '\r') {
      if (!current.empty()) tokens.push_back(current);
      current.clear();
    } else {
      current += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    }
  }
  return tokens;
}

bool is_activation(const std::string& t) { return t == "relu" || t == "tanh" || t == "sigmoid"; }

// bn, gn:<groups> or ln: a layer whose normalization makes a bias just before it redundant.
bool is_normalization(const std::string& t) { return t == "bn" || t == "ln" || t.rfind("gn:", 0) == 0; }

// Reorders or drops the bn tokens for the requested placement.
std::vector<std::string> place_bn(std::vector<std::string> t, BnPlacement placement) {
  if (placement == BnPlacement::none) {
    std::erase(t, std::string("bn"));
    return t;
  }
  for (std::size_t i = 0; i + 1 < t.size(); ++i) {
    const bool bn_then_act = t[i] == "bn" && is_activation(t[i + 1]);
    const bool act_then_bn = is_activation(t[i]) && t[i + 1] == "bn";
    if ((placement == BnPlacement::after && bn_then_act) || (placement == BnPlacement::before && act_then_bn)) {
      std::swap(t[i], t[i + 1]);
      ++i;  // the pair is settled
    }
  }
  return t;
}

std::int64_t number(const std::string& text, const std::string& token) {
  std::int64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || v < 0)
    throw Error("--arch: '" + token + "': '" + text + "' is not a non-negative whole number");
  return v;
}

// "name:a:b" → {"name", "a", "b"}
std::vector<std::string> fields(const std::string& token) {
  std::vector<std::string> parts;
  std::size_t start = 0;
  while (true) {
    const std::size_t colon = token.find(':', start);
    parts.push_back(token.substr(start, colon - start));
    if (colon == std::string::npos) break;
    start = colon + 1;
  }
  return parts;
}

// Optional ":s<n>" / ":p<n>" suffixes.
void read_options(const std::vector<std::string>& parts, std::size_t from, const std::string& token,
                  std::int64_t* stride, std::int64_t* pad) {
  for (std::size_t i = from; i < parts.size(); ++i) {
    const std::string& p = parts[i];
    if (p.size() > 1 && p[0] == 's' && stride)
      *stride = number(p.substr(1), token);
    else if (p.size() > 1 && p[0] == 'p' && pad)
      *pad = number(p.substr(1), token);
    else
      throw Error("--arch: '" + token + "': unknown option '" + p + "'");
  }
}

nlohmann::json token_config(const std::string& token, const Shape& shape, bool norm_follows,
                            const BatchNormOptions& bn) {
  const auto parts = fields(token);
  const std::string& head = parts[0];
  // The layer writes its own config, so every option (freezing included) is in it.
  if (token == "bn") return BatchNorm(shape.at(0), bn).config();
  // GroupNorm and LayerNorm take the eps of batch norm and are always affine (PyTorch's default).
  if (head == "gn" && parts.size() == 2) {
    const std::int64_t groups = number(parts[1], token);
    try {
      return GroupNorm(groups, shape.at(0), bn.eps).config();
    } catch (const Error& e) {
      throw Error("--arch: '" + token + "' on " + std::to_string(shape.at(0)) + " channels: " + e.what());
    }
  }
  if (token == "ln") return LayerNorm(shape, bn.eps).config();
  if (is_activation(token) || token == "flatten") return {{"type", token}};
  if (token == "gap") return {{"type", "global_avgpool"}};
  if ((head == "fc" || head == "linear") && parts.size() == 2)
    return {{"type", "linear"},
            {"in_features", shape.at(0)},
            {"out_features", number(parts[1], token)},
            {"bias", !norm_follows}};
  if (head == "dropout" && parts.size() == 2) {
    char* end = nullptr;
    const float p = std::strtof(parts[1].c_str(), &end);
    if (end == parts[1].c_str() || *end) throw Error("--arch: '" + token + "': dropout needs a probability");
    return {{"type", "dropout"}, {"p", p}};
  }
  if (head.rfind("conv", 0) == 0 && parts.size() >= 2) {
    const std::string size = head.substr(4);
    const std::size_t x = size.find('x');
    if (x == std::string::npos) throw Error("--arch: '" + token + "': write the kernel as conv<KH>x<KW>, e.g. conv3x3");
    const std::int64_t kh = number(size.substr(0, x), token), kw = number(size.substr(x + 1), token);
    std::int64_t stride = 1, pad = (std::min(kh, kw) - 1) / 2;
    read_options(parts, 2, token, &stride, &pad);
    return {{"type", "conv2d"},        {"in_channels", shape.at(0)}, {"out_channels", number(parts[1], token)},
            {"kernel_size", {kh, kw}}, {"stride", stride},           {"padding", pad},
            {"bias", !norm_follows}};
  }
  for (const char* pool : {"maxpool", "avgpool"})
    if (head.rfind(pool, 0) == 0 && head.size() > 7) {
      const std::int64_t k = number(head.substr(7), token);
      std::int64_t stride = k;
      read_options(parts, 1, token, &stride, nullptr);
      return {{"type", std::string(pool) + "2d"}, {"kernel_size", k}, {"stride", stride}};
    }
  throw Error(
      "--arch: unknown token '" + token +
      "' (expected conv<K>x<K>:<out>, fc:<out>, bn, gn:<groups>, ln, relu, tanh, sigmoid, maxpool<k>, avgpool<k>, gap, "
      "flatten, dropout:<p>)");
}

}  // namespace

std::string expand_named_arch(const std::string& spec) {
  if (spec == "cnn") return kDefaultCnn;
  if (spec == "mlp") return kDefaultMlp;
  return spec;
}

nlohmann::json parse_arch(const std::string& spec, const Shape& input_shape, BnPlacement placement,
                          const BatchNormOptions& bn_options) {
  const auto tokens = place_bn(tokenize(expand_named_arch(spec)), placement);
  if (tokens.empty()) throw Error("--arch: no layers given");
  if (tokens.size() > 1000) throw Error("--arch: more than 1000 layers");
  nlohmann::json layers = nlohmann::json::array();
  Shape shape = input_shape;
  auto add = [&](const nlohmann::json& config, const std::string& token) {
    try {
      shape = make_layer(config)->output_shape(shape);
    } catch (const Error& e) {
      throw Error("--arch: '" + token + "' (layer " + std::to_string(layers.size()) + "): " + e.what());
    }
    layers.push_back(config);
  };
  for (std::size_t i = 0; i < tokens.size(); ++i) {
    const std::string& token = tokens[i];
    const bool is_fc = token.rfind("fc:", 0) == 0 || token.rfind("linear:", 0) == 0;
    if (is_fc && shape.size() > 1) add({{"type", "flatten"}}, "flatten");
    const bool norm_follows = i + 1 < tokens.size() && is_normalization(tokens[i + 1]);
    add(token_config(token, shape, norm_follows, bn_options), token);
  }
  return {{"input_shape", input_shape}, {"layers", layers}};
}

}  // namespace bnorm
