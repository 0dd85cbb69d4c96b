"""The platform every service runs on: wiring, not rules.

The runtime that starts a service, the consumer that runs its records with the inbox and the
outbox, database pools and migrations, health and metrics, settings, backoff, logging, rebuilds
from the topics and the clients the CLI shares.
"""
