// Links against bnorm and calls into it: a model built from an architecture
// string, one forward pass, the output shape printed.
#include <cstdio>

#include "bnorm/bnorm.hpp"

int main() {
  bnorm::Model model =
      bnorm::Model::from_architecture(bnorm::parse_arch("fc:4,bn,relu,fc:3", {5}, bnorm::BnPlacement::before, {}));
  bnorm::Rng rng(1);
  model.init_parameters(rng);
  const bnorm::Tensor x({2, 5});
  const bnorm::Tensor& y = model.forward(x, bnorm::Mode::train);
  std::printf("consumer: output %s\n", bnorm::shape_str(y.shape()).c_str());
  return y.has_shape({2, 3}) ? 0 : 1;
}
