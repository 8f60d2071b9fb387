#pragma once
// Networks described in one line, for the command line and config files:
//
//   conv3x3:32,bn,relu,maxpool2,conv3x3:64,bn,relu,maxpool2,flatten,fc:10
//
// Tokens, separated by commas (spaces, newlines and '#' comments to the end
// of a line are ignored, so a file can hold one token per line):
//   conv<KH>x<KW>:<out>[:s<stride>][:p<pad>]  2-D convolution; padding defaults
//                                            to "same" size, (min(KH,KW)−1)/2
//   fc:<out>                                 fully connected (Linear); flattens
//                                            a (C, H, W) input first by itself
//   bn                                       batch norm over the channels/units
//   gn:<groups>                              GroupNorm: each example's channels in
//                                            <groups> groups (must divide them)
//   ln                                       LayerNorm over all of an example's values
//   relu | tanh | sigmoid                    activation
//   maxpool<k>[:s<stride>] | avgpool<k>[:s<stride>]   pooling, stride k by default
//   gap                                      global average pooling
//   flatten                                  (C, H, W) → (C·H·W)
//   dropout:<p>                              inverted dropout
// A conv or fc directly followed by bn, gn or ln gets no bias (beta replaces
// it). gn and ln take batch norm's eps and are always affine.
#include <nlohmann/json.hpp>
#include <string>

#include "bnorm/nn/batchnorm.hpp"
#include "bnorm/nn/layer_factory.hpp"

namespace bnorm {

// Named architectures: "cnn" (the default CNN) and "mlp" (784-256-256-10
// with BN); any other text is returned as it is.
std::string expand_named_arch(const std::string& spec);

// Parses spec for one example of input_shape and returns
// Model::architecture()-style JSON. placement rearranges the bn tokens:
// before puts each bn directly ahead of an adjacent activation, after puts it
// directly behind, none removes every bn. It is about batch norm only: gn and
// ln stay where the spec puts them, so a spec with gn keeps it under
// --bn none. Throws Error naming the token.
nlohmann::json parse_arch(const std::string& spec, const Shape& input_shape, BnPlacement placement,
                          const BatchNormOptions& bn_options);

}  // namespace bnorm
