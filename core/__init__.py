"""ltrr core: pure retrieval, learning and ranking algorithms over NumPy arrays and dataclasses.

Nothing in this package imports grpc or the generated stubs; `services/` adapts it to the wire.
"""
