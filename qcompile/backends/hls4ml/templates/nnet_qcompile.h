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

// The code of `b` bits at bit `pos` of the LSB-first code stream. A code may straddle two
// words (3, 5, 6, 7 bits): read the pair. `pos` comes from the per-row constants row_pos, so
// an unrolled lane selects fixed bits (no shifter); a shared lane reads its row's window.
template <typename CONFIG_T>
unsigned code_at(const typename CONFIG_T::word_t codes[CONFIG_T::n_words], unsigned pos, unsigned b) {
    #pragma HLS INLINE
    const unsigned w = pos / 32, sh = pos % 32;
    ap_uint<64> pair = codes[w];
    if (sh + b > 32 && w + 1 < CONFIG_T::n_words) pair |= ap_uint<64>(codes[w + 1]) << 32;
    // Codes are at most 8 bits: mask within the low byte. (A 64-bit mask made the C
    // simulation's ap_uint arithmetic 66 bits wide, a multi-word path costing a third of it.)
    const ap_uint<8> low = pair >> sh;
    return unsigned(low) & ((1u << b) - 1);
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

// The dot product of output row `o` with `n` inputs gathered by `tap(i)` (a dense layer's
// inputs, or a conv's window; -1: padding), then its requantization.
template <typename CONFIG_T>
typename CONFIG_T::res_t row_out(const typename CONFIG_T::word_t codes[CONFIG_T::n_words],
                                 const typename CONFIG_T::level_t levels[CONFIG_T::level_rows * CONFIG_T::level_cols],
                                 const typename CONFIG_T::bias_t bias[CONFIG_T::n_bias],
                                 const typename CONFIG_T::mult_t mult[CONFIG_T::n_mult],
                                 const typename CONFIG_T::row_t row_pos[CONFIG_T::n_out],
                                 const typename CONFIG_T::row_t row_bits[CONFIG_T::n_rows], unsigned o,
                                 const typename CONFIG_T::accum_t x[CONFIG_T::n_in]) {
    #pragma HLS INLINE
    const unsigned b = CONFIG_T::row_widths ? unsigned(row_bits[o]) : CONFIG_T::bits;
    const unsigned base = row_pos[o];
    typename CONFIG_T::accum_t acc = 0;
Taps:
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        acc += x[i] * weight_at<CONFIG_T>(levels, o, code_at<CONFIG_T>(codes, base + i * b, b));
    }
    return requant<CONFIG_T>(acc, mult[CONFIG_T::n_mult == 1 ? 0 : o], bias[CONFIG_T::n_bias == 1 ? 0 : o]);
}

// The partitioning both weighted kernels need for `n_par` lanes a cycle (context.lanes):
// per-row arrays in n_par cyclic banks, code words reshaped into wide words.
#define QC_PARTITION_WEIGHTS                                                          \
    const int code_factor = CONFIG_T::code_factor;                                    \
    const int level_factor = CONFIG_T::level_factor;                                  \
    const int chan_factor = CONFIG_T::chan_factor;                                    \
    const int bias_factor = CONFIG_T::bias_factor;                                    \
    const int mult_factor = CONFIG_T::mult_factor;                                    \
    const int rows_factor = CONFIG_T::rows_factor;                                    \
    _Pragma("HLS function_instantiate variable=codes,levels,bias,mult,row_pos,row_bits") \
    _Pragma("HLS ARRAY_RESHAPE variable=codes cyclic factor=code_factor")             \
    _Pragma("HLS ARRAY_PARTITION variable=levels cyclic factor=level_factor")         \
    _Pragma("HLS ARRAY_PARTITION variable=row_pos cyclic factor=chan_factor")         \
    _Pragma("HLS ARRAY_PARTITION variable=bias cyclic factor=bias_factor")            \
    _Pragma("HLS ARRAY_PARTITION variable=mult cyclic factor=mult_factor")            \
    _Pragma("HLS ARRAY_PARTITION variable=row_bits cyclic factor=rows_factor")

