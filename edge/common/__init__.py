"""Infrastructure shared by the unit and the control room: config base, TLS, signatures.

May import edge.core and third-party libraries; never edge.adapters, edge.app or controlroom.
"""
