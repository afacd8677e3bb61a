-- Leave-one-out (RecCocktail): per user by time, the last row is test, the second-to-last valid,
-- the rest train. Users with fewer than min_user_records rows are left out (counted by the caller).
CREATE OR REPLACE TEMP TABLE assigned AS
WITH c AS (
    SELECT user_id, item_id, rating, ts, label, title, NULL::BIGINT AS slot,
           row_number() OVER (PARTITION BY user_id ORDER BY ts DESC, item_id DESC) AS r,
           count(*) OVER (PARTITION BY user_id) AS n
    FROM domain_interactions WHERE domain = $domain)
SELECT user_id, item_id, rating, ts, label, title, slot,
       CASE WHEN r = 1 THEN 'test' WHEN r = 2 THEN 'valid' ELSE 'train' END AS split
FROM c WHERE n >= $min_user_records;
