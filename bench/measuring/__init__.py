"""Measuring: one cell (:mod:`.cell`) of a sweep's grid (:mod:`.plan`, from its TOML file),
run in interleaved repeats (:mod:`.sweep`, its progress line :mod:`.progress`) by its child
processes (:mod:`.children`) under the parent's management (:mod:`.processes`)
and sampling (:mod:`.sampling`), optionally pinned (:mod:`.pinning`), flat out
or on an open-loop schedule (:mod:`.schedule`); the per-event work
(:mod:`.work`) and events (:mod:`.events`) every backend gets alike, the
backends behind one contract (:mod:`.backends`), and what a cell records about
the machine (:mod:`.machine`) and about its own validity (:mod:`.validity`)."""
