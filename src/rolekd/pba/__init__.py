"""Population based augmentation on Ray: the trial's worker, PBA's explore, the generational population,
lineage and schedule extraction.

This layer knows trainers and policies, never experiment configs, roles or the CLI: the pipeline hands
:func:`run_search` a trainer factory and its (picklable) arguments.
"""

from .explore import explore
from .generations import SearchStateError
from .lineage import ExploitEvent, LineageError, append_event, read_history, reconstruct
from .run import SearchError, SearchResult, run_search
from .trainable import TrainerFactory, TrialParts

__all__ = [
    "ExploitEvent", "LineageError", "SearchError", "SearchResult", "SearchStateError", "TrainerFactory",
    "TrialParts", "append_event", "explore", "read_history", "reconstruct", "run_search",
]
