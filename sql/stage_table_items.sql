-- A tabular item file projected to item_id, title, year, categories (a separated string).
CREATE OR REPLACE TEMP TABLE stage_items AS
SELECT item_id,
       CASE WHEN nullif(trim(year), '') IS NOT NULL AND nullif(trim(title), '') IS NOT NULL
            THEN trim(title) || ' (' || trim(year) || ')' ELSE title END AS title,
       list_filter(string_split(categories, $separator), c -> trim(c) <> '') AS categories,
       $source_file AS source_file, source_row,
       concat_ws(' | ', item_id, title, categories) AS raw, NULL::VARCHAR AS malformed
FROM src
UNION ALL
SELECT NULL, NULL, NULL, $source_file, line::BIGINT, first(csv_line), string_agg(error_message, '; ')
FROM src_rejects GROUP BY line;
