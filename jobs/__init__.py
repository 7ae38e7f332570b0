"""Jobs, tasks, gold, assignments and the task API, consensus, fraud detection, exports."""
