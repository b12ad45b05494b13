"""Deliberately wrong ports (catalogue.py), each of which the conformance kit must fail."""
