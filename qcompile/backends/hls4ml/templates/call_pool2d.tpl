nnet::qc::pool2d<{input_t}, {output_t}, {config}>({input}, {output});
