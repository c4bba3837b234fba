nnet::qc::copy<{input_t}, {output_t}, {config}>({input}, {output});
