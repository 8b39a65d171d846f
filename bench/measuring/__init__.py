"""Measuring: one cell (:mod:`.cell`) of a sweep (:mod:`.sweep`), the per-event
work (:mod:`.work`) and events (:mod:`.events`) every backend gets alike, the
backends behind one contract (:mod:`.backends`), and what a cell records about
the machine (:mod:`.machine`) and about its own validity (:mod:`.validity`)."""
