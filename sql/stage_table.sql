-- A tabular source (CSV, RecBole atomic, Parquet) already projected to the canonical columns
-- user_id, item_id, rating, ts; lines the reader rejected are carried along as malformed.
CREATE OR REPLACE TEMP TABLE stage_interactions AS
SELECT user_id, item_id, rating, ts, $source_file AS source_file, source_row,
       concat_ws(' | ', user_id, item_id, rating, ts) AS raw, NULL::VARCHAR AS malformed
FROM src
UNION ALL
SELECT NULL, NULL, NULL, NULL, $source_file, line::BIGINT, first(csv_line), string_agg(error_message, '; ')
FROM src_rejects GROUP BY line;
