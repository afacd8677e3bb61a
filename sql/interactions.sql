-- Typed, de-duplicated, labelled interactions with their item titles (the caller holds a transaction).
-- Duplicate rule: a user's repeated ratings of one item collapse to the latest (largest timestamp,
-- then the later source row). An interaction whose item has no title is quarantined.
CREATE OR REPLACE TEMP TABLE titled AS
SELECT r.*, i.title, i.categories
FROM raw_interactions r LEFT JOIN raw_items i ON i.dataset = r.dataset AND i.item_id = r.item_id
WHERE r.dataset = $dataset;
DELETE FROM quarantine WHERE dataset = $dataset AND stage = 'interactions';
INSERT INTO quarantine
SELECT $dataset, 'interactions', 'interaction', source_file, source_row, 'item_without_title',
       'item "' || item_id || '" has no titled row in the item file',
       concat_ws(' | ', user_id, item_id, rating, ts)
FROM titled WHERE title IS NULL;
DELETE FROM interactions WHERE dataset = $dataset;
INSERT INTO interactions
SELECT $dataset, user_id, item_id, rating, ts, (rating >= $label_threshold)::TINYINT, title, categories
FROM titled WHERE title IS NOT NULL
QUALIFY row_number() OVER (PARTITION BY user_id, item_id ORDER BY ts DESC, source_file DESC, source_row DESC) = 1;
