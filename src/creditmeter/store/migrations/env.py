"""Alembic environment: runs on the connection creditmeter hands it (see store.migrate)."""

from alembic import context

from creditmeter.store.schema import metadata

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=metadata, render_as_batch=True,
                  transaction_per_migration=False)
with context.begin_transaction():
    context.run_migrations()
