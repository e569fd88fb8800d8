"""Deploying builds to boards: the bundle a user copies (``bundle``), running it over TVM RPC
(``remote_run``) and the emulated Raspberry Pi (``emulated_pi``). Nothing is imported here, so
the command line can read the emulated Pi's defaults without loading ONNX or TVM."""
