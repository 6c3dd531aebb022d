"""The atlas selection rule (qd_tasks.atlas), the Glottolog families and the generated qd_udhr_atlas_ppl suite."""

import collections

import pytest

from qd_tasks import atlas
from qd_tasks.families import language_family
from qd_tasks.languages import LANGUAGES
from qd_tasks.udhr import load_udhr, udhr_languages


def test_selection_size_scripts_families_and_uniqueness():
    chosen = atlas.atlas_languages()
    assert len(chosen) == atlas.ATLAS_SIZE >= 100
    assert len({lang.script for lang in chosen}) >= 15
    families = collections.Counter(lang.family for lang in chosen)
    assert len(families) >= 15 and {"Indo-European", "Atlantic-Congo", "Afro-Asiatic", "Sino-Tibetan", "Austronesian"} <= set(families)
    assert len({lang.iso639_3 for lang in chosen}) == len(chosen)  # one declaration per language
    assert "en" in {lang.key for lang in chosen}
    texts = collections.Counter(record["lang"] for record in load_udhr([lang.key for lang in chosen], list(atlas.ATLAS_ARTICLES)))
    assert set(texts.values()) == {len(atlas.ATLAS_ARTICLES)}  # every language has every article


def test_selection_follows_its_rule():
    """Recomputes the rule's guarantees from the corpus directly."""
    meta = udhr_languages()
    chosen = {lang.key: lang for lang in atlas.atlas_languages()}
    articles = collections.Counter(record["lang"] for record in load_udhr(doc_ids=list(atlas.ATLAS_ARTICLES)))
    usable = {key for key, entry in meta.items()
              if language_family(entry["iso639_3"]) not in (None, "Artificial Language") and articles[key] == len(atlas.ATLAS_ARTICLES)}
    candidates = atlas.candidates()
    assert set(candidates) <= usable and {meta[key]["iso639_3"] for key in usable} == {c.iso639_3 for c in candidates.values()}
    assert set(chosen) <= set(candidates)
    assert {key for key in LANGUAGES if key in usable} <= set(chosen)  # every project language with the articles
    per_script = collections.Counter(lang.script for lang in chosen.values())
    available = collections.Counter(lang.script for lang in candidates.values())
    for script, count in available.items():
        if script != "Latn":
            assert per_script[script] >= min(atlas.PER_SCRIPT, count), script
    assert all(lang.joshi_class == LANGUAGES[key].joshi_class for key, lang in chosen.items() if key in LANGUAGES)
    assert atlas.stable_order(["b", "a", "c"]) == atlas.stable_order(["c", "b", "a"])


@pytest.mark.parametrize("iso, family", [("eng", "Indo-European"), ("swh", "Atlantic-Congo"), ("arb", "Afro-Asiatic"),
                                         ("cmn", "Sino-Tibetan"), ("fin", "Uralic"), ("tur", "Turkic"), ("ind", "Austronesian"),
                                         ("tam", "Dravidian"), ("eus", "isolate"), ("und", None)])
def test_glottolog_families(iso, family):
    assert language_family(iso) == family


def test_atlas_suite_runs_in_lm_eval(tiny_model_dir, evaluate_in_process, qd_task_manager):
    """The generated suite is known to lm-eval and scores the chosen articles of a few languages (--limit 1)."""
    keys = sorted(lang.key for lang in atlas.atlas_languages())
    assert "qd_udhr_atlas_ppl" in qd_task_manager.all_groups
    assert {f"qd_udhr_atlas_ppl_{key}" for key in keys} <= set(qd_task_manager.all_subtasks)
    tasks = [f"qd_udhr_atlas_ppl_{key}" for key in ("en", "zh", "chr_cased")]
    results = evaluate_in_process("qd-hf", f"pretrained={tiny_model_dir('llama')},dtype=float32", tasks, limit=1, log_samples=True)
    for task in tasks:
        assert results["results"][task]["bits_per_byte,none"] > 0
        (sample,) = results["samples"][task]
        assert sample["doc"]["doc_id"] in atlas.ATLAS_ARTICLES and sample["doc"]["lang"] == task.rsplit("ppl_", 1)[1]
