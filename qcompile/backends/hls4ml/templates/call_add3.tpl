nnet::qc::add3<{in0_t}, {in1_t}, {in2_t}, {output_t}, {config}>({in0}, {in1}, {in2}, {output});
