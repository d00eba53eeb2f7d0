"""A person's review of the messages before they go: list, approve, edit, hold and release (`factory review`).

Kept free of imports: the sender imports `review.sendable` and starts as a fresh process in the crash test.
"""
