"""Cashu ecash as a way to pay (NUT-24): tokens and payment requests (pure), the blind-signature
arithmetic a receiver needs (pure), and a client for the trusted mints' HTTP API."""
