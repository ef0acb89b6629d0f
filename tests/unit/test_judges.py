"""The judges' pure parts: AlpacaEval 2's weighted judge reproduces alpaca-eval 0.6.6 (its pinned prompt, its
seeded order, its prompt filling and chat messages, its logprob parser, and all of them together through
alpaca-eval's own annotator), PandaLM's prompt and verdict parser, and how two orders' verdicts combine."""

from __future__ import annotations

import hashlib
import importlib.util
import math
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from backend.errors import JudgePromptInvalid
from backend.judged import alpaca_judge, pandalm
from backend.judged.alpaca_judge import (
    chat_messages,
    fill_prompt,
    parse_completion,
    shown_order,
    weighted_preference,
)
from backend.judged.judges import PromptTemplate
from backend.judged.pandalm import clean, parse_verdict
from backend.judged.verdicts import FIRST, SECOND, TIE, Order, Pair, Shown, Verdict, combine, preference
from tests import alpaca_eval_reference


def _alpaca_eval_dir() -> Path:
    spec = importlib.util.find_spec("alpaca_eval")  # found, not imported
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent


EVALUATORS = _alpaca_eval_dir() / "evaluators_configs"


@pytest.fixture(scope="module")
def alpaca_eval():
    return alpaca_eval_reference.import_alpaca_eval()


INSTRUCTIONS = [
    "Write a haiku about the sea.",
    "What is 2 + 2?",
    "Explain {output_1} and {output_2} in one sentence.",  # placeholders in the text: filled as alpaca fills
    'Say """hello""" three times.',
    "  leading and trailing spaces  ",
    "Übersetze: guten Morgen",
    "",
    "List three colours.\n\nThen stop.",
]


# ------------------------------------------------------------------------- the pinned alpaca-eval config


def test_the_prompt_file_is_alpaca_evals_byte_for_byte():
    config = yaml.safe_load((EVALUATORS / alpaca_judge.ANNOTATOR / "configs.yaml").read_text())
    prompt = EVALUATORS / config[alpaca_judge.ANNOTATOR]["prompt_template"]
    assert alpaca_judge.PROMPT_FILE.read_bytes() == prompt.read_bytes()


def test_decoding_and_parser_settings_are_alpaca_evals_config():
    config = yaml.safe_load((EVALUATORS / alpaca_judge.ANNOTATOR / "configs.yaml").read_text())
    judge = config[alpaca_judge.ANNOTATOR]
    kwargs = judge["completions_kwargs"]
    decoding = alpaca_judge.DECODING
    assert {k: decoding[k] for k in ("max_tokens", "temperature", "logprobs", "top_logprobs")} == {
        k: kwargs[k] for k in ("max_tokens", "temperature", "logprobs", "top_logprobs")
    }
    assert decoding["top_p"] == 1.0  # what alpaca-eval's OpenAI helper sends when the config says nothing
    assert judge["fn_completion_parser"] == "logprob_parser" and judge["batch_size"] == 1
    parser = judge["completion_parser_kwargs"]
    assert parser == {
        "numerator_token": alpaca_judge.NUMERATOR_TOKEN,
        "denominator_tokens": list(alpaca_judge.DENOMINATOR_TOKENS),
        "is_binarize": False,
    }


def test_a_prompt_template_is_hashed_over_its_bytes_and_needs_its_placeholders(tmp_path):
    template = PromptTemplate.load(alpaca_judge.PROMPT_FILE, alpaca_judge.PLACEHOLDERS)
    assert template.sha256 == hashlib.sha256(alpaca_judge.PROMPT_FILE.read_bytes()).hexdigest()
    broken = tmp_path / "broken.txt"
    broken.write_text("no placeholders here", encoding="utf-8")
    with pytest.raises(JudgePromptInvalid, match=r"has no \{instruction\}"):
        PromptTemplate.load(broken, alpaca_judge.PLACEHOLDERS)
    with pytest.raises(JudgePromptInvalid, match="cannot be read"):
        PromptTemplate.load(tmp_path / "missing.txt", alpaca_judge.PLACEHOLDERS)


# ------------------------------------------------------------------------------ the weighted preference


def test_the_weighted_preference_worked_by_hand():
    # P(m) = e^-0.1 = 0.904837, P(M) = e^-2.4 = 0.090718: 2 - 0.904837 / 0.995555 = 1.091123
    assert weighted_preference([("m", -0.1), ("M", -2.4), ("The", -3.0)]) == pytest.approx(1.091123, abs=1e-6)
    # equal probabilities: a tie; the other tokens do not count
    assert weighted_preference([("M", -1.0), ("x", -0.1), ("m", -1.0)]) == pytest.approx(1.5)
    # one identifier alone takes all: m (first shown) -> 1, M (second shown) -> 2
    assert weighted_preference([("m", -5.0), ("a", -0.01)]) == 1.0
    assert weighted_preference([("M", -7.0)]) == 2.0
    # neither: no verdict; " m" or "mm" are other tokens
    assert weighted_preference([(" m", -0.1), ("mm", -0.2), ("Model", -0.3)]) is None
    # P(M) = 3 P(m): ln 3 apart -> 2 - 1/4
    assert weighted_preference([("m", -math.log(3)), ("M", 0.0)]) == pytest.approx(1.75)


