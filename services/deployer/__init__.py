"""Deployer: puts a release (digest + config) into an environment and verifies it."""
