"""Key format, secret hashing and (later) signing keys."""
