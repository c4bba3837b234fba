nnet::qc::lut_conv2d<{input_t}, {output_t}, {config}>({input}, {output}, {codes}, {lut}, {bias});
