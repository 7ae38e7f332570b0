"""Worker accounts and profiles, the recruitment funnel, private crowds, per-worker metrics."""
