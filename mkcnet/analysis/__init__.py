"""Experiments and analyses: the method benchmark (`mkcnet bench`), robustness to the share of
low-quality images (`ood`), feature embeddings (`embedding`) and training-gradient plots.

Everything reads run directories and results packs; nothing here retrains or re-infers a model
except `bench`, which drives the ordinary `Trainer` and `evaluate_split`.
"""
