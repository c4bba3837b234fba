nnet::qc::lut_dense<{input_t}, {output_t}, {config}>({input}, {output}, {codes}, {levels}, {bias}, {mult}, {row_pos}, {row_bits});
