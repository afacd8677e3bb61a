-- One domain's slice of its dataset: all of it, or the items of one category (genre, Amazon category).
DELETE FROM domain_interactions WHERE domain = $domain;
INSERT INTO domain_interactions
SELECT $domain, user_id, item_id, rating, ts, label, title
FROM interactions
WHERE dataset = $dataset AND ($category IS NULL OR list_contains(categories, $category));
