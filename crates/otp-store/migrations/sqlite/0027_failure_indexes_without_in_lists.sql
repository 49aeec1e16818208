-- Migration 21's partial indexes said `status IN (four statuses)`. SQLite
-- evaluates an IN list of more than two values by building a temporary
-- B-tree of the values, and it builds it again in every statement that
-- inserts an OTP or changes its status, once for the old row and once for the
-- new one, for each of the two indexes. On the writer that was most of the
-- cost of recording a delivery (see BENCHMARKS.md). The same condition spelled
-- as equalities joined by OR is evaluated as plain comparisons. The lists add
-- this very condition to use the indexes (`OtpStatus::FAILURE_SQL`).
DROP INDEX otps_account_failures;
DROP INDEX otps_failures;
CREATE INDEX otps_account_failures ON otps (account_id, account_seq)
    WHERE (status = 'undeliverable' OR status = 'expired' OR status = 'rejected' OR status = 'failed');
CREATE INDEX otps_failures ON otps (id)
    WHERE (status = 'undeliverable' OR status = 'expired' OR status = 'rejected' OR status = 'failed');
