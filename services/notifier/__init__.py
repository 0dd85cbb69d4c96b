"""The notifier: outgoing webhooks for what operators subscribe to (approval needed, verification failed,
rollback, drift), signed, retried, given up to the dead-letter topic."""
