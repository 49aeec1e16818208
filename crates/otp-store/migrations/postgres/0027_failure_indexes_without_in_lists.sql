-- SQLite only (its migration 27 spells its failure indexes' condition as
-- equalities joined by OR, because SQLite builds a temporary B-tree for an
-- IN list in every write). PostgreSQL evaluates migration 21's IN list
-- without that cost, and its planner proves the lists' OR spelling
-- (`OtpStatus::FAILURE_SQL`) against it, so its indexes stay as they are and
-- no table is rebuilt. Kept as a step so both backends number their steps alike.
SELECT 1;
