import torch

from nml_core.arch.gpt2 import permute_units as apply_permutations
from nml_core.nesting.importance import importance_scores, reorder_by_importance


def test_reordering_preserves_full_width_logits(tiny_model):
    x = torch.randint(0, 97, (4, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = tiny_model(input_ids=x).logits
    perms = reorder_by_importance(tiny_model, x)
    with torch.no_grad():
        after = tiny_model(input_ids=x).logits
    torch.testing.assert_close(after, before, atol=1e-4, rtol=1e-4)
    assert tiny_model.lm_head.weight is tiny_model.transformer.wte.weight
    assert not torch.equal(perms["hidden"], torch.arange(64))  # something actually moved


def test_after_reordering_scores_are_descending(tiny_model):
    x = torch.randint(0, 97, (4, 24), generator=torch.Generator().manual_seed(0))
    reorder_by_importance(tiny_model, x)
    scores = importance_scores(tiny_model, x)
    for s in scores["ffn"] + scores["heads"] + [scores["hidden"]]:
        assert torch.all(s[:-1] >= s[1:] - 1e-5)


def test_stored_permutations_replay_exactly(tiny_model):
    import copy
    x = torch.randint(0, 97, (4, 24), generator=torch.Generator().manual_seed(0))
    replay = copy.deepcopy(tiny_model)
    perms = reorder_by_importance(tiny_model, x)
    apply_permutations(replay, perms)
    for (n, a), (_, b) in zip(tiny_model.named_parameters(), replay.named_parameters()):
        assert torch.equal(a, b), n
