nnet::qc::lut_dense<{input_t}, {output_t}, {config}>({input}, {output}, {codes}, {lut}, {bias});