// Dense: `reuse` pipelined iterations (II 1); iteration r computes rows r*n_par .. +n_par-1
// in parallel, as hls4ml's Resource strategy shares n_in * n_out / reuse multipliers.
template <class data_T, class res_T, typename CONFIG_T>
void lut_dense(data_T data[CONFIG_T::n_in], res_T res[CONFIG_T::n_out],
               const typename CONFIG_T::word_t codes[CONFIG_T::n_words],
               const typename CONFIG_T::level_t levels[CONFIG_T::level_rows * CONFIG_T::level_cols],
               const typename CONFIG_T::bias_t bias[CONFIG_T::n_bias],
               const typename CONFIG_T::mult_t mult[CONFIG_T::n_mult],
               const typename CONFIG_T::row_t row_pos[CONFIG_T::n_out],
               const typename CONFIG_T::row_t row_bits[CONFIG_T::n_rows]) {
    QC_PARTITION_WEIGHTS
    #pragma HLS ARRAY_PARTITION variable=data complete
    #pragma HLS ARRAY_PARTITION variable=res complete
    typename CONFIG_T::accum_t x[CONFIG_T::n_in];
    #pragma HLS ARRAY_PARTITION variable=x complete
    for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
        #pragma HLS UNROLL
        x[i] = data[i];
    }
Reuse:
    for (unsigned r = 0; r < CONFIG_T::reuse; r++) {
        #pragma HLS PIPELINE II=1
    Lanes:
        for (unsigned j = 0; j < CONFIG_T::n_par; j++) {
            #pragma HLS UNROLL
            const unsigned o = r * CONFIG_T::n_par + j;
            if (o < CONFIG_T::n_out) res[o] = row_out<CONFIG_T>(codes, levels, bias, mult, row_pos, row_bits, o, x);
        }
    }
}

// Conv2d: for every output pixel, the dense schedule above over the filters (`reuse`
// iterations of n_par filters), each filter's window gathered once per pixel (zero padding).
template <class data_T, class res_T, typename CONFIG_T>
void lut_conv2d(data_T data[CONFIG_T::n_chan * CONFIG_T::in_height * CONFIG_T::in_width],
                res_T res[CONFIG_T::n_filt * CONFIG_T::out_height * CONFIG_T::out_width],
                const typename CONFIG_T::word_t codes[CONFIG_T::n_words],
                const typename CONFIG_T::level_t levels[CONFIG_T::level_rows * CONFIG_T::level_cols],
                const typename CONFIG_T::bias_t bias[CONFIG_T::n_bias],
                const typename CONFIG_T::mult_t mult[CONFIG_T::n_mult],
                const typename CONFIG_T::row_t row_pos[CONFIG_T::n_out],
                const typename CONFIG_T::row_t row_bits[CONFIG_T::n_rows]) {
    QC_PARTITION_WEIGHTS
    #pragma HLS ARRAY_PARTITION variable=data complete
    #pragma HLS ARRAY_PARTITION variable=res complete
    const unsigned cg = CONFIG_T::n_chan / CONFIG_T::groups;
    const unsigned og = CONFIG_T::n_filt / CONFIG_T::groups;
    const unsigned kk = CONFIG_T::filt_height * CONFIG_T::filt_width;
Pixels:
    for (unsigned p = 0; p < CONFIG_T::out_height * CONFIG_T::out_width; p++) {
    Reuse:
        for (unsigned r = 0; r < CONFIG_T::reuse; r++) {
            #pragma HLS PIPELINE II=1
            const unsigned oh = p / CONFIG_T::out_width, ow = p % CONFIG_T::out_width;
        Lanes:
            for (unsigned j = 0; j < CONFIG_T::n_par; j++) {
                #pragma HLS UNROLL
                const unsigned o = r * CONFIG_T::n_par + j;
                if (o >= CONFIG_T::n_filt) continue;
                const unsigned g = o / og;
                typename CONFIG_T::accum_t x[CONFIG_T::n_in];
                #pragma HLS ARRAY_PARTITION variable=x complete
            Window:
                for (unsigned i = 0; i < CONFIG_T::n_in; i++) {
                    #pragma HLS UNROLL
                    const unsigned ci = i / kk, kh = (i % kk) / CONFIG_T::filt_width, kw = i % CONFIG_T::filt_width;
                    const int ih = int(oh * CONFIG_T::stride_height + kh * CONFIG_T::dilation_height) - int(CONFIG_T::pad_top);
                    const int iw = int(ow * CONFIG_T::stride_width + kw * CONFIG_T::dilation_width) - int(CONFIG_T::pad_left);
                    const bool inside = ih >= 0 && iw >= 0 && ih < int(CONFIG_T::in_height) && iw < int(CONFIG_T::in_width);
                    x[i] = inside ? typename CONFIG_T::accum_t(data[((g * cg + ci) * CONFIG_T::in_height + ih) * CONFIG_T::in_width + iw])
                                  : typename CONFIG_T::accum_t(0);
                }
                res[o * CONFIG_T::out_height * CONFIG_T::out_width + p] =
                    row_out<CONFIG_T>(codes, levels, bias, mult, row_pos, row_bits, o, x);
            }
        }
    }
}

