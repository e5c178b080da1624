"""The study orchestration: scenarios, data, training, evaluation, report (run.py drives it)."""
# alexnet_np before anything that loads NumPy: it sets OpenBLAS's thread spin (OPENBLAS_THREAD_TIMEOUT),
# which OpenBLAS reads only when it loads, so every entry to the pipeline (run.py, `import pipeline.x`)
# gets the setting whatever the caller imported first among the pipeline's modules.
import alexnet_np  # noqa: F401
