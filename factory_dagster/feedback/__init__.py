"""The observe stage: what comes back from the world (events, replies, suppression), read, checked and stored.

No imports here: `factory fetch-replies` and the receiver's light paths import their own modules
without loading pandas and Pandera.
"""
