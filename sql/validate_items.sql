-- Type-check staged item rows; an item listed twice keeps its first titled row (sql/commit_raw.sql).
-- For a line format this is where the file is read (stage_items is a view over it) and the only
-- table its rows are held in: `raw` is kept for the quarantined rows only.
CREATE OR REPLACE TEMP TABLE checked_items AS
WITH v AS (
    SELECT *,
           CASE WHEN malformed IS NOT NULL THEN 'malformed_line'
                WHEN item_id IS NULL OR trim(item_id) = '' THEN 'missing_item'
                WHEN title IS NULL OR trim(title) = '' THEN 'item_without_title' END AS reason,
           CASE WHEN malformed IS NOT NULL THEN malformed
                WHEN item_id IS NULL OR trim(item_id) = '' THEN 'no item id'
                WHEN title IS NULL OR trim(title) = '' THEN 'item ' || item_id || ' has an empty title' END AS detail
    FROM stage_items)
SELECT * REPLACE (CASE WHEN reason IS NOT NULL THEN raw END AS raw) FROM v;
