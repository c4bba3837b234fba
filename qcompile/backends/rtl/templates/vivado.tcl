# Vivado place-and-route of the qcompile RTL artifact (generated from a template by
# `qcompile export --target {profile}`):   vivado -mode batch -source build_vivado.tcl
# Out-of-context synthesis (the model alone, no board I/O), then place, route, reports.
set top "{top}"
set part "{part}"
set root [file normalize [file dirname [info script]]]
set out "$root/vivado_out"
file mkdir "$out"
create_project -in_memory -part $part
read_verilog [concat [glob "$root/src/*.v"] [glob -nocomplain "$root/src/static/*.v"]]
foreach mem [glob -nocomplain "$root/src/memfiles/*.mem"] {{ add_files $mem }}
read_xdc -mode out_of_context "$root/src/$top.xdc"
synth_design -top $top -part $part -mode out_of_context
report_utilization -file "$out/post_synth_util.rpt"
opt_design
place_design
route_design
report_utilization -file "$out/post_route_util.rpt"
report_timing_summary -file "$out/post_route_timing.rpt"
write_checkpoint -force "$out/$top.dcp"
puts "target clock {clock_period} ns; reports in $out"
