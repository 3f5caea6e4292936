"""Analysis of what adaptation changes: representation similarity before vs
after the inner loop (CKA, SVCCA) and the layer-freezing ablation."""

from metarl.analysis.similarity import canonical_correlations, cca_similarity, linear_cka

__all__ = ["canonical_correlations", "cca_similarity", "linear_cka"]
