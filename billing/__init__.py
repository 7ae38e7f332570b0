"""Double-entry ledger, budgets and holds, the Stripe gateway, payouts and webhooks."""
