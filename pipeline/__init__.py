"""The study orchestration: scenarios, data, training, evaluation, report (run.py drives it)."""
