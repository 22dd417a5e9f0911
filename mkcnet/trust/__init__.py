"""How far to trust a reading: temperature calibration (`calibration`) and the out-of-distribution
guard (`guard`). Fitted on a validation split and stored in the checkpoint; below `checkpoint.py`,
free of the network code."""
