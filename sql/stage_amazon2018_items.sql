-- Amazon Reviews 2018 meta lines ({"asin", "title", "category": [...], ...}).
CREATE OR REPLACE TEMP TABLE stage_items AS
WITH p AS (
    SELECT line, source_row, TRY_CAST(line AS JSON) AS j
    FROM src_lines WHERE line IS NOT NULL AND trim(line) <> '')
SELECT json_extract_string(j, '$.asin') AS item_id,
       json_extract_string(j, '$.title') AS title,
       CASE WHEN json_type(j, '$.category') = 'ARRAY'
            THEN json_extract_string(j, '$.category[*]') END AS categories,
       $source_file AS source_file, source_row, line AS raw,
       CASE WHEN j IS NULL OR json_type(j) <> 'OBJECT' THEN 'not a JSON object' END AS malformed
FROM p;
