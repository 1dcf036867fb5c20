"""Evaluating saved models: STS, retrieval, pair classification, MTEB and speed, with written reports.

Each evaluator takes its data when built and scores any encoder when called, returning metrics keyed
"<dataset>/<metric>". `scripts/evaluate.py` builds them from conf/eval/, and `callback.EvaluationCallback` runs the
same ones during training.
"""
