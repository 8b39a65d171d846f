"""Analysing: result sets read and re-checked (:mod:`.loading`), the
scaling-law fit (:mod:`.usl`), the recommendation (:mod:`.recommend`) and the
comparison of two result sets (:mod:`.compare`). Everything here works from
result files alone."""
