nnet::qc::add2<{in0_t}, {in1_t}, {output_t}, {config}>({in0}, {in1}, {output});
