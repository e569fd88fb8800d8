"""FPGA builds through hls4ml (work in progress: see apprentice_hw/fpga/hls.py)."""
