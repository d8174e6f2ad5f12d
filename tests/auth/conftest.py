"""Auth tests: token issuers made per test (token_support.Issuer)."""
