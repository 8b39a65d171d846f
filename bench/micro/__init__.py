"""Micro-benchmarks under pyperf: CPU per event of put and get against a
batched multiprocessing.Queue (:mod:`.speed_putget`) and the batch file format
(:mod:`.batch_format`); and two checkouts held side by side, pair by pair
(:mod:`.checkouts`, used by :mod:`.batch_pairs` and :mod:`.handoff_pairs`)."""
