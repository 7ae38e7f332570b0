"""Users, organizations and memberships (roles)."""
