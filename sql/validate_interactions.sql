-- Type-check staged interaction rows: good rows are returned in checked_interactions with
-- reason NULL, bad rows carry the first reason that applies (README, "Quarantine"). For a line
-- format this is where the file is read (stage_interactions is a view over it, sql/read_lines.sql)
-- and the only table its rows are held in: `raw`, the line as read, is kept for the quarantined
-- rows only (sql/commit_raw.sql files them with it), not copied for every good row.
CREATE OR REPLACE TEMP TABLE checked_interactions AS
WITH t AS (
    SELECT *, TRY_CAST(rating AS DOUBLE) AS rating_num,
           CASE $timestamp_unit
                WHEN 's' THEN TRY_CAST(floor(TRY_CAST(ts AS DOUBLE)) AS BIGINT)
                WHEN 'ms' THEN TRY_CAST(floor(TRY_CAST(ts AS DOUBLE) / 1000) AS BIGINT)
                -- iso: TIMESTAMPTZ honours an offset such as +02:00 (none: the session zone, UTC); floored like s/ms
                ELSE TRY_CAST(floor(epoch(TRY_CAST(ts AS TIMESTAMPTZ))) AS BIGINT) END AS ts_num
    FROM stage_interactions),
v AS (
    SELECT *,
           CASE WHEN malformed IS NOT NULL THEN 'malformed_line'
                WHEN user_id IS NULL OR trim(user_id) = '' THEN 'missing_user'
                WHEN item_id IS NULL OR trim(item_id) = '' THEN 'missing_item'
                WHEN rating_num IS NULL OR isnan(rating_num) THEN 'non_numeric_rating'
                WHEN rating_num < $rating_min OR rating_num > $rating_max THEN 'rating_out_of_range'
                WHEN ts_num IS NULL THEN 'unparseable_timestamp' END AS reason,
           CASE WHEN malformed IS NOT NULL THEN malformed
                WHEN user_id IS NULL OR trim(user_id) = '' THEN 'no user id'
                WHEN item_id IS NULL OR trim(item_id) = '' THEN 'no item id'
                WHEN rating_num IS NULL OR isnan(rating_num) THEN 'rating ' || coalesce('"' || rating || '"', 'missing') || ' is not a number'
                WHEN rating_num < $rating_min OR rating_num > $rating_max
                     THEN 'rating ' || rating || ' outside [' || $rating_min || ', ' || $rating_max || ']'
                WHEN ts_num IS NULL THEN 'timestamp ' || coalesce('"' || ts || '"', 'missing') || ' is not a ' || $timestamp_unit_name
                END AS detail
    FROM t)
SELECT * REPLACE (CASE WHEN reason IS NOT NULL THEN raw END AS raw) FROM v;
