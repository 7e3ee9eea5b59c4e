"""Who may call the API and how: tokens, roles and scopes, rate limits, signatures, headers, audit."""
