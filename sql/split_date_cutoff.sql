-- Date cut-offs (CoLLM Amazon-Book): keep [start, end); keep users and items with at least
-- min_*_records rows in that window (one pass, not iterative); rows before train_end are train,
-- the rest sorted by time is halved: first half valid, second half test.
CREATE OR REPLACE TEMP TABLE assigned AS
WITH w AS (
    SELECT user_id, item_id, rating, ts, label, title, NULL::BIGINT AS slot
    FROM domain_interactions
    WHERE domain = $domain AND ts >= epoch($start::TIMESTAMP) AND ts < epoch($end::TIMESTAMP)),
f AS (
    SELECT * FROM w
    WHERE user_id IN (SELECT user_id FROM w GROUP BY 1 HAVING count(*) >= $min_user_records)
      AND item_id IN (SELECT item_id FROM w GROUP BY 1 HAVING count(*) >= $min_item_records)),
h AS (
    SELECT *, row_number() OVER (ORDER BY ts, user_id, item_id) AS k, count(*) OVER () AS n
    FROM f WHERE ts >= epoch($train_end::TIMESTAMP))
SELECT *, 'train' AS split FROM f WHERE ts < epoch($train_end::TIMESTAMP)
UNION ALL
SELECT user_id, item_id, rating, ts, label, title, slot,
       CASE WHEN k <= n // 2 THEN 'valid' ELSE 'test' END
FROM h;
