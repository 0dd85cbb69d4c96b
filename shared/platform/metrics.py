"""Prometheus metrics every service exposes on GET /metrics (same port as /health)."""

from prometheus_client import Counter, Histogram

EVENTS_HANDLED = Counter("promote_events_handled_total", "Events handled to the end (committed)",
                         ["consumer", "event_type"])
EVENTS_DEAD_LETTERED = Counter("promote_events_dead_lettered_total", "Records moved to promotion.dlq", ["consumer"])
EVENTS_RETRIED = Counter("promote_events_retried_total", "Deliveries re-read after a failure",
                         ["consumer", "transient"])
HANDLER_SECONDS = Histogram("promote_handler_seconds", "Time from a record's delivery to its commit", ["consumer"],
                            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
OUTBOX_PUBLISHED = Counter("promote_outbox_published_total", "Outbox rows published to Kafka", ["service"])
TIMER_LATENESS_SECONDS = Histogram("promote_timer_lateness_seconds", "How long after its due time a timer fired",
                                   ["service"], buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 30, 300))
BATCH_RECORDS = Histogram("promote_batch_records", "Records per batch a consumer handled (one when it keeps up)",
                          ["consumer"], buckets=(1, 2, 5, 10, 25, 50, 100, 250, 1000))
BATCHES_SPLIT = Counter("promote_batches_split_total",
                        "Batches whose shared transaction failed and that ran again record by record", ["consumer"])
