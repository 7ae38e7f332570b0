"""Skills, assessments (qualification tests), clearance attestations and eligibility."""
