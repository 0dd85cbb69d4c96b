"""The wire contracts: what crosses Kafka and what a pipeline file says.

Events and their limits, topic names, the pipeline model with its strategies and gates, and the
way an event is bound to a Kafka record. Nothing here opens a connection or starts a task: a
service, the CLI and a test read the same contracts.
"""