// Element-wise kernels: `reuse` pipelined iterations of n_par parallel elements.
// (The body is the variadic part: its commas would split an ordinary macro argument.)
#define QC_ELEMENTS(i, ...)                                         \
    for (unsigned r_ = 0; r_ < CONFIG_T::reuse; r_++) {             \
        _Pragma("HLS PIPELINE II=1")                                \
        for (unsigned j_ = 0; j_ < CONFIG_T::n_par; j_++) {         \
            _Pragma("HLS UNROLL")                                   \
            const unsigned i = r_ * CONFIG_T::n_par + j_;           \
            if (i < CONFIG_T::n_elem) __VA_ARGS__                   \
        }                                                           \
    }

template <class in0_T, class in1_T, class res_T, typename CONFIG_T>
void add2(in0_T a[CONFIG_T::n_elem], in1_T b[CONFIG_T::n_elem], res_T res[CONFIG_T::n_elem]) {
    QC_ELEMENTS(i, {
        typename CONFIG_T::accum_t acc = typename CONFIG_T::accum_t(a[i]) * CONFIG_T::m0;
        acc += typename CONFIG_T::accum_t(b[i]) * CONFIG_T::m1;
        res[i] = requant<CONFIG_T>(acc);
    })
}

template <class in0_T, class in1_T, class in2_T, class res_T, typename CONFIG_T>
void add3(in0_T a[CONFIG_T::n_elem], in1_T b[CONFIG_T::n_elem], in2_T c[CONFIG_T::n_elem],
          res_T res[CONFIG_T::n_elem]) {
    QC_ELEMENTS(i, {
        typename CONFIG_T::accum_t acc = typename CONFIG_T::accum_t(a[i]) * CONFIG_T::m0;
        acc += typename CONFIG_T::accum_t(b[i]) * CONFIG_T::m1;
        acc += typename CONFIG_T::accum_t(c[i]) * CONFIG_T::m2;
        res[i] = requant<CONFIG_T>(acc);
    })
}

// Window reduction over (C, H, W): max (padding never wins) or sum (zero padding); output
// element i is (c, oh, ow) in channels-first order.
template <class data_T, class res_T, typename CONFIG_T>
void pool2d(data_T data[CONFIG_T::n_chan * CONFIG_T::in_height * CONFIG_T::in_width],
            res_T res[CONFIG_T::n_chan * CONFIG_T::out_height * CONFIG_T::out_width]) {
    const unsigned plane = CONFIG_T::out_height * CONFIG_T::out_width;
    QC_ELEMENTS(i, {
        const unsigned c = i / plane, oh = (i % plane) / CONFIG_T::out_width, ow = i % CONFIG_T::out_width;
        typename CONFIG_T::accum_t acc = 0;
        bool first = true;
        for (unsigned kh = 0; kh < CONFIG_T::pool_height; kh++) {
            #pragma HLS UNROLL
            for (unsigned kw = 0; kw < CONFIG_T::pool_width; kw++) {
                #pragma HLS UNROLL
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
        res[i] = CONFIG_T::is_max ? res_T(acc) : requant<CONFIG_T>(acc);
    })
}

template <class data_T, class res_T, typename CONFIG_T>
void clip(data_T data[CONFIG_T::n_elem], res_T res[CONFIG_T::n_elem]) {
    QC_ELEMENTS(i, { res[i] = requant<CONFIG_T>(typename CONFIG_T::accum_t(data[i])); })
}

template <class data_T, class res_T, typename CONFIG_T>
void copy(data_T data[CONFIG_T::n_elem], res_T res[CONFIG_T::n_elem]) {
    QC_ELEMENTS(i, { res[i] = data[i]; })
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
