"""Presenting: the report (:mod:`.report`) and its plots (:mod:`.plots`), made
from a result directory alone so any committed set can be re-plotted.  The
report is one document model (:mod:`.doc`) rendered as Markdown and HTML; its
parts live beside it: the scaling tables (:mod:`.scaling_tables`), the
open-loop latency curves and the rate answer (:mod:`.latency`),
``batch_size="auto"`` against the best fixed size (:mod:`.auto`), turbo
against its peers (:mod:`.peers`), the held-out check read from verify.json
(:mod:`.heldout`), the failed and excluded cells (:mod:`.exclusions`), the
comparison tables as CSV (:mod:`.csvout`) and the machine and sweep the set
was measured on (:mod:`.machine`)."""
