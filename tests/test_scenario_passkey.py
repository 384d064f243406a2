"""passkey: loss only on the key's digits, depths swept; needle keys random per sequence,
closed-book facts fixed per task and never stated."""

import pytest
import torch

from harness.errors import UserError
from scenarios.passkey import (
    PasskeyConfig,
    build,
    experience_keys,
    experience_subjects,
    min_seq_len,
    passkey_sequences,
)
from scenarios.tokenize import decode

SUBJECTS = ["the red door", "the blue box"]


def answer(x, y) -> str:
    return bytes(y[y != -100].tolist()).decode()


def test_needle_states_a_key_drawn_for_each_sequence():
    g = torch.Generator().manual_seed(0)
    x, y = passkey_sequences(200, 200, SUBJECTS, g)
    assert x.shape == y.shape == (200, 200)
    keys = []
    for row_x, row_y in zip(x, y):
        text, key = decode(row_x), answer(row_x, row_y)
        assert (row_y != -100).sum() == 5 and key.isdigit()
        subject = next(s for s in SUBJECTS if f"The pass key of {s} is {key}." in text)
        assert text.endswith(f"What is the pass key of {subject}? It is {key}")
        assert (row_y[:-1][row_y[:-1] != -100] == row_x[1:][row_y[:-1] != -100]).all()
        keys.append(key)
    # a key is not a property of its subject: weights alone cannot answer
    assert len(set(keys)) > 190
    first_digits = {k[0] for k in keys}
    assert first_digits == set("0123456789")  # uniform digits: chance is 0.1 each


def test_depth_places_the_fact():
    g = torch.Generator().manual_seed(0)
    x, _ = passkey_sequences(3, 400, SUBJECTS[:1], g, depths=torch.tensor([0.0, 0.5, 1.0]))
    where = [decode(row).index("The pass key of") for row in x]
    assert where[0] == 0 and where[0] < where[1] < where[2]
    assert 100 < where[1] < 250 and where[2] > 250


def test_closed_book_asks_fixed_keys_without_stating_them():
    g = torch.Generator().manual_seed(0)
    x, y = passkey_sequences(20, 200, SUBJECTS, g, keys=["48213", "00311"])
    for row_x, row_y in zip(x, y):
        text = decode(row_x)
        assert "The pass key of" not in text
        subject = next(s for s in SUBJECTS if f"What is the pass key of {s}?" in text)
        assert answer(row_x, row_y) == {"the red door": "48213", "the blue box": "00311"}[subject]


def test_too_short_is_a_user_error():
    with pytest.raises(UserError, match="too short"):
        passkey_sequences(1, 60, SUBJECTS, torch.Generator())
    for variant in ("needle", "facts"):
        with pytest.raises(UserError, match=f"seq_len={min_seq_len(variant) - 1} is too short"):
            PasskeyConfig(variant=variant, seq_len=min_seq_len(variant) - 1).check()
        PasskeyConfig(variant=variant, seq_len=min_seq_len(variant)).check()


def test_each_experience_has_its_own_subjects_and_keys():
    subjects = experience_subjects(3, 8, 0)
    sets = [set(s) for s in subjects]
    assert all(len(s) == 8 for s in sets)
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    keys = experience_keys(subjects, 0)
    assert [len(k) for k in keys] == [8, 8, 8] and all(len(k) == 5 for k in keys[0])
    assert keys == experience_keys(subjects, 0)


@pytest.mark.parametrize("variant", ["needle", "facts"])
def test_stream(variant):
    s = build(PasskeyConfig(variant=variant, n_experiences=2, n_facts=4, seq_len=160,
                            n_train=32, n_val=4, n_test=11), 0)
    assert s.n_experiences == 2 and s.spec.vocab_size == 258 and s.spec.seq_len == 160
    subjects = experience_subjects(2, 4, 0)
    keys = experience_keys(subjects, 0)
    for i in range(2):
        te = s.test_data(i)
        assert (len(s.train_data(i)), len(s.val_data(i)), len(te)) == (32, 4, 11)
        texts = [decode(row) for row in te.x]
        assert all(any(f"pass key of {subject}?" in t for subject in subjects[i]) for t in texts)
        answers = {answer(a, b) for a, b in zip(te.x, te.y)}
        if variant == "facts":
            assert answers <= set(keys[i])
        else:  # test depths sweep from 0 to 1
            assert texts[0].startswith("The pass key of")
            assert texts[-1].index(". Remember it. What is") > texts[-1].index("The pass key")
