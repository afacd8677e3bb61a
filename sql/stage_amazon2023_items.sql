-- Amazon Reviews 2023 meta lines ({"parent_asin", "title", "main_category", "categories": [...]}).
CREATE OR REPLACE TEMP TABLE stage_items AS
WITH p AS (
    SELECT line, source_row, TRY_CAST(line AS JSON) AS j
    FROM src_lines WHERE line IS NOT NULL AND trim(line) <> '')
SELECT json_extract_string(j, '$.parent_asin') AS item_id,
       json_extract_string(j, '$.title') AS title,
       list_filter(list_concat([json_extract_string(j, '$.main_category')],
                               CASE WHEN json_type(j, '$.categories') = 'ARRAY'
                                    THEN json_extract_string(j, '$.categories[*]') ELSE [] END),
                   c -> c IS NOT NULL AND c <> '') AS categories,
       $source_file AS source_file, source_row, line AS raw,
       CASE WHEN j IS NULL OR json_type(j) <> 'OBJECT' THEN 'not a JSON object' END AS malformed
FROM p;
