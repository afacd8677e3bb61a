-- CoLLM month windows: slot = months since the dataset's first month; rows outside the three
-- windows are dropped entirely (not even used for history), as in the authors' code.
CREATE OR REPLACE TEMP TABLE assigned AS
WITH s AS (
    SELECT user_id, item_id, rating, ts, label, title,
           (year(make_timestamp(ts * 1000000)) * 12 + month(make_timestamp(ts * 1000000)) - 1)
               - $origin_month AS slot
    FROM domain_interactions WHERE domain = $domain)
SELECT *, CASE WHEN slot BETWEEN $train_lo AND $train_hi THEN 'train'
               WHEN slot BETWEEN $valid_lo AND $valid_hi THEN 'valid'
               ELSE 'test' END AS split
FROM s
WHERE slot BETWEEN $train_lo AND $train_hi OR slot BETWEEN $valid_lo AND $valid_hi
   OR slot BETWEEN $test_lo AND $test_hi;
