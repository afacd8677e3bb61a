"""The papers' published numbers the report shows beside ours, by the config's `reference` key, and
the papers' method names mapped to ours. Light: numbers and names only."""

from __future__ import annotations

# docs/protocols.md section 6 (CoLLM Tables II, III, V and VII), test AUC / UAUC / NDCG (None: not published),
# labelled by backbone.
PUBLISHED: dict[str, list[tuple[str, str, float | None, float | None, float | None]]] = {
    "collm_ml1m": [
        ("MF", "-", 0.6482, 0.6361, 0.8447),
        ("LightGCN", "-", 0.5959, 0.6499, 0.8564),
        ("SASRec", "-", 0.7078, 0.6884, 0.8612),
        ("TALLRec (= CoLLM w/o CIE)", "Vicuna-7B", 0.7097, 0.6818, 0.8711),
        ("CoLLM-MF", "Vicuna-7B", 0.7295, 0.6875, 0.8714),
        ("CoLLM-LightGCN", "Vicuna-7B", 0.7100, 0.6967, 0.8740),
        ("CoLLM-SASRec", "Vicuna-7B", 0.7235, 0.6990, 0.8765),
        ("CoLLM-MF T1 (Table V)", "Vicuna-7B", 0.7360, 0.6946, None),
        ("CoLLM-MF T2 (Table V)", "Vicuna-7B", 0.7418, 0.6906, None),
        ("CoLLM-MF T3 (Table V)", "Vicuna-7B", 0.7131, 0.6661, None),
        ("Ensemble MF + TALLRec (Table III)", "Vicuna-7B", 0.7239, None, None),
        ("Ensemble MF + CoLLM-MF (Table III)", "Vicuna-7B", 0.7364, None, None),
        ("TALLRec (= CoLLM w/o CIE)", "Qwen2-1.5B", 0.7027, 0.6638, None),
        ("CoLLM-MF", "Qwen2-1.5B", 0.7354, 0.6950, None),
    ],
    "collm_amazon_book": [
        ("MF", "-", 0.7134, 0.5565, None),
        ("TALLRec (= CoLLM w/o CIE)", "Vicuna-7B", 0.7375, 0.5983, None),
        ("CoLLM-MF", "Vicuna-7B", 0.8109, 0.6225, None),
        ("CoLLM-MF T1 (Table V)", "Vicuna-7B", 0.8154, 0.6139, None),
        ("CoLLM-MF T2 (Table V)", "Vicuna-7B", 0.8288, 0.6352, None),
        ("CoLLM-MF T3 (Table V)", "Vicuna-7B", 0.8104, 0.5753, None),
        ("Ensemble MF + TALLRec (Table III)", "Vicuna-7B", 0.7782, None, None),
        ("Ensemble MF + CoLLM-MF (Table III)", "Vicuna-7B", 0.8112, None, None),
    ],
}


# the papers' method names -> ours, for the published-numbers comparison
PAPER_NAMES = {"MF": "mf", "LightGCN": "lightgcn", "SASRec": "sasrec",
               "TALLRec (= CoLLM w/o CIE)": "ingredient_tallrec",
               "CoLLM-MF": "collm_mf", "CoLLM-LightGCN": "collm_lightgcn", "CoLLM-SASRec": "collm_sasrec",
               "CoLLM-MF T1 (Table V)": "collm_mf_t1", "CoLLM-MF T2 (Table V)": "collm_mf_t2",
               "CoLLM-MF T3 (Table V)": "collm_mf_t3",
               "Ensemble MF + TALLRec (Table III)": "ensemble_mf_tallrec",
               "Ensemble MF + CoLLM-MF (Table III)": "ensemble_mf_collm_mf",
               "RecCocktail, pointwise (ours)": "reccocktail", "CoLLM on RecCocktail (ours)": "collm_mf_cocktail"}


# the papers' NDCG@1 (= HR@1, generated), paper v2's table (docs/protocols.md section 7): data set, then (method, backbone, value)
LISTWISE_PUBLISHED = {
    "reccocktail_ml1m": ("ML-1M", [("best baseline", "Qwen2-7B-Instruct", 0.5392),
                                   ("RecCocktail", "Qwen2-7B-Instruct", 0.5783)]),
    "reccocktail_beauty": ("Amazon 2014 Beauty", [("best baseline", "Qwen2-7B-Instruct", 0.3347),
                                                  ("RecCocktail", "Qwen2-7B-Instruct", 0.4132)]),
    "reccocktail_toys": ("Amazon 2014 Toys and Games", [("best baseline", "Qwen2-7B-Instruct", 0.3746),
                                                        ("RecCocktail", "Qwen2-7B-Instruct", 0.4097)]),
    "reccocktail_sports": ("Amazon 2014 Sports and Outdoors", [("best baseline", "Qwen2-7B-Instruct", 0.3585),
                                                               ("RecCocktail", "Qwen2-7B-Instruct", 0.3754)]),
}

# The SASRec paper's next-item figures (Kang & McAuley, ICDM 2018, Table III: the test item among 100 sampled
# negatives, every user, leave-one-out), keyed by the `reference` of a leave-one-out domain:
# data set, then (method, HR@10, NDCG@10)
SAMPLED_PUBLISHED = {
    "reccocktail_ml1m": ("ML-1M", [("SASRec", 0.8245, 0.5905)]),
}
