"""Defences against, and robustness of, the backdoors of finished runs (``python -m scripts.defend``):
input purifiers swept over strengths (``robustness``), re-tuning the received prompt on trusted clean
data (``retune``), STRIP input detection (``strip``) and trigger reconstruction (``reconstruct``).
``runs`` rebuilds a finished run from its folder without writing into it."""
