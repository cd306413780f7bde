"""The audit log: every call, written before it is sent and completed after.

``records`` is what it keeps (a call's record, a rate-limit charge); ``log`` is the SQLite
log (write-ahead rows, rate-limit charges, queries and full-text search, pruning by the
retention, its size; ``AuditReader`` reads it without writing); ``database`` its schema;
``export`` writes a filtered view as CSV or JSON Lines; ``redact`` decides what of a call
may be stored or shown, and scrubs secrets from text.
"""
