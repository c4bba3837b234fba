// qcompile's integer kernels for hls4ml: bit-packed dense/conv, residual add, pools.
// The arithmetic is the numeric contract (v1) of qcompile's IR, and nothing else:
//   w   = step * code + zero[row]   (affine levels)   or   levels[row][code]   (int8 table)
//   acc = sum x * w                 (ap_int accumulators sized by the verifier)
//   y   = clip((acc * mult[c] + bias[c] + 2^(shift-1)) >> shift, lo, hi)   (a multiply-add)
// ">>" on ap_int is an arithmetic (flooring) shift, so "+ 2^(shift-1)" rounds half up
// (AP_RND); the clip saturates (AP_SAT) to the activation's range, which may be narrower than
// its type (ReLU6). Tensors are channels-first (C, H, W) flattened, as in the IR.
#ifndef NNET_QCOMPILE_H_
#define NNET_QCOMPILE_H_

#include "ap_int.h"
#include "hls_stream.h"

namespace nnet {
namespace qc {

// clip((acc * m + b + 2^(shift-1)) >> shift, lo, hi) in the product type.
template <typename CONFIG_T>
typename CONFIG_T::res_t requant(typename CONFIG_T::accum_t acc, typename CONFIG_T::mult_t m,
                                 typename CONFIG_T::bias_t b) {
    #pragma HLS INLINE
    typename CONFIG_T::prod_t v = typename CONFIG_T::prod_t(acc) * m + b;
    if (CONFIG_T::shift > 0) {
        v = (v + (typename CONFIG_T::prod_t(1) << (CONFIG_T::shift > 0 ? CONFIG_T::shift - 1 : 0))) >> CONFIG_T::shift;
    }
    if (v < CONFIG_T::lo) v = CONFIG_T::lo;
    if (v > CONFIG_T::hi) v = CONFIG_T::hi;
    return typename CONFIG_T::res_t(v);
}

template <typename CONFIG_T>
typename CONFIG_T::res_t requant(typename CONFIG_T::accum_t acc) {
    #pragma HLS INLINE
    return requant<CONFIG_T>(acc, typename CONFIG_T::mult_t(CONFIG_T::multiplier),
                             typename CONFIG_T::bias_t(0));
}

// Code i of output row `row`. Codes are a dense LSB-first bit stream in 32-bit words; a layer
// with per-channel widths (row_widths) packs each row at its own width from a word boundary.
// A code may straddle two words (3, 5, 6, 7 bits): read the pair.
template <typename CONFIG_T>
unsigned code_at(const typename CONFIG_T::word_t codes[CONFIG_T::n_words],
                 const typename CONFIG_T::row_t row_start[CONFIG_T::n_rows],
                 const typename CONFIG_T::row_t row_bits[CONFIG_T::n_rows], unsigned row, unsigned i) {
    #pragma HLS INLINE
    const unsigned b = CONFIG_T::row_widths ? unsigned(row_bits[row]) : CONFIG_T::bits;
    const unsigned pos = CONFIG_T::row_widths ? unsigned(row_start[row]) * 32 + i * b
                                              : (row * CONFIG_T::per_row + i) * CONFIG_T::bits;
    const unsigned w = pos / 32, sh = pos % 32;
    ap_uint<64> pair = codes[w];
    if (sh + b > 32) pair |= ap_uint<64>(codes[w + 1]) << 32;
    return unsigned((pair >> sh) & ((ap_uint<64>(1) << b) - 1));
}

// The integer weight a code of row `row` stands for.
template <typename CONFIG_T>
typename CONFIG_T::weight_t weight_at(const typename CONFIG_T::level_t levels[CONFIG_T::level_rows * CONFIG_T::level_cols],
                                      unsigned row, unsigned code) {
    #pragma HLS INLINE
    const unsigned r = CONFIG_T::level_rows == 1 ? 0 : row;
    if (CONFIG_T::affine) return typename CONFIG_T::weight_t(CONFIG_T::step * int(code) + levels[r]);
    return typename CONFIG_T::weight_t(levels[r * CONFIG_T::level_cols + code]);
}

template <class data_T, class res_T, typename CONFIG_T>
void lut_dense(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out],
               const typename CONFIG_T::word_t codes[CONFIG_T::n_words],
               const typename CONFIG_T::level_t levels[CONFIG_T::level_rows * CONFIG_T::level_cols],
               const typename CONFIG_T::bias_t bias[CONFIG_T::n_bias],
               const typename CONFIG_T::mult_t mult[CONFIG_T::n_mult],
               const typename CONFIG_T::row_t row_start[CONFIG_T::n_rows],
               const typename CONFIG_T::row_t row_bits[CONFIG_T::n_rows]) {
Outputs:
    for (unsigned o = 0; o < CONFIG_T::n_out; o++) {
        #pragma HLS PIPELINE II=CONFIG_T::reuse_factor
        typename CONFIG_T::accum_t acc = 0;
    Inputs:
        for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
            unsigned code = code_at<CONFIG_T>(codes, row_start, row_bits, o, i);
            acc += data[i] * weight_at<CONFIG_T>(levels, o, code);
        }
        res[o] = requant<CONFIG_T>(acc, mult[CONFIG_T::n_mult == 1 ? 0 : o],
                                   bias[CONFIG_T::n_bias == 1 ? 0 : o]);
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void lut_conv2d(data_T data[CONFIG_T::n_chan * CONFIG_T::in_height * CONFIG_T::in_width],
                res_T res[CONFIG_T::n_filt * CONFIG_T::out_height * CONFIG_T::out_width],
                const typename CONFIG_T::word_t codes[CONFIG_T::n_words],
                const typename CONFIG_T::level_t levels[CONFIG_T::level_rows * CONFIG_T::level_cols],
                const typename CONFIG_T::bias_t bias[CONFIG_T::n_bias],
                const typename CONFIG_T::mult_t mult[CONFIG_T::n_mult],
                const typename CONFIG_T::row_t row_start[CONFIG_T::n_rows],
                const typename CONFIG_T::row_t row_bits[CONFIG_T::n_rows]) {
    const unsigned cg = CONFIG_T::n_chan / CONFIG_T::groups;
    const unsigned og = CONFIG_T::n_filt / CONFIG_T::groups;
Filters:
    for (unsigned o = 0; o < CONFIG_T::n_filt; o++) {
        const unsigned g = o / og;
    Rows:
        for (unsigned oh = 0; oh < CONFIG_T::out_height; oh++) {
        Cols:
            for (unsigned ow = 0; ow < CONFIG_T::out_width; ow++) {
                #pragma HLS PIPELINE II=CONFIG_T::reuse_factor
                typename CONFIG_T::accum_t acc = 0;
            Taps:
                for (unsigned ci = 0; ci < cg; ci++) {
                    for (unsigned kh = 0; kh < CONFIG_T::filt_height; kh++) {
                        for (unsigned kw = 0; kw < CONFIG_T::filt_width; kw++) {
                            int ih = int(oh * CONFIG_T::stride_height + kh * CONFIG_T::dilation_height) - int(CONFIG_T::pad_top);
                            int iw = int(ow * CONFIG_T::stride_width + kw * CONFIG_T::dilation_width) - int(CONFIG_T::pad_left);
                            if (ih < 0 || iw < 0 || ih >= int(CONFIG_T::in_height) || iw >= int(CONFIG_T::in_width)) continue;
                            unsigned i = (ci * CONFIG_T::filt_height + kh) * CONFIG_T::filt_width + kw;
                            unsigned code = code_at<CONFIG_T>(codes, row_start, row_bits, o, i);
                            acc += data[((g * cg + ci) * CONFIG_T::in_height + ih) * CONFIG_T::in_width + iw] *
                                   weight_at<CONFIG_T>(levels, o, code);
                        }
                    }
                }
                res[(o * CONFIG_T::out_height + oh) * CONFIG_T::out_width + ow] =
                    requant<CONFIG_T>(acc, mult[CONFIG_T::n_mult == 1 ? 0 : o],
                                      bias[CONFIG_T::n_bias == 1 ? 0 : o]);
            }
        }
    }
}

template <class in0_T, class in1_T, class res_T, typename CONFIG_T>
void add2(in0_T a[CONFIG_T::n_elem], in1_T b[CONFIG_T::n_elem], res_T res[CONFIG_T::n_elem]) {
    for (unsigned i = 0; i < CONFIG_T::n_elem; i++) {
        #pragma HLS UNROLL factor=CONFIG_T::unroll
        typename CONFIG_T::accum_t acc = typename CONFIG_T::accum_t(a[i]) * CONFIG_T::m0;
        acc += typename CONFIG_T::accum_t(b[i]) * CONFIG_T::m1;
        res[i] = requant<CONFIG_T>(acc);
    }
}

template <class in0_T, class in1_T, class in2_T, class res_T, typename CONFIG_T>
void add3(in0_T a[CONFIG_T::n_elem], in1_T b[CONFIG_T::n_elem], in2_T c[CONFIG_T::n_elem],
          res_T res[CONFIG_T::n_elem]) {
    for (unsigned i = 0; i < CONFIG_T::n_elem; i++) {
        #pragma HLS UNROLL factor=CONFIG_T::unroll
        typename CONFIG_T::accum_t acc = typename CONFIG_T::accum_t(a[i]) * CONFIG_T::m0;
        acc += typename CONFIG_T::accum_t(b[i]) * CONFIG_T::m1;
        acc += typename CONFIG_T::accum_t(c[i]) * CONFIG_T::m2;
        res[i] = requant<CONFIG_T>(acc);
    }
}

// Window reduction over (C, H, W): max (padding never wins) or sum (zero padding).
template <class data_T, class res_T, typename CONFIG_T>
void pool2d(data_T data[CONFIG_T::n_chan * CONFIG_T::in_height * CONFIG_T::in_width],
            res_T res[CONFIG_T::n_chan * CONFIG_T::out_height * CONFIG_T::out_width]) {
    for (unsigned c = 0; c < CONFIG_T::n_chan; c++) {
        for (unsigned oh = 0; oh < CONFIG_T::out_height; oh++) {
            for (unsigned ow = 0; ow < CONFIG_T::out_width; ow++) {
                #pragma HLS PIPELINE II=CONFIG_T::reuse_factor
                typename CONFIG_T::accum_t acc = 0;
                bool first = true;
                for (unsigned kh = 0; kh < CONFIG_T::pool_height; kh++) {
                    for (unsigned kw = 0; kw < CONFIG_T::pool_width; kw++) {
                        int ih = int(oh * CONFIG_T::stride_height + kh) - int(CONFIG_T::pad_top);
                        int iw = int(ow * CONFIG_T::stride_width + kw) - int(CONFIG_T::pad_left);
                        if (ih < 0 || iw < 0 || ih >= int(CONFIG_T::in_height) || iw >= int(CONFIG_T::in_width)) continue;
                        typename CONFIG_T::accum_t v = data[(c * CONFIG_T::in_height + ih) * CONFIG_T::in_width + iw];
                        if (CONFIG_T::is_max) {
                            if (first || v > acc) acc = v;
                        } else {
                            acc += v;
                        }
                        first = false;
                    }
                }
                unsigned out = (c * CONFIG_T::out_height + oh) * CONFIG_T::out_width + ow;
                res[out] = CONFIG_T::is_max ? res_T(acc) : requant<CONFIG_T>(acc);
            }
        }
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void clip(data_T data[CONFIG_T::n_elem], res_T res[CONFIG_T::n_elem]) {
    for (unsigned i = 0; i < CONFIG_T::n_elem; i++) {
        #pragma HLS UNROLL factor=CONFIG_T::unroll
        res[i] = requant<CONFIG_T>(typename CONFIG_T::accum_t(data[i]));
    }
}

template <class data_T, class res_T, typename CONFIG_T>
void copy(data_T data[CONFIG_T::n_elem], res_T res[CONFIG_T::n_elem]) {
    for (unsigned i = 0; i < CONFIG_T::n_elem; i++) {
        #pragma HLS UNROLL factor=CONFIG_T::unroll
        res[i] = data[i];
    }
}

// io_stream: each layer drains its input streams into a buffer (the elements arrive in the
// same row-major order as the io_parallel arrays), runs the kernel above, and streams out.
template <class array_T, unsigned N>
void from_stream(hls::stream<array_T> &in, typename array_T::value_type buf[N]) {
    for (unsigned i = 0; i < N / array_T::size; i++) {
        #pragma HLS PIPELINE
        array_T chunk = in.read();
        for (unsigned j = 0; j < array_T::size; j++) {
            #pragma HLS UNROLL
            buf[i * array_T::size + j] = chunk[j];
        }
    }
}

template <class array_T, unsigned N>
void to_stream(typename array_T::value_type buf[N], hls::stream<array_T> &out) {
    for (unsigned i = 0; i < N / array_T::size; i++) {
        #pragma HLS PIPELINE
        array_T chunk;
        for (unsigned j = 0; j < array_T::size; j++) {
            #pragma HLS UNROLL
            chunk[j] = buf[i * array_T::size + j];
        }
        out.write(chunk);
    }
}

} // namespace qc
} // namespace nnet

#endif
