"""Account events other packages react to, inside the same transaction."""

from blinker import Namespace

_signals = Namespace()

# sender: the new User (flushed, not yet committed); kwargs: account_type, organization, profile
user_signed_up = _signals.signal("user-signed-up")
