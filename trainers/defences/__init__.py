"""Defences against, and robustness of, the backdoors of finished runs (``python -m scripts.defend``):
input purifiers swept over strengths (``robustness``), re-tuning the received prompt on trusted clean
data (``retune``), STRIP input detection (``strip``) and trigger reconstruction (``reconstruct``).
A finished run is rebuilt by ``trainers.run.Run.build_trainer`` (nothing written into it); ``data``
holds the overrides it is rebuilt with and the defender's trusted clean images."""
