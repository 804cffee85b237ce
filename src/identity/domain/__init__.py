"""Plain data and rules of the identity service; no database and no transport here."""
