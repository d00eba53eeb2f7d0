"""Replies are read, not just counted: each reply is classified into one of seven classes.

`text` strips quoted text and signatures, `rules` decides the certain cases, `classify` asks the
cheap model and escalates to the premium one through the gateway, `events` turns classes into
Factory event types, and `cli` is `factory replies classify FILE --out OUT.csv`.
"""
