"""Compression techniques as plugins behind one interface.

``from compress.techniques import get_technique, list_techniques, register_technique``
"""

from compress.techniques.base import Technique, get_technique, list_techniques, register_technique

__all__ = ["Technique", "get_technique", "list_techniques", "register_technique"]
