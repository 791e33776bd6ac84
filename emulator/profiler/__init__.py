"""The real-GPU profiler: device-side scripts that measure the tables under emulator/predictor/data/.

They run as plain files on a lent GPU machine (run_on_device.sh; README.md here), with torch and
nothing of this project installed, and are never imported by the emulator at run time. Also here:
forward_check.py, which runs forward_pass.py on virtual GPUs and sets the emulated step times
beside the measured ones (`revati-tune predictor forward-pass`).
"""
