"""Weight sparsity profiles, the format cost model and the module-level report."""

from .cost_model import DENSE, CPUCostModel, FormatChoice
from .profile import CANDIDATE_BLOCKS, CANDIDATE_NM, WeightProfile, nm_compliance, profile_weight
from .report import LayerReport, SparsityReport, analyze

__all__ = [
    "CANDIDATE_BLOCKS",
    "CANDIDATE_NM",
    "CPUCostModel",
    "DENSE",
    "FormatChoice",
    "LayerReport",
    "SparsityReport",
    "WeightProfile",
    "analyze",
    "nm_compliance",
    "profile_weight",
]
