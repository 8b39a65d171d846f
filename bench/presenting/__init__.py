"""Presenting: the report (:mod:`.report`) and its plots (:mod:`.plots`), made
from a result directory alone so any committed set can be re-plotted."""
