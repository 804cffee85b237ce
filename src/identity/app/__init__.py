"""Use cases: each public method is one operation in one transaction, with its audit event."""
