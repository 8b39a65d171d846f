"""Scenarios beyond the queue sweep: the Kafka pipeline (:mod:`.kafka`) and the
crash-safety experiment (:mod:`.chaos`)."""
