#pragma once
// Winograd's minimal filtering F(2x2, 3x3) for 3x3 convolutions with stride 1
// (Lavin and Gray, 2016): each 2x2 block of outputs ("tile") comes from the
// 4x4 input patch under it with 16 multiplications per input channel where
// the direct sum takes 36. With the transforms
//
//   U = G g Gᵀ    (4x4, a filter g (3x3) of one output and one input channel)
//   V = Bᵀ d B    (4x4, an input patch d (4x4) of one channel)
//   y = Aᵀ M A    (2x2, the tile's outputs), M = Σ over input channels of U ⊙ V
//
// the sum over channels at each of the 16 positions ξ of the 4x4 is a matrix
// product, M[ξ] (O, T) = U[ξ] (O, C) · V[ξ] (C, T), over all T tiles of the
// batch at once, and that product is the only O(C·O) work.
//
// The backward passes are the adjoints of these same steps (the gradient of
// exactly what the forward computed, so the finite-difference checks hold):
//
//   dM = A dy Aᵀ,   dU[ξ] = dM[ξ] · V[ξ]ᵀ,   dg = Gᵀ dU G,
//   dV[ξ] = U[ξ]ᵀ · dM[ξ],   dd = B dV Bᵀ, added into dx where the patches overlap.
//
// Layout: u (16, O, C), v (16, C, T), m (16, O, T), with the tiles of example
// n, tile row r, tile column s at t = (n·TH + r)·TW + s. A row of v or m
// holds winograd_row_length(T) floats, the columns past T zero (written by
// the transforms that make v and dm), so products run in whole vectors. The
// 16 matrices of
// one array start winograd_position_stride apart, not back to back: every
// tile writes or reads one value in each of the 16, and at a distance of a
// multiple of 4 KiB (O·T·4 bytes is one for the default CNN) the 16 streams
// fell into one L1 set and took 4x longer. Tile (r, s) covers
// outputs (2r.., 2s..) and reads inputs from (2r − p, 2s − p); outputs past
// the last row or column (odd OH, OW) are computed and dropped, inputs
// outside the plane read as zero. Raw pointers and sizes, no state; each
// call is parallel over its planes.
#include <cstdint>

#include "bnorm/kernels/conv.hpp"

namespace bnorm::kernels {

// Positions of the transformed 4x4 tile: the number of matrix products.
constexpr std::int64_t kWinogradPositions = 16;

// Whether a convolution has the shape F(2x2, 3x3) computes: a 3x3 kernel with
// stride 1 (any zero padding).
inline bool winograd_applies(const ConvGeometry& g) { return g.KH == 3 && g.KW == 3 && g.stride == 1; }

// Tiles per example: ⌈OH/2⌉·⌈OW/2⌉.
inline std::int64_t winograd_tile_rows(const ConvGeometry& g) { return (g.out_h() + 1) / 2; }
inline std::int64_t winograd_tile_cols(const ConvGeometry& g) { return (g.out_w() + 1) / 2; }
inline std::int64_t winograd_tiles(const ConvGeometry& g) { return winograd_tile_rows(g) * winograd_tile_cols(g); }

// Floats in a row of T tiles: T rounded up to 8.
inline std::int64_t winograd_row_length(std::int64_t T) { return (T + 7) / 8 * 8; }

// Floats from the start of one position's (rows, cols) matrix to the next:
// rows·cols rounded up to a cache line, plus one line, so that consecutive
// matrices start in different cache sets.
inline std::int64_t winograd_position_stride(std::int64_t rows, std::int64_t cols) {
  constexpr std::int64_t kLine = 16;  // floats in a 64-byte line
  return (rows * cols + kLine - 1) / kLine * kLine + kLine;
}

// u (16, O, C) = G g Gᵀ for every filter of w (O, C, 3, 3). Assigns.
void winograd_filter(float* u, const float* w, std::int64_t O, std::int64_t C);
// The adjoint: dw (O, C, 3, 3) = Gᵀ du G. Assigns.
void winograd_filter_adjoint(float* dw, const float* du, std::int64_t O, std::int64_t C);

// v (16, C, N·tiles) = Bᵀ d B for every input patch of x (N, C, H, W), and
// zeros past the last tile. Assigns.
void winograd_input(float* v, const float* x, std::int64_t N, const ConvGeometry& g);
// The adjoint: dx (N, C, H, W) = Σ over patches of B dv Bᵀ, each added where
// its patch lies in the plane. Assigns dx.
void winograd_input_adjoint(float* dx, const float* dv, std::int64_t N, const ConvGeometry& g);

// y (N, O, OH, OW) = Aᵀ m A for every tile of m (16, O, N·tiles), plus bias
// (O) unless it is null. Assigns.
void winograd_output(float* y, const float* m, const float* bias, std::int64_t N, std::int64_t O,
                     const ConvGeometry& g);
// The adjoint: dm (16, O, N·tiles) = A dy Aᵀ, dy taken as zero past the last
// output row and column, and zeros past the last tile. Assigns.
void winograd_output_adjoint(float* dm, const float* dy, std::int64_t N, std::int64_t O, const ConvGeometry& g);

}  // namespace bnorm::kernels
