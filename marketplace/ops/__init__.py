"""Operations: health checks, the sandbox clock and platform administration of users."""
