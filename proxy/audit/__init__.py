"""The audit log: every call, written before it is sent and completed after.

``records`` is what it keeps (a call's record, a rate-limit charge); ``log`` is the SQLite
log (write-ahead rows, rate-limit charges, queries, pruning by the retention, its size);
``redact`` decides what of a call may be stored or shown, and scrubs secrets from text.
"""
