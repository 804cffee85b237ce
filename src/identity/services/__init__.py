"""Thin gRPC servicers: proto to domain, one use case, domain to proto."""
