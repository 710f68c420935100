"""The training loop, above the methods it drives: trainer.py (Trainer and its phases),
build.py (method, optimiser, plan), steps.py (one step and what feeds it), resume.py,
records.py (log, summary, predictions)."""
