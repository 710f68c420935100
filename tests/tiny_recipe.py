"""The tiny frozen recipe the `cluster` tests run: the real encoder family at a small input
size, a short run (imported by the test modules; tests/ is on sys.path)."""

TINY = [
    "--set", "encoder.name=efficientnet_lite0",
    "--set", "encoder.input_size=32",
    "--set", "train.min_steps=30",
    "--set", "params.num_prototypes=50",
]  # fmt: skip
