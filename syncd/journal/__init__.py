"""The durable state: every file's row, its state and its upload's progress; the only SQL.

`states` (the State enum and its transition table), `store` (the Store protocol every
caller types against, and `open_store`), `sqlite` (the SQLite store, its `migrations`),
`codec` (rows by column name and JSON columns, shared by every store), `rules` (what every
store decides alike), `after` (the after-upload part of Store: archive / delete actions and
the hooks' queue) with its SQLite side in `sqlite_after`. Fleet mode: `postgres` (the
PostgreSQL store; `pg_base`, `pg_reads`, `pg_fleet` its parts, `pg_schema` its migrations)
and `leases` (this host's claims, renewed).
"""
