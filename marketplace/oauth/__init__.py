"""OAuth 2 authorization server (Authlib): clients, tokens, grants, revocation, introspection."""
