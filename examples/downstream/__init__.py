"""A sample "inventory" service protected by identity.client, and a client that calls it.

The service uses well-known protobuf types (``StringValue`` in, ``Struct`` out) over a generic
handler, so it needs no .proto of its own.
"""
