"""Population based augmentation on Ray Tune: the trial, PBA's explore, lineage and schedule extraction.

This layer knows trainers and policies, never experiment configs, roles or the CLI: the pipeline hands
:func:`run_search` a trainer factory and its (picklable) arguments.
"""

from .explore import PolicyExplorer, explore
from .lineage import ExploitEvent, LineageError, append_event, read_history, reconstruct
from .run import SearchError, SearchResult, run_search
from .trainable import PolicyTrial, TrainerFactory, TrialParts

__all__ = [
    "ExploitEvent", "LineageError", "PolicyExplorer", "PolicyTrial", "SearchError", "SearchResult",
    "TrainerFactory", "TrialParts", "append_event", "explore", "read_history",
    "reconstruct", "run_search",
]
