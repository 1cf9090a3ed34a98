"""An expense that waits for a person to approve it.

    python examples/approval.py                      # promises in ./resonate.db
    python examples/approval.py --db expenses.db --amount 120 --id expense-7

``expense`` checks the report, then makes a durable promise with
``ctx.promise`` and waits on it. The example prints the command that
approves it; run that in another terminal::

    resonate-sync --db resonate.db promises resolve expense-1.approval --value '{"approved": true}'

and the workflow continues within about a second and prints the decision.
Kill it while it waits and run it again: it waits on the same promise, and if
the approval came meanwhile, it continues at once.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict

from resonate_sync import Context, Resonate, SQLiteStore


def expense(ctx: Context, report: Dict[str, Any]) -> str:
    if report["amount"] <= 0:
        raise ValueError(f"amount must be positive, not {report['amount']}")

    approval = ctx.promise(id=f"{ctx.invocation_id}.approval", param=report)
    decision = approval.result()  # blocks until a person decides
    return "approved" if decision.get("approved") else "rejected"


def main(database: str, expense_id: str, amount: float) -> None:
    with Resonate(SQLiteStore(database)) as resonate:
        # A bad report is refused at once: retrying cannot make it valid.
        resonate.register(expense, non_retryable=(ValueError,))
        handle = resonate.invoke_local(expense, expense_id, {"amount": amount})

        value = json.dumps({"approved": True})
        print("waiting for approval; to approve, run:", flush=True)
        print(
            f"  resonate-sync --db {database} promises resolve"
            f" {expense_id}.approval --value '{value}'",
            flush=True,
        )
        print(f"expense {expense_id}: {handle.result()}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="an expense that waits for approval")
    parser.add_argument("--db", default="resonate.db", help="SQLite file")
    parser.add_argument("--id", default="expense-1", help="the expense's invocation id")
    parser.add_argument("--amount", type=float, default=42.0)
    arguments = parser.parse_args()
    main(arguments.db, arguments.id, arguments.amount)
