"""Analysing: result sets read and re-checked (:mod:`.loading`), the axes they
are read along, batch sizes and scenarios (:mod:`.axes`), the scaling curves
and their efficiency (:mod:`.curves`), the scaling-law fit (:mod:`.usl`), the
recommendation (:mod:`.recommend`), open-loop cells and the batch fill time
that sets their latency at low rates (:mod:`.openloop`), the recommendation
for a stated rate and latency budget (:mod:`.rate`), ``batch_size="auto"``
against the best fixed size (:mod:`.auto`), turbo against its peers
(:mod:`.peers`), the held-out check (:mod:`.verify`) and the comparison of
two result sets (:mod:`.compare`).  Everything here works from result files
alone."""
