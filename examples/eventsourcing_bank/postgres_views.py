"""The bank's balances view on PostgreSQL (``eventsourcing.postgres``): apart, so that the SQLite
example imports no PostgreSQL driver."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.persistence import Tracking
from eventsourcing.postgres import PostgresTrackingRecorder
from psycopg.sql import SQL, Identifier

from examples.eventsourcing_bank.projections import TABLE, BalancesView


class PostgresBalancesView(PostgresTrackingRecorder, BalancesView):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.table = Identifier(self.datastore.schema, TABLE)
        self.sql_create_statements.append(
            SQL(
                "CREATE TABLE IF NOT EXISTS {0} (id uuid PRIMARY KEY, owner text NOT NULL, "
                "balance bigint NOT NULL, position bigint NOT NULL)"
            ).format(self.table)
        )

    def opened(self, account_id: UUID, owner: str, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                SQL("INSERT INTO {0} VALUES (%s, %s, 0, %s)").format(self.table),
                (account_id, owner, tracking.notification_id),
            )
            self._insert_tracking(cursor, tracking)

    def changed(self, account_id: UUID, delta: int, tracking: Tracking) -> None:
        with self.datastore.transaction(commit=True) as cursor:
            cursor.execute(
                SQL("UPDATE {0} SET balance = balance + %s, position = %s WHERE id = %s").format(self.table),
                (delta, tracking.notification_id, account_id),
            )
            self._insert_tracking(cursor, tracking)

    def balance_of(self, account_id: UUID) -> dict[str, Any] | None:
        with self.datastore.transaction(commit=False) as cursor:
            cursor.execute(
                SQL("SELECT id, owner, balance, position FROM {0} WHERE id = %s").format(self.table),
                (account_id,),
            )
            row = cursor.fetchone()
        if row is None:
            return None
        return {
            "id": str(row["id"]),
            "owner": row["owner"],
            "balance": row["balance"],
            "position": row["position"],
        }
