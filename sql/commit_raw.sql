-- Replace one dataset's raw rows and raw-stage quarantine in one go (the caller holds a transaction).
-- Rows that came in through the landing folder (source_file 'landing/...') are kept.
DELETE FROM raw_interactions WHERE dataset = $dataset AND NOT starts_with(coalesce(source_file, ''), 'landing/');
DELETE FROM raw_items WHERE dataset = $dataset;
DELETE FROM quarantine WHERE dataset = $dataset AND stage = 'raw';
INSERT INTO raw_interactions
SELECT $dataset, trim(user_id), trim(item_id), rating_num, ts_num, source_file, source_row
FROM checked_interactions WHERE reason IS NULL;
INSERT INTO raw_items
SELECT $dataset, trim(item_id), trim(title), categories, source_file, source_row
FROM checked_items WHERE reason IS NULL
QUALIFY row_number() OVER (PARTITION BY trim(item_id) ORDER BY source_file, source_row) = 1;
INSERT INTO quarantine
SELECT $dataset, 'raw', 'interaction', source_file, source_row, reason, detail, raw
FROM checked_interactions WHERE reason IS NOT NULL;
INSERT INTO quarantine
SELECT $dataset, 'raw', 'item', source_file, source_row, reason, detail, raw
FROM checked_items WHERE reason IS NOT NULL;