def _completion(alternatives: list[tuple[str, float]], tokens: int = 1) -> dict[str, Any]:
    top = [{"token": t, "logprob": lp} for t, lp in alternatives]
    content = [{"token": top[0]["token"] if top else "x", "logprob": -0.5, "top_logprobs": top}] * tokens
    return {"text": "m", "logprobs": {"content": content}}


def test_the_parser_agrees_with_alpaca_evals_logprob_parser(alpaca_eval):
    import json

    parser = alpaca_eval.completion_parsers.logprob_parser
    rng = random.Random(7)
    vocabulary = ["m", "M", "The", " m", "Both", "mM"]
    for _ in range(300):
        alternatives = [(rng.choice(vocabulary), -rng.expovariate(0.5)) for _ in range(rng.randint(0, 5))]
        completion = _completion(alternatives)
        ours = parse_completion(json.dumps(completion))
        if not alternatives:
            assert ours is None
            continue
        (theirs,) = parser(completion, numerator_token="m", denominator_tokens=["m", "M"], is_binarize=False)
        if math.isnan(theirs):
            assert ours is None
        else:
            assert ours == pytest.approx(theirs, abs=1e-12)


def test_an_answer_of_other_than_one_token_or_unreadable_is_no_verdict():
    import json

    assert parse_completion(json.dumps(_completion([("m", -0.1)], tokens=2))) is None
    assert parse_completion(json.dumps({"text": "m", "logprobs": {"content": []}})) is None
    assert parse_completion("not json") is None
    assert parse_completion(json.dumps({"text": "m"})) is None


# ------------------------------------------------------------------- the order, the prompt and messages


def test_the_order_is_alpaca_evals_seeded_coin(alpaca_eval):
    annotator = alpaca_eval.annotators.PairwiseAnnotator(annotators_config=alpaca_judge.ANNOTATOR)
    switch = annotator.annotators[alpaca_judge.ANNOTATOR].processors[0]
    instructions = INSTRUCTIONS + [f"instruction number {i}" for i in range(60)]
    frame = pd.DataFrame({"instruction": instructions, "output_1": "ref", "output_2": "model"})
    switched = switch.preprocess(frame)["is_switched_outputs"].tolist()
    ours = [shown_order(i) is Order.MODEL_FIRST for i in instructions]
    assert ours == switched
    assert 0 < sum(ours) < len(ours)  # both orders occur


def test_prompts_and_messages_are_alpaca_evals(alpaca_eval):
    template = alpaca_judge.PROMPT_FILE.read_text(encoding="utf-8")
    frame = pd.DataFrame(
        {
            "instruction": INSTRUCTIONS,
            "output_1": [f"first {{x}} {i}" for i in range(8)],
            "output_2": "second",
        }
    )
    prompts, _ = alpaca_eval.utils.make_prompts(frame, template)
    for row, prompt in zip(frame.itertuples(), prompts, strict=True):
        ours = fill_prompt(template, row.instruction, row.output_1, row.output_2)
        assert ours == prompt
        theirs = alpaca_eval.utils.prompt_to_chatml(prompt.strip())
        assert [{"content": m.content, "role": m.role} for m in chat_messages(ours)] == theirs


def _stand_in_logprobs(content: str) -> list[tuple[str, float]]:
    """A judge that is a function of what it is shown: m and M logprobs from a hash of the prompt."""
    digest = hashlib.sha256(content.encode()).digest()
    kind = digest[0] % 5
    lp_m, lp_M = -digest[1] / 40, -digest[2] / 40
    if kind == 0:
        return [("The", -0.1)]  # no verdict
    if kind == 1:
        return [("m", lp_m), ("Both", -3.0)]
    return [("M", lp_M), ("m", lp_m), ("The", -4.0)]


