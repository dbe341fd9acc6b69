"""Compression techniques as plugins behind one interface.

``from compress.techniques import get_technique, list_techniques, register_technique``
"""

from compress.techniques.base import (
    RunContext,
    Technique,
    TrainingTerm,
    get_technique,
    list_techniques,
    parse_composition,
    register_technique,
)

__all__ = [
    "RunContext",
    "Technique",
    "TrainingTerm",
    "get_technique",
    "list_techniques",
    "parse_composition",
    "register_technique",
]
