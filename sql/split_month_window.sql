-- CoLLM month windows: slot = months since the dataset's first month; rows outside the three
-- windows are dropped entirely (not even used for history), as in the authors' code.
-- A row is in slot s exactly when ts lies in [start of month origin+s, start of the next month)
-- (UTC), so the windows are tested on the integer ts against their first seconds; the month of a
-- row is computed only for the rows kept.
CREATE OR REPLACE TEMP MACRO month_start_epoch(m) AS
    epoch_us(make_timestamp(m // 12, m % 12 + 1, 1, 0, 0, 0)) // 1000000;
CREATE OR REPLACE TEMP TABLE assigned AS
WITH s AS (
    SELECT user_id, item_id, rating, ts, label, title,
           CASE WHEN ts >= month_start_epoch($origin_month + $train_lo)
                 AND ts < month_start_epoch($origin_month + $train_hi + 1) THEN 'train'
                WHEN ts >= month_start_epoch($origin_month + $valid_lo)
                 AND ts < month_start_epoch($origin_month + $valid_hi + 1) THEN 'valid'
                WHEN ts >= month_start_epoch($origin_month + $test_lo)
                 AND ts < month_start_epoch($origin_month + $test_hi + 1) THEN 'test'
           END AS split
    FROM domain_interactions
    WHERE domain = $domain
      AND ts >= month_start_epoch($origin_month + least($train_lo, $valid_lo, $test_lo))
      AND ts < month_start_epoch($origin_month + greatest($train_hi, $valid_hi, $test_hi) + 1))
SELECT user_id, item_id, rating, ts, label, title,
       (year(make_timestamp(ts * 1000000)) * 12 + month(make_timestamp(ts * 1000000)) - 1)
           - $origin_month AS slot,
       split
FROM s WHERE split IS NOT NULL;
