"""The names cnnlab accepts for its options, in one torch-free module that imports nothing.

The CLI's help lists them without loading torch (`cnnlab --help` stays fast), and the modules
that implement each choice import them from here, so the help and the code never disagree.
"""

CAM_METHODS = ("gradcam", "gradcam++", "scorecam", "eigencam", "layercam")
"""`cnnlab explain --method`, `Classifier.explain`, the service's `?explain=`."""
BACKENDS = ("torch", "compile", "onnx")
"""`cnnlab predict --backend`: torch eager, `torch.compile`, ONNX Runtime on the bundle's export."""
EXPORT_FILENAMES = {"onnx": "model.onnx", "torchscript": "model.torchscript.pt", "exported-program": "model.pt2"}
"""`cnnlab export --format`, and the file each format is written to."""
CALIBRATION_METHODS = ("temperature", "vector")
"""`cnnlab calibrate --method` (besides `none`)."""
AUGMENT_PRESETS = ("none", "light", "standard", "strong", "xray", "xray-robust")
"""`data.augment`, `cnnlab data preview --augment`."""
SPLITS = ("train", "val", "test")
ROLES = ("viewer", "clinician", "admin")
"""API key roles of `cnnlab serve`, from least to most allowed."""
