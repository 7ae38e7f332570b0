"""Crowd simulator: drives a job through the public HTTP API on the sandbox clock."""
