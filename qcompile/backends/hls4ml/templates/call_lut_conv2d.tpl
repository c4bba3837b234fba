nnet::qc::lut_conv2d<{input_t}, {output_t}, {config}>({input}, {output}, {codes}, {levels}, {bias}, {mult}, {row_pos}, {row_bits});
