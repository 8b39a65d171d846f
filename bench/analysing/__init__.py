"""Analysing: result sets read and re-checked (:mod:`.loading`), the
scaling-law fit (:mod:`.usl`), the recommendation (:mod:`.recommend`),
open-loop cells and the batch fill time that sets their latency at low rates
(:mod:`.openloop`), the recommendation for a stated rate and latency budget
(:mod:`.rate`) and the comparison of two result sets (:mod:`.compare`).
Everything here works from result files alone."""