def test_the_whole_judgement_agrees_with_alpaca_evals_annotator(alpaca_eval):
    """alpaca-eval's own annotator (order, prompt, parser, switching back) with a stand-in for the OpenAI
    call gives the same preference, in AlpacaEval's convention, as ours with the same stand-in."""
    import json

    pairs = [
        Pair(instr, f"the reference answer to {n}", f"the model's answer {n}" * (1 + n % 3))
        for n, instr in enumerate(INSTRUCTIONS + [f"question {i}?" for i in range(30)])
    ]

    def stand_in(prompts: list[str], **_: Any) -> dict[str, list[Any]]:
        completions = []
        for prompt in prompts:
            messages = alpaca_eval.utils.prompt_to_chatml(prompt.strip())
            completions.append(_completion(_stand_in_logprobs(messages[-1]["content"])))
        return {
            "completions": ["m"] * len(prompts),
            "completions_all": completions,
            "price_per_example": [0.0] * len(prompts),
            "time_per_example": [0.0] * len(prompts),
        }

    annotator = alpaca_eval.annotators.PairwiseAnnotator(
        annotators_config=alpaca_judge.ANNOTATOR, is_avoid_reannotations=False
    )
    single = annotator.annotators[alpaca_judge.ANNOTATOR]
    single.fn_completions = stand_in
    single.packages_for_which_to_show_version = None
    frame = pd.DataFrame(
        {
            "instruction": [p.instruction for p in pairs],
            "output_1": [p.reference for p in pairs],
            "output_2": [p.model for p in pairs],
        }
    )
    theirs = single(frame).set_index("instruction")["preference"].to_dict()

    template = alpaca_judge.PROMPT_FILE.read_text(encoding="utf-8")
    judged = 0
    for pair in pairs:
        (order,) = (shown_order(pair.instruction),)
        shown = Shown.of(pair, order)
        messages = chat_messages(fill_prompt(template, shown.instruction, shown.first, shown.second))
        raw = json.dumps(_completion(_stand_in_logprobs(messages[-1].content)))
        ours = preference(parse_completion(raw), order)
        if ours is None:
            assert pair.instruction not in theirs  # alpaca-eval drops what it could not annotate
        else:
            assert ours == pytest.approx(theirs[pair.instruction], abs=1e-12)
            judged += 1
    assert 0 < judged < len(pairs)


# ---------------------------------------------------------------------------------------------- PandaLM


def test_pandalms_prompt_is_its_no_input_prompt():
    # build_pandalm_prompt of WeOpenML/PandaLM (pandalm/utils/pandalm_inference.py), with no input
    expected = (
        "Below are two responses for a given task. The task is defined by the Instruction. Evaluate the "
        "responses and generate a reference answer for the task.\n\n"
        "### Instruction:\nName a colour.\n\n### Response 1:\nRed.\n\n### Response 2:\nBlue</s> sky\n\n"
        "### Evaluation:\n"
    ).replace("Blue</s> sky", "Blue sky")
    template = PromptTemplate.load(pandalm.PROMPT_FILE, pandalm.PLACEHOLDERS)
    shown = Shown("Name a colour.", "  Red.\n", "<s>Blue</s> sky ")
    assert (
        template.fill(
            {
                "instruction": shown.instruction,
                "response_1": clean(shown.first),
                "response_2": clean(shown.second),
            }
        )
        == expected
    )
    # one pass: a response that holds a placeholder is left as it is
    assert "{response_2}" in template.fill(
        {"instruction": "i", "response_1": "{response_2}", "response_2": "x"}
    )


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("1\n\n### Reason: Response 1 is better.", FIRST),
        ("2", SECOND),
        ("  Tie\n### Reason: both fine", TIE),
        ("tie", TIE),
        ("TIE", TIE),
        ("1.", None),
        ("Response 1", None),
        ("", None),
        ("\n\n2", SECOND),  # the answer is stripped first, as PandaLM strips it
        ("12", None),
    ],
)
def test_pandalms_verdict_is_read_from_the_first_line(answer, expected):
    assert parse_verdict(answer) == expected


# ------------------------------------------------------------------------------ combining the two orders


def _v(p: float | None) -> Verdict:
    return Verdict(p, "raw", None, 0.0)


R, M = Order.REFERENCE_FIRST, Order.MODEL_FIRST


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        (FIRST, SECOND, 1.0),  # reference shown first wins, then reference shown second wins: reference
        (SECOND, FIRST, 2.0),  # the model wins in both orders
        (FIRST, FIRST, 1.5),  # whoever is shown first wins: flips with the order, a tie
        (SECOND, SECOND, 1.5),
        (TIE, TIE, 1.5),  # two ties: a tie
        (TIE, FIRST, 1.75),  # a tie and a model win: a lean to the model
        (FIRST, TIE, 1.25),  # a reference win and a tie: a lean to the reference
        (None, FIRST, None),  # no verdict in one order: none for the pair
        (TIE, None, None),
    ],
)
def test_two_orders_combine_into_one_preference(first, second, expected):
    # first: the verdict with the reference shown first; second: with the model shown first
    assert combine([(R, _v(first)), (M, _v(second))]) == expected


def test_one_order_maps_to_alpaca_evals_convention():
    assert preference(1.2, R) == 1.2 and preference(1.2, M) == pytest.approx(1.8)
    assert preference(None, M) is None
    assert combine([(M, _v(1.0))]) == 2.0 and combine([]) is None


def test_a_verdict_out_of_range_is_refused():
    for bad in (0.0, 2.5, math.nan):
        with pytest.raises(ValueError):
            _v(bad)
    with pytest.raises(ValueError):
        Verdict(1.0, "", -1.0, 0.0)
    with pytest.raises(ValueError):
        Verdict(1.0, "", None, math.inf)
