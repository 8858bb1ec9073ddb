"""Store-level tests of other modules that test modules with another ``store`` fixture collect
again (``from tests.stream.store_level_tests import *``): the store itself (migrations, dedup
tokens, read-only queries, a table's Null copy), the finance views, and the judge sink and ledger. They then run
against that module's store: the store server (test_store_server.py) or a cluster
(test_cluster.py)."""

from tests.stream.test_costs_judge_ledger import test_budget_burn_and_projection, test_daily_views_sum_the_ledger
from tests.stream.test_judging import test_replayed_batch_is_not_judged_or_paid_again, test_verdicts_and_ledger_rows_for_a_batch
from tests.stream.test_judging_budget import test_a_partitions_spend_moves_with_it_to_another_worker
from tests.stream.test_store import (
    test_insert_with_same_dedup_token_is_stored_once,
    test_migrations_apply_once_in_order,
    test_read_only_is_enforced_by_clickhouse_too,
)
from tests.stream.test_table_copy import (
    test_a_copy_names_every_row_that_breaks_a_check_constraint_in_one_query,
    test_rows_inserted_into_a_copy_are_checked_as_the_table_would_and_kept_nowhere,
)

__all__ = [
    "test_a_copy_names_every_row_that_breaks_a_check_constraint_in_one_query",
    "test_a_partitions_spend_moves_with_it_to_another_worker",
    "test_budget_burn_and_projection",
    "test_daily_views_sum_the_ledger",
    "test_insert_with_same_dedup_token_is_stored_once",
    "test_migrations_apply_once_in_order",
    "test_read_only_is_enforced_by_clickhouse_too",
    "test_replayed_batch_is_not_judged_or_paid_again",
    "test_rows_inserted_into_a_copy_are_checked_as_the_table_would_and_kept_nowhere",
    "test_verdicts_and_ledger_rows_for_a_batch",
]
