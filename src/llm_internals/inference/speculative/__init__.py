"""Speculative decoding: a cheap draft proposes tokens, the target verifies them in one forward.

See rejection.py for the verification rule (exact rejection sampling, Leviathan et al. 2023).
"""
