-- Append one landing file's checked rows to its dataset (the caller holds a transaction and then
-- records the file in landed_files in the same transaction).
INSERT INTO raw_interactions
SELECT $dataset, trim(user_id), trim(item_id), rating_num, ts_num, source_file, source_row
FROM checked_interactions WHERE reason IS NULL;
INSERT INTO quarantine
SELECT $dataset, 'landing', 'interaction', source_file, source_row, reason, detail, raw
FROM checked_interactions WHERE reason IS NOT NULL;
