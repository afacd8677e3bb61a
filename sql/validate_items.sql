-- Type-check staged item rows; an item listed twice keeps its first titled row.
CREATE OR REPLACE TEMP TABLE checked_items AS
SELECT *,
       CASE WHEN malformed IS NOT NULL THEN 'malformed_line'
            WHEN item_id IS NULL OR trim(item_id) = '' THEN 'missing_item'
            WHEN title IS NULL OR trim(title) = '' THEN 'item_without_title' END AS reason,
       CASE WHEN malformed IS NOT NULL THEN malformed
            WHEN item_id IS NULL OR trim(item_id) = '' THEN 'no item id'
            WHEN title IS NULL OR trim(title) = '' THEN 'item ' || item_id || ' has an empty title' END AS detail
FROM stage_items;
