"""Mutated specs (seeded, token-level) end in a SpecError or a valid analysis: never another exception."""

import random
from pathlib import Path

import pytest

from convcli.analysis import analyze
from convcli.errors import ConvcliError
from convcli.spec import parse_spec

ROOT = Path(__file__).resolve().parent.parent
TOKENS = ["0", "-1", "1", "2", "3", "[1, 2]", "[]", "{}", "null", "true", '"x"', "same", "1.5", "$out", "$nope",
          "[[1]]", "999999", "gap", ":", "[", "{a: 1}"]


def mutate(text: str, rng: random.Random) -> str:
    lines = text.splitlines()
    for _ in range(rng.randint(1, 3)):
        j = rng.randrange(len(lines))
        words = lines[j].replace(",", " , ").replace("}", " } ").replace(":", ": ").split(" ")
        spots = [k for k, w in enumerate(words) if w.strip() and w.strip() not in ",}:"]
        if spots:
            k = rng.choice(spots)
            words[k] = rng.choice(TOKENS) if rng.random() < 0.7 else words[k][:-1]
            lines[j] = " ".join(words)
    return "\n".join(lines)


@pytest.mark.parametrize("seed", range(4))
def test_mutated_specs_fail_cleanly(seed):
    rng = random.Random(seed)
    texts = [p.read_text() for p in sorted((ROOT / "architectures").glob("*.yaml"))]
    outcomes = {"ok": 0, "error": 0}
    for _ in range(150):
        text = mutate(rng.choice(texts), rng)
        try:
            analyze(parse_spec(text, "fuzz.yaml"))
            outcomes["ok"] += 1
        except ConvcliError as exc:
            assert "fuzz.yaml" in str(exc)  # every error says where
            outcomes["error"] += 1
    assert outcomes["error"] > 0  # the mutations do reach the validation
