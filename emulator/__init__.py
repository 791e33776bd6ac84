"""The emulation side: vGPU library and its build, hardware models, engine environments."""
