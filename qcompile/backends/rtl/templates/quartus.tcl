# Quartus compilation of the qcompile RTL artifact (generated from a template by
# `qcompile export --target {profile}`):   quartus_sh -t build_quartus.tcl
# Set `device` to an Intel part first: the profile's part ({part}) is a Xilinx one.
load_package flow
set top "{top}"
set device "$::env(QUARTUS_DEVICE)"
set root [file normalize [file dirname [info script]]]
set out "$root/quartus_out"
file mkdir $out
cd $out
project_new $top -overwrite
set_global_assignment -name DEVICE $device
set_global_assignment -name TOP_LEVEL_ENTITY $top
foreach f [concat [glob "$root/src/*.v"] [glob -nocomplain "$root/src/static/*.v"]] {{
    set_global_assignment -name VERILOG_FILE $f
}}
foreach f [glob -nocomplain "$root/src/memfiles/*.mem"] {{ file copy -force $f $out }}
set_global_assignment -name SDC_FILE "$root/src/$top.sdc"
execute_flow -compile
project_close
puts "target clock {clock_period} ns; reports in $out/output_files"
