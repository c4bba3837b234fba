nnet::qc::clip<{input_t}, {output_t}, {config}>({input}, {output});
