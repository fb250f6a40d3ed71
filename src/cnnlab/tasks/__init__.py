"""Use cases: one module per command's work (train, evaluate, calibrate, crossval, export,
predict, explain, inspect, compare, demo). A task does the work and writes its own files atomically;
`cnnlab.cli` only parses options, calls one task and renders what it returns."""
