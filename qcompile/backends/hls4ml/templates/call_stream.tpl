{{  // {kernel}, io_stream: buffer the inputs, run the kernel, stream the result
{reads}
    {output_t}::value_type {obuf}[{n_out}];
    {call}
    nnet::qc::to_stream<{output_t}, {n_out}>({obuf}, {output});
}}
