"""Code shared by every promotion service.

``shared.contracts`` holds the wire contracts (events, topics, the pipeline model);
``shared.platform`` the wiring (runtime, consumer, outbox, db, health, settings). The modules left
here are the supply-chain and artifact helpers both sides use.
"""
